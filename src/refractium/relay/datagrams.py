"""The UDP sockets of flows: opened connected, sent on in batches, their backlog limited.

A flow's backend socket is one of ours, connected before the loop takes it
(:func:`connected`), so that the batches below can send on it; a listener's
socket is the one the service bound. A socket's transport pauses its
protocol exactly while its backlog is over :data:`SEND_BACKLOG`
(:func:`limit_backlog`): the flow tests a flag, not the backlog, per
datagram, and drops what arrives meanwhile.

A relayed datagram is not sent the moment it is read: it joins its
destination's batch (a flow's backend socket, or the listener's socket
towards one client), and once the loop has handed over everything it read
in that turn, each batch is sent. A run of datagrams of one size (the last
may be shorter) goes out in one ``sendmsg`` with ``UDP_SEGMENT`` (UDP GSO,
Linux 4.18): the kernel cuts it back into the same datagrams, so the
receiver sees exactly what was read, in order, but the send costs one system
call, one route lookup and one wake-up of the receiver instead of one each.
That is most of what a relayed datagram costs (benchmarks/README.md, "UDP:
where a datagram's time goes").

Anything else goes through the transport's ``sendto``, one datagram each,
as before: a lone datagram, one whose size starts no run, a batch while the
transport holds a backlog (a GSO send would overtake it), a socket that
refuses GSO (``EIO``: no checksum offload on its route, ``EOPNOTSUPP``:
an older kernel; GSO is then off for that socket) or a size the route's MTU
cannot carry unfragmented (``EINVAL``/``EMSGSIZE``: that size and larger are
sent one by one from then on). A send buffer that is full (``EAGAIN``) also
hands the run to the transport, which queues it and applies the backlog
limit as for any datagram.

On asyncio's own loop nothing is batched: its datagram transport reads one
datagram per readiness, so a turn never holds two, and a batch would only
add a callback; each datagram is sent as it is read.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import sys
from collections.abc import Callable
from functools import partial
from typing import Any, Final

from refractium.addr import Address

#: A socket's send backlog beyond which datagrams are dropped.
SEND_BACKLOG = 1 << 20
#: Linux's UDP_SEGMENT socket option (``<linux/udp.h>``); Python 3.11's socket lacks it.
UDP_SEGMENT: Final = 103
#: The kernel's UDP_MAX_SEGMENTS: datagrams in one GSO send at most.
MAX_SEGMENTS: Final = 64
#: The bytes of one GSO send: under the 64 KiB of one IP datagram, headers included.
MAX_RUN_BYTES: Final = 65_000
# The socket cannot do GSO at all: it is off for it.
_NO_GSO: Final = frozenset({errno.EIO, errno.EOPNOTSUPP, errno.ENOPROTOOPT})
# A segment of this size does not fit the route's MTU: smaller ones only.
_TOO_BIG: Final = frozenset({errno.EINVAL, errno.EMSGSIZE})


def limit_backlog(transport: asyncio.DatagramTransport) -> None:
    """Have ``transport`` pause its protocol exactly while its backlog is over SEND_BACKLOG."""
    # Both loops' datagram transports have the WriteTransport method typeshed leaves out.
    transport.set_write_buffer_limits(high=SEND_BACKLOG, low=SEND_BACKLOG)  # type: ignore[attr-defined]


class ClientSide(asyncio.DatagramProtocol):
    """A listener's socket as its flows see it: where to answer, and whether it is backlogged."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket | None) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.sock = sock  # the transport's socket, for batched sends (None: one by one)
        self.flusher = Flusher(loop)  # the batches of this listener's flows, both ways
        self.full = False  # the backlog is over SEND_BACKLOG: replies are dropped

    def pause_writing(self) -> None:
        self.full = True

    def resume_writing(self) -> None:
        self.full = False


class Flusher:
    """Sends every batch filled in a loop turn once the turn's reads are handed over."""

    __slots__ = ("_dirty", "_loop", "batching")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._dirty: list[Batch] = []
        # uvloop reads up to 32 datagrams of a socket per readiness, asyncio one.
        self.batching = not isinstance(loop, asyncio.BaseEventLoop)

    def later(self, batch: Batch) -> None:
        """``batch`` got its first datagram of this turn: send it at the turn's end."""
        if not self._dirty:
            # call_soon runs after every ready reader of this turn: the whole read burst.
            self._loop.call_soon(self.flush)
        self._dirty.append(batch)

    def flush(self) -> None:
        dirty, self._dirty = self._dirty, []
        for batch in dirty:
            batch.flush()


class Batch:
    """One destination's datagrams of the current loop turn: a socket, and a client or not."""

    __slots__ = ("_addr", "_flusher", "_max_segment", "_on_error", "_sock", "_transport", "pending")

    def __init__(
        self,
        flusher: Flusher,
        transport: asyncio.DatagramTransport,
        sock: socket.socket | None,
        addr: Any,
        on_error: Callable[[Exception], None],
    ) -> None:
        self._flusher = flusher
        self._transport = transport
        # The transport's own socket, for the GSO sends (None: one sendto each).
        self._sock = sock
        self._addr = addr  # None on a connected socket
        self._on_error = on_error  # what the transport does with a send error
        self._max_segment = MAX_RUN_BYTES // 2
        self.pending: list[bytes] = []

    def sender(self) -> Callable[[bytes], None]:
        """What a flow calls with each datagram for this destination."""
        if self._flusher.batching:
            return self.add
        return partial(self._transport.sendto, addr=self._addr)

    def add(self, data: bytes) -> None:
        pending = self.pending
        if not pending:
            self._flusher.later(self)
        pending.append(data)

    def flush(self) -> None:
        """Send what is pending: runs of one size in one GSO send each, the rest one by one."""
        batch = self.pending
        if not batch:
            return
        self.pending = []
        transport, addr = self._transport, self._addr
        count = len(batch)
        if count == 1 or self._sock is None:
            for data in batch:
                transport.sendto(data, addr)
            return
        start = 0
        while start < count:
            size = len(batch[start])
            end = start + 1
            if 0 < size <= self._max_segment:
                limit = min(count, start + MAX_SEGMENTS, start + MAX_RUN_BYTES // size)
                while end < limit and len(batch[end]) == size:
                    end += 1
                if end < limit and 0 < len(batch[end]) < size:
                    end += 1  # the last segment may be shorter
            if end - start > 1 and self._sock is not None and self._send_run(batch[start:end]):
                start = end
                continue
            for data in batch[start:end]:
                transport.sendto(data, addr)
            start = end

    def _send_run(self, run: list[bytes]) -> bool:
        """One GSO send of ``run``; False if it must go one by one instead."""
        sock = self._sock
        assert sock is not None
        if self._transport.get_write_buffer_size():  # type: ignore[attr-defined]
            return False  # the transport holds a backlog: keep the order, queue behind it
        size = len(run[0])
        option = [(socket.SOL_UDP, UDP_SEGMENT, size.to_bytes(2, sys.byteorder))]
        try:
            if self._addr is None:
                sock.sendmsg(run, option)
            else:
                sock.sendmsg(run, option, 0, self._addr)
        except BlockingIOError:
            return False
        except OSError as exc:
            if exc.errno in _NO_GSO:
                self._sock = None
                return False
            if exc.errno in _TOO_BIG:
                self._max_segment = size - 1
                return False
            # As the transport would: an ICMP error the socket reports (connection
            # refused) goes to the protocol; the run is lost, as its sendto would be.
            self._on_error(exc)
        return True


async def connected(loop: asyncio.AbstractEventLoop, address: Address) -> socket.socket:
    """A non-blocking UDP socket connected to ``address`` (a name is resolved off the loop)."""
    host, port = address.host, address.port
    try:  # an IP address, as backends mostly are: no resolver, no thread
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM, flags=socket.AI_NUMERICHOST)
    except socket.gaierror:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    error: OSError = OSError(f"{host}:{port}: no address")
    for family, kind, proto, _, peer in infos:
        sock = socket.socket(family, kind, proto)
        try:
            sock.setblocking(False)
            sock.connect(peer)  # UDP: no packet, only the route and the peer are set
        except OSError as exc:
            sock.close()
            error = exc
            continue
        return sock
    raise error

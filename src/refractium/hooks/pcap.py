"""A packet hook that writes what it sees to a pcapng file Wireshark can decode.

The proxy sees byte streams, not packets, so :class:`PcapWriter` makes the
packets up: each connection becomes a TCP conversation between the client's
and the backend's address, as Ethernet + IPv4 (or IPv6) + TCP frames, with a
3-way handshake when the connection is first seen, one data segment per chunk
(several when a chunk is bigger than an IP packet can carry), sequence and
acknowledgement numbers that add up, and a FIN exchange when it ends. That is
enough for Wireshark's TCP reassembly, and so for its HTTP, TLS, SSH...
dissectors, to work on the capture as on a real one::

    [[protocols]]
    name = "http"
    hooks = [{ use = "refractium.hooks.pcap:PcapWriter", path = "cap.pcapng" }]

The addresses, ports and payloads are the real ones; the MAC addresses, IP
identification, window, TCP options and initial sequence numbers are made
up, and the timestamps are when the hook was given each chunk (after the
proxy relayed it), not when it was on the wire.

File format (draft-ietf-opsawg-pcapng, "PCAP Now Generic (pcapng) Capture
File Format"): one Section Header Block (section 4.1), one Interface
Description Block (4.2) with link type 1 (LINKTYPE_ETHERNET) and
``if_tsresol`` = 9 (nanosecond timestamps), then one Enhanced Packet Block
(4.3) per frame. Everything is written little-endian; the SHB's byte-order
magic tells readers so.

Writing happens in a thread of the hook's own, fed by a queue: ``on_packet``
only takes the time and queues the chunk, so the event loop never waits on
the disk. Call :meth:`PcapWriter.close` at shutdown (or use the writer as a
context manager) so the last frames reach the file; the writer also flushes
at the end of every connection, and once a second while traffic flows.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import logging
import os
import queue
import struct
import threading
import time
import weakref
from typing import BinaryIO, NamedTuple, TypeAlias

from refractium.hooks.api import Direction, HookContext, ProtocolHook
from refractium.util.logs import RateLimitedLog

__all__ = ["MAX_SEGMENT", "PcapWriter"]

log = logging.getLogger(__name__)
events = RateLimitedLog(log)

#: The most payload one synthesised segment carries. IPv4's total length and
#: IPv6's payload length are 16-bit fields: 65535 - 20 (IPv4) - 20 (TCP).
MAX_SEGMENT = 65535 - 20 - 20

#: How long written frames may sit in the file buffer while traffic flows.
FLUSH_INTERVAL_S = 1.0

# pcapng block types and option codes (draft-ietf-opsawg-pcapng sections 4.1-4.3).
_SHB = 0x0A0D0D0A
_IDB = 0x00000001
_EPB = 0x00000006
_BYTE_ORDER_MAGIC = 0x1A2B3C4D
_OPT_END = 0
_OPT_COMMENT = 1
_SHB_USERAPPL = 4
_IF_NAME = 2
_IF_DESCRIPTION = 3
_IF_TSRESOL = 9
_LINKTYPE_ETHERNET = 1

_ETHERTYPE_IPV4 = 0x0800
_ETHERTYPE_IPV6 = 0x86DD
_IPPROTO_TCP = 6

_FIN = 0x01
_SYN = 0x02
_PSH = 0x08
_ACK = 0x10

# Locally administered unicast MACs (the 0x02 bit of the first octet), so they
# can never be mistaken for a real vendor's.
_CLIENT_MAC = bytes.fromhex("02000000c11e")
_BACKEND_MAC = bytes.fromhex("02000000bac0")

# SYN options: MSS = MAX_SEGMENT (so the big segments are not flagged as
# oversized), NOP, window scale 14. With the 0xFFFF window below that is a
# 1 GiB window, so Wireshark's analysis does not report "window full" for a
# side that sends a lot without its peer sending anything back.
_SYN_OPTIONS = struct.pack("!BBH", 2, 4, MAX_SEGMENT) + bytes((1, 3, 3, 14))
_WINDOW = 0xFFFF

_Address: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address


# --------------------------------------------------------------------------- pcapng blocks


def _options(*options: tuple[int, bytes]) -> bytes:
    """An options list: code, length, value padded to 32 bits; then opt_endofopt."""
    out = bytearray()
    for code, value in options:
        out += struct.pack("<HH", code, len(value)) + value + _padding(len(value))
    out += struct.pack("<HH", _OPT_END, 0)
    return bytes(out)


def _padding(size: int) -> bytes:
    return b"\0" * (-size % 4)


def _block(block_type: int, body: bytes) -> bytes:
    """A block: type, total length, body, total length again (so readers can go back)."""
    total = 12 + len(body)
    return struct.pack("<II", block_type, total) + body + struct.pack("<I", total)


def section_header() -> bytes:
    """The Section Header Block: byte-order magic, version 1.0, unknown section length."""
    body = struct.pack("<IHHq", _BYTE_ORDER_MAGIC, 1, 0, -1)
    return _block(_SHB, body + _options((_SHB_USERAPPL, b"refractium")))


def interface_description(snaplen: int) -> bytes:
    """The one Interface Description Block: Ethernet, ``snaplen``, nanosecond timestamps."""
    body = struct.pack("<HHI", _LINKTYPE_ETHERNET, 0, snaplen)
    return _block(
        _IDB,
        body
        + _options(
            (_IF_NAME, b"refractium"),
            (_IF_DESCRIPTION, b"TCP frames synthesised from proxied connections"),
            (_IF_TSRESOL, bytes((9,))),  # 10^-9 s: time.time_ns() as is
        ),
    )


def enhanced_packet(timestamp_ns: int, frame: bytes, snaplen: int, comment: str = "") -> bytes:
    """An Enhanced Packet Block on interface 0, cut to ``snaplen`` (0: no limit)."""
    captured = frame if not snaplen or len(frame) <= snaplen else frame[:snaplen]
    header = struct.pack(
        "<IIIII",
        0,
        (timestamp_ns >> 32) & 0xFFFFFFFF,
        timestamp_ns & 0xFFFFFFFF,
        len(captured),
        len(frame),
    )
    options = _options((_OPT_COMMENT, comment.encode())) if comment else b""
    return _block(_EPB, header + captured + _padding(len(captured)) + options)


# --------------------------------------------------------------------------- IP and TCP


def _ones_complement_sum(data: bytes) -> int:
    """The RFC 1071 16-bit one's complement sum of ``data`` (not yet inverted).

    As 2**16 = 1 (mod 0xFFFF), the sum of the big-endian 16-bit words is the
    whole buffer read as one big integer, mod 0xFFFF: one C-speed operation
    instead of a Python loop over 32k words for a big segment.
    """
    if len(data) % 2:
        data += b"\0"
    number = int.from_bytes(data, "big")
    total = number % 0xFFFF
    # One's complement has two zeros; a non-zero sum that is 0 mod 0xFFFF is 0xFFFF.
    return 0xFFFF if total == 0 and number else total


def _checksum(*parts: bytes) -> int:
    return ~_ones_complement_sum(b"".join(parts)) & 0xFFFF


class _Endpoint(NamedTuple):
    address: _Address
    port: int
    mac: bytes


class _Session:
    """One connection as the writer thread has rebuilt it so far."""

    __slots__ = ("backend", "client", "ip_id", "next_seq")

    def __init__(self, client: _Endpoint, backend: _Endpoint, session_id: int) -> None:
        self.client = client
        self.backend = backend
        # Initial sequence numbers from the session id: arbitrary, but the same
        # for the same session, which makes captures easier to compare.
        self.next_seq = [_isn(session_id), _isn(session_id >> 32)]
        self.ip_id = [0, 0]

    def frame(
        self, from_client: bool, flags: int, payload: bytes = b"", options: bytes = b""
    ) -> bytes:
        """One Ethernet frame from one side; advances that side's sequence number."""
        side = 0 if from_client else 1
        source, target = (self.client, self.backend) if from_client else (self.backend, self.client)
        seq = self.next_seq[side]
        ack = self.next_seq[1 - side] if flags & _ACK else 0
        tcp = (
            struct.pack(
                "!HHIIBBHHH",
                source.port,
                target.port,
                seq,
                ack,
                (20 + len(options)) // 4 << 4,
                flags,
                _WINDOW,
                0,  # checksum, filled in below
                0,  # urgent pointer
            )
            + options
        )
        # SYN and FIN take one sequence number each, data one per byte.
        self.next_seq[side] = (
            seq + len(payload) + (1 if flags & (_SYN | _FIN) else 0)
        ) & 0xFFFFFFFF
        segment_length = len(tcp) + len(payload)
        src, dst = source.address.packed, target.address.packed
        if source.address.version == 4:
            pseudo = src + dst + struct.pack("!BBH", 0, _IPPROTO_TCP, segment_length)
            ident = self.ip_id[side]
            self.ip_id[side] = (ident + 1) & 0xFFFF
            ip = struct.pack(
                "!BBHHHBBH4s4s",
                0x45,  # version 4, 5-word header
                0,
                20 + segment_length,
                ident,
                0x4000,  # don't fragment: the segments are never split further
                64,
                _IPPROTO_TCP,
                0,
                src,
                dst,
            )
            ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
            ethertype = _ETHERTYPE_IPV4
        else:
            pseudo = src + dst + struct.pack("!IxxxB", segment_length, _IPPROTO_TCP)
            ip = struct.pack(
                "!IHBB16s16s",
                6 << 28,  # version 6, traffic class 0, flow label 0
                segment_length,
                _IPPROTO_TCP,
                64,
                src,
                dst,
            )
            ethertype = _ETHERTYPE_IPV6
        checksum = _checksum(pseudo, tcp, payload)
        tcp = tcp[:16] + struct.pack("!H", checksum) + tcp[18:]
        ethernet = target.mac + source.mac + struct.pack("!H", ethertype)
        return b"".join((ethernet, ip, tcp, payload))


def _isn(bits: int) -> int:
    # Not 2**32 - 1: the handshake's ACK would then acknowledge 0, the same
    # number as the SYN's empty acknowledgement field, and Wireshark would
    # call it a duplicate ACK.
    isn = bits & 0xFFFFFFFF
    return 0 if isn == 0xFFFFFFFF else isn


def _address(host: str) -> _Address:
    """``host`` as an IP address; a name gets a stable made-up one in 198.18.0.0/15."""
    text = host.strip("[]")
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        # RFC 2544's benchmarking range: never a real host, so it cannot be
        # confused with one. The real name goes in the first frame's comment.
        digest = hashlib.blake2b(text.encode(), digest_size=4).digest()
        return ipaddress.IPv4Address((198 << 24 | 18 << 16) + int.from_bytes(digest) % (1 << 17))


def _endpoints(ctx: HookContext) -> tuple[_Endpoint, _Endpoint]:
    """The client's and the backend's address, both IPv4 or both IPv6."""
    server = ctx.backend_addr or ctx.local_addr or ("0.0.0.0", 0)
    client = _address(str(ctx.client_addr[0]))
    backend = _address(str(server[0]))
    # A packet has one IP version: when the sides differ, the IPv4 one
    # becomes IPv4-mapped IPv6 (::ffff:a.b.c.d), as a dual-stack socket sees it.
    if client.version != backend.version:
        if isinstance(client, ipaddress.IPv4Address):
            client = ipaddress.IPv6Address(f"::ffff:{client}")
        if isinstance(backend, ipaddress.IPv4Address):
            backend = ipaddress.IPv6Address(f"::ffff:{backend}")
    return (
        _Endpoint(client, _port(ctx.client_addr[1]), _CLIENT_MAC),
        _Endpoint(backend, _port(server[1]), _BACKEND_MAC),
    )


def _port(port: object) -> int:
    return port if isinstance(port, int) and 0 <= port <= 0xFFFF else 0


def _describe(ctx: HookContext) -> str:
    """The first frame's comment: what the capture cannot show by itself."""
    parts = [f"refractium session {ctx.session_id:016x}", f"protocol={ctx.protocol}"]
    if ctx.sni:
        parts.append(f"sni={ctx.sni}")
    if ctx.alpn:
        parts.append(f"alpn={','.join(ctx.alpn)}")
    if ctx.backend_addr:
        parts.append(f"backend={ctx.backend_addr[0]}:{ctx.backend_addr[1]}")
    if ctx.local_addr:
        parts.append(f"listener={ctx.local_addr[0]}:{ctx.local_addr[1]}")
    return " ".join(parts)


# --------------------------------------------------------------------------- the writer thread


class _Chunk(NamedTuple):
    """A chunk to write; ``data`` None: ``size`` bytes the hook could not keep."""

    timestamp_ns: int
    ctx: HookContext
    inbound: bool
    data: bytes | None
    size: int


class _End(NamedTuple):
    timestamp_ns: int
    ctx: HookContext


# What the hook queues: a chunk, a connection's end, a flush to wait for, or
# None to stop.
_Item: TypeAlias = _Chunk | _End | threading.Event | None


class _Sink:
    """The writer thread's side: turns queued chunks into frames in the file.

    Only the thread touches the file and the sessions, so neither needs a
    lock; the one shared number, the bytes still queued, has its own.
    """

    def __init__(self, file: BinaryIO, path: str, snaplen: int) -> None:
        self.file = file
        self.path = path
        self.snaplen = snaplen
        self.queue: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        self.pending = 0
        self.pending_lock = threading.Lock()
        self.sessions: dict[int, _Session] = {}
        self.failed = False
        self.dirty = False
        self.last_flush = time.monotonic()
        # Its own: RateLimitedLog is not thread-safe, and the hook's is the loop's.
        self.events = RateLimitedLog(log)

    def run(self) -> None:
        get = self.queue.get
        while True:
            try:
                item = get(timeout=FLUSH_INTERVAL_S if self.dirty else None)
            except queue.Empty:
                self.flush()
                continue
            if item is None:
                break
            if isinstance(item, threading.Event):
                self.flush()
                item.set()
                continue
            try:
                if isinstance(item, _Chunk):
                    self.chunk(item)
                else:
                    self.end(item)
                    self.flush()  # a finished connection is readable at once
            except Exception:
                # A bug here must not end the thread: close() would then
                # return with frames unwritten and the queue would only grow.
                self.events.log(logging.ERROR, "pcap-bug", "pcap: frame not written", exc_info=True)
            if self.dirty and time.monotonic() - self.last_flush >= FLUSH_INTERVAL_S:
                self.flush()
        self.flush()
        try:
            self.file.close()
        except OSError:
            self.fail()

    def session(self, timestamp_ns: int, ctx: HookContext) -> _Session:
        session = self.sessions.get(ctx.session_id)
        if session is None:
            client, backend = _endpoints(ctx)
            session = self.sessions[ctx.session_id] = _Session(client, backend, ctx.session_id)
            self.write(
                timestamp_ns, session.frame(True, _SYN, options=_SYN_OPTIONS), _describe(ctx)
            )
            self.write(timestamp_ns, session.frame(False, _SYN | _ACK, options=_SYN_OPTIONS))
            self.write(timestamp_ns, session.frame(True, _ACK))
        return session

    def chunk(self, item: _Chunk) -> None:
        try:
            self.segments(item)
        finally:
            if item.data is not None:
                with self.pending_lock:
                    self.pending -= item.size

    def segments(self, item: _Chunk) -> None:
        session = self.session(item.timestamp_ns, item.ctx)
        side = 0 if item.inbound else 1
        if item.data is None:
            # Not kept (the queue was full): skip its bytes, so Wireshark
            # shows "previous segment not captured" rather than splicing the
            # stream together wrongly.
            session.next_seq[side] = (session.next_seq[side] + item.size) & 0xFFFFFFFF
            return
        data = item.data
        for start in range(0, len(data), MAX_SEGMENT):
            payload = data[start : start + MAX_SEGMENT]
            last = start + MAX_SEGMENT >= len(data)
            flags = _PSH | _ACK if last else _ACK
            self.write(item.timestamp_ns, session.frame(item.inbound, flags, payload))

    def end(self, item: _End) -> None:
        session = self.session(item.timestamp_ns, item.ctx)
        del self.sessions[item.ctx.session_id]
        # Who closed first is not known here; the client is as good a guess as any.
        self.write(item.timestamp_ns, session.frame(True, _FIN | _ACK))
        self.write(item.timestamp_ns, session.frame(False, _FIN | _ACK))
        self.write(item.timestamp_ns, session.frame(True, _ACK))

    def write(self, timestamp_ns: int, frame: bytes, comment: str = "") -> None:
        if self.failed:
            return
        try:
            self.file.write(enhanced_packet(timestamp_ns, frame, self.snaplen, comment))
        except (OSError, ValueError):
            self.fail()
        self.dirty = True

    def flush(self) -> None:
        self.last_flush = time.monotonic()
        if not self.dirty or self.failed:
            return
        self.dirty = False
        try:
            self.file.flush()
        except (OSError, ValueError):
            self.fail()

    def fail(self) -> None:
        # Once, not per frame: the capture is over (the disk is full, the file
        # system went away), but the proxy goes on and the queue keeps draining.
        if not self.failed:
            self.failed = True
            log.error("pcap: writing %s failed; capture stopped", self.path, exc_info=True)


def _stop(sink: _Sink, thread: threading.Thread) -> None:
    """Stop the writer thread after it has written everything queued."""
    sink.queue.put(None)
    thread.join()


# --------------------------------------------------------------------------- the hook


class PcapWriter(ProtocolHook):
    """Write every connection of its routes to the pcapng file ``path``.

    Args:
        path: the file to write; created, or truncated, at once.
        snaplen: keep at most this many bytes of each frame (0: all of it).
            Frames are at most 65569 bytes, so the default keeps everything;
            a smaller value loses payload, and with it Wireshark's decoding.
        max_pending: bytes of chunks that may wait for the writer thread;
            past that (the disk is slower than the traffic), chunks are
            counted in :attr:`dropped_bytes` and left out of the capture,
            where Wireshark shows them as segments not captured.

    Raises:
        ValueError: an empty ``path`` or an out-of-range ``snaplen`` or
            ``max_pending``.
        OSError: the file cannot be created or written.

    Call :meth:`close` (or :meth:`aclose`) once the proxy has stopped: it
    writes what is still queued and ends the writer thread. A writer that is
    never closed is closed when it is garbage-collected or at interpreter
    exit, as long as the interpreter exits normally.
    """

    name = "pcap"

    def __init__(
        self,
        path: str | os.PathLike[str],
        snaplen: int = 262144,
        max_pending: int = 64 << 20,
    ) -> None:
        if not isinstance(path, str | os.PathLike) or not os.fspath(path):
            raise ValueError(f"pcap: path must be a non-empty file name, got {path!r}")
        for label, value, top in (
            ("snaplen", snaplen, 0xFFFFFFFF),
            ("max_pending", max_pending, None),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"pcap: {label} must be a non-negative integer, got {value!r}")
            if top is not None and value > top:
                raise ValueError(f"pcap: {label} must be at most {top}, got {value!r}")
        self.path = os.fspath(path)
        self.snaplen = snaplen
        self.max_pending = max_pending
        #: Chunks (and their bytes) left out because the writer fell behind.
        self.dropped_packets = 0
        self.dropped_bytes = 0
        self._closed = False
        try:
            file = open(self.path, "wb", buffering=1 << 16)  # noqa: SIM115 (the thread closes it)
        except OSError as error:
            raise OSError(
                error.errno, f"pcap: cannot create capture file: {error.strerror}", self.path
            ) from error
        try:
            # The headers are written here, in the caller's thread, so that a
            # file that cannot be written fails the configuration, not the
            # first connection.
            file.write(section_header() + interface_description(snaplen))
            file.flush()
        except OSError as error:
            file.close()
            raise OSError(
                error.errno, f"pcap: cannot write capture file: {error.strerror}", self.path
            ) from error
        self._sink = _Sink(file, self.path, snaplen)
        self._thread = threading.Thread(
            target=self._sink.run, name=f"refractium-pcap:{self.path}", daemon=True
        )
        self._thread.start()
        # The thread must not hold the hook (it would never be collected), so
        # the finalizer closes through the sink; it also runs at exit, before
        # the daemon thread would be killed with frames still queued.
        self._finalizer = weakref.finalize(self, _stop, self._sink, self._thread)

    def on_packet(self, ctx: HookContext, direction: Direction, packet: bytes) -> None:
        """Queue ``packet`` for the writer thread; never blocks."""
        if self._closed:
            return
        timestamp = time.time_ns()
        size = len(packet)
        sink = self._sink
        with sink.pending_lock:
            keep = sink.pending + size <= self.max_pending
            if keep:
                sink.pending += size
        if keep:
            # A bytes object cannot change under the writer thread; anything
            # else (a bytearray, a memoryview) is copied first.
            data = packet if type(packet) is bytes else bytes(packet)
            sink.queue.put(_Chunk(timestamp, ctx, direction is Direction.INBOUND, data, size))
            return
        self.dropped_packets += 1
        self.dropped_bytes += size
        sink.queue.put(_Chunk(timestamp, ctx, direction is Direction.INBOUND, None, size))
        events.log(
            logging.WARNING,
            f"pcap-behind:{self.path}",
            "[%016x] pcap: writing %s is behind by %d bytes; leaving %d bytes out",
            ctx.session_id,
            self.path,
            self.max_pending,
            size,
        )

    def on_close(self, ctx: HookContext) -> None:
        """Queue the connection's FIN exchange; the file is flushed after it."""
        if not self._closed:
            self._sink.queue.put(_End(time.time_ns(), ctx))

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything queued so far is in the file; blocks.

        Returns False if ``timeout`` (seconds) passed first. Not for the
        event loop's thread: use ``await asyncio.to_thread(writer.flush)``.
        """
        if self._closed:
            return True
        done = threading.Event()
        self._sink.queue.put(done)
        return done.wait(timeout)

    def close(self) -> None:
        """Write everything queued, close the file and end the thread; blocks.

        Idempotent. Packets given after it are ignored.
        """
        self._closed = True
        self._finalizer()

    async def aclose(self) -> None:
        """:meth:`close` from a coroutine, without blocking the event loop."""
        self._closed = True
        await asyncio.to_thread(self._finalizer)

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> PcapWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"PcapWriter(path={self.path!r}, snaplen={self.snaplen})"

"""Relaying both ways once a TCP connection's backend is up: flow control and half-close.

:class:`Pipe` is the relaying half of a client connection (the identifying
half is :class:`refractium.relay.connection.ClientProtocol`, which derives
from it); :class:`BackendProtocol` is our connection to the backend and
forwards to its pipe.

Flow control is crosswise: when one side's write buffer passes its
high-water mark, reading from the other side pauses until it drains, so a
slow reader bounds the memory a fast sender can make us hold. A side's
reading may be paused for several reasons at once (``PAUSE_*``); it
resumes when none is left. Half-close is forwarded: an EOF from one side
becomes a FIN to the other once what was sent before it has been written
(see :mod:`refractium.relay.halfclose`), and the connection is closed once
both directions have ended.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import cast

from refractium.config.model import Offence
from refractium.endpoint.api import IDLE
from refractium.hooks.api import Direction
from refractium.hooks.dispatch import Dispatcher
from refractium.relay.context import TcpContext
from refractium.relay.halfclose import send_eof
from refractium.relay.state import CLOSED, CONNECTING, PAUSE_FLOW, PAUSE_HOOKS, PEEKING, State
from refractium.util.logs import RateLimitedLog

log = logging.getLogger(__name__)
events = RateLimitedLog(log)

INBOUND, OUTBOUND = Direction.INBOUND, Direction.OUTBOUND


class Pipe(asyncio.Protocol):
    """The client's transport, its backend's, and the bytes, EOFs and pauses between them."""

    __slots__ = (
        "_backend_early",
        "_eof_from_backend",
        "_eof_from_client",
        "_eof_to_backend",
        "_eof_to_client",
        "_paused_backend",
        "_paused_client",
        "backend",
        "bytes_in",
        "bytes_out",
        "client_addr",
        "ctx",
        "hooks",
        "outcome",
        "packets_in",
        "packets_out",
        "reason",
        "session_id",
        "state",
        "transport",
    )

    def __init__(self, ctx: TcpContext) -> None:
        self.ctx = ctx
        self.state: State = State.PEEKING
        self.transport: asyncio.Transport | None = None
        self.backend: asyncio.Transport | None = None
        self.hooks: Dispatcher | None = None
        self.session_id = 0
        self.client_addr: tuple[str, int] = ("", 0)
        # How it ended, when not plain from the state (see final_outcome),
        # and why, in words (the access log's reason).
        self.outcome: str | None = None
        self.reason: str | None = None
        self.bytes_in = 0  # client -> backend
        self.bytes_out = 0  # backend -> client
        self.packets_in = 0  # reads relayed client -> backend
        self.packets_out = 0
        self._eof_from_client = False
        self._eof_from_backend = False
        # An EOF owed to that side once its write buffer has drained.
        self._eof_to_backend = False
        self._eof_to_client = False
        # Why reading of each side is paused (PAUSE_* bits); resumed at 0.
        self._paused_client = 0
        self._paused_backend = 0
        # Backend bytes (and EOF, as None) held until after_handshake accepts.
        self._backend_early: list[bytes | None] | None = None

    @property
    def closed(self) -> bool:
        return self.state == CLOSED

    # -- what the identifying half provides -----------------------------------

    def backend_up(self, backend: asyncio.Transport) -> None:
        """The backend is connected and accepted: start relaying."""
        raise NotImplementedError

    # -- the client transport's write side --------------------------------

    def pause_writing(self) -> None:
        self._pause_backend(PAUSE_FLOW)

    def resume_writing(self) -> None:
        if self._eof_to_client:
            self._eof_to_client = send_eof(self.transport)
        self._resume_backend(PAUSE_FLOW)

    # -- pausing reading, for several reasons at once ----------------------

    def _pause_client(self, why: int) -> None:
        if not self._paused_client:
            if self.transport is not None:
                self.transport.pause_reading()
            self.ctx.client_paused(self)
        self._paused_client |= why

    def _resume_client(self, why: int) -> None:
        if self._paused_client:
            self._paused_client &= ~why
            if not self._paused_client:
                self.ctx.client_resumed(self)
                _resume_reading(self.transport, self._eof_from_client)

    def _pause_backend(self, why: int) -> None:
        if not self._paused_backend and self.backend is not None:
            self.backend.pause_reading()
        self._paused_backend |= why

    def _resume_backend(self, why: int) -> None:
        if self._paused_backend:
            self._paused_backend &= ~why
            if not self._paused_backend:
                _resume_reading(self.backend, self._eof_from_backend)

    def hooks_full(self) -> None:
        """``overflow = "block"``: stop reading until the hooks catch up."""
        self._pause_client(PAUSE_HOOKS)
        self._pause_backend(PAUSE_HOOKS)

    def hooks_drained(self) -> None:
        self._resume_client(PAUSE_HOOKS)
        self._resume_backend(PAUSE_HOOKS)

    # -- the backend's side -----------------------------------------------

    def backend_data(self, data: bytes) -> None:
        """What the backend sent while after_handshake decided: relay it now."""
        self.bytes_out += len(data)
        self.packets_out += 1
        self.transport.write(data)  # type: ignore[union-attr]
        if self.hooks is not None:
            self.hooks.push(OUTBOUND, data)

    def backend_eof(self) -> bool:
        self._eof_from_backend = True
        if self._eof_from_client:
            self.close_both()
        else:
            self._eof_to_client = send_eof(self.transport)
        return True

    def backend_lost(self) -> None:
        if self.state != CLOSED and self.transport is not None:
            # Flushes what the backend sent before it left.
            self.transport.close()

    def backend_drained(self) -> None:
        if self._eof_to_backend:
            self._eof_to_backend = send_eof(self.backend)
        self._resume_client(PAUSE_FLOW)

    def release_backend_early(self) -> None:
        """Pass on what the backend sent while after_handshake was deciding."""
        held, self._backend_early = self._backend_early, None
        assert held is not None
        for data in held:
            if data is None:
                self.backend_eof()
                return
            self.backend_data(data)

    # -- the client's side ending --------------------------------------------

    def client_eof(self) -> None:
        """The client has sent its EOF while relaying."""
        if self._eof_from_backend:
            self.close_both()
        else:
            self._eof_to_backend = send_eof(self.backend)

    def client_socket(self) -> socket.socket | None:
        transport = self.transport
        return transport.get_extra_info("socket") if transport is not None else None

    def client_gone(self) -> None:
        """The client reset while its reading was paused: end its side now.

        Its slot and descriptor are freed at once; the backend side is
        closed gracefully, so what is buffered for it is still written.
        """
        if log.isEnabledFor(logging.DEBUG):
            log.debug("[%016x] client reset while paused", self.session_id)
        if self.transport is not None:
            self.transport.abort()

    def close_unrouted(self, why: str, offence: Offence | None = None) -> None:
        """Nothing (or no route) identified the client: close it, counted.

        ``offence``: what it counts toward a ban of the client (``[limits]``).
        """
        self.ctx.stats.unidentified_closed += 1
        self.reason = why
        if offence is not None and self.ctx.guard.active:
            self.ctx.guard.offence(self.client_addr[0], offence)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("[%016x] %s:%d closed: %s", self.session_id, *self.client_addr, why)
        self.state = CLOSED
        if self.transport is not None:
            self.transport.close()

    def idle_out(self, idle_s: float) -> None:
        """``idle_timeout_s`` passed with no byte either way: close both sides.

        Counted under the ``idle`` outcome. What is still buffered for a
        side that stopped reading would never be written: such a side is cut.
        """
        if self.state == CLOSED:
            return
        self.outcome = IDLE
        self.reason = f"idle for {idle_s:.1f}s"
        events.log(logging.INFO, "idle", "%s:%d closed: idle for %.1fs", *self.client_addr, idle_s)
        self.state = CLOSED
        for transport in (self.transport, self.backend):
            if transport is None:
                continue
            if transport.get_write_buffer_size():
                transport.abort()
            else:
                transport.close()

    def close_both(self) -> None:
        if self.transport is not None:
            self.transport.close()
        if self.backend is not None:
            self.backend.close()

    def close_by_hook(self) -> None:
        """A hook's handle closed the connection: both sides, flushing what was sent."""
        if self.state == CLOSED:
            return
        self.state = CLOSED
        self.close_both()

    def give_up(self, why: str) -> None:
        self.reason = why
        events.log(logging.WARNING, "give-up", "%s:%d closed: %s", *self.client_addr, why)
        self.state = CLOSED
        if self.transport is not None:
            self.transport.close()

    def shutdown(self) -> None:
        """Server is stopping: drop connections not yet relaying, let the rest finish."""
        if self.state in (PEEKING, CONNECTING) and self.transport is not None:
            self.state = CLOSED
            self.transport.close()

    def abort(self) -> None:
        """Cut the connection (grace period over, or a hook's handle)."""
        if self.transport is not None:
            self.transport.abort()
        if self.backend is not None:
            self.backend.abort()


def _resume_reading(transport: asyncio.Transport | None, eof_seen: bool) -> None:
    # A side that has sent its EOF has nothing more to read; resuming it
    # would only make some loops report the EOF again.
    if transport is not None and not eof_seen and not transport.is_closing():
        transport.resume_reading()


class BackendProtocol(asyncio.Protocol):
    """Our connection to a backend; forwards to its :class:`Pipe`."""

    __slots__ = ("client_transport", "pipe")

    def __init__(self, pipe: Pipe) -> None:
        self.pipe = pipe
        self.client_transport = pipe.transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.pipe.backend_up(cast(asyncio.Transport, transport))

    def data_received(self, data: bytes) -> None:
        pipe = self.pipe
        pipe.bytes_out += len(data)
        pipe.packets_out += 1
        self.client_transport.write(data)  # type: ignore[union-attr]
        if pipe.hooks is not None:
            pipe.hooks.push(OUTBOUND, data)

    def eof_received(self) -> bool:
        return self.pipe.backend_eof()

    def connection_lost(self, exc: Exception | None) -> None:
        self.pipe.backend_lost()

    def pause_writing(self) -> None:
        self.pipe._pause_client(PAUSE_FLOW)

    def resume_writing(self) -> None:
        self.pipe.backend_drained()


class HeldBackendProtocol(BackendProtocol):
    """A backend connection whose outgoing after_handshake has not decided yet.

    ``connection_made`` does not start relaying, and what the backend sends
    meanwhile (a server that speaks first, an EOF) is held, bounded, until
    the hooks accept (or dropped with the connection if they reject).
    """

    __slots__ = ("limit",)

    def __init__(self, pipe: Pipe, limit: int) -> None:
        super().__init__(pipe)
        self.limit = limit

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.client_transport = self.pipe.transport

    def data_received(self, data: bytes) -> None:
        held = self.pipe._backend_early
        if held is None:
            super().data_received(data)
            return
        held.append(data)
        if sum(len(chunk) for chunk in held if chunk) > self.limit:
            self.pipe.give_up("backend sent too much before after_handshake decided")

    def eof_received(self) -> bool:
        held = self.pipe._backend_early
        if held is None:
            return super().eof_received()
        held.append(None)
        return True

"""One accepted TCP connection: admitted, identified, dialled, then relayed.

:class:`ClientProtocol` is the client's connection to us. It takes the
configuration snapshot in force when it is accepted and keeps it to its
end. It reads the first bytes into a bounded buffer (after a PROXY header,
when a trusted upstream must send one: :mod:`refractium.relay.upstream`),
asks the route table where they go, lets the endpoint hooks decide
(:mod:`refractium.relay.gate`), dials through the shared plan
(:mod:`refractium.relay.dial`) and, once the backend is up, hands the
buffered bytes over exactly as received and relays both ways (the
:class:`~refractium.relay.pipe.Pipe` it derives from).

Everything here runs in the event loop thread; nothing blocks.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable
from time import perf_counter
from typing import cast

from refractium.addr import Address, host_port
from refractium.config.model import Offence
from refractium.endpoint.api import (
    FAILED,
    LIMITED,
    REFUSED,
    REJECTED,
    RELAYED,
    UNIDENTIFIED,
    Accept,
    Outcome,
    Reject,
    Verdict,
)
from refractium.protocols.base import Match
from refractium.relay.access import log_tcp_ended
from refractium.relay.context import TcpContext
from refractium.relay.deadlines import Deadline
from refractium.relay.dial import dial
from refractium.relay.gate import Gate
from refractium.relay.halfclose import send_eof
from refractium.relay.packets import start_packet_hooks
from refractium.relay.pipe import INBOUND, BackendProtocol, HeldBackendProtocol, Pipe
from refractium.relay.refusal import count_refusal, ending
from refractium.relay.state import (
    CLOSED,
    CONNECTING,
    HEADER_FORBIDDEN,
    HEADER_REQUIRED,
    NO_HEADER,
    PAUSE_DIAL,
    PEEKING,
    RELAYING,
    Upstream,
)
from refractium.relay.stats import Refused
from refractium.relay.transparent import open_transparent
from refractium.relay.upstream import WAIT, read_header
from refractium.routing import NEED_MORE, Route
from refractium.util.logs import RateLimitedLog
from refractium.wire import proxy_protocol, rejection

log = logging.getLogger(__name__)
events = RateLimitedLog(log)

#: The most one read hands over: uvloop and asyncio both read up to 256 KiB.
READ_MAX = 256 << 10


class ClientProtocol(Pipe):
    """An accepted client connection: peek, route, dial, relay."""

    __slots__ = (
        "_buf",
        "_dial_at",
        "_dialler",
        "_first_at",
        "_gated",
        "_rejected_with",
        "_snap",
        "_table",
        "_timer",
        "accepted_at",
        "backend_addr",
        "connect_s",
        "dial_started",
        "gate",
        "identify_s",
        "limit_key",
        "local_addr",
        "match",
        "route",
        "sockname",
        "upstream",
    )

    def __init__(self, ctx: TcpContext, port: int = 0) -> None:
        super().__init__(ctx)
        # The configuration this connection lives by, whatever reloads come,
        # and the routes of the port it came in on.
        self._snap = snap = ctx.snapshot
        self._table = snap.tables.tcp_at(port)
        self.session_id = random.getrandbits(64)
        # The key the connection is counted under for max_connections_per_ip:
        # the client's IP, or "" for a trusted proxy until its header arrives.
        self.limit_key = ""
        # The address the client connected to, when an upstream PROXY header said.
        self.local_addr: tuple[str, int] | None = None
        self.upstream: Upstream = NO_HEADER
        self.backend_addr: Address | None = None  # the backend dialled (last tried)
        self.route: Route | None = None
        self.match: Match | None = None
        self.gate: Gate | None = None  # the endpoint hooks, when there are any
        self._buf = bytearray()
        # The peek deadline, then the dial's (see refractium.relay.deadlines).
        self._timer: Deadline | None = None
        self._dialler: asyncio.Task[None] | None = None
        # perf_counter() times: uvloop's loop.time() is cached per loop turn, in ms.
        self.accepted_at = perf_counter()
        self._first_at = 0.0  # the first byte, for identify_seconds
        self._dial_at = 0.0  # the route decision
        self.dial_started = 0.0  # the last dial attempt
        # First byte to route decision, and decision to backend up (access log).
        self.identify_s: float | None = None
        self.connect_s: float | None = None
        # The listening socket's address, read only for the access log.
        self.sockname: tuple[str, int] | None = None
        # Whether on_incoming is still deciding (bytes wait in _buf meanwhile).
        self._gated = False
        self._rejected_with: Verdict | None = None

    # -- the client's side ------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport: no isinstance.
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        if not peer:
            # The client reset before we accepted it, and this loop can no
            # longer tell who it was: end it before any limit or hook sees it.
            self.state = CLOSED
            self.ctx.stats.refused["reset"] += 1
            transport.abort()
            return
        host = peer[0]
        if host.startswith("::ffff:") and "." in host:
            host = host[7:]  # an IPv4 client on a dual-stack socket: one client, one key
        self.client_addr = (host, peer[1])
        snap = self._snap
        settings = snap.settings
        if settings.access_log is not None:
            local = transport.get_extra_info("sockname")
            self.sockname = (local[0], local[1]) if local else None
        self.limit_key = host
        if settings.accept_proxy_protocol:
            if settings.trusted(host):
                self.upstream = HEADER_REQUIRED
                self.limit_key = ""  # counted per IP once the header names the client
            else:
                self.upstream = HEADER_FORBIDDEN
        if not self.ctx.admit(self, snap):
            self.state = CLOSED
            transport.close()
            return
        self._timer = self.ctx.deadlines.after(settings.peek_timeout_s, self._peek_timed_out)
        if snap.endpoint is not None:
            local = transport.get_extra_info("sockname")
            gate = self.gate = Gate(
                snap.endpoint,
                self,
                self.session_id,
                self.client_addr,
                (local[0], local[1]) if local else None,
            )
            # Behind a trusted proxy the client is known once its header is read.
            if gate.checks_incoming and self.upstream != HEADER_REQUIRED:
                self._check_incoming(gate)

    def _check_incoming(self, gate: Gate) -> None:
        verdict = gate.incoming(self.client_addr)
        if verdict is Accept:
            return
        if isinstance(verdict, (Outcome, Reject)):
            self.reject(verdict, "on_incoming")
            return
        self._gated = True
        self.ctx.tasks.start(self._await_incoming(verdict))

    async def _await_incoming(self, pending: Awaitable[Verdict]) -> None:
        verdict = await pending
        if self.state == CLOSED:
            return
        self._gated = False
        if verdict is not Accept:
            self.reject(verdict, "on_incoming")
        elif self._eof_from_client:
            self.eof_received()  # the EOF that came while on_incoming was deciding
        elif self._buf:
            self._peek(b"")

    def data_received(self, data: bytes) -> None:
        if self.state == RELAYING:
            self.bytes_in += len(data)
            self.packets_in += 1
            self.backend.write(data)  # type: ignore[union-attr]
            if self.hooks is not None:
                self.hooks.push(INBOUND, data)
        elif self.state == PEEKING:
            self._peek(data)
        elif self.state == CONNECTING:
            self._early(data)

    def _early(self, data: bytes) -> None:
        """Bytes that arrive while dialling: kept for the backend, in order.

        Reading is paused only once they pass the peek buffer: most clients
        send nothing more until answered, and pausing and resuming every
        dial would cost two changes to the loop's poller per connection.
        After the pause at most one read already in flight can come (each
        is at most ``READ_MAX`` on both loops); past that the client is cut.
        """
        buf = self._buf
        buf += data
        limit = self._snap.settings.peek_buffer_size
        if len(buf) > limit:
            if len(buf) > limit + 2 * READ_MAX:
                self.give_up("client sent too much before the backend was up")
            else:
                self._pause_client(PAUSE_DIAL)

    def eof_received(self) -> bool:
        self._eof_from_client = True
        if self.state == RELAYING:
            self.client_eof()
            return True
        if self.state == PEEKING:
            if self._gated:  # on_incoming has not decided: _await_incoming finishes this
                return True
            if self.upstream == HEADER_REQUIRED:
                self._refuse_upstream("closed before its PROXY header was complete")
                return False
            if not self._buf:
                self.close_unrouted("closed before sending anything")
                return False
            self._decide(bytes(self._buf), final=True)
        # CONNECTING: the EOF is forwarded once the backend is up.
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        was = self.state
        self.state = CLOSED
        if self._timer is not None:
            self._timer.cancel()
        if self._dialler is not None and not self._dialler.done():
            self._dialler.cancel()
        if self.backend is not None:
            # close(), not abort(): what the client sent before leaving is
            # still delivered.
            self.backend.close()
        if self.hooks is not None:
            self.hooks.end()
        ctx = self.ctx
        if ctx.release(self) and was == PEEKING and log.isEnabledFor(logging.DEBUG):
            log.debug("[%016x] client left while identifying", self.session_id)
        access = self._snap.settings.access_log
        if access is not None and self.client_addr[0]:
            log_tcp_ended(self, was == PEEKING, access)
        if self.gate is not None:
            route = self.route.name if self.route is not None else None
            self.gate.ended(self, self.final_outcome(), route, self._rejected_with, ctx.tasks.start)

    def final_outcome(self) -> str:
        """How it ended: relayed, rejected, ignored, unidentified, failed, refused or idle."""
        if self.outcome is not None:
            return self.outcome
        if self.backend is not None:
            return RELAYED
        return UNIDENTIFIED if self.route is None else FAILED

    # -- identification ---------------------------------------------------

    def _peek(self, data: bytes) -> None:
        buf = self._buf
        if buf:
            buf += data
            data = bytes(buf)
        else:
            buf += data
            self._first_at = perf_counter()
        if self._gated:  # on_incoming has not decided yet
            if len(buf) > 2 * self._snap.settings.peek_buffer_size:
                self.give_up("client sent too much before on_incoming decided")
            return
        if self.upstream:
            rest = self._read_upstream_header(data)
            if rest is None:
                return
            data = rest
        self._decide(data, final=len(data) >= self._snap.settings.peek_buffer_size)

    def _read_upstream_header(self, data: bytes) -> bytes | None:
        """Check and strip a PROXY header (``accept_proxy_protocol``).

        Returns the bytes after it, or None to wait for more (or when the
        connection was refused).
        """
        result = read_header(self.upstream, data)
        if result is WAIT:
            return None
        if result is False:
            self.upstream = NO_HEADER
            return data
        if isinstance(result, str):
            self._refuse_upstream(result)
            return None
        assert isinstance(result, proxy_protocol.ProxyHeader)
        self.upstream = NO_HEADER
        if result.source is not None:  # None: LOCAL, the upstream's own health check
            client_ip = result.source[0]
            blocked = self.ctx.guard.at_accept(client_ip)
            if blocked is not None:
                self.client_addr = result.source
                self.ctx.block(self, blocked)
                self.state = CLOSED
                if self.transport is not None:
                    self.transport.close()
                return None
            limit = self._snap.settings.max_connections_per_ip
            if self.ctx.limits.rekey(self.limit_key, client_ip, limit) is not None:
                self._refuse_upstream(
                    f"{client_ip}: max_connections_per_ip reached", counter="per_ip_limit"
                )
                return None
            self.limit_key = client_ip
            self.client_addr = result.source
            self.local_addr = result.destination
        del self._buf[: result.length]
        gate = self.gate
        if gate is not None:
            gate.client_known(self.client_addr, self.local_addr)
            if gate.checks_incoming:
                self._check_incoming(gate)
                if self._gated or self.state == CLOSED:
                    return None
        return bytes(self._buf) or None

    def _refuse_upstream(self, why: str, counter: str = "proxy_protocol") -> None:
        self.ctx.stats.refused[counter] += 1
        self.outcome = REFUSED
        self.reason = why
        events.log(logging.WARNING, "proxy-header", "refused %s:%d: %s", *self.client_addr, why)
        self.state = CLOSED
        if self.transport is not None:
            self.transport.close()

    def _decide(self, data: bytes, final: bool) -> None:
        table = self._table
        decision = table.decide(data, final)
        if decision is NEED_MORE:
            return
        route, self.match = decision  # type: ignore[misc]
        self.identify_s = elapsed = perf_counter() - self._first_at
        self.ctx.stats.identify_seconds.observe(elapsed)
        route = route or table.fallback
        if route is None:
            self.close_unrouted("no route matched", Offence.UNIDENTIFIED)
            return
        self._dial(route)

    def _peek_timed_out(self) -> None:
        self._timer = None
        if self.state != PEEKING:
            return
        settings = self._snap.settings
        if self._gated:  # on_incoming is still deciding: its time is not the client's
            self._timer = self.ctx.deadlines.after(settings.peek_timeout_s, self._peek_timed_out)
            return
        self.ctx.stats.peek_timeouts += 1
        if self.upstream == HEADER_REQUIRED:
            self._refuse_upstream("no PROXY header before peek_timeout_ms")
            return
        if self._buf:
            self._decide(bytes(self._buf), final=True)
            return
        table = self._table
        route = table.on_timeout or table.fallback
        if route is None:
            self.close_unrouted("sent nothing before peek_timeout_ms", Offence.PEEK_TIMEOUT)
            return
        self._dial(route)

    # -- dialling ---------------------------------------------------------

    def _dial(self, route: Route) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        config = route.config
        if config is not None and config.connection_rate is not None:
            wait = self.ctx.guard.route_rate(route.id, config.connection_rate, self.client_addr[0])
            if wait:
                self._over_rate(route, wait)
                return
        self.state = CONNECTING
        self.route = route
        self._dial_at = perf_counter()
        self._dialler = self.ctx.tasks.start(self._connect(route))

    async def _connect(self, route: Route) -> None:
        """The dial plan (endpoint hooks first) finds a backend."""
        backend = await dial(
            self,
            route,
            self._table.fallback,
            self.ctx,
            self.gate,
            self._open,
            on_failure=self._dial_failed,
        )
        if backend is None:
            if self.state != CLOSED:
                self.give_up(f"route {route.id}: no backend reachable")
            return
        if self._backend_early is not None:
            self.backend_up(backend)  # held until the outgoing after_handshake accepted

    async def _open(self, address: Address) -> asyncio.Transport:
        """Connect to one backend within ``connect_timeout_ms`` (TimeoutError past it)."""
        loop = self.ctx.loop
        # A deadline that cancels this task, cheaper than asyncio.timeout() on
        # a path taken once per connection.
        self._timer = self.ctx.deadlines.after(
            self._snap.settings.connect_timeout_s, self._dial_timed_out
        )
        try:
            route = self.route
            if route is not None and route.config is not None and route.config.transparent:
                backend = await open_transparent(
                    loop, self._make_backend, self.client_addr[0], address.host, address.port
                )
            else:
                backend, _ = await loop.create_connection(
                    self._make_backend, address.host, address.port
                )
        except asyncio.CancelledError:
            if not self._dial_expired():
                raise  # the client left or the server is stopping
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            raise TimeoutError from None
        finally:
            # In a method of its own: here the attribute still reads as the
            # deadline set above, which the timer itself may have cleared.
            self._cancel_timer()
        return backend

    def _cancel_timer(self) -> None:
        timer = self._timer
        if timer is not None:
            timer.cancel()
            self._timer = None

    def _dial_expired(self) -> bool:
        """True when the pending cancellation came from the dial timer."""
        return self._timer is None

    def _dial_timed_out(self) -> None:
        self._timer = None  # tells _open the cancellation is the timer's
        if self._dialler is not None:
            self._dialler.cancel()

    def _dial_failed(self) -> None:
        self.ctx.stats.dial_failures += 1

    def _make_backend(self) -> BackendProtocol:
        gate = self.gate
        if gate is not None and gate.checks_backend:
            # The outgoing after_handshake decides before anything flows.
            self._backend_early = []
            return HeldBackendProtocol(self, 2 * self._snap.settings.peek_buffer_size)
        return BackendProtocol(self)

    # -- relaying -----------------------------------------------------------

    def backend_up(self, backend: asyncio.Transport) -> None:
        """The dial succeeded: hand over the peeked bytes and start relaying."""
        client = self.transport
        if self.state != CONNECTING or client is None:
            backend.close()
            return
        self.backend = backend
        self.state = RELAYING
        self.connect_s = perf_counter() - self._dial_at
        self.ctx.routed(self)
        if self.gate is not None:
            self.gate.relaying(self.backend_addr, self.dial_started)
        early = self._buf
        self._buf = bytearray()
        self._resume_client(PAUSE_DIAL)
        route = self.route
        assert route is not None
        if route.config is not None and route.config.proxy_protocol:
            local = self.local_addr or client.get_extra_info("sockname")
            header = proxy_protocol.header_for(route.config.proxy_protocol, self.client_addr, local)
            backend.write(header)
        if route.hooks:
            local = self.local_addr or client.get_extra_info("sockname")
            self.hooks = start_packet_hooks(
                self.ctx,
                route,
                self.match,
                session_id=self.session_id,
                client_addr=self.client_addr,
                backend=self.backend_addr,
                local=(local[0], local[1]) if local else None,
                transport="tcp",
                on_full=self.hooks_full,
                on_drained=self.hooks_drained,
            )
        if self.match is not None:  # the JA4 for those who read it later; no hello kept
            self.match.settle(self.gate is not None or self._snap.settings.access_log is not None)
        if early:
            self.bytes_in += len(early)
            self.packets_in += 1
            first = bytes(early)
            backend.write(first)
            if self.hooks is not None:
                self.hooks.push(INBOUND, first)
        if self._eof_from_client:
            self._eof_to_backend = send_eof(backend)
        if self._backend_early is not None:
            self.release_backend_early()
        if route.idle_timeout_s:
            self.ctx.idle.watch(self, route.idle_timeout_s)

    # -- refusing and ending -------------------------------------------------

    def _over_rate(self, route: Route, wait: float) -> None:
        """Over ``route``'s connection rate: refused in the protocol's terms, never dialled."""
        self.route = route
        rate = route.config.connection_rate if route.config is not None else None
        self.outcome = LIMITED
        self.reason = f"route {route.id}: over connection_rate {rate.text if rate else ''}"
        stats = self.ctx.stats
        stats.refused["limited"] += 1
        stats.recent.append(
            Refused(time.time(), "tcp", host_port(self.client_addr), route.id, 429, self.reason)
        )
        match = self.match
        reply = rejection.too_many_for(
            match.protocol if match is not None else None, bytes(self._buf), wait
        )
        self.state = CLOSED
        if self.transport is not None:
            if reply:
                self.transport.write(reply)
            self.transport.close()

    def reject(self, verdict: Verdict, where: str) -> None:
        """Refuse the client in its protocol's terms (see :mod:`refractium.wire.rejection`)."""
        route = self.route.id if self.route is not None else None
        count_refusal(self.ctx.stats, verdict, where, self.client_addr, route)
        self.outcome, self.reason = ending(verdict, where)
        if self.outcome == REJECTED and self.ctx.guard.active:
            self.ctx.guard.offence(self.client_addr[0], Offence.REJECTED)
        reply = b""
        if isinstance(verdict, Reject):
            match = self.match
            protocol = match.protocol if match is not None else None
            reply = rejection.reply_for(
                protocol, bytes(self._buf), verdict.error_code, verdict.reason
            )
        self._rejected_with = verdict
        self.state = CLOSED
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.transport is not None:
            if reply:
                self.transport.write(reply)
            self.transport.close()

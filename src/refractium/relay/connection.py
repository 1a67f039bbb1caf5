"""The TCP data path: one accepted connection, identified then relayed.

:class:`ClientProtocol` is the client's connection to us. It reads the first
bytes into a bounded buffer, asks the route table where they go, dials the
backend (failing over through the pool, then the fallback) and, once
:class:`BackendProtocol` is connected, hands the buffered bytes over exactly
as received and relays both ways.

Flow control is crosswise: when one side's write buffer passes its high-water
mark, reading from the other side pauses until it drains, so a slow reader
bounds the memory a fast sender can make us hold. Half-close is forwarded:
an EOF from one side becomes a FIN to the other once what was sent before
it has been written (see :mod:`refractium.relay.halfclose`), and the connection
is closed once both directions have ended.

Everything here runs in the event loop thread; nothing blocks.
"""

from __future__ import annotations

import asyncio
import logging
import random
from time import perf_counter
from typing import TYPE_CHECKING, Any, cast

from refractium.endpoint import (
    Accept,
    ConnectionInfo,
    ConnectionRecord,
    EventKind,
    Ignore,
    Outcome,
    Reject,
    Side,
    Verdict,
)
from refractium.hooks.api import Direction, HookContext
from refractium.hooks.dispatch import Dispatcher
from refractium.protocols.base import Match
from refractium.relay.halfclose import buffer_empty, shutdown_write, when_drained
from refractium.relay.stats import FAILED, REFUSED, REJECTED, RELAYED, UNROUTED
from refractium.routing import NEED_MORE
from refractium.util.logs import RateLimitedLog
from refractium.wire import proxy_protocol, rejection

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from refractium.addr import Address
    from refractium.endpoint.chain import EndpointChain
    from refractium.relay.tcp import TcpService
    from refractium.routing import Route, RouteTable

log = logging.getLogger(__name__)
events = RateLimitedLog(log)

# Connection states, in order. Plain ints: compared on every chunk.
PEEKING, CONNECTING, RELAYING, CLOSED = range(4)
# What accept_proxy_protocol expects first on a connection.
NO_HEADER, HEADER_REQUIRED, HEADER_FORBIDDEN = range(3)
# Why a side's reading is paused: its peer's send buffer is full; the
# backend is being dialled; the packet hooks are behind (overflow = block).
PAUSE_FLOW, PAUSE_DIAL, PAUSE_HOOKS = 1, 2, 4
INBOUND, OUTBOUND = Direction.INBOUND, Direction.OUTBOUND


class ClientProtocol(asyncio.Protocol):
    """An accepted client connection: peek, route, dial, relay."""

    __slots__ = (
        "__weakref__",  # endpoint hooks' views refer to the connection weakly
        "_backend_early",
        "_buf",
        "_chain",
        "_connector",
        "_dial_started",
        "_eof_from_backend",
        "_eof_from_client",
        "_eof_to_backend",
        "_eof_to_client",
        "_first_at",
        "_gated",
        "_paused_backend",
        "_paused_client",
        "_rejected_with",
        "_service",
        "_timer",
        "backend",
        "backend_addr",
        "bytes_in",
        "bytes_out",
        "client_addr",
        "hooks",
        "limit_key",
        "local_addr",
        "match",
        "outcome",
        "packets_in",
        "packets_out",
        "record",
        "route",
        "session_id",
        "state",
        "transport",
        "upstream",
    )

    def __init__(self, service: TcpService) -> None:
        self._service = service
        self.state = PEEKING
        self.transport: asyncio.Transport | None = None
        self.backend: asyncio.Transport | None = None
        self.backend_addr: Address | None = None  # the backend dialled (last tried)
        self._buf = bytearray()
        self._timer: asyncio.TimerHandle | None = None
        self._connector: asyncio.Task[None] | None = None
        self._eof_from_client = False
        self._eof_from_backend = False
        # An EOF owed to that side once its write buffer has drained.
        self._eof_to_backend = False
        self._eof_to_client = False
        self.client_addr: tuple[str, int] = ("", 0)
        # The key the connection is counted under for max_connections_per_ip:
        # the client's IP, or "" for a trusted proxy until its header arrives.
        self.limit_key = ""
        # The address the client connected to, when an upstream PROXY header said.
        self.local_addr: tuple[str, int] | None = None
        self.upstream = NO_HEADER
        # Why reading of each side is paused (PAUSE_* bits); resumed at 0.
        self._paused_client = 0
        self._paused_backend = 0
        self.hooks: Dispatcher | None = None
        self.session_id = random.getrandbits(64)
        self.route: Route | None = None
        self.match: Match | None = None
        self.bytes_in = 0  # client -> backend
        self.bytes_out = 0  # backend -> client
        self.packets_in = 0  # reads relayed client -> backend
        self.packets_out = 0
        # How it ended, when not plain from the state (see stats.RELAYED...).
        self.outcome: str | None = None
        # perf_counter() times: uvloop's loop.time() is cached per loop turn, in ms.
        self._first_at = 0.0  # the first byte, for identify_seconds
        self._dial_started = 0.0
        # Endpoint hooks: the engine's chain when the connection came in, the
        # record their ConnectionInfo views read, and whether on_incoming is
        # still deciding (bytes wait in _buf meanwhile).
        self._chain: EndpointChain | None = None
        self.record: ConnectionRecord | None = None
        self._gated = False
        self._rejected_with: Verdict | None = None
        # Backend bytes (and EOF, as None) held until after_handshake accepts.
        self._backend_early: list[bytes | None] | None = None

    # -- the client's side ------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport: no isinstance.
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        if peer:
            host = peer[0]
            if host.startswith("::ffff:") and "." in host:
                host = host[7:]  # an IPv4 client on a dual-stack socket: one client, one key
            self.client_addr = (host, peer[1])
        service = self._service
        self.limit_key = self.client_addr[0]
        if service.accept_proxy_protocol:
            if service.trusted(self.client_addr[0]):
                self.upstream = HEADER_REQUIRED
                self.limit_key = ""  # counted per IP once the header names the client
            else:
                self.upstream = HEADER_FORBIDDEN
        if not service.admit(self):
            self.state = CLOSED
            transport.close()
            return
        self._timer = service.loop.call_later(service.peek_timeout_s, self._peek_timed_out)
        chain = service.endpoint
        if chain is not None:
            self._start_endpoint(chain, transport)

    def _start_endpoint(self, chain: EndpointChain, transport: asyncio.Transport) -> None:
        self._chain = chain
        if chain.needs_record:
            local = self.local_addr or transport.get_extra_info("sockname")
            self.record = ConnectionRecord(
                self, self.session_id, self.client_addr, (local[0], local[1]) if local else None
            )
        # Behind a trusted proxy the client is known once its header is read.
        if chain.incoming and self.upstream != HEADER_REQUIRED:
            self._check_incoming(chain)

    def _check_incoming(self, chain: EndpointChain) -> None:
        verdict = chain.run(chain.incoming, self.client_addr, where="on_incoming")
        if verdict is Accept:
            return
        if isinstance(verdict, (Outcome, Reject)):
            self._reject(verdict, "on_incoming")
            return
        self._gated = True
        self._service.start(self._await_incoming(verdict))

    async def _await_incoming(self, pending: Awaitable[Verdict]) -> None:
        verdict = await pending
        if self.state == CLOSED:
            return
        self._gated = False
        if verdict is not Accept:
            self._reject(verdict, "on_incoming")
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
            # Bytes that arrive while dialling (some loops deliver a read
            # already in flight after pause_reading): keep them, bounded.
            self._buf += data
            if len(self._buf) > 2 * self._service.peek_buffer_size:
                self._give_up("client sent too much before the backend was up")

    def eof_received(self) -> bool:
        self._eof_from_client = True
        if self.state == RELAYING:
            if self._eof_from_backend:
                self._close_both()
            else:
                self._eof_to_backend = self._send_eof(self.backend)
            return True
        if self.state == PEEKING:
            if self._gated:  # on_incoming has not decided: _await_incoming finishes this
                self._eof_from_client = True
                return True
            if self.upstream == HEADER_REQUIRED:
                self._refuse_upstream("closed before its PROXY header was complete")
                return False
            if not self._buf:
                self._close_unrouted("closed before sending anything")
                return False
            self._decide(bytes(self._buf), final=True)
        # CONNECTING: the EOF is forwarded once the backend is up.
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        was = self.state
        self.state = CLOSED
        if self._timer is not None:
            self._timer.cancel()
        if self._connector is not None and not self._connector.done():
            self._connector.cancel()
        if self.backend is not None:
            # close(), not abort(): what the client sent before leaving is
            # still delivered.
            self.backend.close()
        if self.hooks is not None:
            self.hooks.end()
        self._service.release(self, was)
        if self.record is not None:
            self._end_record()

    def _end_record(self) -> None:
        """Final figures for the record's views, then every on_close hook."""
        assert self.record is not None
        assert self._chain is not None
        route = self.route.name if self.route is not None else None
        self._chain.ended(
            self.record,
            self,
            self.final_outcome(),
            route,
            self._rejected_with,
            self._service.start,
        )

    def final_outcome(self) -> str:
        """How the connection ended: relayed, rejected, unrouted, failed, refused."""
        if self.outcome is not None:
            return self.outcome
        if self.backend is not None:
            return RELAYED
        return UNROUTED if self.route is None else FAILED

    def pause_writing(self) -> None:
        self._pause_backend(PAUSE_FLOW)

    def resume_writing(self) -> None:
        if self._eof_to_client:
            self._eof_to_client = self._send_eof(self.transport)
        self._resume_backend(PAUSE_FLOW)

    # -- pausing reading, for several reasons at once ----------------------

    def _pause_client(self, why: int) -> None:
        if not self._paused_client and self.transport is not None:
            self.transport.pause_reading()
        self._paused_client |= why

    def _resume_client(self, why: int) -> None:
        if self._paused_client:
            self._paused_client &= ~why
            if not self._paused_client:
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

    def _hooks_full(self) -> None:
        """``overflow = "block"``: stop reading until the hooks catch up."""
        self._pause_client(PAUSE_HOOKS)
        self._pause_backend(PAUSE_HOOKS)

    def _hooks_drained(self) -> None:
        self._resume_client(PAUSE_HOOKS)
        self._resume_backend(PAUSE_HOOKS)

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
            if len(buf) > 2 * self._service.peek_buffer_size:
                self._give_up("client sent too much before on_incoming decided")
            return
        if self.upstream:
            rest = self._read_upstream_header(data)
            if rest is None:
                return
            data = rest
        self._decide(data, final=len(data) >= self._service.peek_buffer_size)

    def _read_upstream_header(self, data: bytes) -> bytes | None:
        """Check and strip a PROXY header (``accept_proxy_protocol``).

        Returns the bytes after it, or None to wait for more (or when the
        connection was refused). Trusted upstreams must send a header;
        anyone else must not.
        """
        result = proxy_protocol.parse(data)
        if result is proxy_protocol.NEED_MORE:
            return None
        if self.upstream == HEADER_FORBIDDEN:
            if result is proxy_protocol.NOT_PROXY:
                self.upstream = NO_HEADER
                return data
            self._refuse_upstream("a PROXY header from an untrusted address")
            return None
        if not isinstance(result, proxy_protocol.ProxyHeader):
            why = result.reason if isinstance(result, proxy_protocol.Malformed) else "none sent"
            self._refuse_upstream(f"no valid PROXY header from a trusted proxy: {why}")
            return None
        self.upstream = NO_HEADER
        if result.source is not None:  # None: LOCAL, the upstream's own health check
            refusal = self._service.limits.rekey(self.limit_key, result.source[0])
            if refusal is not None:
                self._refuse_upstream(
                    f"{result.source[0]}: max_connections_per_ip reached", counter="per_ip_limit"
                )
                return None
            self.limit_key = result.source[0]
            self.client_addr = result.source
            self.local_addr = result.destination
        del self._buf[: result.length]
        chain = self._chain
        if chain is not None:
            if self.record is not None:
                self.record.client_addr = self.client_addr
                self.record.local_addr = self.local_addr or self.record.local_addr
            if chain.incoming:
                self._check_incoming(chain)
                if self._gated or self.state == CLOSED:
                    return None
        return bytes(self._buf) or None

    def _refuse_upstream(self, why: str, counter: str = "proxy_protocol") -> None:
        self._service.stats.refused[counter] += 1
        self.outcome = REFUSED
        events.log(logging.WARNING, "proxy-header", "refused %s:%d: %s", *self.client_addr, why)
        self.state = CLOSED
        if self.transport is not None:
            self.transport.close()

    def _decide(self, data: bytes, final: bool) -> None:
        table = self._service.tables.tcp
        decision = table.decide(data, final)
        if decision is NEED_MORE:
            return
        route, self.match = decision  # type: ignore[misc]
        self._service.stats.identify_seconds.observe(perf_counter() - self._first_at)
        route = route or table.fallback
        if route is None:
            self._close_unrouted("no route matched")
            return
        self._dial(route, table)

    def _peek_timed_out(self) -> None:
        self._timer = None
        if self.state != PEEKING:
            return
        if self._gated:  # on_incoming is still deciding: its time is not the client's
            service = self._service
            self._timer = service.loop.call_later(service.peek_timeout_s, self._peek_timed_out)
            return
        self._service.stats.peek_timeouts += 1
        if self.upstream == HEADER_REQUIRED:
            self._refuse_upstream("no PROXY header before peek_timeout_ms")
            return
        if self._buf:
            self._decide(bytes(self._buf), final=True)
            return
        table = self._service.tables.tcp
        route = table.on_timeout or table.fallback
        if route is None:
            self._close_unrouted("sent nothing before peek_timeout_ms")
            return
        self._dial(route, table)

    # -- dialling ---------------------------------------------------------

    def _dial(self, route: Route, table: RouteTable) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.state = CONNECTING
        self.route = route
        assert self.transport is not None
        self._pause_client(PAUSE_DIAL)
        self._connector = self._service.start(self._connect(route, table))

    async def _connect(self, route: Route, table: RouteTable) -> None:
        """Dial the route's pool in the balancer's order, then the fallback."""
        service = self._service
        loop = service.loop
        health = service.health
        chain = self._chain
        record = self.record
        if record is not None:
            self._identified(record, route)
            if chain is not None and chain.after_handshake:
                info = ConnectionInfo(record, Side.SERVER)
                if not await self._endpoint_allows(chain.after_handshake, "after_handshake", info):
                    return
        client_ip = self.client_addr[0]
        fallback = table.fallback
        targets = (route,) if fallback is None or fallback is route else (route, fallback)
        for target in targets:
            # Healthy members only, the balancer's choice first; none up: the fallback.
            candidates = target.pool.candidates(
                client_ip, is_up=health.is_up, active=service.active
            )
            for address in candidates:
                self.route = target
                self.backend_addr = address
                if chain is not None and record is not None and chain.before_connect:
                    record.backend_addr = (address.host, address.port)
                    remote = (address.host, address.port)
                    info = ConnectionInfo(record, Side.SERVER)
                    allowed = await self._endpoint_allows(
                        chain.before_connect, "before_connect", remote, info
                    )
                    if not allowed:
                        return
                # A timer that cancels this task, cheaper than asyncio.timeout()
                # on a path taken once per connection.
                self._timer = loop.call_later(service.connect_timeout_s, self._dial_timed_out)
                self._dial_started = perf_counter()
                try:
                    backend, _ = await loop.create_connection(
                        self._make_backend, address.host, address.port
                    )
                    failure: object = None
                except OSError as exc:
                    # "connection refused", as the health checks word it.
                    failure = exc.strerror.lower() if exc.strerror else exc
                except asyncio.CancelledError:
                    if not self._dial_expired():
                        raise  # the client left or the server is stopping
                    task = asyncio.current_task()
                    if task is not None:
                        task.uncancel()
                    failure = "timed out"
                finally:
                    if self._timer is not None:
                        self._timer.cancel()
                        self._timer = None
                if failure is None:
                    health.report_success(address)
                    if self._backend_early is not None:
                        # Outside the dial timer: the hooks' time is not the dial's.
                        await self._outgoing_handshake(backend)
                    return
                service.stats.dial_failures += 1
                health.report_failure(address, str(failure))
                events.log(
                    logging.WARNING,
                    f"dial:{address}",
                    "route %s: cannot connect to %s: %s",
                    target.name,
                    address,
                    failure,
                )
                if self.state == CLOSED:
                    return
        self._give_up(f"route {route.name}: no backend reachable")

    def _dial_expired(self) -> bool:
        """True when the pending cancellation came from the dial timer."""
        return self._timer is None

    def _dial_timed_out(self) -> None:
        self._timer = None  # tells _connect the cancellation is ours
        if self._connector is not None:
            self._connector.cancel()

    def _make_backend(self) -> BackendProtocol:
        chain = self._chain
        if chain is not None and chain.after_handshake:
            # The outgoing after_handshake decides before anything flows.
            self._backend_early = []
            return HeldBackendProtocol(self)
        return BackendProtocol(self)

    # -- endpoint hooks ---------------------------------------------------

    def _identified(self, record: ConnectionRecord, route: Route) -> None:
        match = self.match
        record.client_addr = self.client_addr
        record.protocol = route.name
        record.sni = match.sni if match is not None else None
        record.alpn = match.alpn if match is not None else ()
        record.emit(EventKind.IDENTIFIED)

    async def _endpoint_allows(self, calls: tuple[Any, ...], where: str, *args: object) -> bool:
        """Run endpoint hooks; on a Reject, reject the client and return False."""
        assert self._chain is not None
        verdict = await self._chain.decide(calls, *args, where=where)
        if self.state == CLOSED:  # the client left while the hooks thought
            return False
        if verdict is Accept:
            return True
        self._reject(verdict, where)
        return False

    async def _outgoing_handshake(self, backend: asyncio.BaseTransport) -> None:
        """The backend is connected: its after_handshake (CLIENT side) decides."""
        transport = cast(asyncio.Transport, backend)
        record = self.record
        assert record is not None
        assert self._chain is not None
        record.backend_addr = self._backend_address()
        record.connect_s = perf_counter() - self._dial_started
        info = ConnectionInfo(record, Side.CLIENT)
        if await self._endpoint_allows(self._chain.after_handshake, "after_handshake", info):
            self._backend_up(transport)
        else:
            transport.close()

    def _backend_address(self) -> tuple[str, int] | None:
        address = self.backend_addr
        return (address.host, address.port) if address is not None else None

    def _reject(self, verdict: Verdict, where: str) -> None:
        """Refuse the client in its protocol's terms (see :mod:`refractium.wire.rejection`)."""
        stats = self._service.stats
        self.outcome = REJECTED
        reply = b""
        if verdict is Ignore:
            stats.ignored += 1
        elif isinstance(verdict, Reject):
            stats.rejected[verdict.error_code] += 1
            match = self.match
            reply = rejection.reply_for(
                match.protocol if match is not None else None,
                bytes(self._buf),
                verdict.error_code,
                verdict.reason,
            )
            route = self.route
            events.log(
                logging.INFO,
                f"reject:{verdict.error_code}",
                "rejected %s:%d (%s, %s): %d %s",
                *self.client_addr,
                route.name if route is not None else "not identified",
                where,
                verdict.error_code,
                verdict.reason.decode("utf-8", "replace"),
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

    def close_by_hook(self) -> None:
        """A hook's handle closed the connection: both sides, flushing what was sent."""
        if self.state == CLOSED:
            return
        self.state = CLOSED
        self._close_both()

    def _backend_up(self, backend: asyncio.Transport) -> None:
        """The dial succeeded: hand over the peeked bytes and start relaying."""
        client = self.transport
        if self.state != CONNECTING or client is None:
            backend.close()
            return
        self.backend = backend
        self.state = RELAYING
        service = self._service
        service.active[self.backend_addr] += 1  # type: ignore[index]
        service.routed(self)
        record = self.record
        if record is not None:
            if record.connect_s is None:
                record.connect_s = perf_counter() - self._dial_started
            record.backend_addr = self._backend_address()
            record.emit(EventKind.BACKEND_CONNECTED)
        early = self._buf
        self._buf = bytearray()
        self._resume_client(PAUSE_DIAL)
        route = self.route
        if route is not None and route.config is not None and route.config.proxy_protocol:
            local = self.local_addr or client.get_extra_info("sockname")
            header = proxy_protocol.header_for(route.config.proxy_protocol, self.client_addr, local)
            backend.write(header)
        if route is not None and route.hooks:
            self._start_hooks(route, client)
        if early:
            self.bytes_in += len(early)
            self.packets_in += 1
            first = bytes(early)
            backend.write(first)
            if self.hooks is not None:
                self.hooks.push(INBOUND, first)
        if self._eof_from_client:
            self._eof_to_backend = self._send_eof(backend)
        if self._backend_early is not None:
            self._release_backend_early()

    def _release_backend_early(self) -> None:
        """Pass on what the backend sent while after_handshake was deciding."""
        held, self._backend_early = self._backend_early, None
        assert held is not None
        assert self.transport is not None
        for data in held:
            if data is None:
                self._backend_eof()
                return
            self.bytes_out += len(data)
            self.packets_out += 1
            self.transport.write(data)
            if self.hooks is not None:
                self.hooks.push(OUTBOUND, data)

    def _start_hooks(self, route: Route, client: asyncio.Transport) -> None:
        """Start this connection's packet-hook queue (the route has hooks)."""
        match = self.match
        local = self.local_addr or client.get_extra_info("sockname")
        backend = self.backend_addr
        ctx = HookContext(
            client_addr=self.client_addr,
            protocol=route.name,
            session_id=self.session_id,
            sni=match.sni if match else None,
            alpn=match.alpn if match else (),
            backend_addr=(backend.host, backend.port) if backend else None,
            local_addr=(local[0], local[1]) if local else None,
        )
        service = self._service
        self.hooks = Dispatcher(
            ctx,
            route.hooks,
            service.hook_stats,
            block=route.block_hooks,
            on_full=self._hooks_full,
            on_drained=self._hooks_drained,
            spawn=service.start,
            inline=route.plain_hooks,
        )

    # -- the backend's side -----------------------------------------------

    def _backend_eof(self) -> bool:
        self._eof_from_backend = True
        if self._eof_from_client:
            self._close_both()
        else:
            self._eof_to_client = self._send_eof(self.transport)
        return True

    def _backend_lost(self) -> None:
        if self.state != CLOSED and self.transport is not None:
            # Flushes what the backend sent before it left.
            self.transport.close()

    # -- ending -----------------------------------------------------------

    @staticmethod
    def _send_eof(transport: asyncio.Transport | None) -> bool:
        """Half-close ``transport`` now, or once drained; True while still owed.

        See :mod:`refractium.relay.halfclose` for why not ``write_eof()``.
        """
        if transport is None or transport.is_closing():
            return False
        if buffer_empty(transport):
            shutdown_write(transport)
            return False
        when_drained(transport)
        return True

    def _close_both(self) -> None:
        if self.transport is not None:
            self.transport.close()
        if self.backend is not None:
            self.backend.close()

    def _close_unrouted(self, why: str) -> None:
        self._service.stats.unidentified_closed += 1
        if log.isEnabledFor(logging.DEBUG):
            log.debug("[%016x] %s:%d closed: %s", self.session_id, *self.client_addr, why)
        self.state = CLOSED
        if self.transport is not None:
            self.transport.close()

    def _give_up(self, why: str) -> None:
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
        """Grace period over: cut the connection."""
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
    """Our connection to a backend; forwards to its :class:`ClientProtocol`."""

    __slots__ = ("client", "client_transport")

    def __init__(self, client: ClientProtocol) -> None:
        self.client = client
        self.client_transport = client.transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.client._backend_up(cast(asyncio.Transport, transport))

    def data_received(self, data: bytes) -> None:
        client = self.client
        client.bytes_out += len(data)
        client.packets_out += 1
        self.client_transport.write(data)  # type: ignore[union-attr]
        if client.hooks is not None:
            client.hooks.push(OUTBOUND, data)

    def eof_received(self) -> bool:
        return self.client._backend_eof()

    def connection_lost(self, exc: Exception | None) -> None:
        self.client._backend_lost()

    def pause_writing(self) -> None:
        self.client._pause_client(PAUSE_FLOW)

    def resume_writing(self) -> None:
        client = self.client
        if client._eof_to_backend:
            client._eof_to_backend = client._send_eof(client.backend)
        client._resume_client(PAUSE_FLOW)


class HeldBackendProtocol(BackendProtocol):
    """A backend connection whose outgoing after_handshake has not decided yet.

    ``connection_made`` does not start relaying, and what the backend sends
    meanwhile (a server that speaks first, an EOF) is held, bounded, until
    the hooks accept (or dropped with the connection if they reject).
    """

    __slots__ = ()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.client_transport = self.client.transport

    def data_received(self, data: bytes) -> None:
        held = self.client._backend_early
        if held is None:
            super().data_received(data)
            return
        held.append(data)
        if sum(len(chunk) for chunk in held if chunk) > 2 * self.client._service.peek_buffer_size:
            self.client._give_up("backend sent too much before after_handshake decided")

    def eof_received(self) -> bool:
        held = self.client._backend_early
        if held is None:
            return super().eof_received()
        held.append(None)
        return True

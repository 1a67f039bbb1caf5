"""UDP listeners and flows: identify a flow by its first datagrams, relay both ways.

A flow is keyed by the client's address. Its first datagram (or first few,
when a probe such as QUIC needs the rest of a ClientHello) picks the route;
the flow then gets a socket of its own, connected to one backend of the
route's pool, so the backend's replies come back on that socket and go to
that client alone. A flow lives until it has been idle (no datagram either
way) for ``udp_session_timeout_s``; at most ``udp_max_sessions`` flows exist
at a time, and a client beyond that is refused (counted, logged).

UDP has no back-pressure: a datagram that finds its socket's send backlog
full is dropped and counted, as a router would. Datagrams are relayed whole,
one ``sendto`` each, whatever their size.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
from collections import Counter
from collections.abc import Awaitable, Coroutine
from time import perf_counter
from typing import TYPE_CHECKING, Any

from refractium.endpoint import (
    Accept,
    ConnectionInfo,
    ConnectionRecord,
    EventKind,
    Outcome,
    Reject,
    Side,
    Verdict,
)
from refractium.errors import RefractiumError
from refractium.hooks.api import Direction, HookContext
from refractium.hooks.dispatch import Dispatcher, HookStats
from refractium.relay.stats import FAILED, REJECTED, RELAYED, UNROUTED, UdpStats
from refractium.routing import NEED_MORE
from refractium.util.logs import RateLimitedLog

if TYPE_CHECKING:
    from refractium.addr import Address
    from refractium.backends.health import HealthChecker
    from refractium.config import ServerConfig
    from refractium.endpoint.chain import EndpointChain
    from refractium.routing import Route, RouteTable, Tables

log = logging.getLogger(__name__)
events = RateLimitedLog(log)

IDENTIFYING, CONNECTING, RELAYING, CLOSED = range(4)
INBOUND, OUTBOUND = Direction.INBOUND, Direction.OUTBOUND

#: Datagrams (and bytes) a flow holds while it is identified and its backend
#: socket opened; beyond that they are dropped.
HELD_DATAGRAMS = 16
HELD_BYTES = 256 << 10
#: A socket's send backlog beyond which datagrams are dropped.
SEND_BACKLOG = 1 << 20
#: Receive buffer asked of the kernel for listeners and flow sockets: bursts.
SOCKET_BUFFER = 4 << 20


def _nothing() -> None:
    pass


class UdpListener(asyncio.DatagramProtocol):
    """One bound UDP socket: hands each datagram to its client's flow."""

    def __init__(self, service: UdpService) -> None:
        self.service = service
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        flow = self.service.flows.get(addr)
        if flow is not None:
            flow.from_client(data)
            return
        flow = self.service.new_flow(self, addr)
        if flow is not None:
            flow.start(data)

    def error_received(self, exc: Exception) -> None:
        # An ICMP error for a reply we sent a client: nothing to do.
        log.debug("udp listener: %s", exc)


class BackendDatagram(asyncio.DatagramProtocol):
    """A flow's own socket, connected to its backend."""

    __slots__ = ("flow",)

    def __init__(self, flow: Flow) -> None:
        self.flow = flow

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.flow.from_backend(data)

    def error_received(self, exc: Exception) -> None:
        self.flow.backend_error(exc)


class Flow:
    """One client's UDP flow: identify, open a backend socket, relay, expire."""

    __slots__ = (
        "__weakref__",
        "_chain",
        "_held",
        "_held_bytes",
        "_idle_timer",
        "_peek_timer",
        "_rejected_with",
        "_service",
        "_started",
        "backend",
        "backend_addr",
        "bytes_in",
        "bytes_out",
        "client_addr",
        "dropped",
        "hooks",
        "key",
        "last",
        "listener",
        "match",
        "outcome",
        "packets_in",
        "packets_out",
        "record",
        "route",
        "session_id",
        "state",
    )

    def __init__(self, service: UdpService, listener: UdpListener, key: tuple[Any, ...]) -> None:
        self._service = service
        self.listener = listener
        self.key = key
        self.client_addr: tuple[str, int] = (str(key[0]), int(key[1]))
        self.session_id = random.getrandbits(64)
        self.state = IDENTIFYING
        self.last = service.loop.time()
        self._started = perf_counter()  # loop.time() is coarse on uvloop (ms, per turn)
        self._held: list[bytes] = []
        self._held_bytes = 0
        self.backend: asyncio.DatagramTransport | None = None
        self.backend_addr: Address | None = None
        self.route: Route | None = None
        self.match: Any = None
        self.hooks: Dispatcher | None = None
        self.bytes_in = self.bytes_out = self.packets_in = self.packets_out = 0
        self.dropped = 0
        self.outcome: str | None = None
        self.record: ConnectionRecord | None = None
        self._chain: EndpointChain | None = None
        self._rejected_with: Verdict | None = None
        self._peek_timer: asyncio.TimerHandle | None = None
        self._idle_timer = service.loop.call_later(service.idle_timeout_s, self._check_idle)

    # -- the client's datagrams ---------------------------------------------------

    def from_client(self, data: bytes) -> None:
        self.last = self._service.loop.time()
        if self.state == RELAYING:
            self._send_backend(data)
        elif self.state == CLOSED:
            self._drop()
        else:
            self._hold(data)
            if self.state == IDENTIFYING and len(self._held) > 1 and self._peek_timer is not None:
                self._identify(final=False)

    def _send_backend(self, data: bytes) -> None:
        backend = self.backend
        assert backend is not None
        if backend.get_write_buffer_size() > SEND_BACKLOG:  # type: ignore[attr-defined]
            self._drop()
            return
        backend.sendto(data)
        self.bytes_in += len(data)
        self.packets_in += 1
        if self.hooks is not None:
            self.hooks.push(INBOUND, data)

    def _hold(self, data: bytes) -> None:
        if len(self._held) >= HELD_DATAGRAMS or self._held_bytes + len(data) > HELD_BYTES:
            self._drop()
            return
        self._held.append(data)
        self._held_bytes += len(data)

    def _drop(self) -> None:
        self.dropped += 1
        self._service.stats.dropped += 1

    # -- identification -------------------------------------------------------------

    def start(self, first: bytes) -> None:
        """The flow's first datagram: on_incoming, then identification."""
        self._hold(first)
        chain = self._service.endpoint
        if chain is not None:
            self._chain = chain
            if chain.needs_record:
                sockname = self.listener.transport.get_extra_info("sockname")  # type: ignore[union-attr]
                local = (sockname[0], sockname[1]) if sockname else None
                self.record = ConnectionRecord(self, self.session_id, self.client_addr, local)  # type: ignore[arg-type]
            if chain.incoming:
                verdict = chain.run(chain.incoming, self.client_addr, where="on_incoming")
                if not isinstance(verdict, (Outcome, Reject)):
                    self._service.start(self._await_incoming(verdict))
                    return
                if verdict is not Accept:
                    self._reject(verdict, "on_incoming")
                    return
        self._identify(final=False)

    async def _await_incoming(self, pending: Awaitable[Verdict]) -> None:
        verdict = await pending
        if self.state != IDENTIFYING:
            return
        if verdict is Accept:
            self._identify(final=False)
        else:
            self._reject(verdict, "on_incoming")

    def _identify(self, final: bool) -> None:
        service = self._service
        table = service.tables.udp
        decision = table.decide_datagrams(self._held, final)
        if decision is NEED_MORE:
            if self._peek_timer is None:
                self._peek_timer = service.loop.call_later(
                    service.peek_timeout_s, self._identify_now
                )
            return
        if self._peek_timer is not None:
            self._peek_timer.cancel()
            self._peek_timer = None
        route, self.match = decision  # type: ignore[misc]
        service.stats.identify_seconds.observe(perf_counter() - self._started)
        route = route or table.fallback
        if route is None:
            service.stats.unidentified += 1
            self._close_quietly(UNROUTED)
            return
        self.route = route
        self.state = CONNECTING
        service.start(self._connect(route, table))

    def _identify_now(self) -> None:
        self._peek_timer = None
        if self.state == IDENTIFYING:
            self._identify(final=True)

    # -- the backend socket ---------------------------------------------------------

    async def _connect(self, route: Route, table: RouteTable) -> None:
        service = self._service
        chain, record = self._chain, self.record
        if record is not None:
            record.protocol = route.name
            record.sni = getattr(self.match, "sni", None)
            record.alpn = getattr(self.match, "alpn", ())
            record.emit(EventKind.IDENTIFIED)
            if chain is not None and chain.after_handshake:
                info = ConnectionInfo(record, Side.SERVER)
                if not await self._allows(chain.after_handshake, "after_handshake", info):
                    return
        fallback = table.fallback
        targets = (route,) if fallback is None or fallback is route else (route, fallback)
        for target in targets:
            for address in target.pool.candidates(
                self.client_addr[0], is_up=service.health.is_up, active=service.active
            ):
                self.route = target
                self.backend_addr = address
                remote = (address.host, address.port)
                if record is not None:
                    record.backend_addr = remote
                if chain is not None and record is not None and chain.before_connect:
                    info = ConnectionInfo(record, Side.SERVER)
                    if not await self._allows(chain.before_connect, "before_connect", remote, info):
                        return
                dial_started = perf_counter()
                try:
                    transport, _ = await service.loop.create_datagram_endpoint(
                        lambda: BackendDatagram(self), remote_addr=remote
                    )
                except OSError as exc:
                    service.health.report_failure(address, exc.strerror or str(exc))
                    events.log(
                        logging.WARNING,
                        f"udp-dial:{address}",
                        "route %s: cannot open a UDP socket to %s: %s",
                        target.name,
                        address,
                        exc.strerror or exc,
                    )
                    continue
                if self.state == CLOSED:
                    transport.close()
                    return
                backend = transport
                _grow_buffer(backend)
                if record is not None:
                    record.connect_s = perf_counter() - dial_started
                    if chain is not None and chain.after_handshake:
                        info = ConnectionInfo(record, Side.CLIENT)
                        if not await self._allows(chain.after_handshake, "after_handshake", info):
                            backend.close()
                            return
                self._relay(backend)
                return
        service.stats.failed += 1
        events.log(
            logging.WARNING,
            "udp-give-up",
            "udp %s:%d: no backend for route %s",
            *self.client_addr,
            route.name,
        )
        self._close_quietly(FAILED)

    async def _allows(self, calls: tuple[Any, ...], where: str, *args: object) -> bool:
        assert self._chain is not None
        verdict = await self._chain.decide(calls, *args, where=where)
        if self.state == CLOSED:
            return False
        if verdict is Accept:
            return True
        self._reject(verdict, where)
        return False

    def _relay(self, backend: asyncio.DatagramTransport) -> None:
        service = self._service
        self.backend = backend
        self.state = RELAYING
        route = self.route
        assert route is not None
        service.stats.routed[route.name] += 1
        service.active[self.backend_addr] += 1  # type: ignore[index]
        if self.record is not None:
            self.record.emit(EventKind.BACKEND_CONNECTED)
        if route.hooks:
            self._start_hooks(route)
        held, self._held, self._held_bytes = self._held, [], 0
        for data in held:
            self._send_backend(data)

    def _start_hooks(self, route: Route) -> None:
        match = self.match
        backend = self.backend_addr
        sockname = self.listener.transport.get_extra_info("sockname")  # type: ignore[union-attr]
        ctx = HookContext(
            client_addr=self.client_addr,
            protocol=route.name,
            session_id=self.session_id,
            sni=getattr(match, "sni", None),
            alpn=getattr(match, "alpn", ()),
            backend_addr=(backend.host, backend.port) if backend else None,
            local_addr=(sockname[0], sockname[1]) if sockname else None,
            transport="udp",
        )
        # No back-pressure on UDP: "block" cannot pause a shared socket, so
        # a full hook queue drops for the hooks, as "drop" does.
        self.hooks = Dispatcher(
            ctx,
            route.hooks,
            self._service.hook_stats,
            block=False,
            on_full=_nothing,
            on_drained=_nothing,
            spawn=self._service.start,
            inline=route.plain_hooks,
        )

    # -- the backend's datagrams ------------------------------------------------------

    def from_backend(self, data: bytes) -> None:
        if self.state != RELAYING:
            return
        self.last = self._service.loop.time()
        listener = self.listener.transport
        assert listener is not None
        if listener.get_write_buffer_size() > SEND_BACKLOG:  # type: ignore[attr-defined]
            self._drop()
            return
        listener.sendto(data, self.key)
        self.bytes_out += len(data)
        self.packets_out += 1
        if self.hooks is not None:
            self.hooks.push(OUTBOUND, data)

    def backend_error(self, exc: Exception) -> None:
        # ICMP port unreachable from the backend: it is down, or not yet up.
        if isinstance(exc, ConnectionRefusedError) and self.backend_addr is not None:
            self._service.health.report_failure(self.backend_addr, "connection refused")
        log.debug("udp %s:%d: backend error: %s", *self.client_addr, exc)

    # -- ending -------------------------------------------------------------------------

    def _reject(self, verdict: Verdict, where: str) -> None:
        """UDP has no way to say no: the flow's datagrams are dropped until it idles out."""
        stats = self._service.stats
        self._rejected_with = verdict
        if isinstance(verdict, Reject):
            stats.rejected[verdict.error_code] += 1
            events.log(
                logging.INFO,
                f"udp-reject:{verdict.error_code}",
                "rejected udp %s:%d (%s, %s): %d %s",
                *self.client_addr,
                self.route.name if self.route is not None else "not identified",
                where,
                verdict.error_code,
                verdict.reason.decode("utf-8", "replace"),
            )
        else:
            stats.ignored += 1
        self._close_quietly(REJECTED)

    def _close_quietly(self, outcome: str) -> None:
        """Stop relaying; later datagrams are dropped until the flow idles out."""
        self.outcome = outcome
        self.state = CLOSED
        self._held = []
        self._held_bytes = 0
        if self._peek_timer is not None:
            self._peek_timer.cancel()
            self._peek_timer = None

    def _check_idle(self) -> None:
        service = self._service
        idle = service.loop.time() - self.last
        if idle < service.idle_timeout_s:
            self._idle_timer = service.loop.call_later(
                service.idle_timeout_s - idle, self._check_idle
            )
            return
        service.stats.expired += 1
        self.end()

    def end(self) -> None:
        """The flow is over (idle, shut down or closed by a hook): forget it."""
        was_relaying = self.state == RELAYING
        self.state = CLOSED
        self._idle_timer.cancel()
        if self._peek_timer is not None:
            self._peek_timer.cancel()
        if self.backend is not None:
            self.backend.close()
        if self.hooks is not None:
            self.hooks.end()
        self._service.forget(self, was_relaying)
        if self.record is not None and self._chain is not None:
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
        if self.outcome is not None:
            return self.outcome
        return RELAYED if self.backend is not None else FAILED

    # What a hook's ConnectionHandle may do.
    def close_by_hook(self) -> None:
        if self.state != CLOSED:
            self.end()

    def abort(self) -> None:
        self.close_by_hook()


class UdpService:
    """The UDP side of the proxy: listeners, flows, limits."""

    def __init__(
        self, server: ServerConfig, tables: Tables, health: HealthChecker, hook_stats: HookStats
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.tables = tables
        self.health = health
        self.hook_stats = hook_stats
        self.endpoint: EndpointChain | None = None
        self.stats = UdpStats()
        self.flows: dict[Any, Flow] = {}
        # Flows relaying per backend, for least_connections.
        self.active: Counter[Address] = Counter()
        self._listeners: list[tuple[asyncio.DatagramTransport, UdpListener]] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self.apply(server)

    def apply(self, server: ServerConfig) -> None:
        """Take new timeouts and limits (a reload); open flows keep theirs."""
        self.idle_timeout_s = server.udp_session_timeout_s
        self.max_flows = server.udp_max_sessions
        self.peek_timeout_s = server.peek_timeout_ms / 1000

    # -- listening ------------------------------------------------------------------

    async def listen(self, binds: tuple[str, ...], port: int) -> None:
        """One socket per bind address; RefractiumError if one cannot be bound."""
        from refractium.relay.tcp import listen_error

        for host in binds:
            try:
                # Bound here, not by the loop: its errors keep their errno.
                sock = _bound_socket(host, port)
                transport, protocol = await self.loop.create_datagram_endpoint(
                    lambda: UdpListener(self), sock=sock
                )
            except OSError as exc:
                self.close_listeners()
                raise RefractiumError("udp " + listen_error(host, port, exc)) from None
            self._listeners.append((transport, protocol))
            addr = transport.get_extra_info("sockname")
            if port == 0:
                port = addr[1]
            log.info(
                "listening on udp %s:%d", f"[{addr[0]}]" if ":" in addr[0] else addr[0], addr[1]
            )

    @property
    def addresses(self) -> list[tuple[str, int]]:
        out = []
        for transport, _ in self._listeners:
            addr = transport.get_extra_info("sockname")
            out.append((addr[0], addr[1]))
        return out

    def close_listeners(self) -> None:
        for transport, _ in self._listeners:
            transport.close()
        self._listeners.clear()

    # -- flows ------------------------------------------------------------------------

    def new_flow(self, listener: UdpListener, key: Any) -> Flow | None:
        if len(self.flows) >= self.max_flows:
            self.stats.refused += 1
            events.log(
                logging.WARNING,
                "udp-max-sessions",
                "refused udp %s:%d: udp_max_sessions (%d) reached",
                key[0],
                key[1],
                self.max_flows,
            )
            return None
        flow = Flow(self, listener, key)
        self.flows[key] = flow
        self.stats.flows += 1
        return flow

    def forget(self, flow: Flow, was_relaying: bool) -> None:
        if self.flows.get(flow.key) is flow:
            del self.flows[flow.key]
        if was_relaying and flow.backend_addr is not None:
            left = self.active[flow.backend_addr] - 1
            if left > 0:
                self.active[flow.backend_addr] = left
            else:
                del self.active[flow.backend_addr]
        self.stats.bytes_in += flow.bytes_in
        self.stats.bytes_out += flow.bytes_out
        self.stats.closed[flow.route.name if flow.route else "", flow.final_outcome()] += 1

    def start(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def shutdown(self) -> None:
        """Stop listening and end every flow (UDP has nothing to drain)."""
        self.close_listeners()
        for flow in list(self.flows.values()):
            flow.end()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.sleep(0)


def _bound_socket(host: str, port: int) -> socket.socket:
    """A non-blocking UDP socket bound to ``host:port`` (the first address it resolves to)."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        if family == socket.AF_INET6 and host in ("::", ""):
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # dual stack, as TCP
        _grow(sock)
        sock.bind(address)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def _grow_buffer(transport: asyncio.BaseTransport) -> None:
    sock = transport.get_extra_info("socket")
    if sock is None:
        return
    _grow(sock)


def _grow(sock: socket.socket) -> None:
    for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        # The kernel caps it (net.core.rmem_max): keep what it gives.
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER)

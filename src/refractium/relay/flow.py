"""One client's UDP flow: identified by its first datagrams, then relayed both ways.

A flow is keyed by the client's address. Its first datagram (or first few,
when a probe such as QUIC needs the rest of a ClientHello) picks the route;
the flow then gets a socket of its own, connected to one backend of the
route's pool (the same dial plan and endpoint gate as TCP:
:mod:`refractium.relay.dial`, :mod:`refractium.relay.gate`), so the
backend's replies come back on that socket and go to that client alone. A
flow lives until it has been idle (no datagram either way) for
``udp_session_timeout_s``.

UDP has no back-pressure: a datagram that finds its socket's send backlog
full is dropped and counted, as a router would. Datagrams are relayed whole,
one ``sendto`` each, whatever their size.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable
from time import perf_counter
from typing import Any

from refractium.addr import Address
from refractium.endpoint.api import (
    FAILED,
    RELAYED,
    UNIDENTIFIED,
    Accept,
    Outcome,
    Reject,
    Verdict,
)
from refractium.hooks.api import Direction
from refractium.hooks.dispatch import Dispatcher
from refractium.protocols.base import Match
from refractium.relay.access import log_ended
from refractium.relay.context import UdpContext
from refractium.relay.dial import dial
from refractium.relay.gate import Gate
from refractium.relay.listen import grow_buffers
from refractium.relay.packets import start_packet_hooks
from refractium.relay.refusal import count_refusal, ending
from refractium.relay.state import CLOSED, CONNECTING, PEEKING, RELAYING, State
from refractium.routing import NEED_MORE, Route
from refractium.util.logs import RateLimitedLog

log = logging.getLogger(__name__)
events = RateLimitedLog(log)

INBOUND, OUTBOUND = Direction.INBOUND, Direction.OUTBOUND

#: Datagrams (and bytes) a flow holds while it is identified and its backend
#: socket opened; beyond that they are dropped.
HELD_DATAGRAMS = 16
HELD_BYTES = 256 << 10
#: A socket's send backlog beyond which datagrams are dropped.
SEND_BACKLOG = 1 << 20


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
        "_answered",
        "_born",
        "_dial_at",
        "_held",
        "_held_bytes",
        "_idle_timer",
        "_peek_timer",
        "_rejected_with",
        "_snap",
        "_started",
        "_table",
        "backend",
        "backend_addr",
        "bytes_in",
        "bytes_out",
        "client_addr",
        "connect_s",
        "ctx",
        "dial_started",
        "dropped",
        "gate",
        "hooks",
        "identify_s",
        "key",
        "last",
        "listener",
        "local_addr",
        "match",
        "outcome",
        "packets_in",
        "packets_out",
        "reason",
        "route",
        "session_id",
        "state",
    )

    def __init__(
        self,
        ctx: UdpContext,
        listener: asyncio.DatagramTransport,
        key: tuple[Any, ...],
        port: int = 0,
    ) -> None:
        self.ctx = ctx
        self._snap = ctx.snapshot  # kept to the flow's end, whatever reloads come
        self._table = self._snap.tables.udp_at(port)  # the routes of its listen port
        self.listener = listener
        self.key = key
        self.client_addr: tuple[str, int] = (str(key[0]), int(key[1]))
        sockname = listener.get_extra_info("sockname")
        self.local_addr = (sockname[0], sockname[1]) if sockname else None
        self.session_id = random.getrandbits(64)
        self.state: State = PEEKING
        self.last = self._born = ctx.loop.time()
        self._started = perf_counter()  # loop.time() is coarse on uvloop (ms, per turn)
        self._dial_at = 0.0  # the route decision
        self.dial_started = 0.0  # the last dial attempt
        # First datagram to route decision, and decision to backend socket (access log).
        self.identify_s: float | None = None
        self.connect_s: float | None = None
        self._held: list[bytes] = []
        self._held_bytes = 0
        self.backend: asyncio.DatagramTransport | None = None
        self.backend_addr: Address | None = None
        self._answered = False  # the backend has replied: it is up (a health report)
        self.route: Route | None = None
        self.match: Match | None = None
        self.hooks: Dispatcher | None = None
        self.bytes_in = self.bytes_out = self.packets_in = self.packets_out = 0
        self.dropped = 0
        self.outcome: str | None = None
        self.reason: str | None = None
        self.gate: Gate | None = None
        self._rejected_with: Verdict | None = None
        self._peek_timer: asyncio.TimerHandle | None = None
        self._idle_timer = ctx.loop.call_later(
            self._snap.settings.udp_idle_timeout_s, self._check_idle
        )

    @property
    def closed(self) -> bool:
        return self.state == CLOSED

    # -- the client's datagrams ---------------------------------------------------

    def from_client(self, data: bytes) -> None:
        self.last = self.ctx.loop.time()
        if self.state == RELAYING:
            self._send_backend(data)
        elif self.state == CLOSED:
            self._drop()
        else:
            self._hold(data)
            if self.state == PEEKING and len(self._held) > 1 and self._peek_timer is not None:
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
        self.ctx.stats.dropped += 1

    # -- identification -------------------------------------------------------------

    def start(self, first: bytes) -> None:
        """The flow's first datagram: on_incoming, then identification."""
        self._hold(first)
        chain = self._snap.endpoint
        if chain is not None:
            gate = self.gate = Gate(chain, self, self.session_id, self.client_addr, self.local_addr)
            if gate.checks_incoming:
                verdict = gate.incoming(self.client_addr)
                if not isinstance(verdict, (Outcome, Reject)):
                    self.ctx.tasks.start(self._await_incoming(verdict))
                    return
                if verdict is not Accept:
                    self.reject(verdict, "on_incoming")
                    return
        self._identify(final=False)

    async def _await_incoming(self, pending: Awaitable[Verdict]) -> None:
        verdict = await pending
        if self.state != PEEKING:
            return
        if verdict is Accept:
            self._identify(final=False)
        else:
            self.reject(verdict, "on_incoming")

    def _identify(self, final: bool) -> None:
        ctx = self.ctx
        table = self._table
        decision = table.decide_datagrams(self._held, final)
        if decision is NEED_MORE:
            if self._peek_timer is None:
                self._peek_timer = ctx.loop.call_later(
                    self._snap.settings.peek_timeout_s, self._identify_now
                )
            return
        if self._peek_timer is not None:
            self._peek_timer.cancel()
            self._peek_timer = None
        route, self.match = decision  # type: ignore[misc]
        self._dial_at = now = perf_counter()
        self.identify_s = elapsed = now - self._started
        ctx.stats.identify_seconds.observe(elapsed)
        route = route or table.fallback
        if route is None:
            ctx.stats.unidentified += 1
            self.reason = "no route matched"
            self._close_quietly(UNIDENTIFIED)
            return
        self.route = route
        self.state = CONNECTING
        ctx.tasks.start(self._connect(route))

    def _identify_now(self) -> None:
        self._peek_timer = None
        if self.state == PEEKING:
            self._identify(final=True)

    # -- the backend socket ---------------------------------------------------------

    async def _connect(self, route: Route) -> None:
        """The dial plan (endpoint hooks first) opens a backend socket."""
        backend = await dial(
            self,
            route,
            self._table.fallback,
            self.ctx,
            self.gate,
            self._open,
            confirmed=False,  # a UDP socket proves nothing: the first reply does
        )
        if backend is not None:
            if self.state == CLOSED:
                backend.close()
                return
            self._relay(backend)
            return
        if self.state == CLOSED:
            return
        self.ctx.stats.failed += 1
        events.log(
            logging.WARNING,
            "udp-give-up",
            "udp %s:%d: no backend for route %s",
            *self.client_addr,
            route.id,
        )
        self.reason = f"route {route.id}: no backend socket"
        self._close_quietly(FAILED)

    async def _open(self, address: Address) -> asyncio.DatagramTransport:
        transport, _ = await self.ctx.loop.create_datagram_endpoint(
            lambda: BackendDatagram(self), remote_addr=(address.host, address.port)
        )
        grow_buffers(transport.get_extra_info("socket"))
        return transport

    def _relay(self, backend: asyncio.DatagramTransport) -> None:
        ctx = self.ctx
        self.backend = backend
        self.state = RELAYING
        self.connect_s = perf_counter() - self._dial_at
        route = self.route
        assert route is not None
        ctx.stats.routed[route.id] += 1
        if self.backend_addr is not None:
            ctx.backend_opened(self.backend_addr)
        if self.gate is not None:
            self.gate.relaying(self.backend_addr, self.dial_started)
        if route.hooks:
            self.hooks = start_packet_hooks(
                ctx,
                route,
                self.match,
                session_id=self.session_id,
                client_addr=self.client_addr,
                backend=self.backend_addr,
                local=self.local_addr,
                transport="udp",
            )
        if self.match is not None:  # see ClientProtocol.backend_up
            self.match.settle(self.gate is not None or self._snap.settings.access_log is not None)
        held, self._held, self._held_bytes = self._held, [], 0
        for data in held:
            self._send_backend(data)

    # -- the backend's datagrams ------------------------------------------------------

    def from_backend(self, data: bytes) -> None:
        if self.state != RELAYING:
            return
        self.last = self.ctx.loop.time()
        if not self._answered:
            self._answered = True
            if self.backend_addr is not None:
                self.ctx.health.report_success(self.backend_addr)
        listener = self.listener
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
            self.ctx.health.report_failure(self.backend_addr, "connection refused")
        log.debug("udp %s:%d: backend error: %s", *self.client_addr, exc)

    # -- ending -------------------------------------------------------------------------

    def reject(self, verdict: Verdict, where: str) -> None:
        """UDP has no way to say no: the flow's datagrams are dropped until it idles out."""
        route = self.route.id if self.route is not None else None
        count_refusal(self.ctx.stats, verdict, where, self.client_addr, route, transport="udp")
        self._rejected_with = verdict
        outcome, self.reason = ending(verdict, where)
        self._close_quietly(outcome)

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
        ctx = self.ctx
        timeout = self._snap.settings.udp_idle_timeout_s
        idle = ctx.loop.time() - self.last
        if idle < timeout:
            self._idle_timer = ctx.loop.call_later(timeout - idle, self._check_idle)
            return
        ctx.stats.expired += 1
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
        ctx = self.ctx
        if ctx.flows.get(self.key) is self:
            del ctx.flows[self.key]
        if was_relaying and self.backend_addr is not None:
            ctx.backend_closed(self.backend_addr)
        stats = ctx.stats
        stats.bytes_in += self.bytes_in
        stats.bytes_out += self.bytes_out
        route = self.route
        outcome = self.final_outcome()
        if route is None:
            stats.closed["", outcome] += 1
        else:
            stats.closed[route.id, outcome] += 1
            stats.route_bytes_in[route.id] += self.bytes_in
            stats.route_bytes_out[route.id] += self.bytes_out
        if self.gate is not None:
            name = route.name if route is not None else None
            self.gate.ended(self, outcome, name, self._rejected_with, ctx.tasks.start)
        access = self._snap.settings.access_log
        if access is not None:
            log_ended(self, "udp", self.local_addr, outcome, self.last - self._born, access)

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

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
whatever their size, in order; those of one loop turn go out together, a
run of one size in one system call (:mod:`refractium.relay.gso`).

A relayed datagram costs no clock read and no backlog query: the idle check
looks at the packet counters the relay keeps anyway (a quarter of the
timeout apart, as the TCP idle sweep does), and each socket's transport
says when its backlog passes
:data:`~refractium.relay.datagrams.SEND_BACKLOG` and when it is back under
(``pause_writing`` / ``resume_writing``, with both write limits set to it).
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
from collections.abc import Awaitable, Callable
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
from refractium.relay.datagrams import Batch, ClientSide, connected, limit_backlog
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
#: The idle check runs a quarter of the timeout apart (not oftener than this).
MIN_IDLE_CHECK_S = 0.05


class Flow(asyncio.DatagramProtocol):
    """One client's UDP flow: identify, open a backend socket, relay, expire.

    The flow is also the protocol of its backend socket: a backend datagram
    goes from the loop to :meth:`datagram_received` with no call between.
    """

    __slots__ = (
        "_answered",
        "_backend_full",
        "_born",
        "_client",
        "_dial_at",
        "_down",
        "_held",
        "_held_bytes",
        "_idle_every",
        "_idle_timer",
        "_moved",
        "_opened",
        "_peek_timer",
        "_rejected_with",
        "_reply",
        "_send",
        "_snap",
        "_started",
        "_table",
        "_up",
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
        client: ClientSide,
        key: tuple[Any, ...],
        port: int = 0,
    ) -> None:
        self.ctx = ctx
        self._snap = ctx.snapshot  # kept to the flow's end, whatever reloads come
        self._table = self._snap.tables.udp_at(port)  # the routes of its listen port
        listener = client.transport
        assert listener is not None
        self._client = client
        self.listener = listener
        # The client's datagrams of this loop turn, and the backend's (gso.py).
        self._up: Batch | None = None  # once the backend socket is open
        self._down = Batch(client.flusher, listener, client.sock, key, client.error_received)
        self._reply = self._down.sender()
        self._send: Callable[[bytes], None] = _not_relaying  # self._up's, once open
        self._opened: tuple[asyncio.DatagramTransport, socket.socket] | None = None
        self._backend_full = False
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
        self._moved = 0  # packets_in + packets_out + dropped at the last idle check
        self.dropped = 0
        self.outcome: str | None = None
        self.reason: str | None = None
        self.gate: Gate | None = None
        self._rejected_with: Verdict | None = None
        self._peek_timer: asyncio.TimerHandle | None = None
        timeout = self._snap.settings.udp_idle_timeout_s
        self._idle_every = max(MIN_IDLE_CHECK_S, timeout / 4)
        self._idle_timer = ctx.loop.call_later(timeout, self._check_idle)

    @property
    def closed(self) -> bool:
        return self.state == CLOSED

    # -- the client's datagrams ---------------------------------------------------

    def from_client(self, data: bytes) -> None:
        # The hot path: no clock read (the idle check reads the packet counts).
        if self.state == RELAYING and not self._backend_full:
            self._send(data)
            self.bytes_in += len(data)
            self.packets_in += 1
            if self.hooks is not None:
                self.hooks.push(INBOUND, data)
            return
        self._from_client_otherwise(data)

    def _from_client_otherwise(self, data: bytes) -> None:
        """A client datagram that is not relayed now: dropped, or held until the flow relays."""
        self.last = self.ctx.loop.time()
        if self.state == RELAYING or self.state == CLOSED:
            self._drop()  # the backend socket's backlog is full, or the flow is over
            return
        self._hold(data)
        if self.state == PEEKING and len(self._held) > 1 and self._peek_timer is not None:
            self._identify(final=False)

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
        # A socket of ours, connected here: the batches send on it (gso.py).
        loop = self.ctx.loop
        sock = await connected(loop, address)
        try:
            grow_buffers(sock)
            transport, _ = await loop.create_datagram_endpoint(self._protocol, sock=sock)
        except BaseException:
            sock.close()
            raise
        limit_backlog(transport)
        self._opened = (transport, sock)
        return transport

    def _protocol(self) -> Flow:
        return self

    def _relay(self, backend: asyncio.DatagramTransport) -> None:
        ctx = self.ctx
        self.backend = backend
        opened = self._opened
        sock = opened[1] if opened is not None and opened[0] is backend else None
        self._opened = None
        up = self._up = Batch(self._client.flusher, backend, sock, None, self.error_received)
        self._send = up.sender()
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
            self.from_client(data)

    # -- the backend socket's protocol: its datagrams ------------------------------------

    def datagram_received(self, data: bytes, addr: Any) -> None:
        """A backend datagram: to the client, from the listener's socket."""
        if not self._answered:
            self._first_answer()
        if self._client.full or self.state != RELAYING:
            if self.state == RELAYING:
                self._drop()  # the listener's backlog is full
            return
        self._reply(data)
        self.bytes_out += len(data)
        self.packets_out += 1
        if self.hooks is not None:
            self.hooks.push(OUTBOUND, data)

    def _first_answer(self) -> None:
        if self.state != RELAYING:
            return
        self._answered = True  # the backend is up: a passive health report
        if self.backend_addr is not None:
            self.ctx.health.report_success(self.backend_addr)

    def pause_writing(self) -> None:
        self._backend_full = True

    def resume_writing(self) -> None:
        self._backend_full = False

    def error_received(self, exc: Exception) -> None:
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
        now = ctx.loop.time()
        moved = self.packets_in + self.packets_out + self.dropped
        if moved != self._moved:  # datagrams since the last check: active until then
            self._moved = moved
            self.last = now
        timeout = self._snap.settings.udp_idle_timeout_s
        idle = now - self.last
        if idle < timeout:
            wait = min(timeout - idle, self._idle_every)
            self._idle_timer = ctx.loop.call_later(wait, self._check_idle)
            return
        ctx.stats.expired += 1
        self.end()

    def end(self) -> None:
        """The flow is over (idle, shut down or closed by a hook): forget it."""
        was_relaying = self.state == RELAYING
        self.state = CLOSED
        self._idle_timer.cancel()
        # What this loop turn read is relayed still, before the socket closes.
        if self._up is not None:
            self._up.flush()
        self._down.flush()
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


def _not_relaying(data: bytes) -> None:
    """A flow's sendto before its backend socket is open: never called (state is checked)."""
    raise AssertionError("no backend socket yet")

"""What the connections of one listener share, as uvicorn's ``ServerState`` is.

A connection gets a context, never the service that accepted it: the loop,
the configuration snapshot in force, its transport's health checker, the
packet-hook counters, the tasks it starts, and the bookkeeping of open
connections (limits, counters, the backends in use). The services in
:mod:`refractium.relay.tcp` and :mod:`refractium.relay.udp` own listeners
and shutdown; everything a connection touches is here.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections import Counter
from typing import TYPE_CHECKING, Any, Protocol

from refractium.abuse.guard import BANNED, Guard
from refractium.abuse.guard import Refusal as Blocked
from refractium.addr import host_port
from refractium.config.model import LimitsConfig
from refractium.relay.deadlines import DeadlineSet
from refractium.relay.idle import IdleWatch, Watched
from refractium.relay.limits import ConnectionLimits, Limits, Refusal
from refractium.relay.snapshot import Snapshot
from refractium.relay.stats import REFUSED, Refused, TcpStats, UdpStats
from refractium.util.logs import RateLimitedLog
from refractium.util.tasks import Tasks

if TYPE_CHECKING:
    from refractium.addr import Address
    from refractium.backends.health import HealthChecker
    from refractium.hooks.dispatch import HookStats
    from refractium.protocols.base import Match
    from refractium.routing import Route

log = logging.getLogger(__name__)
refusals = RateLimitedLog(log)

_REFUSAL_TEXT = {
    Refusal.GLOBAL_LIMIT: "max_connections reached",
    Refusal.PER_IP_LIMIT: "max_connections_per_ip reached",
    Refusal.SHUTTING_DOWN: "shutting down",
    Refusal.TABLE_FULL: "the workers' table of client addresses is full",
}

#: How often clients whose reading is paused are looked at: one that reset
#: meanwhile is not seen by the loop (it is not reading), so it is found here.
PAUSED_SWEEP_S = 1.0
# Linux's TCP_CLOSE, as TCP_INFO's first byte reports it: a reset arrived.
_TCP_CLOSE = 7


class Context:
    """The part shared by TCP connections and UDP flows."""

    __slots__ = (
        "active",
        "deadlines",
        "guard",
        "health",
        "hook_stats",
        "loop",
        "snapshot",
        "tasks",
    )

    def __init__(
        self,
        snapshot: Snapshot,
        health: HealthChecker,
        hook_stats: HookStats,
        guard: Guard | None = None,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        # Swapped whole by a reload; each connection keeps the one it started with.
        self.snapshot = snapshot
        self.health = health
        self.hook_stats = hook_stats
        # Abuse control ([limits]): shared by the TCP and UDP sides of one engine.
        self.guard = guard if guard is not None else Guard(LimitsConfig())
        self.tasks = Tasks(self.loop)
        # The peek and dial timeouts: one loop timer per timeout length.
        self.deadlines = DeadlineSet(self.loop)
        # Open relaying connections (flows) per backend, for least_connections.
        self.active: Counter[Address] = Counter()

    def backend_opened(self, address: Address) -> None:
        self.active[address] += 1

    def backend_closed(self, address: Address) -> None:
        left = self.active[address] - 1
        if left > 0:
            self.active[address] = left
        else:
            del self.active[address]


class Pausable(Protocol):
    """A connection whose client side may be paused (see TcpContext.sweep_paused)."""

    def client_socket(self) -> socket.socket | None: ...

    def client_gone(self) -> None: ...


class Tracked(Pausable, Watched, Protocol):
    """A TCP connection as its bookkeeping sees it."""

    client_addr: tuple[str, int]
    limit_key: str
    session_id: int
    route: Route | None
    match: Match | None
    backend_addr: Address | None
    backend: asyncio.Transport | None
    bytes_in: int
    bytes_out: int
    outcome: str | None
    reason: str | None

    def final_outcome(self) -> str: ...

    def shutdown(self) -> None: ...

    def abort(self) -> None: ...


class TcpContext(Context):
    """TCP connections: admission against the limits, counters, the open set."""

    __slots__ = (
        "_idle",
        "_sweep",
        "closing",
        "connections",
        "idle",
        "limits",
        "paused",
        "stats",
    )

    def __init__(
        self,
        snapshot: Snapshot,
        health: HealthChecker,
        hook_stats: HookStats,
        limits: Limits | None = None,
        guard: Guard | None = None,
    ) -> None:
        super().__init__(snapshot, health, hook_stats, guard)
        self.stats = TcpStats()
        self.limits: Limits = limits if limits is not None else ConnectionLimits()
        self.connections: set[Tracked] = set()
        # Connections whose client side is not being read (see sweep_paused).
        self.paused: set[Pausable] = set()
        self._sweep: asyncio.TimerHandle | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self.closing = False
        # Relaying connections with an idle timeout (one sweep, no timer each).
        self.idle = IdleWatch(self.loop)

    def admit(self, conn: Tracked, snapshot: Snapshot) -> bool:
        """Count ``conn`` against the limits, or refuse it (False)."""
        if conn.limit_key:
            blocked = self.guard.at_accept(conn.limit_key)
            if blocked is not None:
                self.block(conn, blocked)
                self.stats.closed["", blocked.outcome] += 1
                return False
        settings = snapshot.settings
        refusal = (
            Refusal.SHUTTING_DOWN
            if self.closing
            else self.limits.admit(
                conn.limit_key, settings.max_connections, settings.max_connections_per_ip
            )
        )
        if refusal is not None:
            conn.outcome = REFUSED
            conn.reason = reason = _REFUSAL_TEXT[refusal]
            self.stats.refused[refusal.name.lower()] += 1
            self.stats.closed["", REFUSED] += 1
            # In the words of the access line and the warning below.
            self.stats.recent.append(
                Refused(time.time(), "tcp", host_port(conn.client_addr), None, 0, reason)
            )
            refusals.log(
                logging.WARNING,
                refusal.name,
                "refused %s:%d: %s",
                *conn.client_addr,
                reason,
            )
            return False
        self.stats.accepted += 1
        connections = self.connections
        if not connections:
            self._idle.clear()
        connections.add(conn)
        return True

    def block(self, conn: Tracked, blocked: Blocked) -> None:
        """``conn`` is refused by abuse control (denied, banned, over the rate).

        Counted as refused; a connection already admitted (its client named
        by a PROXY header) is counted as closed when it is released.
        """
        reason = blocked.text
        if blocked is BANNED:
            ban = self.guard.ban_of(conn.client_addr[0])
            if ban is not None:
                until = time.strftime("%H:%M:%S", time.localtime(ban.expires))
                reason = f"banned ({ban.reason}) until {until}"
        conn.outcome = blocked.outcome
        conn.reason = reason
        stats = self.stats
        stats.refused[blocked.reason] += 1
        stats.recent.append(
            Refused(time.time(), "tcp", host_port(conn.client_addr), None, 0, reason)
        )
        refusals.log(logging.INFO, blocked.reason, "refused %s:%d: %s", *conn.client_addr, reason)

    def routed(self, conn: Tracked) -> None:
        """``conn`` is relaying to its backend."""
        route = conn.route
        name = route.id if route is not None else "?"
        self.stats.routed[name] += 1
        if conn.backend_addr is not None:
            self.backend_opened(conn.backend_addr)
        if log.isEnabledFor(logging.DEBUG):
            match = conn.match
            log.debug(
                "[%016x] %s:%d -> %s (%s%s)",
                conn.session_id,
                *conn.client_addr,
                name,
                match.protocol if match else "no match",
                f" sni={match.sni}" if match and match.sni else "",
            )

    def release(self, conn: Tracked) -> bool:
        """``conn`` has ended: forget it (False if it was never admitted)."""
        if conn not in self.connections:
            return False
        self.connections.discard(conn)
        self.paused.discard(conn)
        self.idle.forget(conn)
        self.limits.release(conn.limit_key)
        if conn.backend is not None and conn.backend_addr is not None:
            self.backend_closed(conn.backend_addr)
        stats = self.stats
        stats.bytes_in += conn.bytes_in
        stats.bytes_out += conn.bytes_out
        route = conn.route
        if route is None:
            stats.closed["", conn.final_outcome()] += 1
        else:
            ident = route.id
            stats.closed[ident, conn.final_outcome()] += 1
            stats.route_bytes_in[ident] += conn.bytes_in
            stats.route_bytes_out[ident] += conn.bytes_out
        if not self.connections:
            self._idle.set()
        return True

    async def wait_idle(self) -> None:
        """Return once no connection is open."""
        await self._idle.wait()

    # -- clients that reset while not being read ------------------------------

    def client_paused(self, conn: Pausable) -> None:
        self.paused.add(conn)
        if self._sweep is None:
            self._sweep = self.loop.call_later(PAUSED_SWEEP_S, self.sweep_paused)

    def client_resumed(self, conn: Pausable) -> None:
        self.paused.discard(conn)

    def sweep_paused(self) -> None:
        """End the client side of paused connections whose client has reset.

        A side whose reading is paused is not watched by the loop, so its
        reset goes unseen until something is written to it; with a backend
        that stopped reading, that is never, and the connection would keep
        its slot, its descriptors and its place in ``max_connections``.
        """
        self._sweep = None
        for conn in list(self.paused):
            if _was_reset(conn.client_socket()):
                conn.client_gone()
        if self.paused:
            self._sweep = self.loop.call_later(PAUSED_SWEEP_S, self.sweep_paused)

    def stop_sweeping(self) -> None:
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        self.idle.stop()
        self.deadlines.stop()


def _was_reset(sock: socket.socket | None) -> bool:
    """Whether the kernel has closed ``sock`` (a reset came); cheap, changes nothing."""
    if sock is None or not hasattr(socket, "TCP_INFO"):
        return False
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)
    except OSError:
        return True  # the descriptor is no longer a connected socket
    return bool(info) and info[0] == _TCP_CLOSE


class FlowLike(Protocol):
    """A UDP flow as its listener and bookkeeping see it."""

    def from_client(self, data: bytes) -> None: ...

    def end(self) -> None: ...


class UdpContext(Context):
    """UDP flows: the open flows by client address and their counters."""

    __slots__ = ("flows", "stats")

    def __init__(
        self,
        snapshot: Snapshot,
        health: HealthChecker,
        hook_stats: HookStats,
        guard: Guard | None = None,
    ) -> None:
        super().__init__(snapshot, health, hook_stats, guard)
        self.stats = UdpStats()
        self.flows: dict[Any, FlowLike] = {}

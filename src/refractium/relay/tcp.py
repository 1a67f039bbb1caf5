"""TCP listeners: accept, admit against the limits, track, drain on shutdown.

Owns the listening sockets and the set of open connections; the per
connection work is in :mod:`refractium.relay.connection`. Shutdown follows uvicorn's
order: close the listeners, tell every connection to stop (connections still
being identified are dropped, relaying ones may finish), wait out the grace
period, then cut what is left.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import socket
from collections import Counter
from collections.abc import Coroutine
from typing import Any

from refractium.addr import Address
from refractium.backends.health import HealthChecker
from refractium.config import ServerConfig
from refractium.endpoint.chain import EndpointChain
from refractium.errors import RefractiumError
from refractium.hooks.dispatch import HookStats
from refractium.relay.connection import PEEKING, ClientProtocol
from refractium.relay.limits import ConnectionLimits, Refusal
from refractium.relay.stats import REFUSED, TcpStats
from refractium.routing import Tables
from refractium.util.logs import RateLimitedLog

log = logging.getLogger(__name__)
refusals = RateLimitedLog(log)

# How long shutdown waits for packet hooks to take what was queued for them.
HOOK_DRAIN_S = 2.0

_REFUSAL_TEXT = {
    Refusal.GLOBAL_LIMIT: "max_connections reached",
    Refusal.PER_IP_LIMIT: "max_connections_per_ip reached",
    Refusal.SHUTTING_DOWN: "shutting down",
}


class TcpService:
    """The TCP side of the proxy: listeners plus the connections they accepted."""

    def __init__(self, server: ServerConfig, tables: Tables, health: HealthChecker) -> None:
        self.loop = asyncio.get_running_loop()
        self.tables = tables
        self.health = health
        # Open relaying connections per backend, for least_connections.
        self.active: Counter[Address] = Counter()
        self.hook_stats = HookStats()
        # The endpoint hooks (None: there are none, and nothing is spent on them).
        self.endpoint: EndpointChain | None = None
        self.stats = TcpStats()
        self.limits = ConnectionLimits(server.max_connections, server.max_connections_per_ip)
        self.connections: set[ClientProtocol] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._servers: list[asyncio.Server] = []
        self._idle = asyncio.Event()
        self._idle.set()
        self._closing = False
        self.apply(server)

    def apply(self, server: ServerConfig) -> None:
        """Take new timeouts and limits (a reload); open connections keep theirs."""
        self.peek_buffer_size = server.peek_buffer_size
        self.accept_proxy_protocol = server.accept_proxy_protocol
        self.trusted_proxies = server.trusted_proxies
        self.peek_timeout_s = server.peek_timeout_ms / 1000
        self.connect_timeout_s = server.connect_timeout_ms / 1000
        self.limits.resize(server.max_connections, server.max_connections_per_ip)

    # -- listening --------------------------------------------------------

    async def listen(self, binds: tuple[str, ...], port: int, backlog: int = 1024) -> None:
        """Open one listener per bind address; raise RefractiumError if one can't.

        With port 0 the first listener picks a free port and the others use
        the same one, so every address answers on one port.
        """
        for host in binds:
            try:
                server = await self.loop.create_server(
                    lambda: ClientProtocol(self),
                    host=host,
                    port=port,
                    reuse_address=True,
                    backlog=backlog,
                )
            except OSError as exc:
                await self.stop_listening()
                raise RefractiumError(listen_error(host, port, exc)) from None
            self._servers.append(server)
            if port == 0:
                port = server.sockets[0].getsockname()[1]
            for sock in server.sockets:
                addr = sock.getsockname()
                log.info("listening on tcp %s:%d", _host(addr[0]), addr[1])

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """Where the listeners actually are (useful with port 0)."""
        out = []
        for server in self._servers:
            for sock in server.sockets:
                addr = sock.getsockname()
                out.append((addr[0], addr[1]))
        return out

    async def stop_listening(self) -> None:
        for server in self._servers:
            server.close()
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()

    # -- per connection (called by ClientProtocol) ------------------------

    def admit(self, conn: ClientProtocol) -> bool:
        """Count ``conn`` against the limits, or refuse it (False)."""
        refusal = Refusal.SHUTTING_DOWN if self._closing else self.limits.admit(conn.limit_key)
        if refusal is not None:
            self.stats.refused[refusal.name.lower()] += 1
            self.stats.closed["", REFUSED] += 1
            refusals.log(
                logging.WARNING,
                refusal.name,
                "refused %s:%d: %s",
                *conn.client_addr,
                _REFUSAL_TEXT[refusal],
            )
            return False
        self.stats.accepted += 1
        self.connections.add(conn)
        self._idle.clear()
        return True

    def routed(self, conn: ClientProtocol) -> None:
        """``conn`` is relaying to its backend."""
        route = conn.route
        name = route.name if route is not None else "?"
        self.stats.routed[name] += 1
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

    def release(self, conn: ClientProtocol, state: int) -> None:
        """``conn`` has ended; it was in ``state`` (CLOSED if never admitted)."""
        if conn not in self.connections:
            return
        self.connections.discard(conn)
        self.limits.release(conn.limit_key)
        if conn.backend is not None and conn.backend_addr is not None:
            left = self.active[conn.backend_addr] - 1
            if left:
                self.active[conn.backend_addr] = left
            else:
                del self.active[conn.backend_addr]
        self.stats.bytes_in += conn.bytes_in
        self.stats.bytes_out += conn.bytes_out
        route = conn.route
        self.stats.closed[route.name if route is not None else "", conn.final_outcome()] += 1
        if not self.connections:
            self._idle.set()
        if state == PEEKING and log.isEnabledFor(logging.DEBUG):
            log.debug("[%016x] client left while identifying", conn.session_id)

    def trusted(self, ip: str) -> bool:
        """Whether ``ip`` is one of ``trusted_proxies`` (may send a PROXY header)."""
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(address in network for network in self.trusted_proxies)

    def start(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run a connection's coroutine as a task held until it finishes.

        Not :func:`refractium.tasks.spawn`: this runs once per connection and
        skips its name formatting and loop lookup.
        """
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- stopping ---------------------------------------------------------

    def abort_all(self) -> None:
        """Cut every connection at once."""
        for conn in list(self.connections):
            conn.abort()

    async def shutdown(self, grace_s: float) -> None:
        """Stop accepting, let relaying connections finish for ``grace_s``, cut the rest."""
        self._closing = True
        await self.stop_listening()
        for conn in list(self.connections):
            conn.shutdown()
        if self.connections:
            log.info("draining %d connection(s) for up to %.1fs", len(self.connections), grace_s)
            try:
                async with asyncio.timeout(grace_s):
                    await self._idle.wait()
            except TimeoutError:
                log.warning("grace period over: closing %d connection(s)", len(self.connections))
                self.abort_all()
        # Hook tasks end once their connection's queue is delivered: give
        # them a moment, then cancel what is left (and any dial still going).
        pending = [task for task in self._tasks if not task.done()]
        if pending:
            await asyncio.wait(pending, timeout=HOOK_DRAIN_S)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.sleep(0)


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def listen_error(host: str, port: int, exc: OSError) -> str:
    where = f"{_host(host)}:{port}"
    if exc.errno == errno.EADDRINUSE:
        return f"{where}: address already in use"
    if exc.errno == errno.EACCES:
        return f"{where}: permission denied (ports below 1024 need privileges)"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"{where}: address not available on this host"
    if isinstance(exc, socket.gaierror):
        return f"{where}: cannot resolve bind address"
    return f"{where}: cannot listen: {exc.strerror or exc}"

"""TCP listeners: accept, drain on shutdown.

Owns the listening sockets; what connections share (limits, counters, the
open set, the snapshot in force) is the :class:`~refractium.relay.context.TcpContext`,
and the per connection work is :class:`~refractium.relay.connection.ClientProtocol`.
Shutdown follows uvicorn's order: close the listeners, tell every
connection to stop (connections still being identified are dropped,
relaying ones may finish), wait out the grace period, then cut what is left.
"""

from __future__ import annotations

import asyncio
import logging
import socket

from refractium.abuse.guard import Guard
from refractium.addr import format_host
from refractium.backends.health import HealthChecker
from refractium.errors import RefractiumError
from refractium.hooks.dispatch import HookStats
from refractium.relay.connection import ClientProtocol
from refractium.relay.context import TcpContext
from refractium.relay.limits import Limits
from refractium.relay.listen import listen_error, take_inherited
from refractium.relay.snapshot import Snapshot

log = logging.getLogger(__name__)

# How long shutdown waits for packet hooks to take what was queued for them.
HOOK_DRAIN_S = 2.0


class TcpService:
    """The TCP side of the proxy: listeners plus the context of their connections."""

    def __init__(
        self,
        snapshot: Snapshot,
        health: HealthChecker,
        hook_stats: HookStats,
        limits: Limits | None = None,
        guard: Guard | None = None,
    ) -> None:
        self.ctx = TcpContext(snapshot, health, hook_stats, limits, guard)
        self._servers: list[asyncio.Server] = []

    # -- listening --------------------------------------------------------

    async def listen(
        self,
        binds: tuple[str, ...],
        ports: tuple[int, ...],
        inherited: list[socket.socket] | None = None,
        backlog: int = 1024,
        reuse_port: bool = False,
    ) -> None:
        """One listener per bind address and port; RefractiumError if one can't be opened.

        A listener that is among ``inherited`` (sockets passed by socket
        activation; the ones used are removed from the list) is taken as it
        is. With port 0 the first listener picks a free port and the others
        use the same one, so every address answers on one port. With
        ``reuse_port`` (worker processes) each worker opens its own listener
        on the port and the kernel spreads connections over them.
        """
        for port in ports:
            for host in binds:
                sock = (
                    take_inherited(inherited, host, port, socket.SOCK_STREAM) if inherited else None
                )
                port = await self._listen_one(host, port, sock, backlog, reuse_port)

    async def _listen_one(
        self, host: str, port: int, sock: socket.socket | None, backlog: int, reuse_port: bool
    ) -> int:
        """Open (or adopt) one listener; return its port."""
        ctx = self.ctx
        # The factory knows its listener's port: routes may be served on some ports only.
        listen_port = port if sock is None else sock.getsockname()[1]
        try:
            if sock is not None:
                server = await ctx.loop.create_server(
                    lambda: ClientProtocol(ctx, listen_port), sock=sock, backlog=backlog
                )
            else:
                server = await ctx.loop.create_server(
                    lambda: ClientProtocol(ctx, listen_port),
                    host=host,
                    port=port,
                    reuse_address=True,
                    reuse_port=reuse_port or None,
                    backlog=backlog,
                )
        except OSError as exc:
            await self.stop_listening()
            raise RefractiumError(listen_error(host, port, exc)) from None
        self._servers.append(server)
        actual: int = server.sockets[0].getsockname()[1]
        if port == 0:
            listen_port = actual
        for bound in server.sockets:
            addr = bound.getsockname()
            log.info("listening on tcp %s:%d", format_host(addr[0]), addr[1])
        return actual

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

    # -- stopping ---------------------------------------------------------

    def abort_all(self) -> None:
        """Cut every connection at once."""
        for conn in list(self.ctx.connections):
            conn.abort()

    async def shutdown(self, grace_s: float) -> None:
        """Stop accepting, let relaying connections finish for ``grace_s``, cut the rest."""
        ctx = self.ctx
        ctx.closing = True
        await self.stop_listening()
        for conn in list(ctx.connections):
            conn.shutdown()
        if ctx.connections:
            log.info("draining %d connection(s) for up to %.1fs", len(ctx.connections), grace_s)
            try:
                async with asyncio.timeout(grace_s):
                    await ctx.wait_idle()
            except TimeoutError:
                log.warning("grace period over: closing %d connection(s)", len(ctx.connections))
                self.abort_all()
        ctx.stop_sweeping()
        # Hook tasks end once their connection's queue is delivered: give
        # them a moment, then cancel what is left (and any dial still going).
        pending = ctx.tasks.pending()
        if pending:
            await asyncio.wait(pending, timeout=HOOK_DRAIN_S)
        ctx.tasks.cancel_all()
        await asyncio.sleep(0)

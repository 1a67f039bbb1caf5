"""UDP listeners: hand each datagram to its client's flow, cap the flows, stop.

The per-flow work is :class:`~refractium.relay.flow.Flow`. At most
``udp_max_sessions`` flows exist at a time; a client beyond that is refused
(counted, logged rate-limited).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from functools import partial
from typing import Any

from refractium.abuse.guard import Guard
from refractium.addr import format_host
from refractium.backends.health import HealthChecker
from refractium.errors import RefractiumError
from refractium.hooks.dispatch import HookStats
from refractium.relay.context import UdpContext
from refractium.relay.datagrams import ClientSide, limit_backlog
from refractium.relay.flow import Flow
from refractium.relay.listen import listen_error, take_inherited, udp_socket
from refractium.relay.snapshot import Snapshot
from refractium.util.logs import RateLimitedLog

log = logging.getLogger(__name__)
events = RateLimitedLog(log)


class UdpListener(ClientSide):
    """One bound UDP socket: hands each datagram to its client's flow."""

    def __init__(self, ctx: UdpContext, port: int = 0, sock: socket.socket | None = None) -> None:
        super().__init__(ctx.loop, sock)
        self.ctx = ctx
        self.flows = ctx.flows  # one attribute load less per datagram
        self.port = port  # routes may be served on some ports only

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    # addr: Any, not a 2-tuple: an IPv6 peer is (host, port, flowinfo, scope_id),
    # and compiled code would refuse what does not match the declared shape.
    def datagram_received(self, data: bytes, addr: Any) -> None:
        flow = self.flows.get(addr)
        if flow is not None:
            flow.from_client(data)
            return
        new = self._new_flow(addr)
        if new is not None:
            new.start(data)

    def _new_flow(self, key: Any) -> Flow | None:
        ctx = self.ctx
        blocked = ctx.guard.at_accept(key[0])
        if blocked is not None:
            # No flow: the next datagram from there is asked about again.
            ctx.stats.blocked[blocked.reason] += 1
            events.log(
                logging.INFO, blocked.reason, "refused udp %s:%d: %s", key[0], key[1], blocked.text
            )
            return None
        limit = ctx.snapshot.settings.udp_max_sessions
        if len(ctx.flows) >= limit:
            ctx.stats.refused += 1
            events.log(
                logging.WARNING,
                "udp-max-sessions",
                "refused udp %s:%d: udp_max_sessions (%d) reached",
                key[0],
                key[1],
                limit,
            )
            return None
        flow = Flow(ctx, self, key, self.port)
        ctx.flows[key] = flow
        ctx.stats.flows += 1
        return flow

    def error_received(self, exc: Exception) -> None:
        # An ICMP error for a reply we sent a client: nothing to do.
        log.debug("udp listener: %s", exc)


class UdpService:
    """The UDP side of the proxy: listeners plus the context of their flows."""

    def __init__(
        self,
        snapshot: Snapshot,
        health: HealthChecker,
        hook_stats: HookStats,
        guard: Guard | None = None,
    ) -> None:
        self.ctx = UdpContext(snapshot, health, hook_stats, guard)
        self._listeners: list[asyncio.DatagramTransport] = []

    async def listen(
        self,
        binds: tuple[str, ...],
        ports: tuple[int, ...],
        inherited: list[socket.socket] | None = None,
        reuse_port: bool = False,
    ) -> None:
        """One socket per bind address and port; RefractiumError if one cannot be bound.

        A socket among ``inherited`` (socket activation) is taken as it is
        and removed from the list. ``reuse_port``: see :func:`udp_socket`.
        """
        ctx = self.ctx
        for port in ports:
            for host in binds:
                passed = (
                    take_inherited(inherited, host, port, socket.SOCK_DGRAM) if inherited else None
                )
                try:
                    # Bound here, not by the loop: its errors keep their errno.
                    sock = passed or udp_socket(host, port, reuse_port)
                    listener = partial(UdpListener, ctx, sock.getsockname()[1], sock)
                    transport, _ = await ctx.loop.create_datagram_endpoint(listener, sock=sock)
                except OSError as exc:
                    self.close_listeners()
                    raise RefractiumError("udp " + listen_error(host, port, exc)) from None
                limit_backlog(transport)
                self._listeners.append(transport)
                addr = transport.get_extra_info("sockname")
                if port == 0:
                    port = addr[1]
                log.info("listening on udp %s:%d", format_host(addr[0]), addr[1])

    @property
    def addresses(self) -> list[tuple[str, int]]:
        out = []
        for transport in self._listeners:
            addr = transport.get_extra_info("sockname")
            out.append((addr[0], addr[1]))
        return out

    def close_listeners(self) -> None:
        for transport in self._listeners:
            transport.close()
        self._listeners.clear()

    async def shutdown(self) -> None:
        """Stop listening and end every flow (UDP has nothing to drain)."""
        self.close_listeners()
        for flow in list(self.ctx.flows.values()):
            flow.end()
        self.ctx.tasks.cancel_all()
        await asyncio.sleep(0)

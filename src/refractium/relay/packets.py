"""Starting a connection's packet hooks: one place for TCP and UDP.

A route with packet hooks gets a :class:`~refractium.hooks.dispatch.Dispatcher`
per connection (per flow) once its backend is known; the relay pushes every
chunk (datagram) into it. UDP has no back-pressure: ``overflow = "block"``
cannot pause a socket shared by every flow, so there a full hook queue drops
for the hooks, as ``"drop"`` does.
"""

from __future__ import annotations

from collections.abc import Callable

from refractium.addr import Address
from refractium.hooks.api import HookContext
from refractium.hooks.dispatch import Dispatcher
from refractium.protocols.base import Match
from refractium.relay.context import Context
from refractium.routing import Route


def _nothing() -> None:
    pass


def start_packet_hooks(
    ctx: Context,
    route: Route,
    match: Match | None,
    *,
    session_id: int,
    client_addr: tuple[str, int],
    backend: Address | None,
    local: tuple[str, int] | None,
    transport: str,
    on_full: Callable[[], None] = _nothing,
    on_drained: Callable[[], None] = _nothing,
) -> Dispatcher:
    """The dispatcher for one connection of ``route`` (which has hooks)."""
    hook_ctx = HookContext(
        client_addr=client_addr,
        protocol=route.name,
        session_id=session_id,
        sni=match.sni if match is not None else None,
        alpn=match.alpn if match is not None else (),
        ja4=match.ja4 if match is not None else None,
        backend_addr=(backend.host, backend.port) if backend is not None else None,
        local_addr=local,
        transport=transport,
    )
    return Dispatcher(
        hook_ctx,
        route.hooks,
        ctx.hook_stats,
        block=route.block_hooks and transport == "tcp",
        on_full=on_full,
        on_drained=on_drained,
        spawn=ctx.tasks.start,
        inline=route.plain_hooks,
    )

"""The hooks benchmarks/hooks.py loads into the proxy (by import path)."""

from __future__ import annotations

from refractium.hooks import Direction, HookContext, ProtocolHook


class AsyncNoOp(ProtocolHook):
    """A coroutine hook that returns at once: the cost of the hook task path."""

    name = "async-noop"

    async def on_packet(  # type: ignore[override]
        self, ctx: HookContext, direction: Direction, packet: bytes
    ) -> None:
        return None

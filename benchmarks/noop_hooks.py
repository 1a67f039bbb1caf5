"""The hooks benchmarks/hooks.py loads into the proxy (by import path)."""

from __future__ import annotations

from typing import Any

from refractium.endpoint import Accept, ConnectionInfo, ConnectionStats, EndpointHooks
from refractium.hooks import Direction, HookContext, ProtocolHook


class AsyncNoOp(ProtocolHook):
    """A coroutine hook that returns at once: the cost of the hook task path."""

    name = "async-noop"

    async def on_packet(  # type: ignore[override]
        self, ctx: HookContext, direction: Direction, packet: bytes
    ) -> None:
        return None


class SyncNoOpEndpoint(EndpointHooks):
    """An endpoint hook with all four methods, each returning at once."""

    def on_incoming(self, addr: tuple[str, int]) -> Any:
        return Accept

    def before_connect(self, remote_addr: tuple[str, int], conn: ConnectionInfo) -> Any:
        return Accept

    def after_handshake(self, conn: ConnectionInfo) -> Any:
        return Accept

    def on_close(self, conn: ConnectionInfo, stats: ConnectionStats) -> None:
        return None


class AsyncNoOpEndpoint(EndpointHooks):
    """The same as coroutines that never wait."""

    async def on_incoming(self, addr: tuple[str, int]) -> Any:
        return Accept

    async def before_connect(self, remote_addr: tuple[str, int], conn: ConnectionInfo) -> Any:
        return Accept

    async def after_handshake(self, conn: ConnectionInfo) -> Any:
        return Accept

    async def on_close(self, conn: ConnectionInfo, stats: ConnectionStats) -> None:
        return None

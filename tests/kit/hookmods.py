"""Packet hooks the end-to-end tests load into the proxy by import path.

The proxy runs in another process, so these hooks report through files in
the directory they are given: the tests read them afterwards.
"""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any

from refractium.endpoint import Accept, ConnectionInfo, EndpointHooks, Reject, Side
from refractium.hooks import Direction, HookContext, ProtocolHook


class Recorder(ProtocolHook):
    """Writes every packet: raw bytes per direction, and the global order."""

    name = "recorder"

    def __init__(self, dir: str) -> None:
        self.dir = Path(dir)

    def on_packet(self, ctx: HookContext, direction: Direction, packet: bytes) -> None:
        base = self.dir / f"{ctx.session_id:016x}"
        side = "in" if direction is Direction.INBOUND else "out"
        with open(f"{base}.{side}", "ab") as raw:
            raw.write(packet)
        with open(f"{base}.order", "a") as order:
            order.write(f"{side} {len(packet)}\n")

    def on_close(self, ctx: HookContext) -> None:
        (self.dir / f"{ctx.session_id:016x}.closed").write_text(ctx.protocol)


class AsyncRecorder(Recorder):
    """The recorder as a coroutine hook: its connections get a hook task."""

    name = "async-recorder"

    async def on_packet(  # type: ignore[override]
        self, ctx: HookContext, direction: Direction, packet: bytes
    ) -> None:
        await asyncio.sleep(0)
        super().on_packet(ctx, direction, packet)


class SometimesAsyncRecorder(Recorder):
    """A plain method that returns an awaitable from its 3rd packet on."""

    name = "sometimes-async-recorder"

    def __init__(self, dir: str) -> None:
        super().__init__(dir)
        self.seen: dict[int, int] = {}

    def on_packet(self, ctx: HookContext, direction: Direction, packet: bytes) -> Any:
        count = self.seen[ctx.session_id] = self.seen.get(ctx.session_id, 0) + 1
        if count < 3:
            return super().on_packet(ctx, direction, packet)
        return self._later(ctx, direction, packet)

    async def _later(self, ctx: HookContext, direction: Direction, packet: bytes) -> None:
        await asyncio.sleep(0.001)
        super().on_packet(ctx, direction, packet)


class SlowDigest(ProtocolHook):
    """An async hook that sleeps per packet and reports digests at the end."""

    name = "slow"

    def __init__(self, dir: str, delay_ms: float = 20) -> None:
        self.dir = Path(dir)
        self.delay = delay_ms / 1000
        self.digests: dict[int, dict[str, hashlib._Hash]] = {}

    async def on_packet(self, ctx: HookContext, direction: Direction, packet: bytes) -> None:
        sides = self.digests.setdefault(
            ctx.session_id, {"in": hashlib.sha256(), "out": hashlib.sha256()}
        )
        sides["in" if direction is Direction.INBOUND else "out"].update(packet)
        sides.setdefault("sizes", hashlib.sha256()).update(b"%d," % len(packet))
        await asyncio.sleep(self.delay)

    def on_close(self, ctx: HookContext) -> None:
        sides = self.digests.pop(ctx.session_id, None)
        if sides is not None:
            text = f"{sides['in'].hexdigest()} {sides['out'].hexdigest()}\n"
            (self.dir / f"{ctx.session_id:016x}.digest").write_text(text)


class Raiser(ProtocolHook):
    """Raises on every packet."""

    name = "raiser"

    def on_packet(self, ctx: HookContext, direction: Direction, packet: bytes) -> None:
        raise RuntimeError("this hook always fails")


class NoOp(ProtocolHook):
    name = "noop"


class DenyRoute(EndpointHooks):
    """An endpoint hook: rejects every connection identified as ``route``."""

    def __init__(self, route: str, code: int = 403) -> None:
        self.route = route
        self.code = code

    def after_handshake(self, conn: ConnectionInfo) -> Any:
        if conn.side is Side.SERVER and conn.protocol == self.route:
            return Reject(self.code, f"route {self.route}".encode())
        return Accept

"""Packet hooks from Python code: define_hook (both forms) and hook_protocol."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from refractium import Refractium
from refractium.hooks import Direction, HookContext, ProtocolHook, define_hook, hook_protocol
from tests.kit.backends import echo_backend, run

ROOT = Path(__file__).resolve().parents[2]


async def test_define_hook_and_hook_protocol_in_code() -> None:
    packets: list[tuple[str, Direction, bytes]] = []

    @define_hook("sync-fn")
    def sync_fn(ctx: HookContext, direction: Direction, packet: bytes) -> None:
        packets.append(("sync-fn", direction, packet))

    @define_hook
    async def async_fn(ctx: HookContext, direction: Direction, packet: bytes) -> None:
        await asyncio.sleep(0.001)
        packets.append(("async_fn", direction, packet))

    class Closing(ProtocolHook):
        name = "closing"

        def __init__(self) -> None:
            self.contexts: list[HookContext] = []

        def on_close(self, ctx: HookContext) -> None:
            self.contexts.append(ctx)

    closing = Closing()
    assert async_fn.name == "async_fn"
    async with echo_backend() as echo:
        engine = (
            Refractium.builder()
            .bind("127.0.0.1")
            .port(0)
            .route(hook_protocol("ssh", hooks=[sync_fn, async_fn, closing]), echo.address)
            .build()
        )
        (_, port), *_ = await engine.start_tcp()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"SSH-2.0-test\r\n")
        async with asyncio.timeout(5):
            assert await reader.readline() == b"SSH-2.0-test\r\n"
        writer.close()
        async with asyncio.timeout(5):
            while not closing.contexts:
                await asyncio.sleep(0.01)
        stats = engine.hook_stats
        await engine.shutdown()
    inbound = (Direction.INBOUND, b"SSH-2.0-test\r\n")
    outbound = (Direction.OUTBOUND, b"SSH-2.0-test\r\n")
    for name in ("sync-fn", "async_fn"):
        assert [p[1:] for p in packets if p[0] == name] == [inbound, outbound]
    (ctx,) = closing.contexts
    assert ctx.protocol == "ssh" and ctx.client_addr[0] == "127.0.0.1"
    assert ctx.backend_addr == ("127.0.0.1", echo.port)
    assert 0 <= ctx.session_id < 1 << 64
    assert stats["sync-fn"].packets == 2 and stats["sync-fn"].bytes == 28


def test_hook_protocol_refuses_unknown_names_and_non_hooks() -> None:
    import pytest

    with pytest.raises(ValueError, match="unknown protocol 'gopher'"):
        hook_protocol("gopher", hooks=[])
    with pytest.raises(ValueError, match="not a packet hook"):
        hook_protocol("http", hooks=[object()])  # type: ignore[list-item]


async def test_packet_hooks_example_runs() -> None:
    done = await run([sys.executable, str(ROOT / "examples" / "packet_hooks.py")], timeout=30)
    assert done.returncode == 0, done.stderr
    out = done.stdout.decode().splitlines()
    assert out[0] == "reply: hooked"
    assert out[1].startswith("http inbound") and out[1].endswith("GET /demo HTTP/1.1")
    assert out[2].startswith("http outbound") and out[2].endswith("HTTP/1.1 200 OK")
    assert out[3] == "bytes seen: {'inbound': 37, 'outbound': 63}"

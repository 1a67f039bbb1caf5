"""The embedding API from an asyncio program: builder, run, reload, shutdown."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from refractium import ConfigError, Refractium
from tests.kit.backends import http_backend, run

ROOT = Path(__file__).resolve().parents[2]


async def get(port: int, path: str = "/") -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    async with asyncio.timeout(10):
        data = await reader.read()
    writer.close()
    return data.split(b"\r\n\r\n", 1)[1]


def test_builder_validates_like_a_file() -> None:
    with pytest.raises(ConfigError) as err:
        Refractium.builder().route("htp", "127.0.0.1:1").build()
    assert str(err.value).startswith("builder: protocols[0].name: unknown protocol 'htp'")
    with pytest.raises(ConfigError, match=r"protocols\[0\].forward_to: not host:port"):
        Refractium.builder().route("http", "nowhere").build()


async def test_run_reload_and_shutdown() -> None:
    async with http_backend("blue") as blue, http_backend("green") as green:
        engine = Refractium.builder().bind("127.0.0.1").port(0).route("http", blue.address).build()
        runner = asyncio.get_running_loop().create_task(engine.run_tcp())
        while not engine.tcp_addresses:
            await asyncio.sleep(0.01)
        port = engine.tcp_addresses[0][1]
        assert await get(port) == b"blue\n"

        # A connection routed before the reload keeps its backend.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /early HTTP/1.1\r\n")
        await asyncio.sleep(0.2)

        engine.reload_routes([{"name": "http", "forward_to": green.address}])
        assert await get(port) == b"green\n"
        writer.write(b"Host: t\r\n\r\n")
        async with asyncio.timeout(10):
            assert (await reader.read()).endswith(b"blue\n")
        writer.close()

        # A bad table is refused and the running one kept.
        with pytest.raises(ConfigError, match="empty pool"):
            engine.reload_routes([{"name": "http", "forward_to": []}])
        assert await get(port) == b"green\n"

        assert engine.tcp_stats.routed["http"] == 4
        await engine.shutdown()
        async with asyncio.timeout(5):
            await runner
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", port)


async def test_reload_from_the_config_file(tmp_path: Path) -> None:
    async with http_backend("one") as one, http_backend("two") as two:
        path = tmp_path / "refractium.toml"
        route = '[server]\nbind = "127.0.0.1"\nport = 0\n[[protocols]]\nname = "http"\n'
        path.write_text(route + f'forward_to = "{one.address}"\n')
        engine = Refractium.from_file(path)
        (_, port), *_ = await engine.start_tcp()
        assert await get(port) == b"one\n"
        path.write_text(route + f'forward_to = "{two.address}"\n')
        engine.reload_routes()
        assert await get(port) == b"two\n"
        path.write_text(route + "forward_to = \n")
        with pytest.raises(ConfigError, match="invalid TOML"):
            engine.reload_routes()
        assert await get(port) == b"two\n"
        await engine.shutdown()


async def test_embed_example_runs() -> None:
    done = await run([sys.executable, str(ROOT / "examples" / "embed.py")], timeout=30)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.decode().splitlines()
    assert lines[1:] == ["before reload: blue", "after reload: green"]

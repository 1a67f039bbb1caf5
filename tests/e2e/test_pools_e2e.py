"""Pools end to end: balancing, failover while a backend dies and returns."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator

from tests.kit.backends import free_port
from tests.kit.proxy import LOCAL_TCP, running_proxy


@contextlib.asynccontextmanager
async def tagged(tag: str, port: int = 0) -> AsyncIterator[asyncio.Server]:
    """An HTTP-ish backend answering its tag; holds a connection open while asked."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            request = await reader.readuntil(b"\r\n\r\n")
            if b"/hold" in request:
                await reader.read()  # until the client leaves
            writer.write(f"HTTP/1.0 200 OK\r\n\r\n{tag}".encode())
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port, reuse_address=True)
    try:
        yield server
    finally:
        server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 2)


def address(server: asyncio.Server) -> str:
    return f"127.0.0.1:{server.sockets[0].getsockname()[1]}"


async def ask(port: int, path: str = "/", source: str = "127.0.0.1") -> str:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    writer.write(f"GET {path} HTTP/1.0\r\n\r\n".encode())
    async with asyncio.timeout(10):
        reply = await reader.read()
    writer.close()
    return reply.split(b"\r\n\r\n", 1)[1].decode()


def pool_config(balance: str, *servers: asyncio.Server, extra: str = "") -> str:
    members = ", ".join(f'"{address(s)}"' for s in servers)
    return f"""
[server]
max_connections_per_ip = 0

[[protocols]]
name = "http"
balance = "{balance}"
forward_to = [{members}]
{extra}
"""


async def test_round_robin_lands_10_10_10() -> None:
    async with tagged("a") as a, tagged("b") as b, tagged("c") as c:
        config = pool_config("round_robin", a, b, c)
        async with running_proxy(*LOCAL_TCP, config=config) as proxy:
            seen = Counter([await ask(proxy.port) for _ in range(30)])
    assert seen == {"a": 10, "b": 10, "c": 10}


async def test_least_connections_prefers_the_least_loaded() -> None:
    async with tagged("a") as a, tagged("b") as b, tagged("c") as c:
        config = pool_config("least_connections", a, b, c)
        async with running_proxy(*LOCAL_TCP, config=config) as proxy:
            # Hold two connections open: they land on two different backends.
            held = []
            for _ in range(2):
                _, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
                writer.write(b"GET /hold HTTP/1.0\r\n\r\n")
                held.append(writer)
            await asyncio.sleep(0.3)
            # Every new short connection goes to the one backend with none open.
            answers = {await ask(proxy.port) for _ in range(5)}
            assert len(answers) == 1
            for writer in held:
                writer.close()


async def test_source_hash_is_sticky_and_moves_only_the_removed_backends_clients() -> None:
    async with tagged("a") as a, tagged("b") as b, tagged("c") as c:
        sources = [f"127.0.0.{i}" for i in range(2, 32)]
        config = pool_config("source_hash", a, b, c)
        async with running_proxy(*LOCAL_TCP, config=config) as proxy:
            first = {ip: await ask(proxy.port, source=ip) for ip in sources}
            again = {ip: await ask(proxy.port, source=ip) for ip in sources}
        assert first == again, "each client stays on its backend"
        assert set(first.values()) == {"a", "b", "c"}, "clients spread over the pool"
        async with running_proxy(*LOCAL_TCP, config=pool_config("source_hash", a, c)) as proxy:
            after = {ip: await ask(proxy.port, source=ip) for ip in sources}
        moved = {ip for ip in sources if after[ip] != first[ip]}
        assert moved == {ip for ip in sources if first[ip] == "b"}


async def test_a_backend_that_dies_and_returns_loses_no_client() -> None:
    port_a = free_port()
    async with tagged("b") as b, tagged("a", port_a) as a:
        check = "health_check = { interval_ms = 200, timeout_ms = 200, rise = 2, fall = 2 }"
        config = pool_config("round_robin", a, b, extra=check)
        async with running_proxy(*LOCAL_TCP, config=config) as proxy:
            assert Counter([await ask(proxy.port) for _ in range(4)]) == {"a": 2, "b": 2}
            a.close()
            await a.wait_closed()
            # Before and after the check notices: every request is answered.
            answers = []
            for _ in range(20):
                answers.append(await ask(proxy.port))
                await asyncio.sleep(0.05)
            assert set(answers) == {"b"}
            await proxy.wait_for(rf"backend 127\.0\.0\.1:{port_a} down")
            async with tagged("a", port_a):
                started = asyncio.get_running_loop().time()
                await proxy.wait_for(rf"backend 127\.0\.0\.1:{port_a} up again", timeout=5)
                # interval 200 ms x rise 2, plus the first check's jitter.
                assert asyncio.get_running_loop().time() - started < 3
                back = Counter([await ask(proxy.port) for _ in range(4)])
                assert back == {"a": 2, "b": 2}


async def test_a_pool_with_every_backend_down_goes_to_the_fallback() -> None:
    dead = [free_port(), free_port()]  # nothing listens there
    async with tagged("fallback") as fallback:
        config = f"""
[server]
fallback_tcp = "{address(fallback)}"

[[protocols]]
name = "http"
forward_to = ["127.0.0.1:{dead[0]}", "127.0.0.1:{dead[1]}"]
"""
        async with running_proxy(*LOCAL_TCP, config=config) as proxy:
            # First by failing over after the dials, then with both marked down.
            assert [await ask(proxy.port) for _ in range(3)] == ["fallback"] * 3
            await proxy.wait_for(rf"backend 127\.0\.0\.1:{dead[1]} down")

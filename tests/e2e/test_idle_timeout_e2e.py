"""``idle_timeout_s``: a relayed connection that moves nothing is closed on both sides."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

from tests.kit.proxy import running_proxy

HOST = "127.0.0.1"


class Echo:
    """An echo backend that notes when each connection it served was closed, and how."""

    def __init__(self) -> None:
        self.ended: list[float] = []

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
        except ConnectionError:
            pass
        self.ended.append(time.monotonic())
        writer.close()


@contextlib.asynccontextmanager
async def echo_backend() -> AsyncIterator[tuple[Echo, int]]:
    echo = Echo()
    server = await asyncio.start_server(echo.serve, HOST, 0)
    try:
        yield echo, server.sockets[0].getsockname()[1]
    finally:
        server.close()


def config(port: int, server_idle: float, route_idle: float | None = None) -> str:
    route = f"idle_timeout_s = {route_idle}\n" if route_idle is not None else ""
    return f"""
[server]
idle_timeout_s = {server_idle}

[[protocols]]
name = "echo"
patterns = ["HELLO"]
transport = "tcp"
forward_to = "{HOST}:{port}"
{route}"""


async def open_relayed(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(HOST, port)
    writer.write(b"HELLO\n")
    assert await asyncio.wait_for(reader.readexactly(6), 5) == b"HELLO\n"
    return reader, writer


async def test_idle_is_closed_on_both_sides_and_a_moving_one_survives() -> None:
    async with (
        echo_backend() as (echo, backend),
        running_proxy("tcp", "-b", HOST, "-p", "0", config=config(backend, 2)) as proxy,
    ):
        idle_reader, idle_writer = await open_relayed(proxy.port)
        busy_reader, busy_writer = await open_relayed(proxy.port)
        started = time.monotonic()
        closed_at = None
        for _ in range(10):  # 5 s: a byte every half second on the busy one
            busy_writer.write(b"x")
            assert await asyncio.wait_for(busy_reader.readexactly(1), 5) == b"x"
            await asyncio.sleep(0.5)
            if (closed_at is None and idle_reader.at_eof()) or idle_reader.exception():
                closed_at = time.monotonic()
        assert await asyncio.wait_for(idle_reader.read(), 5) == b""  # the client side: EOF
        assert len(echo.ended) == 1  # the backend side of the idle one was closed too
        idle_s = echo.ended[0] - started
        assert 2 <= idle_s < 4.5, idle_s
        busy_writer.write(b"y")  # still relayed after 5 s
        assert await asyncio.wait_for(busy_reader.readexactly(1), 5) == b"y"
        await proxy.wait_for(r"closed: idle for \d")
        for writer in (idle_writer, busy_writer):
            writer.close()


async def test_the_route_value_overrides_the_server_one() -> None:
    async with (
        echo_backend() as (echo, backend),
        running_proxy(
            "tcp", "-b", HOST, "-p", "0", config=config(backend, 0.5, route_idle=0)
        ) as proxy,
    ):
        reader, writer = await open_relayed(proxy.port)
        await asyncio.sleep(2)  # four times the server's timeout: the route says never
        writer.write(b"still here")
        assert await asyncio.wait_for(reader.readexactly(10), 5) == b"still here"
        assert echo.ended == []
        writer.close()

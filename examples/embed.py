"""Embed Refractium in an asyncio program: build, serve, reload, shut down.

Run it:  .venv/bin/python examples/embed.py

It starts two tiny backends ("blue" and "green"), puts a proxy in front on a
free port, sends a request through it, swaps the route table so HTTP goes to
"green" (a blue/green deploy), sends another, and stops.
"""

from __future__ import annotations

import asyncio

from refractium import Refractium


async def backend(colour: str) -> asyncio.Server:
    """An HTTP backend that answers every request with its colour."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        body = f"{colour}\n".encode()
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


def address(server: asyncio.Server) -> str:
    host, port = server.sockets[0].getsockname()[:2]
    return f"{host}:{port}"


async def get(port: int) -> str:
    """One HTTP request through the proxy; returns the body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET / HTTP/1.1\r\nHost: demo\r\n\r\n")
    response = await reader.read()
    writer.close()
    return response.split(b"\r\n\r\n", 1)[1].decode().strip()


async def main() -> None:
    blue, green = await backend("blue"), await backend("green")
    engine = (
        Refractium.builder()
        .bind("127.0.0.1")
        .port(0)  # any free port; see engine.tcp_addresses
        .route("http", address(blue))
        .build()
    )
    (host, port), *_ = await engine.start_tcp()
    print(f"proxy on {host}:{port}")
    print("before reload:", await get(port))

    # Swap the whole table atomically; open connections keep their backend.
    engine.reload_routes([{"name": "http", "forward_to": address(green)}])
    print("after reload:", await get(port))

    await engine.shutdown()
    blue.close()
    green.close()


if __name__ == "__main__":
    asyncio.run(main())

"""Packet hooks from Python code: ``define_hook`` and ``hook_protocol``.

Run it:  .venv/bin/python examples/packet_hooks.py

It starts a small HTTP backend, puts a proxy in front whose HTTP route
carries two hooks (one plain function, one coroutine), sends one request
through it and prints what the hooks saw.
"""

from __future__ import annotations

import asyncio

from refractium import Refractium
from refractium.hooks import Direction, HookContext, define_hook, hook_protocol

seen: list[str] = []


@define_hook("printer")
def printer(ctx: HookContext, direction: Direction, packet: bytes) -> None:
    first_line = packet.split(b"\r\n", 1)[0].decode("latin-1")
    seen.append(f"{ctx.protocol} {direction.name.lower():8} {len(packet):4} bytes  {first_line}")


@define_hook  # named after the function: "counter"
async def counter(ctx: HookContext, direction: Direction, packet: bytes) -> None:
    await asyncio.sleep(0)  # a coroutine hook may await: it runs in the connection's hook task
    totals[direction] = totals.get(direction, 0) + len(packet)


totals: dict[Direction, int] = {}


async def backend(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\nhooked")
    await writer.drain()
    writer.close()


async def main() -> None:
    server = await asyncio.start_server(backend, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    engine = (
        Refractium.builder()
        .bind("127.0.0.1")
        .port(0)
        .route(hook_protocol("http", hooks=[printer, counter]), f"127.0.0.1:{port}")
        .build()
    )
    (_, proxy_port), *_ = await engine.start_tcp()

    reader, writer = await asyncio.open_connection("127.0.0.1", proxy_port)
    writer.write(b"GET /demo HTTP/1.1\r\nHost: example\r\n\r\n")
    body = (await reader.read()).split(b"\r\n\r\n", 1)[1]
    writer.close()
    await engine.shutdown()  # lets the hook task deliver what is queued
    server.close()

    print("reply:", body.decode())
    for line in seen:
        print(line)
    print("bytes seen:", {d.name.lower(): n for d, n in totals.items()})
    print("hook stats:", {name: c.packets for name, c in engine.hook_stats.items()})


if __name__ == "__main__":
    asyncio.run(main())

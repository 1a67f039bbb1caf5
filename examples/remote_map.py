"""RemoteMap: what the proxy knows about each client address.

Run it:  .venv/bin/python examples/remote_map.py

:class:`refractium.remotes.RemoteMap` is an endpoint hook that keeps, per
client IP, the open and total connections, rejections, bytes each way and
the backend connect latency. The demo starts an echo backend behind a route
of its own protocol (lines starting with ``PING``), registers a RemoteMap
with ``.hooks(...)``, makes a few connections through the proxy and prints
``remote_map.snapshot()`` as JSON: what the admin API serves on
``/remotes`` when the map is configured in the file::

    [endpoint]
    hooks = [{ use = "refractium.remotes:RemoteMap", idle_expiry_s = 600 }]
"""

from __future__ import annotations

import asyncio
import json

from refractium import Refractium
from refractium.remotes import RemoteMap

#: What each connection sends (and gets back from the echo backend).
PAYLOADS = (b"PING 1\n", b"PING " + b"x" * 1000 + b"\n", b"PING " + b"y" * 100_000 + b"\n")


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Send back everything until the client's EOF, then close."""
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


async def exchange(port: int, payload: bytes) -> int:
    """Send ``payload`` through the proxy, half-close, read the echo; returns its size."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(payload)
    await writer.drain()
    writer.write_eof()
    received = await reader.read()
    writer.close()
    await writer.wait_closed()
    return len(received)


async def main() -> dict[str, object]:
    """Run the demo; returns (and prints) what was sent and the snapshot."""
    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    backend_port = server.sockets[0].getsockname()[1]
    remote_map = RemoteMap(idle_expiry_s=600)
    engine = (
        Refractium.builder()
        .bind("127.0.0.1")
        .port(0)
        .route("echo", f"127.0.0.1:{backend_port}", patterns=["PING"])
        .hooks(remote_map)
        .build()
    )
    (_, port), *_ = await engine.start_tcp()
    received = [await exchange(port, payload) for payload in PAYLOADS]
    # Connections end in the proxy a moment after the client sees them end:
    # shutting down waits for them, so every on_close has run.
    await engine.shutdown()
    server.close()
    report: dict[str, object] = {
        "connections": len(PAYLOADS),
        "bytes_sent": sum(len(payload) for payload in PAYLOADS),
        "bytes_received": sum(received),
        "remotes": remote_map.snapshot(),
    }
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    asyncio.run(main())

"""A connection monitor: follow every connection's life without slowing it down.

Run it:  .venv/bin/python examples/monitor.py

The endpoint hook :class:`Monitor` does almost nothing in the connection's
path: its ``after_handshake`` puts the connection's :class:`ConnectionInfo`
on an :class:`asyncio.Queue` (``put_nowait``, never waiting) and accepts.
A monitoring task takes them from the queue and follows each one through
``conn.events()``: identified, backend connected, closed (with the final
byte counts from ``conn.stats``). Connections open longer than ``max_age_s``
are closed through a :class:`WeakHandle`.

What the monitor keeps (ConnectionInfo views, weak handles) never keeps a
connection alive: once a connection has ended its objects are freed, and
``upgrade()`` on its handle returns None.

The demo starts a small HTTP backend, puts a proxy in front, sends two
requests and opens one keep-alive connection that stays idle until the
monitor closes it, then prints what the monitor saw and exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable

from refractium import Refractium
from refractium.endpoint import (
    Accept,
    ConnectionEvent,
    ConnectionInfo,
    EndpointHooks,
    EventKind,
    Outcome,
    Side,
    WeakHandle,
)


class Monitor(EndpointHooks):
    """Hands each identified connection to a monitoring task; never waits.

    Start :meth:`run` as a task (or use ``async with monitor:``). ``log``
    receives one line per event. ``max_age_s`` (optional) closes connections
    open for longer than that.
    """

    name = "monitor"

    def __init__(
        self,
        log: Callable[[str], None] = print,
        max_age_s: float | None = None,
        queue_size: int = 10_000,
        keep: int = 100,
    ) -> None:
        self.log = log
        self.max_age_s = max_age_s
        self.queue: asyncio.Queue[ConnectionInfo] = asyncio.Queue(queue_size)
        #: the last ``keep`` connections seen (views only: they keep nothing alive)
        self.recent: deque[ConnectionInfo] = deque(maxlen=keep)
        self.dropped = 0  # connections not followed because the queue was full
        self._watchers: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None

    # -- the hook: called by the proxy, in the connection's path -------------

    def after_handshake(self, conn: ConnectionInfo) -> Outcome:
        if conn.side is Side.SERVER:  # identified (Side.CLIENT: backend connected)
            try:
                self.queue.put_nowait(conn)
            except asyncio.QueueFull:
                self.dropped += 1  # never make the connection wait for the monitor
        return Accept

    # -- the monitoring task ---------------------------------------------------

    async def __aenter__(self) -> Monitor:
        self._task = asyncio.create_task(self.run(), name="monitor")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def run(self) -> None:
        """Follow every connection the hook hands over (until cancelled)."""
        while True:
            conn = await self.queue.get()
            self.recent.append(conn)
            watcher = asyncio.create_task(
                self._follow(conn), name=f"monitor-{conn.session_id:016x}"
            )
            self._watchers.add(watcher)
            watcher.add_done_callback(self._watchers.discard)
            self.queue.task_done()

    async def stop(self) -> None:
        """Wait for the connections handed over so far to end and be logged, then stop."""
        if self._task is not None and not self._task.done():
            await self.queue.join()
        if self._watchers:
            await asyncio.wait(set(self._watchers))
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _follow(self, conn: ConnectionInfo) -> None:
        timer = None
        if self.max_age_s is not None:
            # The timer holds a weak handle only: it cannot keep the connection alive.
            loop = asyncio.get_running_loop()
            timer = loop.call_later(self.max_age_s, self._expire, conn.weak_handle())
        try:
            async for event in conn.events():
                self.log(describe(conn, event))
        finally:
            if timer is not None:
                timer.cancel()

    def _expire(self, handle: WeakHandle) -> None:
        live = handle.upgrade()  # None once the connection has ended
        if live is not None:
            self.log(f"{prefix(live.info)} closing: open for more than {self.max_age_s:g} s")
            live.close()


def prefix(conn: ConnectionInfo) -> str:
    host, port = conn.client_addr
    return f"[{conn.session_id:016x}] {host}:{port}"


def describe(conn: ConnectionInfo, event: ConnectionEvent) -> str:
    """One log line for ``event`` of ``conn``."""
    at = f"+{(event.at - conn.started_at) * 1000:7.1f} ms"
    if event.kind is EventKind.IDENTIFIED:
        sni = f" sni={conn.sni}" if conn.sni else ""
        return f"{prefix(conn)} {at} identified: {conn.protocol}{sni}"
    if event.kind is EventKind.BACKEND_CONNECTED:
        backend = conn.backend_addr
        where = f"{backend[0]}:{backend[1]}" if backend is not None else "?"
        return f"{prefix(conn)} {at} backend connected: {where}"
    stats = conn.stats
    if stats is None:  # not reached: CLOSED comes with the final figures
        return f"{prefix(conn)} {at} closed"
    connect = f", connect {stats.connect_s * 1000:.1f} ms" if stats.connect_s is not None else ""
    return (
        f"{prefix(conn)} {at} closed: {stats.outcome}, {stats.bytes_in} bytes in,"
        f" {stats.bytes_out} bytes out, {stats.duration_s * 1000:.1f} ms{connect}"
    )


# -- the demo ------------------------------------------------------------------


async def backend(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """HTTP/1.1 with keep-alive: answers each request until the client leaves."""
    try:
        while await reader.readuntil(b"\r\n\r\n"):
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def request(port: int, keep_open: bool = False) -> str:
    """One GET through the proxy; returns the status line.

    ``keep_open``: stay connected afterwards until the proxy closes us.
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    connection = "keep-alive" if keep_open else "close"
    writer.write(f"GET / HTTP/1.1\r\nHost: demo\r\nConnection: {connection}\r\n\r\n".encode())
    status = (await reader.readline()).decode().strip()
    await reader.readuntil(b"ok\n")
    if keep_open:
        await reader.read()  # until the monitor has the connection closed
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()
    return status


async def main(max_age_s: float = 1.5) -> list[str]:
    """Run the demo; returns the monitor's lines (also printed as they come)."""
    lines: list[str] = []

    def log(line: str) -> None:
        lines.append(line)
        print(line, flush=True)

    server = await asyncio.start_server(backend, "127.0.0.1", 0)
    backend_port = server.sockets[0].getsockname()[1]
    monitor = Monitor(log, max_age_s=max_age_s)
    engine = (
        Refractium.builder()
        .bind("127.0.0.1")
        .port(0)
        .route("http", f"127.0.0.1:{backend_port}")
        .hooks(monitor)
        .build()
    )
    (_, port), *_ = await engine.start_tcp()
    started = time.monotonic()
    async with monitor:
        for _ in range(2):
            print("reply:", await request(port), flush=True)
        print("reply:", await request(port, keep_open=True), flush=True)
        await engine.shutdown()  # lets the open connections finish; the monitor sees them end
    server.close()
    print(f"monitored {len(monitor.recent)} connection(s) in {time.monotonic() - started:.1f} s")
    return lines


if __name__ == "__main__":
    asyncio.run(main())

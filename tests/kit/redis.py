"""A real Redis server (Debian's ``redis-server``) for the tests of shared state.

:func:`redis_server` starts one on a free loopback port, without
persistence, and yields a :class:`RedisServer` whose :meth:`~RedisServer.stop`
and :meth:`~RedisServer.start` take it away and bring it back (empty) on the
same port in the middle of a test. :data:`REDIS_SERVER` is None when the
program is not installed; :func:`need_redis` skips a test then, unless the
environment variable ``CI`` is set, where a missing tool is a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from tests.kit.backends import HOST, free_port
from tests.kit.processes import stop_process

REDIS_SERVER = shutil.which("redis-server") or (
    "/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None
)

#: Mark a test (or a module, as ``pytestmark``) that needs ``redis-server``.
need_redis = pytest.mark.skipif(
    REDIS_SERVER is None and not os.environ.get("CI"),
    reason="redis-server is not installed (scripts/install-tools.sh installs it)",
)


@dataclass(eq=False)
class RedisServer:
    """A ``redis-server`` on ``127.0.0.1:port``, started and stopped at will."""

    port: int
    proc: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    async def start(self) -> None:
        """Start it (again, empty) and return once it answers PING."""
        assert REDIS_SERVER is not None, "redis-server is not installed"
        assert self.proc is None or self.proc.returncode is not None, "already running"
        self.proc = await asyncio.create_subprocess_exec(
            REDIS_SERVER,
            "--port",
            str(self.port),
            "--bind",
            HOST,
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            async with asyncio.timeout(10):
                while not await self._answers():
                    if self.proc.returncode is not None:
                        raise AssertionError(
                            f"redis-server on port {self.port} exited ({self.proc.returncode})"
                        )
                    await asyncio.sleep(0.02)
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Stop it (SIGTERM, then SIGKILL after 5 s); its data goes with it."""
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        await stop_process(proc, group=False)

    async def _answers(self) -> bool:
        try:
            reader, writer = await asyncio.open_connection(HOST, self.port)
        except OSError:
            return False
        try:
            writer.write(b"PING\r\n")
            await writer.drain()
            return await reader.readline() == b"+PONG\r\n"
        except OSError:
            return False
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
        return True


@contextlib.asynccontextmanager
async def redis_server() -> AsyncIterator[RedisServer]:
    """A running ``redis-server`` on a free loopback port, stopped on the way out."""
    for attempt in range(5):
        server = RedisServer(free_port())
        try:
            await server.start()
        except AssertionError:
            # Another process took the port between free_port() and the bind.
            if attempt == 4 or _port_free(server.port):
                raise
            continue
        break
    try:
        yield server
    finally:
        await server.stop()

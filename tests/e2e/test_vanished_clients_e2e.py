"""Clients that vanish while the proxy is not reading them are released.

A backend that accepts and stops reading fills its buffers and the proxy's;
the proxy then stops reading the uploading client (flow control). If that
client resets, nothing reads its socket to see it: before the fix it kept
its ``max_connections`` slot, its descriptors and ``connections_open`` for
good. Now the client side ends at once and new clients are served.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import struct
from collections.abc import Iterator

import pytest

from tests.kit.backends import http_backend
from tests.kit.proxy import running_proxy

HOST = "127.0.0.1"
CLIENTS = 12
UPLOAD_CAP = 64 << 20  # bytes a client offers at most before it resets


@contextlib.contextmanager
def backend_that_never_reads() -> Iterator[int]:
    """A listener whose connections complete (in the backlog) and are never read."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.bind((HOST, 0))
    sock.listen(CLIENTS * 2)
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


def upload_until_blocked(port: int) -> socket.socket:
    """Connect, name the stuck route, then write until the proxy stops reading us."""
    sock = socket.create_connection((HOST, port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
    sock.sendall(b"UPLOAD ")
    sock.settimeout(0.5)  # a send blocked that long: nobody is reading
    chunk = b"x" * 65536
    sent = 0
    with contextlib.suppress(TimeoutError):
        while sent < UPLOAD_CAP:
            sent += sock.send(chunk)
    assert sent < UPLOAD_CAP, "the proxy kept reading a client its backend does not read"
    return sock


def reset(sock: socket.socket) -> None:
    """Close with a TCP reset (SO_LINGER 0), as a client that vanishes does."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


async def get(port: int) -> bytes:
    """A request through the proxy: the answer, or b"" when turned away."""
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        writer.write(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        async with asyncio.timeout(2):
            return await reader.read()
    except ConnectionError:
        return b""
    finally:
        writer.close()


def client_sockets(pid: int, port: int) -> int:
    """Sockets ``pid`` holds that clients connected to ``port`` (not the listener)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    held = 0
    with open("/proc/net/tcp") as table:
        for line in table.readlines()[1:]:
            fields = line.split()
            local_port = int(fields[1].split(":")[1], 16)
            listening = fields[3] == "0A"
            if local_port == port and not listening and fields[9] in inodes:
                held += 1
    return held


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
async def test_reset_clients_of_a_stuck_backend_free_their_slots(loop: str) -> None:
    with backend_that_never_reads() as stuck:
        async with http_backend("web") as web:
            config = f"""
[server]
max_connections = {CLIENTS}

[[protocols]]
name = "stuck"
patterns = ["UPLOAD "]
transport = "tcp"
forward_to = "{HOST}:{stuck}"

[[protocols]]
name = "http"
forward_to = "{web.address}"
"""
            async with running_proxy(
                "tcp", "-b", HOST, "-p", "0", "--loop", loop, config=config
            ) as proxy:
                clients = await asyncio.gather(
                    *(asyncio.to_thread(upload_until_blocked, proxy.port) for _ in range(CLIENTS))
                )
                # Every slot is taken: a new client is turned away.
                assert await get(proxy.port) == b""
                for sock in clients:
                    reset(sock)
                # The client sides end within a sweep or two; the slots come back.
                answer = b""
                async with asyncio.timeout(10):
                    while not answer.endswith(b"web\n"):
                        await asyncio.sleep(0.2)
                        answer = await get(proxy.port)
                # The reset clients' sockets are gone (their backend sides may linger).
                async with asyncio.timeout(5):
                    while client_sockets(proxy.pid, proxy.port):
                        await asyncio.sleep(0.1)
                proxy.proc.send_signal(signal.SIGTERM)

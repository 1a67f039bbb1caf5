"""A client that resets before the proxy accepts it never reaches a hook without an address.

The proxy is stopped (SIGSTOP) while clients connect and reset, so their
connections wait in the listen backlog already dead. On uvloop the accepted
socket can then no longer say who its peer was; such a connection is
dropped (and counted) before any limit or endpoint hook sees it.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import struct
from pathlib import Path

import pytest

from tests.kit.backends import http_backend
from tests.kit.proxy import running_proxy

HOST = "127.0.0.1"

HOOK = '''
from pathlib import Path


class Addresses:
    """Writes every address on_incoming and on_close are given, one a line."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def _write(self, line: str) -> None:
        with self.path.open("a") as out:
            out.write(line + "\\n")

    def on_incoming(self, addr):
        self._write(f"incoming {addr[0]!r} {addr[1]}")

    def on_close(self, conn, stats):
        self._write(f"close {conn.client_addr[0]!r} {conn.client_addr[1]}")
'''


def connect_and_reset(port: int) -> None:
    sock = socket.create_connection((HOST, port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
async def test_no_hook_is_handed_an_empty_address(loop: str, tmp_path: Path) -> None:
    (tmp_path / "addresses.py").write_text(HOOK)
    seen = tmp_path / "seen.txt"
    async with http_backend("web") as web:
        config = f"""
[endpoint]
hooks = [{{ use = "addresses:Addresses", path = "{seen}" }}]

[[protocols]]
name = "http"
forward_to = "{web.address}"
"""
        async with running_proxy(
            "tcp", "-b", HOST, "-p", "0", "--loop", loop, config=config, cwd=tmp_path
        ) as proxy:
            proxy.proc.send_signal(signal.SIGSTOP)
            try:
                for _ in range(5):
                    connect_and_reset(proxy.port)
            finally:
                proxy.proc.send_signal(signal.SIGCONT)
            reader, writer = await asyncio.open_connection(HOST, proxy.port)
            writer.write(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            async with asyncio.timeout(5):
                assert (await reader.read()).endswith(b"web\n")
            writer.close()
            async with asyncio.timeout(5):
                while not seen.exists() or "close" not in seen.read_text():
                    await asyncio.sleep(0.05)
    lines = seen.read_text().splitlines()
    assert not [line for line in lines if "''" in line or line.endswith(" 0")], lines
    assert lines[0] == f"incoming '{HOST}' {lines[0].split()[-1]}"

"""The socks5 probe on what a real client sends, captured live (runs the client program)."""

from __future__ import annotations

import socket
import subprocess

import pytest

from tests.unit.protocols.test_socks5 import MATCH, PROBE


@pytest.mark.parametrize("proxy", ["socks5h://127.0.0.1:{}", "socks5://user:secret@127.0.0.1:{}"])
def test_live_curl_greeting(proxy: str) -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.settimeout(10)
        argv = [
            "curl",
            "-s",
            "-x",
            proxy.format(server.getsockname()[1]),
            "http://example.invalid/",
        ]
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            conn, _ = server.accept()
            with conn:
                conn.settimeout(10)
                greeting = conn.recv(4096)
                while len(greeting) < 2 or len(greeting) < 2 + greeting[1]:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    greeting += chunk
        finally:
            proc.kill()
            proc.wait()
    assert greeting[:1] == b"\x05"
    assert PROBE.probe(greeting) == MATCH

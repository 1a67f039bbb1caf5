"""The ftp probe on what a real client sends, captured live (runs the client program)."""

from __future__ import annotations

import socket
import subprocess
import time

import pytest

from tests.unit.protocols.test_ftp import MATCH, PROBE


def test_live_curl_waits_for_the_greeting() -> None:
    """A real FTP client sends nothing before the 220 (hence on_timeout), then USER."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.settimeout(10)
        url = f"ftp://127.0.0.1:{server.getsockname()[1]}/"
        proc = subprocess.Popen(
            ["curl", "-s", url], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            conn, _ = server.accept()
            with conn:
                conn.settimeout(0.3)
                started = time.monotonic()
                with pytest.raises(TimeoutError):
                    conn.recv(4096)
                assert time.monotonic() - started >= 0.25
                conn.settimeout(10)
                conn.sendall(b"220 refractium test\r\n")
                line = b""
                while not line.endswith(b"\r\n"):
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    line += chunk
        finally:
            proc.kill()
            proc.wait()
    assert line == b"USER anonymous\r\n"
    assert PROBE.probe(line) == MATCH

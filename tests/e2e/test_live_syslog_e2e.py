"""The syslog probe on what a real client sends, captured live (runs the client program)."""

from __future__ import annotations

import socket
import subprocess

import pytest

from tests.unit.protocols.test_syslog import MATCH, PROBE


@pytest.mark.parametrize("options", [[], ["--rfc3164"]], ids=["rfc5424", "rfc3164"])
def test_live_logger_over_udp(options: list[str]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(10)
        port = str(sock.getsockname()[1])
        argv = ["logger", "-n", "127.0.0.1", "-P", port, "-d", *options, "refractium udp"]
        subprocess.run(argv, check=True, timeout=10)
        datagram, _ = sock.recvfrom(65535)
    assert datagram.endswith(b"refractium udp")
    assert PROBE.probe_datagram(datagram) == MATCH


@pytest.mark.parametrize("options", [[], ["--octet-count"]], ids=["lines", "octet-counting"])
def test_live_logger_over_tcp(options: list[str]) -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.settimeout(10)
        port = str(server.getsockname()[1])
        argv = ["logger", "-n", "127.0.0.1", "-P", port, "-T", *options, "refractium tcp"]
        proc = subprocess.Popen(argv)
        try:
            conn, _ = server.accept()
            with conn:
                conn.settimeout(10)
                stream = b""
                while b"refractium tcp" not in stream:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    stream += chunk
        finally:
            proc.wait(timeout=10)
    assert PROBE.probe(stream) == MATCH

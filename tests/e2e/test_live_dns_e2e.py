"""The dns probe on what a real client sends, captured live (runs the client program)."""

from __future__ import annotations

import socket
import subprocess

from tests.unit.protocols.test_dns import MATCH, PROBE, assert_tcp_incremental, tcp


def _dig_argv(port: int, *extra: str) -> list[str]:
    return ["dig", "@127.0.0.1", "-p", str(port), "+tries=1", "+time=5", *extra]


def test_live_dig_over_udp() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(10)
        argv = _dig_argv(sock.getsockname()[1], "refractium.example.org", "TXT")
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            datagram, _ = sock.recvfrom(65535)
        finally:
            proc.kill()
            proc.wait()
    assert b"\x0arefractium\x07example\x03org\x00\x00\x10\x00\x01" in datagram
    assert PROBE.probe_datagram(datagram) == MATCH
    # The same message over TCP, as a client falling back to TCP would send it.
    assert PROBE.probe(tcp(datagram)) == MATCH


def test_live_dig_over_tcp() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.settimeout(10)
        argv = _dig_argv(server.getsockname()[1], "+tcp", "refractium.example.org", "AAAA")
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            conn, _ = server.accept()
            with conn:
                conn.settimeout(10)
                stream = b""
                while len(stream) < 2 or len(stream) < 2 + int.from_bytes(stream[:2], "big"):
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    stream += chunk
        finally:
            proc.kill()
            proc.wait()
    assert int.from_bytes(stream[:2], "big") == len(stream) - 2
    assert_tcp_incremental(stream[2:])
    assert PROBE.probe_datagram(stream[2:]) == MATCH

"""HAProxy's own PROXY headers, v1 and v2, read by refractium's parser.

HAProxy (TCP mode) sits in front of a recording server and sends v1 and v2
headers, with TLVs, spoofed IPv6 and mixed address families; two more recorders
see its health checks. The bytes it writes are checked against the spec and
against what :func:`refractium.wire.proxy_protocol.parse` reports.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from refractium.wire.proxy_protocol import V2_SIGNATURE, ProxyHeader, parse
from tests.kit.backends import free_port

SIG = V2_SIGNATURE
HOST = "127.0.0.1"


def haproxy_exe() -> str:
    found = shutil.which("haproxy") or (
        "/usr/sbin/haproxy" if os.access("/usr/sbin/haproxy", os.X_OK) else None
    )
    assert found, "haproxy is not installed: run scripts/install-tools.sh"
    return found


@dataclass
class Recorder:
    """A TCP server that keeps what each connection sent, until EOF."""

    sock: socket.socket = field(default_factory=socket.socket)
    received: list[bytes] = field(default_factory=list)
    changed: threading.Condition = field(default_factory=threading.Condition)

    def start(self) -> int:
        self.sock.bind((HOST, 0))
        self.sock.listen(64)
        threading.Thread(target=self._accept, daemon=True).start()
        port: int = self.sock.getsockname()[1]
        return port

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        data = b""
        with conn:
            conn.settimeout(10)
            try:
                while chunk := conn.recv(65536):
                    data += chunk
            except OSError:
                pass
        with self.changed:
            self.received.append(data)
            self.changed.notify_all()

    def wait_for(self, predicate: Callable[[bytes], bool], timeout: float = 10) -> bytes:
        with self.changed:
            found = self.changed.wait_for(
                lambda: next((d for d in self.received if predicate(d)), None), timeout
            )
        assert found is not None, f"nothing matching among {self.received!r}"
        return bytes(found)


@dataclass
class HAProxy:
    frontends: dict[str, int]
    traffic: Recorder
    checks: dict[str, tuple[int, Recorder]]

    def relay(self, frontend: str) -> tuple[tuple[str, int], bytes, bytes]:
        """Connect through ``frontend``; the client's address, the payload sent,
        and what the backend received."""
        payload = f"hello through {frontend} {uuid.uuid4()}".encode()
        with socket.create_connection((HOST, self.frontends[frontend]), timeout=10) as client:
            client_address = client.getsockname()
            client.sendall(payload)
            client.shutdown(socket.SHUT_WR)
            while client.recv(4096):
                pass
        received = self.traffic.wait_for(lambda data: data.endswith(payload))
        return (client_address[0], client_address[1]), payload, received


SPOOF_V6 = """\
    tcp-request connection set-src ipv6(2001:db8::7)
    tcp-request connection set-src-port int(4242)
    tcp-request connection set-dst ipv6(2001:db8::8)
    tcp-request connection set-dst-port int(443)
"""
SPOOF_MIXED = """\
    tcp-request connection set-src ipv6(2001:db8::7)
"""


@pytest.fixture(scope="module")
def haproxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HAProxy]:
    """HAProxy in TCP mode in front of a recording server, sending v1 and v2
    headers (with TLVs); two more recorders see its health checks."""
    exe = haproxy_exe()
    traffic = Recorder()
    backend = traffic.start()
    checks = {}
    for name in ("v1", "v2"):
        recorder = Recorder()
        checks[name] = (recorder.start(), recorder)
    # name -> (lines in the frontend, the server's send-proxy options)
    variants = {
        "v1_tcp4": ("", "send-proxy"),
        "v2_tcp4": (
            "    unique-id-format id-%ci-%cp\n",
            "send-proxy-v2 proxy-v2-options crc32c,unique-id",
        ),
        "v1_tcp6": (SPOOF_V6, "send-proxy"),
        "v2_tcp6": (SPOOF_V6, "send-proxy-v2 proxy-v2-options crc32c"),
        "v1_mixed": (SPOOF_MIXED, "send-proxy"),
        "v2_mixed": (SPOOF_MIXED, "send-proxy-v2"),
    }
    frontends = {name: free_port() for name in variants}
    config = [
        "global\n    nbthread 1\n",
        "defaults\n    mode tcp\n    timeout connect 5s\n"
        "    timeout client 10s\n    timeout server 10s\n",
    ]
    for name, (lines, options) in variants.items():
        config.append(
            f"frontend fe_{name}\n    bind {HOST}:{frontends[name]}\n{lines}"
            f"    default_backend be_{name}\n"
            f"backend be_{name}\n    server s {HOST}:{backend} {options}\n"
        )
    for name, options in (("v1", "send-proxy"), ("v2", "send-proxy-v2")):
        config.append(
            f"backend checked_{name}\n"
            f"    server s {HOST}:{checks[name][0]} {options} check inter 200ms\n"
        )
    directory = tmp_path_factory.mktemp("haproxy")
    conf = directory / "haproxy.cfg"
    conf.write_text("".join(config))
    log = directory / "haproxy.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([exe, "-db", "-f", str(conf)], stdout=out, stderr=out)
    try:
        wait_listening(proc, frontends.values(), log)
        yield HAProxy(frontends, traffic, checks)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        traffic.sock.close()
        for _, recorder in checks.values():
            recorder.sock.close()


def wait_listening(proc: subprocess.Popen[bytes], ports: Iterable[int], log: Path) -> None:
    deadline = time.monotonic() + 15
    for port in ports:
        while True:
            assert proc.poll() is None, f"haproxy exited: {log.read_text()}"
            try:
                socket.create_connection((HOST, port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, f"haproxy not listening: {log.read_text()}"
                time.sleep(0.05)


def test_haproxy_v1_tcp4(haproxy: HAProxy) -> None:
    client, payload, received = haproxy.relay("v1_tcp4")
    port = haproxy.frontends["v1_tcp4"]
    line = f"PROXY TCP4 {client[0]} {HOST} {client[1]} {port}\r\n".encode()
    assert received == line + payload  # HAProxy's own bytes, as the spec writes them
    assert parse(received) == ProxyHeader(client, (HOST, port), 1, len(line))


def test_haproxy_v2_tcp4_with_tlvs(haproxy: HAProxy) -> None:
    client, payload, received = haproxy.relay("v2_tcp4")
    header = parse(received)
    assert isinstance(header, ProxyHeader)
    assert header == ProxyHeader(client, (HOST, haproxy.frontends["v2_tcp4"]), 2, header.length)
    assert received[12:14] == b"\x21\x11"
    assert header.length > 16 + 12  # the CRC32C and unique-id TLVs were skipped
    assert f"id-{client[0]}-{client[1]}".encode() in received[: header.length]
    assert received[header.length :] == payload


def test_haproxy_v1_tcp6(haproxy: HAProxy) -> None:
    _, payload, received = haproxy.relay("v1_tcp6")
    line = b"PROXY TCP6 2001:db8::7 2001:db8::8 4242 443\r\n"
    assert received == line + payload
    assert parse(received) == ProxyHeader(("2001:db8::7", 4242), ("2001:db8::8", 443), 1, len(line))


def test_haproxy_v2_tcp6(haproxy: HAProxy) -> None:
    _, payload, received = haproxy.relay("v2_tcp6")
    header = parse(received)
    assert isinstance(header, ProxyHeader)
    assert received[12:14] == b"\x21\x21"
    assert header.source == ("2001:db8::7", 4242)
    assert header.destination == ("2001:db8::8", 443)
    assert header.version == 2
    assert received[header.length :] == payload


@pytest.mark.parametrize("frontend", ["v1_mixed", "v2_mixed"])
def test_haproxy_mixed_families(haproxy: HAProxy, frontend: str) -> None:
    # HAProxy sends the IPv4 destination as IPv4-mapped IPv6; we report IPv4.
    client, payload, received = haproxy.relay(frontend)
    header = parse(received)
    assert isinstance(header, ProxyHeader)
    assert header.source == ("2001:db8::7", client[1])
    assert header.destination == (HOST, haproxy.frontends[frontend])
    assert received[header.length :] == payload
    if frontend == "v1_mixed":
        assert received.startswith(b"PROXY TCP6 2001:db8::7 ::ffff:127.0.0.1 ")


def test_haproxy_v2_health_check_is_local(haproxy: HAProxy) -> None:
    _, recorder = haproxy.checks["v2"]
    received = recorder.wait_for(lambda data: data.startswith(SIG))
    assert received == SIG + b"\x20\x00\x00\x00"
    assert parse(received) == ProxyHeader(None, None, 2, 16)


def test_haproxy_v1_health_check(haproxy: HAProxy) -> None:
    # v1 has no LOCAL: HAProxy sends the check connection's own addresses.
    port, recorder = haproxy.checks["v1"]
    received = recorder.wait_for(lambda data: data.startswith(b"PROXY "))
    header = parse(received)
    assert isinstance(header, ProxyHeader)
    assert header.destination == (HOST, port)
    assert header.length == len(received)

"""Transparent mode across network namespaces: the backend sees the client's address.

Three namespaces, made here and always deleted: a client (10.77.X.2), the
proxy (10.77.X.1 towards the client, 10.78.X.1 towards the backend) and a
backend (10.78.X.2) whose default route is the proxy. The proxy runs inside
its namespace as ``python -m refractium``; the return path is set up there
as an operator would: an nft rule marking packets of transparent sockets,
``ip rule add fwmark 1 lookup 100`` and ``ip route add local 0.0.0.0/0 dev
lo table 100``. ``refractium doctor`` run in the same namespace fails
before the routing is in place and passes after. Nothing leaves the
namespaces. Needs root, ``ip`` and ``nft``: without them the test fails,
it does not skip.
"""

from __future__ import annotations

import random
import secrets
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# Answers one connection with the peer address it sees, then exits.
BACKEND = """
import socket, sys
server = socket.create_server((sys.argv[1], int(sys.argv[2])))
print("ready", flush=True)
conn, peer = server.accept()
conn.recv(100)
conn.sendall(peer[0].encode() + b"\\n")
conn.close()
"""

# Connects (retrying while the proxy starts), says it is SSH, prints the answer.
CLIENT = """
import socket, sys, time
deadline = time.monotonic() + 10
while True:
    try:
        sock = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
        break
    except OSError:
        if time.monotonic() > deadline:
            raise
        time.sleep(0.1)
sock.sendall(b"SSH-2.0-client\\r\\n")
answer = b""
while chunk := sock.recv(100):
    answer += chunk
print(answer.decode().strip())
"""


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=check)


class Namespaces:
    """The client, proxy and backend namespaces and their addresses."""

    def __init__(self) -> None:
        suffix = secrets.token_hex(3)
        self.client, self.proxy, self.backend = (f"rf{r}-{suffix}" for r in "cpb")
        self.suffix = suffix
        octet = random.randint(1, 254)
        self.client_ip, self.proxy_ip = f"10.77.{octet}.2", f"10.77.{octet}.1"
        self.backend_ip, self.inner_ip = f"10.78.{octet}.2", f"10.78.{octet}.1"

    def run(self, ns: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return sh("ip", "netns", "exec", ns, *argv, check=check)

    def create(self) -> None:
        s = self.suffix
        for ns in (self.client, self.proxy, self.backend):
            sh("ip", "netns", "add", ns)
            self.run(ns, "ip", "link", "set", "lo", "up")
        for ns, peer_ns, here, there, here_ip, there_ip in (
            (self.client, self.proxy, f"vc-{s}", f"vp-{s}", self.client_ip, self.proxy_ip),
            (self.backend, self.proxy, f"vb-{s}", f"vq-{s}", self.backend_ip, self.inner_ip),
        ):
            veth = ("type", "veth", "peer", there, "netns", peer_ns)
            sh("ip", "link", "add", here, "netns", ns, *veth)
            self.run(ns, "ip", "addr", "add", f"{here_ip}/24", "dev", here)
            self.run(ns, "ip", "link", "set", here, "up")
            self.run(peer_ns, "ip", "addr", "add", f"{there_ip}/24", "dev", there)
            self.run(peer_ns, "ip", "link", "set", there, "up")
            self.run(ns, "ip", "route", "add", "default", "via", there_ip)

    def delete(self) -> None:
        for ns in (self.client, self.proxy, self.backend):
            sh("ip", "netns", "del", ns, check=False)


@contextmanager
def namespaces() -> Iterator[Namespaces]:
    spaces = Namespaces()
    try:
        spaces.create()
        yield spaces
    finally:
        spaces.delete()


def doctor(spaces: Namespaces, config: Path) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "refractium", "doctor", "-c", str(config)]
    return spaces.run(spaces.proxy, *argv, check=False)


def test_the_backend_sees_the_client_namespace_s_address(tmp_path: Path) -> None:
    with namespaces() as spaces:
        config = tmp_path / "refractium.toml"
        config.write_text(
            textwrap.dedent(
                f"""\
                [server]
                bind = "{spaces.proxy_ip}"
                port = 4430

                [[protocols]]
                name = "ssh"
                forward_to = "{spaces.backend_ip}:2222"
                transparent = true
                """
            )
        )
        nft = "meta l4proto tcp socket transparent 1 meta mark set 1"
        spaces.run(spaces.proxy, "nft", "add", "table", "ip", "refractium")
        spaces.run(
            spaces.proxy,
            "nft",
            "add chain ip refractium prerouting { type filter hook prerouting priority mangle; }",
        )
        spaces.run(spaces.proxy, "nft", f"add rule ip refractium prerouting {nft}")

        before = doctor(spaces, config)
        assert before.returncode == 1, before.stdout + before.stderr
        lines = before.stdout.splitlines()
        assert "ok       CAP_NET_ADMIN: this process has it" in lines
        assert "ok       packet mark (IPv4): nft marks the packets of transparent sockets" in lines
        assert "         fix: ip -4 rule add fwmark 1 lookup 100" in lines
        assert lines[-1] == "doctor: 1 missing"

        spaces.run(spaces.proxy, "ip", "rule", "add", "fwmark", "1", "lookup", "100")
        spaces.run(
            spaces.proxy, "ip", "route", "add", "local", "0.0.0.0/0", "dev", "lo", "table", "100"
        )
        after = doctor(spaces, config)
        assert after.returncode == 0, after.stdout + after.stderr
        assert after.stdout.splitlines()[-1] == "doctor: all in place"

        python = ("ip", "netns", "exec", spaces.backend, sys.executable)
        backend = subprocess.Popen(
            [*python, "-c", BACKEND, spaces.backend_ip, "2222"], stdout=subprocess.PIPE, text=True
        )
        python = ("ip", "netns", "exec", spaces.proxy, sys.executable)
        proxy = subprocess.Popen(
            [*python, "-m", "refractium", "run", "-c", str(config)],
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert backend.stdout is not None and backend.stdout.readline() == "ready\n"
            client = spaces.run(
                spaces.client, sys.executable, "-c", CLIENT, spaces.proxy_ip, "4430", check=False
            )
            assert client.returncode == 0, client.stderr
            assert client.stdout.strip() == spaces.client_ip
        finally:
            for proc in (backend, proxy):
                proc.terminate()
            _, proxy_log = proxy.communicate(timeout=10)
            backend.communicate(timeout=10)
        assert "cannot connect" not in proxy_log, proxy_log

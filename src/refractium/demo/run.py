"""``refractium demo``: one port answering HTTP, TLS and an SSH-style service.

Starts the toy backends of :mod:`refractium.demo.backends`, puts a proxy in
front of them on 127.0.0.1:8080 (or the next free port) and prints the
commands that show each route. Each connection leaves an access line, and
the admin API's dashboard runs on the next free port. The commands are meant for a fresh
Debian or Ubuntu machine: each one finishes by itself, and each tool they
use is either there by default (curl, openssl, bash) or named with its
package (nc).
"""

from __future__ import annotations

import errno
import os
import socket
import tempfile
from pathlib import Path

from refractium.addr import Address, format_host
from refractium.config import AdminConfig, Config, LogConfig
from refractium.demo.backends import DEMO_TLS_NAMES, DemoBackends, start_demo_backends
from refractium.engine import Refractium
from refractium.engine.serve import serve
from refractium.errors import RefractiumError

# A silent client is handed to the SSH-style backend after this long.
DEMO_PEEK_TIMEOUT_MS = 1000

# Clients cannot connect to a wildcard address by name: the commands use loopback.
_LOOPBACK = {"0.0.0.0": "127.0.0.1", "::": "::1"}


def free_port(host: str, first: int, tries: int = 20) -> int:
    """``first`` or the next free port on ``host`` (any free port as a last resort)."""
    for port in [*range(first, first + tries), 0]:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            try:
                probe.bind((host, port))
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    continue
                raise RefractiumError(f"demo: cannot listen on {host}: {exc.strerror}") from None
            return int(probe.getsockname()[1])
    raise RefractiumError(f"demo: no free port on {host}")


def _reason(exc: OSError) -> str:
    """What went wrong, in the system's words."""
    if isinstance(exc, socket.gaierror) or not exc.errno:  # a name that does not resolve
        return exc.strerror or str(exc)
    # Not exc.strerror: the event loop rewrites it ("error while attempting to bind ...").
    return os.strerror(exc.errno)


def build_engine(backends: DemoBackends, host: str, port: int, admin_port: int) -> Refractium:
    def at(address: tuple[str, int]) -> str:
        return f"{format_host(address[0])}:{address[1]}"

    shown = Config(log=LogConfig(access=True), admin=AdminConfig(bind=Address(host, admin_port)))
    return (
        Refractium.builder()
        .config(shown)
        .bind(host)
        .port(port)
        .option(peek_timeout_ms=DEMO_PEEK_TIMEOUT_MS, max_connections_per_ip=0)
        .route("http", at(backends.http))
        .route("tls", at(backends.tls))
        .route("ssh", at(backends.ssh))
        .build()
    )


def instructions(
    host: str, port: int, ca_file: Path, backends: DemoBackends, admin_port: int
) -> str:
    """What the demo prints: each command on its own line, indented by four spaces."""
    name = DEMO_TLS_NAMES[1]
    client = _LOOPBACK.get(host, host)
    # URLs, curl --resolve and openssl -connect want an IPv6 address in brackets.
    where = f"{format_host(client)}:{port}"
    tcp = f"/dev/tcp/{client}/{port}"
    s_client = f"openssl s_client -quiet -connect {where} -servername {name} -CAfile {ca_file}"
    ports = f"http {backends.http[1]}, tls {backends.tls[1]}, ssh {backends.ssh[1]}"
    return f"""
Refractium demo: HTTP, TLS and an SSH-style service share one port, {where}.
Try these from another terminal; each one finishes by itself.

HTTP, identified by its request line:
    curl http://{where}/

TLS, identified by its ClientHello and relayed without being decrypted. The backend's
certificate is signed by a throw-away demo CA, saved in {ca_file}:
    curl --cacert {ca_file} --resolve {name}:{port}:{format_host(client)} https://{name}:{port}/
    {s_client} -alpn h2 </dev/null

SSH-style: a toy backend that sends an SSH banner, then echoes each line it gets back.
It is not a real SSH server (ssh cannot log in to it). A client that sends an SSH
identification string (nc is in the netcat-openbsd package):
    printf 'SSH-2.0-me\\r\\n' | nc -N {client} {port}
The same without nc:
    bash -c 'exec 3<>{tcp}; printf "SSH-2.0-me\\r\\n" >&3; head -n 2 <&3'
A client that sends nothing: after {DEMO_PEEK_TIMEOUT_MS} ms the proxy gives it to the SSH route,
and the backend, which speaks first, sends its banner:
    bash -c 'exec 3<>{tcp}; head -n 1 <&3'

Each connection leaves an access line here when it ends (route, backend, bytes, times).
The dashboard, live: http://{format_host(client)}:{admin_port}/
Backends: {ports} (ports on {backends.http[0]}).
Stop with Ctrl-C.
"""


async def run_demo(host: str = "127.0.0.1", first_port: int = 8080) -> None:
    """Run the demo until SIGINT/SIGTERM.

    Raises:
        RefractiumError: ``host`` cannot be listened on (one line for the user).
    """
    try:
        backends = await start_demo_backends(host)
    except OSError as exc:
        raise RefractiumError(f"demo: cannot listen on {host}: {_reason(exc)}") from None
    try:
        with tempfile.TemporaryDirectory(prefix="refractium-demo-") as tmp:
            ca_file = Path(tmp) / "demo-ca.pem"
            ca_file.write_bytes(backends.tls_ca_pem)
            port = free_port(host, first_port)
            admin_port = free_port(host, port + 1)
            engine = build_engine(backends, host, port, admin_port)
            print(instructions(host, port, ca_file, backends, admin_port), flush=True)
            await serve(engine, transport="tcp")
    finally:
        await backends.stop()

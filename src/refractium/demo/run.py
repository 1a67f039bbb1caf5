"""``refractium demo``: one port answering HTTP, TLS and an SSH-style service.

Starts the toy backends of :mod:`refractium.demo.backends`, puts a proxy in
front of them on 127.0.0.1:8080 (or the next free port) and prints the
commands that show each route.
"""

from __future__ import annotations

import errno
import socket
import tempfile
from pathlib import Path

from refractium.demo.backends import DEMO_TLS_NAMES, DemoBackends, start_demo_backends
from refractium.engine import Refractium
from refractium.engine.serve import serve
from refractium.errors import RefractiumError

# A silent client (nc) is handed to the SSH-style backend after this long.
DEMO_PEEK_TIMEOUT_MS = 1000


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


def build_engine(backends: DemoBackends, host: str, port: int) -> Refractium:
    def at(address: tuple[str, int]) -> str:
        return f"{address[0]}:{address[1]}"

    return (
        Refractium.builder()
        .bind(host)
        .port(port)
        .option(peek_timeout_ms=DEMO_PEEK_TIMEOUT_MS, max_connections_per_ip=0)
        .route("http", at(backends.http))
        .route("tls", at(backends.tls))
        .route("ssh", at(backends.ssh))
        .build()
    )


def instructions(host: str, port: int, ca_file: Path, backends: DemoBackends) -> str:
    name = DEMO_TLS_NAMES[1]
    where = f"{host}:{port}"
    return f"""
Refractium demo: HTTP, TLS and an SSH-style service share {where}

  HTTP   curl http://{where}/
  TLS    curl --cacert {ca_file} --resolve {name}:{port}:{host} https://{name}:{port}/
         openssl s_client -connect {where} -servername {name} -alpn h2 </dev/null
  SSH    printf 'SSH-2.0-me\\r\\n' | nc {host} {port}
         nc {host} {port}     (say nothing: after {DEMO_PEEK_TIMEOUT_MS} ms the SSH-style
                               backend, which speaks first, answers)

Backends: http {backends.http[1]}, tls {backends.tls[1]}, ssh {backends.ssh[1]} (ports).
Stop with Ctrl-C.
"""


async def run_demo(host: str = "127.0.0.1", first_port: int = 8080) -> None:
    """Run the demo until SIGINT/SIGTERM."""
    backends = await start_demo_backends(host)
    try:
        with tempfile.TemporaryDirectory(prefix="refractium-demo-") as tmp:
            ca_file = Path(tmp) / "demo-ca.pem"
            ca_file.write_bytes(backends.tls_ca_pem)
            port = free_port(host, first_port)
            engine = build_engine(backends, host, port)
            print(instructions(host, port, ca_file, backends), flush=True)
            await serve(engine, transport="tcp")
    finally:
        await backends.stop()

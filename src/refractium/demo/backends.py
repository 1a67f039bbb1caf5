"""The demo's backends: toy HTTP, TLS and SSH-style servers, in-process.

:func:`start_demo_backends` (or :func:`demo_backends`) starts them on
ephemeral ports; :mod:`refractium.demo.run` puts the proxy in front of them.
They are :mod:`refractium.demo.servers` with the demo's answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from refractium.demo.certs import issue
from refractium.demo.servers import (
    HostPort,
    Request,
    ServerNames,
    ToyServers,
    serve_echo,
    serve_http,
    serve_tls,
)

logger = logging.getLogger(__name__)

#: The names the demo TLS certificate is valid for (plus the address 127.0.0.1).
DEMO_TLS_NAMES: tuple[str, ...] = ("localhost", "demo.refractium.test")
#: ALPN protocols the demo TLS backend accepts, in its order of preference:
#: clients offering both (curl, browsers) get HTTP/1.1; h2-only clients get h2.
DEMO_TLS_ALPN: tuple[str, ...] = ("http/1.1", "h2")
#: What the SSH-style backend sends first, like sshd does.
DEMO_SSH_BANNER = b"SSH-2.0-RefractiumDemo\r\n"


@dataclass
class DemoBackends:
    """Where the demo backends listen, and how to stop them.

    Attributes:
        http: the plain HTTP/1.1 backend.
        tls: the TLS backend (certificate for :data:`DEMO_TLS_NAMES`).
        ssh: the SSH-style banner backend (server speaks first).
        tls_ca_pem: the PEM certificate of the throw-away CA that signed the TLS
            backend's certificate; give it to a client to verify (``curl --cacert``).
    """

    http: HostPort
    tls: HostPort
    ssh: HostPort
    tls_ca_pem: bytes
    _servers: ToyServers = field(default_factory=ToyServers, repr=False, compare=False)

    async def stop(self) -> None:
        """Stop listening and close every open backend connection."""
        await self._servers.close()


def _http_answer(request: Request) -> str:
    return f"Hello from the Refractium demo HTTP backend\nrequest: {request.line}\n"


def _tls_answer(request: Request) -> str:
    greeting = (
        "Hello from the Refractium demo TLS backend\n"
        f"sni: {request.sni or '(none)'}\n"
        f"alpn: {request.alpn or '(none)'}\n"
    )
    return greeting if request.line is None else f"{greeting}request: {request.line}\n"


async def _demo_http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await serve_http(reader, writer, _http_answer)


async def _demo_ssh(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await serve_echo(reader, writer, banner=DEMO_SSH_BANNER)


async def start_demo_backends(host: str = "127.0.0.1") -> DemoBackends:
    """Start the HTTP, TLS and banner demo backends on ephemeral ports of ``host``."""
    issued = issue(DEMO_TLS_NAMES, ca_name="Refractium demo CA")
    context = issued.server_context(DEMO_TLS_ALPN)
    names = ServerNames(context)

    async def demo_tls(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await serve_tls(reader, writer, names, _tls_answer)

    servers = ToyServers()
    try:
        http = await servers.listen("demo http", host, lambda: _demo_http)
        tls = await servers.listen("demo tls", host, lambda: demo_tls, tls=context)
        ssh = await servers.listen("demo ssh", host, lambda: _demo_ssh)
    except BaseException:
        await servers.close()
        raise
    backends = DemoBackends(http, tls, ssh, issued.ca_pem, _servers=servers)
    logger.debug("demo backends: %s", backends)
    return backends


@contextlib.asynccontextmanager
async def demo_backends(host: str = "127.0.0.1") -> AsyncIterator[DemoBackends]:
    """:func:`start_demo_backends` as an async context manager that stops them."""
    backends = await start_demo_backends(host)
    try:
        yield backends
    finally:
        await backends.stop()

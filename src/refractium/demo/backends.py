"""The demo's backends: toy HTTP, TLS and SSH-style servers, in-process.

In-process asyncio servers on ephemeral ports, started by
:func:`start_demo_backends` or :func:`demo_backends`; :mod:`refractium.demo`
puts the proxy in front of them. Not on the data path: Streams are fine here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import tempfile
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from refractium.demo.certs import issue

logger = logging.getLogger(__name__)

# =============================================================================
# Demo backends
# =============================================================================

#: ``(host, port)`` of a listening demo backend.
HostPort = tuple[str, int]

#: The names the demo TLS certificate is valid for (plus the address 127.0.0.1).
DEMO_TLS_NAMES: tuple[str, ...] = ("localhost", "demo.refractium.test")
#: ALPN protocols the demo TLS backend accepts, in its order of preference:
#: clients offering both (curl, browsers) get HTTP/1.1; h2-only clients get h2.
DEMO_TLS_ALPN: tuple[str, ...] = ("http/1.1", "h2")
#: What the SSH-style backend sends first, like sshd does.
DEMO_SSH_BANNER = b"SSH-2.0-RefractiumDemo\r\n"

_HEAD_LIMIT = 16 * 1024
_IDLE_TIMEOUT = 300.0
_REQUEST_TIMEOUT = 30.0
_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

_Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]

#: Errors a misbehaving or vanishing client causes; they end its connection quietly.
_CLIENT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # includes ConnectionError, ssl.SSLError and TimeoutError
    asyncio.IncompleteReadError,
    asyncio.LimitOverrunError,
    ValueError,  # StreamReader.readline() past its limit
)


class _Connections:
    """Open connections of the demo servers, so that :meth:`close` can end them."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    def serve(
        self, name: str, handler: _Handler
    ) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
        """Wrap ``handler`` as a ``start_server`` callback that tracks and closes."""

        async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            if task is not None:
                self._tasks.add(task)
            self._writers.add(writer)
            logger.debug("demo %s backend: connection from %s", name, _peer(writer))
            try:
                await handler(reader, writer)
            except _CLIENT_ERRORS as exc:
                logger.debug("demo %s backend: %s", name, exc)
            finally:
                self._writers.discard(writer)
                writer.close()
                try:
                    async with asyncio.timeout(5):
                        await writer.wait_closed()
                except TimeoutError:
                    writer.transport.abort()
                except _CLIENT_ERRORS:
                    pass
                if task is not None:
                    self._tasks.discard(task)

        return on_connect

    async def close(self) -> None:
        # Aborting makes the handlers' reads see EOF and their writes fail, so they
        # end by themselves; cancelling them instead makes Python 3.11's
        # start_server log a spurious traceback.
        for writer in list(self._writers):
            writer.transport.abort()
        if self._tasks:
            _, pending = await asyncio.wait(list(self._tasks), timeout=2)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=2)


def _peer(writer: asyncio.StreamWriter) -> str:
    peer = writer.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer)


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
    _servers: list[asyncio.Server] = field(default_factory=list, repr=False, compare=False)
    _connections: _Connections = field(default_factory=_Connections, repr=False, compare=False)

    async def stop(self) -> None:
        """Stop listening and close every open backend connection."""
        servers, self._servers = self._servers, []
        for server in servers:
            server.close()
        await self._connections.close()
        for server in servers:
            await server.wait_closed()


async def start_demo_backends(host: str = "127.0.0.1") -> DemoBackends:
    """Start the HTTP, TLS and banner demo backends on ephemeral ports of ``host``."""
    context, ca_pem = _demo_tls_context()
    connections = _Connections()
    servers: list[asyncio.Server] = []
    try:
        http = await asyncio.start_server(connections.serve("http", _serve_http), host, 0)
        servers.append(http)
        tls = await asyncio.start_server(
            connections.serve("tls", _tls_handler(context)), host, 0, ssl=context
        )
        servers.append(tls)
        ssh = await asyncio.start_server(connections.serve("ssh", _serve_banner), host, 0)
        servers.append(ssh)
    except BaseException:
        for server in servers:
            server.close()
        raise
    backends = DemoBackends(
        http=_bound(http),
        tls=_bound(tls),
        ssh=_bound(ssh),
        tls_ca_pem=ca_pem,
        _servers=servers,
        _connections=connections,
    )
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


def _bound(server: asyncio.Server) -> HostPort:
    address = server.sockets[0].getsockname()
    return (str(address[0]), int(address[1]))


# ----------------------------------------------------------------------------- HTTP


async def _read_head(reader: asyncio.StreamReader) -> bytes:
    """Read an HTTP/1 request head (through the blank line); b"" if there is none."""
    try:
        async with asyncio.timeout(_REQUEST_TIMEOUT):
            return await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        return exc.partial
    except asyncio.LimitOverrunError:
        return b""


def _request_line(head: bytes) -> str:
    line = head.split(b"\r\n", 1)[0][:200]
    return line.decode("ascii", "backslashreplace")


def _http_response(body: str, *, head_only: bool = False) -> bytes:
    payload = body.encode()
    header = (
        "HTTP/1.1 200 OK\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(payload)}\r\n"
        "Connection: close\r\n"
        "\r\n"
    ).encode()
    return header if head_only else header + payload


async def _serve_http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    head = await _read_head(reader)
    if not head:
        return
    line = _request_line(head)
    body = f"Hello from the Refractium demo HTTP backend\nrequest: {line}\n"
    writer.write(_http_response(body, head_only=line.startswith("HEAD ")))
    await writer.drain()


# ----------------------------------------------------------------------------- TLS


def _demo_tls_context() -> tuple[ssl.SSLContext, bytes]:
    """A server context with a fresh certificate for :data:`DEMO_TLS_NAMES`.

    Returns the context and the PEM of the throw-away CA that signed it.
    """
    issued = issue(DEMO_TLS_NAMES, ca_name="Refractium demo CA")
    ca_pem = issued.ca_pem
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with tempfile.TemporaryDirectory(prefix="refractium-demo-") as tmp:
        cert_file = Path(tmp) / "cert.pem"
        key_file = Path(tmp) / "key.pem"
        cert_file.write_bytes(issued.cert_pem + ca_pem)
        key_file.write_bytes(issued.key_pem)
        context.load_cert_chain(cert_file, key_file)
    context.set_alpn_protocols(list(DEMO_TLS_ALPN))
    return context, ca_pem


def _tls_handler(context: ssl.SSLContext) -> _Handler:
    """The TLS backend's handler; installs an SNI callback on ``context`` to learn SNI."""
    server_names: weakref.WeakKeyDictionary[ssl.SSLObject, str] = weakref.WeakKeyDictionary()

    def on_sni(ssl_object: ssl.SSLObject, name: str | None, _context: ssl.SSLContext) -> None:
        if name is not None:
            server_names[ssl_object] = name

    context.sni_callback = on_sni

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ssl_object = writer.get_extra_info("ssl_object")
        sni: str | None = None
        alpn: str | None = None
        if isinstance(ssl_object, ssl.SSLObject):
            sni = server_names.get(ssl_object)
            alpn = ssl_object.selected_alpn_protocol()
        greeting = (
            "Hello from the Refractium demo TLS backend\n"
            f"sni: {sni or '(none)'}\n"
            f"alpn: {alpn or '(none)'}\n"
        )
        if alpn == "h2":
            await _serve_h2(reader, writer, greeting)
            return
        head = await _read_head(reader)
        if not head:
            return
        line = _request_line(head)
        body = f"{greeting}request: {line}\n"
        writer.write(_http_response(body, head_only=line.startswith("HEAD ")))
        await writer.drain()

    return serve


def _h2_frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return (
        len(payload).to_bytes(3, "big") + bytes((kind, flags)) + stream.to_bytes(4, "big") + payload
    )


def _h2_first_stream(data: bytes) -> int | None:
    """The stream of the first HEADERS frame after the client preface, if complete."""
    offset = len(_H2_PREFACE)
    while len(data) - offset >= 9:
        length = int.from_bytes(data[offset : offset + 3], "big")
        if len(data) - offset - 9 < length:
            return None
        if data[offset + 3] == 0x1:  # HEADERS
            return int.from_bytes(data[offset + 5 : offset + 9], "big") & 0x7FFFFFFF
        offset += 9 + length
    return None


async def _serve_h2(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, greeting: str
) -> None:
    """Answer an h2 session: one minimal HTTP/2 response, or plain text for a human.

    A real HTTP/2 client sends its preface at once; someone typing into
    ``openssl s_client -alpn h2`` does not, and gets the greeting as plain text.
    """
    data = b""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(1.0):
            while len(data) < len(_H2_PREFACE) and _H2_PREFACE.startswith(data):
                chunk = await reader.read(65536)
                if not chunk:
                    break
                data += chunk
    if not data.startswith(_H2_PREFACE):
        writer.write(greeting.encode())
        await writer.drain()
        return
    stream: int | None = None
    async with asyncio.timeout(_REQUEST_TIMEOUT):
        while (stream := _h2_first_stream(data)) is None:
            chunk = await reader.read(65536)
            if not chunk or len(data) > 1 << 20:
                return
            data += chunk
    body = f"{greeting}request: HTTP/2 stream {stream}\n".encode()
    content_type = b"text/plain; charset=utf-8"
    content_length = str(len(body)).encode()
    # HPACK: ":status: 200" is static entry 8; the others are literals without
    # indexing whose names are static entries 31 (content-type), 28 (content-length).
    headers = (
        b"\x88"
        + b"\x0f\x10"
        + bytes((len(content_type),))
        + content_type
        + b"\x0f\x0d"
        + bytes((len(content_length),))
        + content_length
    )
    writer.write(
        _h2_frame(0x4, 0x0, 0)  # our SETTINGS
        + _h2_frame(0x4, 0x1, 0)  # ACK of the client's SETTINGS
        + _h2_frame(0x1, 0x4, stream, headers)  # HEADERS, END_HEADERS
        + _h2_frame(0x0, 0x1, stream, body)  # DATA, END_STREAM
        + _h2_frame(0x7, 0x0, 0, stream.to_bytes(4, "big") + bytes(4))  # GOAWAY, NO_ERROR
    )
    await writer.drain()
    # Let the client close first, so that its last frames don't make us reset.
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(2.0):
            while await reader.read(65536):
                pass


# ----------------------------------------------------------------------------- SSH-style


async def _serve_banner(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(DEMO_SSH_BANNER)
    await writer.drain()
    while True:
        async with asyncio.timeout(_IDLE_TIMEOUT):
            line = await reader.readline()
        if not line:
            break
        writer.write(line)
        await writer.drain()

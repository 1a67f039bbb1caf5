"""Backend servers for end-to-end tests: the demo's toy servers, with a recorder.

The HTTP, TLS and echo servers are those of :mod:`refractium.demo.servers`
(the same request parsing, SNI and h2 handling as ``refractium demo``); this
module gives them the test's answers and records what they saw. The bulk
transfer backend is in :mod:`tests.kit.sinksource`, OpenSSH in
:mod:`tests.kit.sshd`.

Every server binds ``127.0.0.1`` on an ephemeral port and reports it as ``.port``.
Each helper is an async context manager yielding an info object; leaving the
``async with`` block stops the server and aborts its open connections.

What the info objects record:

* ``accepted`` counts accepted TCP connections (for TLS: before the handshake);
* ``received[i]`` is what the server read on its ``i``-th connection: the whole
  request for :func:`http_backend` and :func:`tls_backend`, the first
  :data:`RECORD_LIMIT` bytes for the echo and banner backends.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import socket
import ssl
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from refractium.demo.certs import CertificateFiles, issue
from refractium.demo.servers import (
    Handler,
    Request,
    ServerNames,
    ToyServers,
    request_line,
    serve_echo,
    serve_http,
    serve_tls,
)

HOST = "127.0.0.1"

#: The echo and banner backends keep at most this many bytes per connection in ``received``.
RECORD_LIMIT = 1 << 16


# --------------------------------------------------------------------------- helpers


def free_port(host: str = HOST) -> int:
    """A TCP port that was free a moment ago (bind to port 0, read it, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True, slots=True)
class Completed:
    """The outcome of :func:`run` (like :class:`subprocess.CompletedProcess`)."""

    args: list[str]
    returncode: int
    stdout: bytes
    stderr: bytes

    @property
    def out(self) -> str:
        return self.stdout.decode("utf-8", "replace")

    @property
    def err(self) -> str:
        return self.stderr.decode("utf-8", "replace")


async def run(
    cmd: Sequence[str],
    timeout: float = 20,
    input: bytes | None = None,
    env: dict[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> Completed:
    """Run ``cmd`` as an asyncio subprocess and collect its output.

    Raises :class:`TimeoutError` (after killing the process) when it takes longer
    than ``timeout`` seconds. ``env`` replaces the environment when given.
    """
    args = [str(a) for a in cmd]
    proc = await asyncio.create_subprocess_exec(
        *args,
        stdin=asyncio.subprocess.PIPE if input is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        cwd=cwd,
    )
    try:
        async with asyncio.timeout(timeout):
            stdout, stderr = await proc.communicate(input)
    except TimeoutError:
        raise TimeoutError(f"{args} did not finish within {timeout} s") from None
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return Completed(args, proc.returncode, stdout, stderr)


# --------------------------------------------------------------------------- stream servers


@dataclass(eq=False)
class Backend:
    """What a stream backend reports."""

    port: int = 0
    host: str = HOST
    accepted: int = 0
    received: list[bytes] = field(default_factory=list)

    @property
    def address(self) -> str:
        """``host:port``, as the proxy's ``-f name=host:port`` wants it."""
        return f"{self.host}:{self.port}"


#: Serves the connection with the given index in ``Backend.received``.
IndexedHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


@contextlib.asynccontextmanager
async def _serve(
    info: Backend, handler: IndexedHandler, tls: ssl.SSLContext | None = None
) -> AsyncIterator[None]:
    """Serve ``handler(reader, writer, connection_index)``; count and track connections."""
    servers = ToyServers()

    def accept() -> Handler:
        # At the TCP accept, before any TLS handshake: a connection whose
        # handshake fails is counted but never reaches the handler.
        info.accepted += 1
        info.received.append(b"")
        index = len(info.received) - 1

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await handler(reader, writer, index)

        return serve

    try:
        _, info.port = await servers.listen("test", info.host, accept, tls=tls)
        yield
    finally:
        await servers.close()


def _record(info: Backend, index: int, data: bytes, limit: int | None = RECORD_LIMIT) -> None:
    current = info.received[index]
    if limit is not None:
        data = data[: max(0, limit - len(current))]
    if data:
        info.received[index] = current + data


# --------------------------------------------------------------------------- HTTP


@dataclass(eq=False)
class HttpBackend(Backend):
    """An :func:`http_backend`; ``requests`` holds each request line, in order."""

    tag: str = ""
    requests: list[str] = field(default_factory=list)


@contextlib.asynccontextmanager
async def http_backend(tag: str) -> AsyncIterator[HttpBackend]:
    """An HTTP/1.1 server answering every request ``200`` with body ``f"{tag}\\n"``.

    One request per connection (``Connection: close``). A PROXY protocol v1/v2
    header before the request is tolerated and kept in ``received``.
    """
    info = HttpBackend(tag=tag)

    def answer(_: Request) -> str:
        return f"{tag}\n"

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, i: int) -> None:
        def record(data: bytes) -> None:
            _record(info, i, data, limit=None)
            if data:
                info.requests.append(request_line(data))

        await serve_http(reader, writer, answer, record)

    async with _serve(info, handle):
        yield info


# --------------------------------------------------------------------------- TLS


def make_certificates(directory: Path, names: Sequence[str]) -> CertificateFiles:
    """Write a throw-away CA and an EC P-256 server certificate for ``names`` into ``directory``.

    ``127.0.0.1`` is added as an IP SAN so clients may also connect by address.
    """
    issued = issue(names, addresses=(HOST,), ca_name="Refractium test CA", days=2)
    return issued.write(directory)


@dataclass(eq=False)
class TlsBackend(Backend):
    """A :func:`tls_backend`. ``sessions`` lists ``(sni, alpn)`` per completed handshake."""

    tag: str = ""
    names: list[str] = field(default_factory=list)
    ca_file: Path = Path()
    cert_file: Path = Path()
    key_file: Path = Path()
    sessions: list[tuple[str | None, str | None]] = field(default_factory=list)

    @property
    def handshakes(self) -> int:
        return len(self.sessions)


@contextlib.asynccontextmanager
async def tls_backend(
    tag: str, names: list[str], alpn: list[str] | None = None
) -> AsyncIterator[TlsBackend]:
    """A TLS server for ``names`` (certificate signed by ``.ca_file``).

    After the handshake it reads one HTTP/1.1 request and answers ``200`` with body
    ``f"{tag} sni={sni} alpn={alpn}\\n"`` (``None`` when absent). When it selected
    ``h2``, an HTTP/2 client gets that body in an HTTP/2 response; any other
    client gets the line itself, unframed, once it sent something that is not
    the HTTP/2 preface, or after a second of silence.
    ALPN selection follows the order of ``alpn`` (server preference).
    """
    issued = issue(names, addresses=(HOST,), ca_name="Refractium test CA", days=2)
    context = issued.server_context(alpn or ())
    server_names = ServerNames(context)

    def answer(request: Request) -> str:
        return f"{tag} sni={request.sni} alpn={request.alpn}\n"

    with tempfile.TemporaryDirectory(prefix="refractium-tls-") as tmp:
        files = issued.write(Path(tmp))
        info = TlsBackend(
            tag=tag,
            names=list(names),
            ca_file=files.ca_file,
            cert_file=files.cert_file,
            key_file=files.key_file,
        )

        async def handle(
            reader: asyncio.StreamReader, writer: asyncio.StreamWriter, i: int
        ) -> None:
            info.sessions.append(server_names.session(writer))
            record = functools.partial(_record, info, i, limit=None)
            await serve_tls(reader, writer, server_names, answer, record)

        async with _serve(info, handle, context):
            yield info


# --------------------------------------------------------------------------- echo, banner


@contextlib.asynccontextmanager
async def echo_backend() -> AsyncIterator[Backend]:
    """Echo bytes back; on the client's EOF flush, half-close (write_eof) and close."""
    info = Backend()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, i: int) -> None:
        await serve_echo(reader, writer, record=functools.partial(_record, info, i))

    async with _serve(info, handle):
        yield info


@dataclass(eq=False)
class BannerBackend(Backend):
    banner: bytes = b""


@contextlib.asynccontextmanager
async def banner_backend(banner: bytes) -> AsyncIterator[BannerBackend]:
    """A server-speaks-first backend: sends ``banner`` on connect, then echoes like
    :func:`echo_backend`."""
    info = BannerBackend(banner=banner)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, i: int) -> None:
        record = functools.partial(_record, info, i)
        await serve_echo(reader, writer, banner=banner, record=record)

    async with _serve(info, handle):
        yield info

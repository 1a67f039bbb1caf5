"""Toy servers: listening, and serving HTTP/1, TLS (with a minimal h2) and echo.

What :mod:`refractium.demo.backends` is made of, public so that other toy
servers (the test suite's) are these same servers with other answers:

* :class:`ToyServers` listens and keeps track of the open connections, so that
  :meth:`ToyServers.close` ends them all;
* :func:`serve_http`, :func:`serve_tls` and :func:`serve_echo` serve one
  connection each; an ``answer`` callback makes the reply and an optional
  ``record`` callback is handed every byte read;
* :func:`request_end` and :func:`request_line` are pure: they find the first
  HTTP/1 request in a connection's first bytes, after a PROXY protocol header
  if there is one.

Not on the data path: Streams are fine here. Everything read comes from
untrusted clients: reads are bounded in size and time, and a misbehaving
client only ends its own connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from refractium.wire.proxy_protocol import NEED_MORE, ProxyHeader, parse

logger = logging.getLogger(__name__)

#: ``(host, port)`` of a listening server.
HostPort = tuple[str, int]
#: Serves one connection, until it returns.
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
#: Handed what a server read, as it reads it.
Record = Callable[[bytes], None]

#: The most an HTTP request (head and body) may take before it is answered anyway.
REQUEST_LIMIT = 1 << 20
_REQUEST_TIMEOUT = 30.0
_IDLE_TIMEOUT = 300.0
# The StreamReader's buffer, and the echo's read size: bulk echoes move big pieces.
_BUFFER_LIMIT = 1 << 20
_ECHO_READ = 1 << 18
_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

#: Errors a misbehaving or vanishing client causes; they end its connection quietly.
_CLIENT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # includes ConnectionError, ssl.SSLError and TimeoutError
    asyncio.IncompleteReadError,
    asyncio.LimitOverrunError,
    ValueError,  # StreamReader.readline() past its limit
)


# ----------------------------------------------------------------------------- servers


class ToyServers:
    """Listening toy servers and their open connections, so that :meth:`close` can end them."""

    def __init__(self) -> None:
        self._servers: list[asyncio.Server] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def listen(
        self,
        name: str,
        host: str,
        accept: Callable[[], Handler],
        *,
        port: int = 0,
        tls: ssl.SSLContext | None = None,
    ) -> HostPort:
        """Listen on ``host:port`` (any free port by default).

        Args:
            name: what the debug log calls this server.
            host: the address to listen on.
            accept: called as soon as a TCP connection is accepted, before any
                TLS handshake (a connection whose handshake fails never gets
                further); returns the handler that serves that connection.
            port: the port; 0 for any free one.
            tls: serve TLS with this context.

        Returns:
            The address it listens on.
        """
        loop = asyncio.get_running_loop()

        def factory() -> asyncio.StreamReaderProtocol:
            handler = accept()

            async def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                await self._serve(name, handler, reader, writer)

            reader = asyncio.StreamReader(limit=_BUFFER_LIMIT, loop=loop)
            return asyncio.StreamReaderProtocol(reader, connected, loop=loop)

        server = await loop.create_server(factory, host, port, ssl=tls)
        self._servers.append(server)
        address = server.sockets[0].getsockname()
        return (str(address[0]), int(address[1]))

    async def _serve(
        self,
        name: str,
        handler: Handler,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        self._writers.add(writer)
        logger.debug("%s backend: connection from %s", name, _peer(writer))
        try:
            await handler(reader, writer)
        except _CLIENT_ERRORS as exc:
            logger.debug("%s backend: %s", name, exc)
        finally:
            self._writers.discard(writer)
            writer.close()
            try:
                async with asyncio.timeout(5):
                    await writer.wait_closed()
            except TimeoutError:  # the client does not read: drop what is left
                writer.transport.abort()
            except _CLIENT_ERRORS:
                pass
            if task is not None:
                self._tasks.discard(task)

    async def close(self) -> None:
        """Stop listening and end every open connection."""
        servers, self._servers = self._servers, []
        for server in servers:
            server.close()
        # Aborting makes the handlers' reads see EOF and their writes fail, so they
        # end by themselves; cancelling them instead makes Python 3.11's
        # StreamReaderProtocol log a spurious traceback.
        for writer in list(self._writers):
            writer.transport.abort()
        if self._tasks:
            _, pending = await asyncio.wait(list(self._tasks), timeout=2)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=2)
        for server in servers:
            await server.wait_closed()


def _peer(writer: asyncio.StreamWriter) -> str:
    peer = writer.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer)


# ----------------------------------------------------------------------------- HTTP/1


@dataclass(frozen=True, slots=True)
class Request:
    """What a toy server answers: the request line, and for TLS the SNI and ALPN.

    ``line`` is ``None`` when the client sent no request: over h2, someone
    typing into ``openssl s_client`` rather than an HTTP/2 client.
    """

    line: str | None
    sni: str | None = None
    alpn: str | None = None


#: Makes the text/plain body of the reply to a request.
Answer = Callable[[Request], str]


def _request_start(data: bytes) -> int | None:
    """Where the request begins: after a PROXY header (v1 or v2), if any; None: read more."""
    header = parse(data)
    if header is NEED_MORE:
        return None
    # Not a PROXY header, or a malformed one: the request starts at the first byte.
    return header.length if isinstance(header, ProxyHeader) else 0


def request_end(data: bytes) -> int | None:
    """Where the first HTTP/1 request in ``data`` ends, or None while it is incomplete.

    The request is its head through the blank line and a ``Content-Length``
    body; a PROXY protocol header before it counts as part of it.
    """
    start = _request_start(data)
    if start is None:
        return None
    end = data.find(b"\r\n\r\n", start)
    if end < 0:
        return None
    length = 0
    for line in data[start:end].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            with contextlib.suppress(ValueError):
                length = max(0, int(value.strip()))
    total = end + 4 + length
    return total if len(data) >= total else None


def request_line(data: bytes) -> str:
    """The first line of the request in ``data`` (after any PROXY header), at most 200 bytes."""
    start = _request_start(data) or 0
    line = data[start:].split(b"\r\n", 1)[0][:200]
    return line.decode("ascii", "backslashreplace")


async def read_request(reader: asyncio.StreamReader, limit: int = REQUEST_LIMIT) -> bytes:
    """Read one HTTP/1 request (see :func:`request_end`), or what came before EOF or ``limit``.

    Raises:
        TimeoutError: the request took more than 30 s.
    """
    data = b""
    async with asyncio.timeout(_REQUEST_TIMEOUT):
        while request_end(data) is None and len(data) < limit:
            chunk = await reader.read(65536)
            if not chunk:
                break
            data += chunk
    return data


def http_response(body: bytes, *, head_only: bool = False) -> bytes:
    """A ``200 OK`` text/plain response with ``body`` (only the head for a HEAD request)."""
    header = (
        "HTTP/1.1 200 OK\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n"
        "\r\n"
    ).encode()
    return header if head_only else header + body


async def serve_http(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    answer: Answer,
    record: Record | None = None,
) -> None:
    """Read one HTTP/1 request and reply ``200`` with ``answer(request)``, then close."""
    data = await read_request(reader)
    if record is not None:
        record(data)
    if data:
        await _send_answer(writer, data, answer, Request(request_line(data)))


async def _send_answer(
    writer: asyncio.StreamWriter, data: bytes, answer: Answer, request: Request
) -> None:
    head_only = request_line(data).startswith("HEAD ")
    writer.write(http_response(answer(request).encode(), head_only=head_only))
    await writer.drain()


# ----------------------------------------------------------------------------- TLS


class ServerNames:
    """The SNI of each connection of a TLS context (:mod:`ssl` tells only a callback)."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self._names: weakref.WeakKeyDictionary[ssl.SSLObject, str] = weakref.WeakKeyDictionary()
        context.sni_callback = self._on_sni

    def _on_sni(self, ssl_object: ssl.SSLObject, name: str | None, _: ssl.SSLContext) -> None:
        if name is not None:
            self._names[ssl_object] = name

    def session(self, writer: asyncio.StreamWriter) -> tuple[str | None, str | None]:
        """``(sni, alpn)`` of a connection whose handshake is done (None when absent)."""
        ssl_object = writer.get_extra_info("ssl_object")
        if not isinstance(ssl_object, ssl.SSLObject):
            return None, None
        return self._names.get(ssl_object), ssl_object.selected_alpn_protocol()


async def serve_tls(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    names: ServerNames,
    answer: Answer,
    record: Record | None = None,
) -> None:
    """Serve a TLS connection after its handshake: HTTP/1 as :func:`serve_http`, or h2.

    ``names`` must be the :class:`ServerNames` of the listening context; the
    :class:`Request` handed to ``answer`` carries the SNI and ALPN.
    """
    sni, alpn = names.session(writer)
    if alpn == "h2":
        await _serve_h2(reader, writer, Request(None, sni, alpn), answer, record)
        return
    data = await read_request(reader)
    if record is not None:
        record(data)
    if data:
        await _send_answer(writer, data, answer, Request(request_line(data), sni, alpn))


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
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    session: Request,
    answer: Answer,
    record: Record | None,
) -> None:
    """Answer an h2 session: one minimal HTTP/2 response, or plain text for a human.

    A real HTTP/2 client sends its preface at once; someone typing into
    ``openssl s_client -alpn h2`` does not, and gets the answer as plain text.
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
        if record is not None:
            record(data)
        writer.write(answer(session).encode())
        await writer.drain()
        return
    stream: int | None = None
    async with asyncio.timeout(_REQUEST_TIMEOUT):
        while (stream := _h2_first_stream(data)) is None:
            chunk = await reader.read(65536)
            if not chunk or len(data) > REQUEST_LIMIT:
                return
            data += chunk
    if record is not None:
        record(data)
    request = Request(f"HTTP/2 stream {stream}", session.sni, session.alpn)
    body = answer(request).encode()
    content_type = b"text/plain; charset=utf-8"
    content_length = str(len(body)).encode()
    # HPACK (RFC 7541, appendix A): ":status: 200" is static entry 8; the others are
    # literals without indexing whose names are static entries 31 (content-type)
    # and 28 (content-length).
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


# ----------------------------------------------------------------------------- echo


async def serve_echo(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    *,
    banner: bytes = b"",
    record: Record | None = None,
) -> None:
    """Send ``banner`` first (a server that speaks first, like sshd), then echo every byte.

    On the client's EOF it flushes and half-closes; a connection idle for
    five minutes is closed.
    """
    if banner:
        writer.write(banner)
        await writer.drain()
    while True:
        async with asyncio.timeout(_IDLE_TIMEOUT):
            chunk = await reader.read(_ECHO_READ)
        if not chunk:
            break
        if record is not None:
            record(chunk)
        writer.write(chunk)
        await writer.drain()
    if writer.can_write_eof():
        writer.write_eof()
    await writer.drain()

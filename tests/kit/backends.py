"""Real backend servers for end-to-end tests.

Every server binds ``127.0.0.1`` on an ephemeral port and reports it as ``.port``.
Each helper is an async context manager yielding an info object; leaving the
``async with`` block stops the server and aborts its open connections.

Conventions shared by the stream backends:

* ``accepted`` counts accepted TCP connections (for TLS: before the handshake);
* ``received[i]`` is what the server read on its ``i``-th connection: the whole
  request for :func:`http_backend`, the first :data:`RECORD_LIMIT` bytes for the
  echo and banner backends.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import getpass
import hashlib
import os
import random
import re
import signal
import socket
import ssl
import struct
import tempfile
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from refractium.demo.certs import issue

HOST = "127.0.0.1"

#: The echo and banner backends keep at most this many bytes per connection in ``received``.
RECORD_LIMIT = 1 << 16

#: PROXY protocol v2 signature; the HTTP backend skips a v1 or v2 header before the request.
PROXY_V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


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


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]

_QUIET_ERRORS = (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError)


@contextlib.asynccontextmanager
async def _serve(
    info: Backend, handler: Handler, ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[None]:
    """Serve ``handler(reader, writer, connection_index)``; count and track connections."""
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[Any]] = set()
    writers: set[asyncio.StreamWriter] = set()

    async def on_connect(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        writers.add(writer)
        try:
            await handler(reader, writer, index)
        except _QUIET_ERRORS:
            pass
        finally:
            writers.discard(writer)
            writer.close()
            try:
                async with asyncio.timeout(5):
                    await writer.wait_closed()
            except TimeoutError:  # the peer does not read: drop what is left
                writer.transport.abort()
            except _QUIET_ERRORS:
                pass
            tasks.discard(task)

    def factory() -> asyncio.StreamReaderProtocol:
        # Runs when the TCP connection is accepted, before any TLS handshake (a
        # connection whose handshake fails is counted but never reaches the handler).
        info.accepted += 1
        info.received.append(b"")
        index = len(info.received) - 1

        async def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await on_connect(reader, writer, index)

        reader = asyncio.StreamReader(limit=1 << 20, loop=loop)
        return asyncio.StreamReaderProtocol(reader, connected, loop=loop)

    server = await loop.create_server(factory, info.host, 0, ssl=ssl_context)
    info.port = server.sockets[0].getsockname()[1]
    try:
        yield
    finally:
        server.close()
        # Aborted connections end their handlers (reads see EOF); cancelling them
        # instead makes Python 3.11's start_server log a spurious traceback.
        for writer in list(writers):
            writer.transport.abort()
        if tasks:
            _, pending = await asyncio.wait(list(tasks), timeout=2)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=2)
        await server.wait_closed()


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


def _request_end(data: bytes) -> int | None:
    """The length of the first HTTP request in ``data`` (after any PROXY header), or None."""
    start = 0
    if len(data) < len(PROXY_V2_SIGNATURE) and (
        PROXY_V2_SIGNATURE.startswith(data) or b"PROXY ".startswith(data[:6])
    ):
        return None
    if data.startswith(PROXY_V2_SIGNATURE):
        if len(data) < 16:
            return None
        start = 16 + struct.unpack_from(">H", data, 14)[0]
    elif data.startswith(b"PROXY "):
        eol = data.find(b"\r\n")
        if eol < 0:
            return None
        start = eol + 2
    end = data.find(b"\r\n\r\n", start)
    if end < 0:
        return None
    length = 0
    for line in data[start:end].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            with contextlib.suppress(ValueError):
                length = int(value.strip())
    total = end + 4 + length
    return total if len(data) >= total else None


def _request_line(data: bytes) -> str:
    if data.startswith(PROXY_V2_SIGNATURE) and len(data) >= 16:
        data = data[16 + struct.unpack_from(">H", data, 14)[0] :]
    elif data.startswith(b"PROXY "):
        data = data[data.find(b"\r\n") + 2 :]
    return data.split(b"\r\n", 1)[0].decode("latin-1")


async def _read_request(reader: asyncio.StreamReader, limit: int = 1 << 20) -> bytes:
    """Read one HTTP/1 request (head and Content-Length body), or up to EOF."""
    data = b""
    while _request_end(data) is None and len(data) < limit:
        chunk = await reader.read(65536)
        if not chunk:
            break
        data += chunk
    return data


def _http_response(body: bytes, *, head_only: bool = False) -> bytes:
    head = (
        "HTTP/1.1 200 OK\r\n"
        "Content-Type: text/plain\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    return head if head_only else head + body


@contextlib.asynccontextmanager
async def http_backend(tag: str) -> AsyncIterator[HttpBackend]:
    """An HTTP/1.1 server answering every request ``200`` with body ``f"{tag}\\n"``.

    One request per connection (``Connection: close``). A PROXY protocol v1/v2
    header before the request is tolerated and kept in ``received``.
    """
    info = HttpBackend(tag=tag)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, i: int) -> None:
        data = await _read_request(reader)
        _record(info, i, data, limit=None)
        if not data:
            return
        line = _request_line(data)
        info.requests.append(line)
        writer.write(_http_response(f"{tag}\n".encode(), head_only=line.startswith("HEAD ")))
        await writer.drain()

    async with _serve(info, handle):
        yield info


# --------------------------------------------------------------------------- TLS


@dataclass(frozen=True, slots=True)
class Certificates:
    """PEM files in a directory: a CA, and a server certificate it signed."""

    ca_file: Path
    cert_file: Path
    key_file: Path


def make_certificates(directory: Path, names: Sequence[str]) -> Certificates:
    """Create a throw-away CA and an EC P-256 server certificate for ``names``.

    ``127.0.0.1`` is added as an IP SAN so clients may also connect by address.
    """
    issued = issue(names, addresses=(HOST,), ca_name="Refractium test CA", days=2)
    paths = Certificates(directory / "ca.pem", directory / "cert.pem", directory / "key.pem")
    paths.ca_file.write_bytes(issued.ca_pem)
    paths.cert_file.write_bytes(issued.cert_pem)
    paths.key_file.write_bytes(issued.key_pem)
    return paths


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
    ``h2`` it writes that line at once, unframed, and closes.
    ALPN selection follows the order of ``alpn`` (server preference).
    """
    with tempfile.TemporaryDirectory(prefix="refractium-tls-") as tmp:
        certs = make_certificates(Path(tmp), names)
        info = TlsBackend(
            tag=tag,
            names=list(names),
            ca_file=certs.ca_file,
            cert_file=certs.cert_file,
            key_file=certs.key_file,
        )
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(certs.cert_file, certs.key_file)
        if alpn:
            context.set_alpn_protocols(alpn)
        server_names: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()

        def on_sni(ssl_object: Any, server_name: str | None, _ctx: ssl.SSLContext) -> None:
            if server_name is not None:
                server_names[ssl_object] = server_name

        context.sni_callback = on_sni

        async def handle(
            reader: asyncio.StreamReader, writer: asyncio.StreamWriter, i: int
        ) -> None:
            ssl_object = writer.get_extra_info("ssl_object")
            sni = server_names.get(ssl_object)
            selected = ssl_object.selected_alpn_protocol()
            info.sessions.append((sni, selected))
            line = f"{tag} sni={sni} alpn={selected}\n".encode()
            if selected == "h2":
                writer.write(line)
                await writer.drain()
                # Swallow what the client sent already so closing doesn't reset.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.2):
                        while chunk := await reader.read(65536):
                            _record(info, i, chunk)
                return
            data = await _read_request(reader)
            _record(info, i, data, limit=None)
            if data:
                head_only = data.startswith(b"HEAD ")
                writer.write(_http_response(line, head_only=head_only))
                await writer.drain()

        async with _serve(info, handle, context):
            yield info


# --------------------------------------------------------------------------- echo, banner


async def _echo(
    info: Backend, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, i: int
) -> None:
    """Echo until EOF, then flush and half-close (the caller closes)."""
    while chunk := await reader.read(1 << 18):
        _record(info, i, chunk)
        writer.write(chunk)
        await writer.drain()
    if writer.can_write_eof():
        writer.write_eof()
    await writer.drain()


@contextlib.asynccontextmanager
async def echo_backend() -> AsyncIterator[Backend]:
    """Echo bytes back; on the client's EOF flush, half-close (write_eof) and close."""
    info = Backend()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, i: int) -> None:
        await _echo(info, reader, writer, i)

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
        writer.write(banner)
        await writer.drain()
        await _echo(info, reader, writer, i)

    async with _serve(info, handle):
        yield info


# --------------------------------------------------------------------------- bulk transfer

BLOCK_SIZE = 1 << 20
#: The deterministic data the sink/source backend (and :func:`sink_source_exchange`) send:
#: this 1 MiB block repeated, the last copy truncated.
BLOCK = random.Random(0x5EF1AC7).randbytes(BLOCK_SIZE)
_BLOCK_VIEW = memoryview(BLOCK)
_CHUNK = 1 << 18


def pattern_chunks(n: int, chunk: int = _CHUNK) -> Iterator[memoryview]:
    """The first ``n`` bytes of the repeated :data:`BLOCK`, in pieces of at most ``chunk``."""
    sent = 0
    while sent < n:
        offset = sent % BLOCK_SIZE
        size = min(chunk, BLOCK_SIZE - offset, n - sent)
        yield _BLOCK_VIEW[offset : offset + size]
        sent += size


@functools.lru_cache(maxsize=32)
def expected_sha256(n: int) -> str:
    """Hex sha256 of the first ``n`` bytes of the pattern (what the source sends)."""
    digest = hashlib.sha256()
    for piece in pattern_chunks(n, BLOCK_SIZE):
        digest.update(piece)
    return digest.hexdigest()


@dataclass(slots=True)
class SinkSourceRecord:
    """The server's view of one connection."""

    requested: int | None = None  # N from the 8-byte header
    sent: int = 0
    received: int = 0  # bytes after the header, up to EOF
    sha256: str | None = None  # hex digest of those bytes, set at EOF
    completed: bool = False  # trailer written


@dataclass(eq=False)
class SinkSourceBackend:
    port: int = 0
    host: str = HOST
    accepted: int = 0
    records: list[SinkSourceRecord] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


class _SinkSourceProtocol(asyncio.Protocol):
    def __init__(self, info: SinkSourceBackend, live: set[_SinkSourceProtocol]) -> None:
        self._info = info
        self._live = live
        self._transport: asyncio.Transport | None = None
        self._header = b""
        self._digest = hashlib.sha256()
        self._paused = False
        self._eof = False
        self.record = SinkSourceRecord()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses: no isinstance check.
        self._transport = cast(asyncio.Transport, transport)
        self._info.accepted += 1
        self._info.records.append(self.record)
        self._live.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._live.discard(self)

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def data_received(self, data: bytes) -> None:
        if self.record.requested is None:
            need = 8 - len(self._header)
            self._header += data[:need]
            data = data[need:]
            if len(self._header) < 8:
                return
            self.record.requested = struct.unpack(">Q", self._header)[0]
            self._pump()
        if data:
            self._digest.update(data)
            self.record.received += len(data)

    def eof_received(self) -> bool:
        self._eof = True
        self.record.sha256 = self._digest.hexdigest()
        if self.record.requested is None:
            return False  # no header: just close
        self._maybe_finish()
        return True  # keep the transport open for writing

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self._pump()

    def _pump(self) -> None:
        transport = self._transport
        requested = self.record.requested
        assert transport is not None
        assert requested is not None
        while not self._paused and self.record.sent < requested and not transport.is_closing():
            offset = self.record.sent % BLOCK_SIZE
            size = min(_CHUNK, BLOCK_SIZE - offset, requested - self.record.sent)
            transport.write(_BLOCK_VIEW[offset : offset + size])
            self.record.sent += size
        self._maybe_finish()

    def _maybe_finish(self) -> None:
        transport = self._transport
        requested = self.record.requested
        if (
            transport is None
            or requested is None
            or not self._eof
            or self.record.sent < requested
            or self.record.completed
            or transport.is_closing()
        ):
            return
        self.record.completed = True
        transport.write(f"sha256={self.record.sha256} bytes={self.record.received}\n".encode())
        transport.close()


@contextlib.asynccontextmanager
async def sink_source_backend() -> AsyncIterator[SinkSourceBackend]:
    """Bulk-transfer server.

    Protocol: the client sends a big-endian uint64 ``N`` and then any amount of data
    followed by EOF. The server streams ``N`` bytes of the pattern (see
    :func:`pattern_chunks`, :func:`expected_sha256`) concurrently, hashes everything
    after the header, and once both are done writes
    ``f"sha256={hex} bytes={count}\\n"`` and closes. Flow-controlled, no buffering.
    """
    loop = asyncio.get_running_loop()
    info = SinkSourceBackend()
    live: set[_SinkSourceProtocol] = set()
    server = await loop.create_server(lambda: _SinkSourceProtocol(info, live), info.host, 0)
    info.port = server.sockets[0].getsockname()[1]
    try:
        yield info
    finally:
        server.close()
        for protocol in list(live):
            protocol.abort()
        await server.wait_closed()


@dataclass(frozen=True, slots=True)
class ExchangeResult:
    """What :func:`sink_source_exchange` saw."""

    received: int  # data bytes received before the trailer
    received_sha256: str
    trailer: str  # the trailer line without its newline ("" when missing)
    trailer_sha256: str | None  # the server's digest of what we uploaded
    trailer_bytes: int | None

    def check(self, upload: int, download: int) -> None:
        """Assert that both directions arrived intact."""
        assert self.received == download, (self.received, download)
        assert self.received_sha256 == expected_sha256(download), "download corrupted"
        assert self.trailer_bytes == upload, (self.trailer, upload)
        assert self.trailer_sha256 == expected_sha256(upload), "upload corrupted"


async def sink_source_exchange(
    port: int, upload: int, download: int, host: str = HOST, timeout: float = 120
) -> ExchangeResult:
    """Talk to a :func:`sink_source_backend` (directly or through the proxy).

    Sends the header and ``upload`` pattern bytes then EOF, while concurrently
    reading ``download`` bytes plus the trailer. Use ``result.check(upload, download)``.
    """
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(host, port, limit=1 << 20)
        try:

            async def send() -> None:
                writer.write(struct.pack(">Q", download))
                for piece in pattern_chunks(upload):
                    writer.write(piece)
                    await writer.drain()
                writer.write_eof()
                await writer.drain()

            async def receive() -> tuple[int, str, bytes]:
                digest = hashlib.sha256()
                got = 0
                tail = b""
                while chunk := await reader.read(1 << 20):
                    if got < download:
                        take = min(len(chunk), download - got)
                        digest.update(memoryview(chunk)[:take])
                        got += take
                        chunk = chunk[take:]
                    if len(tail) < 4096:
                        tail += chunk
                return got, digest.hexdigest(), tail

            _, (got, hexdigest, tail) = await asyncio.gather(send(), receive())
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
    trailer = tail.decode("latin-1").rstrip("\n")
    match = re.fullmatch(r"sha256=([0-9a-f]{64}) bytes=(\d+)", trailer)
    return ExchangeResult(
        received=got,
        received_sha256=hexdigest,
        trailer=trailer,
        trailer_sha256=match.group(1) if match else None,
        trailer_bytes=int(match.group(2)) if match else None,
    )


# --------------------------------------------------------------------------- OpenSSH

SSHD = "/usr/sbin/sshd"


@dataclass(eq=False)
class SshdBackend:
    """A running :func:`sshd_backend`.

    ``host_key_pub`` is the public key file's text (``"ssh-ed25519 AAAA... comment\\n"``);
    ``host_key`` is just ``"ssh-ed25519 AAAA..."``, which is what ``ssh-keyscan`` prints
    after the host. ``client_key`` is a private key authorized to log in as ``user``.
    """

    port: int
    host_key_pub: str
    host_key: str
    client_key: Path
    user: str
    directory: Path
    proc: asyncio.subprocess.Process
    log_lines: list[str]
    host: str = HOST

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def ssh_command(self, *remote: str, port: int | None = None, host: str = HOST) -> list[str]:
        """argv for a non-interactive ``ssh`` login (to ``port``, e.g. the proxy's)."""
        return [
            "ssh",
            "-F",
            "/dev/null",
            "-i",
            str(self.client_key),
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
            "-o",
            "ConnectTimeout=10",
            "-p",
            str(self.port if port is None else port),
            f"{self.user}@{host}",
            *remote,
        ]

    def keyscan_command(self, port: int | None = None, host: str = HOST) -> list[str]:
        """argv for ``ssh-keyscan`` of the ed25519 key (to ``port``, e.g. the proxy's)."""
        return ["ssh-keyscan", "-T", "10", "-t", "ed25519", "-p", str(port or self.port), host]


def _sshd_config(directory: Path, port: int, user: str) -> str:
    lines = [
        f"ListenAddress {HOST}",
        f"Port {port}",
        f"HostKey {directory / 'host_ed25519'}",
        f"PidFile {directory / 'sshd.pid'}",
        f"AuthorizedKeysFile {directory / 'authorized_keys'}",
        f"AllowUsers {user}",
        "UsePAM no",
        "StrictModes no",
        "PermitRootLogin prohibit-password",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "UseDNS no",
        "PrintMotd no",
        "MaxStartups 200:30:400",
        "LoginGraceTime 30",
        "LogLevel INFO",
    ]
    return "\n".join(lines) + "\n"


async def _collect_lines(stream: asyncio.StreamReader, sink: list[str]) -> None:
    while line := await stream.readline():
        sink.append(line.decode("utf-8", "replace").rstrip("\r\n"))


async def _stop_process(proc: asyncio.subprocess.Process, group: bool) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            if group:
                os.killpg(proc.pid, signal.SIGTERM)
            else:
                proc.terminate()
        try:
            async with asyncio.timeout(5):
                await proc.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
    elif group:
        # Session children may outlive the listener; they share its process group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)


@contextlib.asynccontextmanager
async def sshd_backend() -> AsyncIterator[SshdBackend]:
    """A real OpenSSH server (``/usr/sbin/sshd -D -e``) on 127.0.0.1.

    Yields once sshd logged ``Server listening``. The port is picked by binding port 0
    and closing, so a collision is possible: startup is retried on bind failures.
    """
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # privilege separation dir
    user = getpass.getuser()
    with tempfile.TemporaryDirectory(prefix="refractium-sshd-") as tmp:
        directory = Path(tmp)
        for name, comment in (("host_ed25519", "refractium-test-host"), ("client", "client")):
            keygen = await run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", name],
                cwd=directory,
            )
            assert keygen.returncode == 0, keygen.err
        host_key_pub = (directory / "host_ed25519.pub").read_text()
        (directory / "authorized_keys").write_text((directory / "client.pub").read_text())
        for attempt in range(5):
            port = free_port()
            config = directory / "sshd_config"
            config.write_text(_sshd_config(directory, port, user))
            proc = await asyncio.create_subprocess_exec(
                SSHD,
                "-D",
                "-e",
                "-f",
                str(config),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
            )
            log_lines: list[str] = []
            assert proc.stderr is not None
            reader = asyncio.get_running_loop().create_task(_collect_lines(proc.stderr, log_lines))
            try:
                ready = await _wait_sshd(proc, log_lines, port)
            except BaseException:
                await _stop_process(proc, group=True)
                reader.cancel()
                raise
            if not ready:
                await _stop_process(proc, group=True)
                with contextlib.suppress(asyncio.CancelledError):
                    await reader
                log = "\n".join(log_lines)
                if "Address already in use" in log and attempt < 4:
                    continue
                raise AssertionError(f"sshd did not start (exit {proc.returncode}):\n{log}")
            break
        info = SshdBackend(
            port=port,
            host_key_pub=host_key_pub,
            host_key=" ".join(host_key_pub.split()[:2]),
            client_key=directory / "client",
            user=user,
            directory=directory,
            proc=proc,
            log_lines=log_lines,
        )
        try:
            yield info
        finally:
            await _stop_process(proc, group=True)
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader


async def _wait_sshd(proc: asyncio.subprocess.Process, log: list[str], port: int) -> bool:
    """Wait until sshd listens on ``port``; False if it exited first."""
    needle = f"Server listening on {HOST} port {port}"
    async with asyncio.timeout(15):
        while True:
            if any(needle in line for line in log):
                return True
            if proc.returncode is not None:
                await asyncio.sleep(0.05)  # let the reader collect the last lines
                return False
            try:
                async with asyncio.timeout(0.05):
                    await proc.wait()
            except TimeoutError:
                pass

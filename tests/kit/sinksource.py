"""The sink/source backend: bulk data both ways at once, checked by digest.

The client sends a big-endian uint64 ``N``, then any amount of data, then EOF.
The server streams ``N`` bytes of a fixed pattern at the same time, hashes
everything after the header and, once both directions are done, writes
``sha256=<hex> bytes=<count>\n`` and closes. :func:`sink_source_exchange` is
the matching client; both sides check what they got against
:func:`expected_sha256`, so nothing is kept in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import random
import re
import struct
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import cast

from tests.kit.backends import HOST

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

"""What endpoint hooks see of a live connection, and the one thing they may do to it.

The relay owns one :class:`ConnectionRecord` per connection (or UDP flow)
whose hooks need it. :class:`ConnectionInfo` is a read-only view of it;
:class:`WeakHandle` refers to the connection without keeping it alive past
its end, and its ``upgrade()`` gives a :class:`ConnectionHandle` that can
only close it.
The record reaches the connection through :class:`LiveConnection`, so this
module knows nothing of the relay's classes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Protocol

from refractium.endpoint.api import (
    ConnectionEvent,
    ConnectionStats,
    EventKind,
    Reject,
    Side,
    Verdict,
)
from refractium.protocols.base import Match


class Figures(Protocol):
    """What a live connection tells about itself: bytes and reads each way so far."""

    bytes_in: int
    bytes_out: int
    packets_in: int
    packets_out: int


class LiveConnection(Figures, Protocol):
    """A connection (or UDP flow) as its record sees it: figures, and how to end it."""

    def close_by_hook(self) -> None:
        """Close both sides, flushing what was written."""

    def abort(self) -> None:
        """Cut both sides now."""


class ConnectionRecord:
    """What is known about one proxied connection: shared by its two views.

    Owned by the relay. It refers to the live connection until the end, then
    drops it and keeps a copy of the final figures, so views of it kept by
    hooks never keep an ended connection alive. Not a weak reference: the
    relay's classes may be compiled, and a compiled object's weak references
    are not cleared when it is freed.
    """

    __slots__ = (
        "_changed",
        "_closed",
        "_conn",
        "alpn",
        "backend_addr",
        "client_addr",
        "connect_s",
        "events",
        "final",
        "local_addr",
        "match",
        "protocol",
        "session_id",
        "sni",
        "started_at",
    )

    def __init__(
        self,
        conn: LiveConnection,
        session_id: int,
        client_addr: tuple[str, int],
        local_addr: tuple[str, int] | None,
    ) -> None:
        self._conn: LiveConnection | None = conn
        self.session_id = session_id
        self.client_addr = client_addr
        self.local_addr = local_addr
        self.protocol: str | None = None
        self.sni: str | None = None
        self.alpn: tuple[str, ...] = ()
        # What identified it: its JA4 is computed only if a hook reads it.
        self.match: Match | None = None
        self.backend_addr: tuple[str, int] | None = None
        self.connect_s: float | None = None
        self.started_at = time.time()
        self.events: list[ConnectionEvent] = []
        self.final: ConnectionStats | None = None
        self._changed: asyncio.Future[None] | None = None
        self._closed: asyncio.Future[None] | None = None

    def live(self) -> LiveConnection | None:
        return self._conn

    def figures(self) -> Figures | ConnectionStats | None:
        return self.live() or self.final

    def emit(self, kind: EventKind) -> None:
        self.events.append(ConnectionEvent(kind, time.time()))
        changed, self._changed = self._changed, None
        if changed is not None and not changed.done():
            changed.set_result(None)

    def finish(
        self, figures: Figures, outcome: str, route: str | None, verdict: Verdict | None
    ) -> ConnectionStats:
        """Take the connection's final figures, end its views and return the figures."""
        rejected = verdict if isinstance(verdict, Reject) else None
        stats = ConnectionStats(
            bytes_in=figures.bytes_in,
            bytes_out=figures.bytes_out,
            packets_in=figures.packets_in,
            packets_out=figures.packets_out,
            duration_s=max(0.0, time.time() - self.started_at),
            connect_s=self.connect_s,
            outcome=outcome,
            route=route,
            error_code=rejected.error_code if rejected is not None else None,
            reason=rejected.reason if rejected is not None else None,
        )
        self.end(stats)
        return stats

    def end(self, stats: ConnectionStats) -> None:
        self.final = stats
        self._conn = None
        self.emit(EventKind.CLOSED)
        if self._closed is not None and not self._closed.done():
            self._closed.set_result(None)

    async def wait_closed(self) -> None:
        if self.final is not None:
            return
        if self._closed is None:
            self._closed = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._closed)

    async def wait_changed(self) -> None:
        if self._changed is None:
            self._changed = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._changed)


class ConnectionInfo:
    """A read-only view of one side of a proxied connection.

    Safe to keep: it does not keep the connection alive. Figures are live
    while the connection is open and final afterwards.
    """

    __slots__ = ("_record", "side")

    def __init__(self, record: ConnectionRecord, side: Side) -> None:
        self._record = record
        self.side = side

    @property
    def session_id(self) -> int:
        """Random 64-bit id, the same as the packet hooks' ``ctx.session_id``."""
        return self._record.session_id

    @property
    def client_addr(self) -> tuple[str, int]:
        """The client's (host, port); the real client's behind a trusted PROXY header."""
        return self._record.client_addr

    @property
    def local_addr(self) -> tuple[str, int] | None:
        """The proxy address the client connected to."""
        return self._record.local_addr

    @property
    def protocol(self) -> str | None:
        """The route's name once identified (``fallback`` for fallback_tcp)."""
        return self._record.protocol

    @property
    def sni(self) -> str | None:
        return self._record.sni

    @property
    def alpn(self) -> tuple[str, ...]:
        return self._record.alpn

    @property
    def ja4(self) -> str | None:
        """The client's JA4 fingerprint (TLS over TCP, QUIC), else None."""
        match = self._record.match
        return None if match is None else match.ja4

    @property
    def backend_addr(self) -> tuple[str, int] | None:
        """The backend dialled (being dialled, for ``before_connect``)."""
        return self._record.backend_addr

    @property
    def started_at(self) -> float:
        """When the client connected (``time.time()``)."""
        return self._record.started_at

    @property
    def bytes_in(self) -> int:
        """Client bytes relayed to the backend so far."""
        figures = self._record.figures()
        return figures.bytes_in if figures is not None else 0

    @property
    def bytes_out(self) -> int:
        """Backend bytes relayed to the client so far."""
        figures = self._record.figures()
        return figures.bytes_out if figures is not None else 0

    @property
    def packets_in(self) -> int:
        figures = self._record.figures()
        return figures.packets_in if figures is not None else 0

    @property
    def packets_out(self) -> int:
        figures = self._record.figures()
        return figures.packets_out if figures is not None else 0

    @property
    def is_alive(self) -> bool:
        return self._record.live() is not None

    @property
    def stats(self) -> ConnectionStats | None:
        """The final figures, once the connection has ended."""
        return self._record.final

    async def closed(self) -> None:
        """Return once the connection has ended (at once if it has)."""
        await self._record.wait_closed()

    async def events(self) -> AsyncIterator[ConnectionEvent]:
        """Everything that happened to the connection, then what happens next.

        Ends after :attr:`EventKind.CLOSED`.
        """
        record = self._record
        seen = 0
        while True:
            while seen < len(record.events):
                event = record.events[seen]
                seen += 1
                yield event
                if event.kind is EventKind.CLOSED:
                    return
            await record.wait_changed()

    def weak_handle(self) -> WeakHandle:
        """A handle that can close the connection, without keeping it alive."""
        return WeakHandle(self._record)

    def __repr__(self) -> str:
        host, port = self.client_addr
        return (
            f"<ConnectionInfo {self.session_id:016x} {self.side.value} {host}:{port}"
            f" {self.protocol or '?'}{' alive' if self.is_alive else ''}>"
        )


class WeakHandle:
    """Refers to a connection without keeping it alive."""

    __slots__ = ("_record",)

    def __init__(self, record: ConnectionRecord) -> None:
        self._record = record

    def upgrade(self) -> ConnectionHandle | None:
        """A handle to the connection while it is open; None once it has ended.

        Hold the result briefly: it keeps the connection's objects alive.
        """
        conn = self._record.live()
        return ConnectionHandle(conn, self._record) if conn is not None else None


class ConnectionHandle:
    """A live connection, as far as a hook may touch it: it can only be closed."""

    __slots__ = ("_conn", "info")

    def __init__(self, conn: LiveConnection, record: ConnectionRecord) -> None:
        self._conn = conn
        self.info = ConnectionInfo(record, Side.SERVER)

    def close(self) -> None:
        """Close both sides now; what was written is still flushed."""
        self._conn.close_by_hook()

    def abort(self) -> None:
        """Cut both sides now (a reset; nothing more is sent)."""
        self._conn.abort()

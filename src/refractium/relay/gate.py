"""The endpoint gate: where a connection (or UDP flow) meets the endpoint hooks.

One :class:`Gate` per connection, made only when the engine has endpoint
hooks (a connection without them spends nothing here). It owns the
connection's :class:`~refractium.endpoint.info.ConnectionRecord` (when any
hook needs one) and runs each point of the contract in order: ``on_incoming``
on accept, the incoming ``after_handshake`` once identified, ``before_connect``
per backend tried, the outgoing ``after_handshake`` once a backend is up,
and ``on_close`` at the end. TCP and UDP share it; each reacts to a Reject
in its own terms through :meth:`Gated.reject`.

The gate holds no reference to its connection (the connection holds the
gate): methods that need it take it as an argument, so a finished
connection is freed by reference counting.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from time import perf_counter
from typing import Any, Protocol

from refractium.addr import Address
from refractium.endpoint.api import Accept, EventKind, Side, Verdict
from refractium.endpoint.chain import Call, EndpointChain
from refractium.endpoint.info import ConnectionInfo, ConnectionRecord, LiveConnection
from refractium.protocols.base import Match


class Gated(LiveConnection, Protocol):
    """A connection as the gate needs it: alive or not, and how to refuse it."""

    @property
    def closed(self) -> bool:
        """True once the connection has ended (the client left, or it was refused)."""

    def reject(self, verdict: Verdict, where: str) -> None:
        """Refuse the connection in its protocol's terms (``where``: the hook point)."""


class Gate:
    """One connection's endpoint hooks and the record their views read."""

    __slots__ = ("chain", "record")

    def __init__(
        self,
        chain: EndpointChain,
        conn: LiveConnection,
        session_id: int,
        client_addr: tuple[str, int],
        local_addr: tuple[str, int] | None,
    ) -> None:
        self.chain = chain
        self.record = (
            ConnectionRecord(conn, session_id, client_addr, local_addr)
            if chain.needs_record
            else None
        )

    @property
    def checks_incoming(self) -> bool:
        return bool(self.chain.incoming)

    @property
    def checks_backend(self) -> bool:
        """Whether the outgoing after_handshake decides before anything flows."""
        return bool(self.chain.after_handshake)

    def incoming(self, addr: tuple[str, int]) -> Verdict | Awaitable[Verdict]:
        """``on_incoming``: a verdict now, or an awaitable when a hook really waits."""
        return self.chain.run(self.chain.incoming, addr, where="on_incoming")

    def client_known(self, client_addr: tuple[str, int], local: tuple[str, int] | None) -> None:
        """A trusted PROXY header named the real client (and the address it reached)."""
        record = self.record
        if record is not None:
            record.client_addr = client_addr
            record.local_addr = local or record.local_addr

    async def allows(self, conn: Gated, calls: tuple[Call, ...], where: str, *args: object) -> bool:
        """Run ``calls``; on a Reject, have ``conn`` refuse its client and return False."""
        verdict = await self.chain.decide(calls, *args, where=where)
        if conn.closed:  # the client left while the hooks thought
            return False
        if verdict is Accept:
            return True
        conn.reject(verdict, where)
        return False

    async def identified(
        self, conn: Gated, client_addr: tuple[str, int], route: str, match: Match | None
    ) -> bool:
        """The route is chosen: record it, then the incoming ``after_handshake`` decides."""
        record = self.record
        if record is None:
            return True
        record.client_addr = client_addr
        record.protocol = route
        record.sni = match.sni if match is not None else None
        record.alpn = match.alpn if match is not None else ()
        record.match = match
        record.emit(EventKind.IDENTIFIED)
        calls = self.chain.after_handshake
        if not calls:
            return True
        return await self.allows(
            conn, calls, "after_handshake", ConnectionInfo(record, Side.SERVER)
        )

    async def before_connect(self, conn: Gated, remote: tuple[str, int]) -> bool:
        """About to dial ``remote``: ``before_connect`` decides."""
        record = self.record
        if record is None:
            return True
        record.backend_addr = remote
        calls = self.chain.before_connect
        if not calls:
            return True
        return await self.allows(
            conn, calls, "before_connect", remote, ConnectionInfo(record, Side.SERVER)
        )

    async def backend_ready(self, conn: Gated, remote: tuple[str, int], connect_s: float) -> bool:
        """The backend is connected: the outgoing ``after_handshake`` decides."""
        record = self.record
        if record is None:
            return True
        record.backend_addr = remote
        record.connect_s = connect_s
        calls = self.chain.after_handshake
        if not calls:
            return True
        return await self.allows(
            conn, calls, "after_handshake", ConnectionInfo(record, Side.CLIENT)
        )

    def relaying(self, backend: Address | None, dial_started: float) -> None:
        """Bytes flow to ``backend``: the record's ``BACKEND_CONNECTED`` event."""
        record = self.record
        if record is None:
            return
        if record.connect_s is None:
            record.connect_s = perf_counter() - dial_started
        record.backend_addr = (backend.host, backend.port) if backend is not None else None
        record.emit(EventKind.BACKEND_CONNECTED)

    def ended(
        self,
        conn: LiveConnection,
        outcome: str,
        route: str | None,
        verdict: Verdict | None,
        spawn: Callable[[Any], object],
    ) -> None:
        """The connection is over: final figures, then every ``on_close`` hook."""
        if self.record is not None:
            self.chain.ended(self.record, conn, outcome, route, verdict, spawn)

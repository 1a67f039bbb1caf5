"""The endpoint gate: each point of the contract, in order, for any connection."""

from __future__ import annotations

import asyncio
from typing import Any

from refractium.addr import Address
from refractium.endpoint import (
    ConnectionInfo,
    ConnectionStats,
    EndpointHooks,
    EventKind,
    Reject,
    Side,
)
from refractium.endpoint.chain import EndpointChain
from refractium.protocols.base import Match
from refractium.relay.gate import Gate
from tests.unit.relay.fakes import FakeConn


class Journal(EndpointHooks):
    """Writes down what it is told, in order."""

    def __init__(self, refuse_at: str = "") -> None:
        self.refuse_at = refuse_at
        self.lines: list[tuple[Any, ...]] = []

    def _answer(self, where: str) -> Reject | None:
        return Reject(403, where.encode()) if where == self.refuse_at else None

    def on_incoming(self, addr: tuple[str, int]) -> Any:
        self.lines.append(("on_incoming", addr))
        return self._answer("on_incoming")

    def after_handshake(self, conn: ConnectionInfo) -> Any:
        where = f"after_handshake/{conn.side.value}"
        self.lines.append((where, conn.protocol, conn.sni, conn.backend_addr))
        return self._answer(where)

    def before_connect(self, remote_addr: tuple[str, int], conn: ConnectionInfo) -> Any:
        self.lines.append(("before_connect", remote_addr))
        return self._answer("before_connect")

    def on_close(self, conn: ConnectionInfo, stats: ConnectionStats) -> None:
        self.lines.append(("on_close", stats.outcome, stats.route, stats.bytes_in))


def spawn(coro: Any) -> None:
    asyncio.get_running_loop().create_task(coro)


async def test_every_point_in_order_with_what_is_known_there() -> None:
    hook, conn = Journal(), FakeConn()
    gate = Gate(EndpointChain([hook]), conn, 7, conn.client_addr, ("192.0.2.1", 443))
    assert gate.incoming(conn.client_addr) is not None
    assert await gate.identified(conn, conn.client_addr, "https", Match("tls", sni="a.example"))
    assert await gate.before_connect(conn, ("127.0.0.1", 8443))
    assert await gate.backend_ready(conn, ("127.0.0.1", 8443), 0.002)
    gate.relaying(Address("127.0.0.1", 8443), 0.0)
    conn.bytes_in = 5
    gate.ended(conn, "relayed", "https", None, spawn)
    assert hook.lines == [
        ("on_incoming", ("192.0.2.7", 40000)),
        ("after_handshake/server", "https", "a.example", None),
        ("before_connect", ("127.0.0.1", 8443)),
        ("after_handshake/client", "https", "a.example", ("127.0.0.1", 8443)),
        ("on_close", "relayed", "https", 5),
    ]
    record = gate.record
    assert record is not None
    assert [e.kind for e in record.events] == [
        EventKind.IDENTIFIED,
        EventKind.BACKEND_CONNECTED,
        EventKind.CLOSED,
    ]
    assert record.connect_s == 0.002
    assert conn.rejected == []


async def test_a_reject_is_handed_to_the_connection_with_its_point() -> None:
    for point in ("after_handshake/server", "before_connect", "after_handshake/client"):
        hook, conn = Journal(refuse_at=point), FakeConn()
        gate = Gate(EndpointChain([hook]), conn, 7, conn.client_addr, None)
        allowed = (
            await gate.identified(conn, conn.client_addr, "http", None)
            and await gate.before_connect(conn, ("127.0.0.1", 80))
            and await gate.backend_ready(conn, ("127.0.0.1", 80), 0.001)
        )
        assert not allowed
        [(verdict, where)] = conn.rejected
        assert verdict == Reject(403, point.encode())
        assert where == point.split("/")[0]


async def test_a_connection_gone_while_a_hook_waits_is_not_rejected() -> None:
    release = asyncio.Event()
    conn = FakeConn()

    class Slow(EndpointHooks):
        async def after_handshake(self, info: ConnectionInfo) -> Any:
            await release.wait()
            return Reject(403, b"late")

    gate = Gate(EndpointChain([Slow()]), conn, 7, conn.client_addr, None)
    deciding = asyncio.get_running_loop().create_task(
        gate.identified(conn, conn.client_addr, "http", None)
    )
    await asyncio.sleep(0)
    conn.closed = True  # the client left meanwhile
    release.set()
    assert await deciding is False
    assert conn.rejected == []


async def test_only_on_incoming_needs_no_record() -> None:
    class Door(EndpointHooks):
        def on_incoming(self, addr: tuple[str, int]) -> Any:
            return None

    conn = FakeConn()
    gate = Gate(EndpointChain([Door()]), conn, 7, conn.client_addr, None)
    assert gate.record is None and gate.checks_incoming and not gate.checks_backend
    assert await gate.identified(conn, conn.client_addr, "http", None)
    assert await gate.before_connect(conn, ("127.0.0.1", 80))


async def test_the_views_see_the_side_they_are_for() -> None:
    seen: list[Side] = []

    class Sides(EndpointHooks):
        def after_handshake(self, info: ConnectionInfo) -> Any:
            seen.append(info.side)
            return None

    conn = FakeConn()
    gate = Gate(EndpointChain([Sides()]), conn, 7, conn.client_addr, None)
    await gate.identified(conn, conn.client_addr, "http", None)
    await gate.backend_ready(conn, ("127.0.0.1", 80), 0.001)
    assert seen == [Side.SERVER, Side.CLIENT]

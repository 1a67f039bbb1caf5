"""The dial plan shared by TCP and UDP, with connect() played by the test."""

from __future__ import annotations

import logging

import pytest

from refractium.addr import Address
from refractium.endpoint import EndpointHooks, Reject
from refractium.endpoint.chain import EndpointChain
from refractium.relay.dial import dial
from refractium.relay.gate import Gate
from tests.unit.relay.fakes import FakeBackend, FakeConn, RecordingHealth, context, tables

A, B, C = "127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7009"


def routes_with_fallback() -> tuple[object, ...]:
    built = tables([{"name": "http", "forward_to": [A, B]}], fallback_tcp=C)
    return built, built.tcp.routes[0], built.tcp.fallback


class Connector:
    """connect(): refuses the addresses in ``refuse``, records every attempt."""

    def __init__(self, *refuse: str, timeout: str = "") -> None:
        self.refuse = set(refuse)
        self.timeout = timeout
        self.tried: list[str] = []

    async def __call__(self, address: Address) -> FakeBackend:
        self.tried.append(str(address))
        if str(address) == self.timeout:
            raise TimeoutError
        if str(address) in self.refuse:
            raise ConnectionRefusedError(111, "Connection refused")
        return FakeBackend(address)


async def test_pool_in_order_then_the_fallback_with_health_reports(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="refractium.relay.dial")
    built, route, fallback = routes_with_fallback()
    health = RecordingHealth()
    ctx = context(built, health)
    health.configure({Address("127.0.0.1", p): None for p in (7001, 7002, 7009)})
    conn, connect = FakeConn(), Connector(A, timeout=B)
    failures: list[int] = []
    backend = await dial(
        conn, route, fallback, ctx, None, connect, on_failure=lambda: failures.append(1)
    )
    assert backend is not None and str(backend.address) == C
    assert connect.tried == [A, B, C]
    assert health.reports == [("failure", A), ("failure", B), ("success", C)]
    assert len(failures) == 2
    assert conn.route is fallback and str(conn.backend_addr) == C
    assert not health.is_up(Address("127.0.0.1", 7001))  # passive: down at once
    assert [r.getMessage() for r in caplog.records if r.name == "refractium.relay.dial"] == [
        f"route http: cannot connect to {A}: connection refused",
        f"route http: cannot connect to {B}: timed out",
    ]


async def test_down_backends_are_skipped() -> None:
    built, route, fallback = routes_with_fallback()
    health = RecordingHealth()
    ctx = context(built, health)
    health.configure({Address("127.0.0.1", 7001): None})
    health.report_failure(Address("127.0.0.1", 7001), "refused")
    connect = Connector()
    await dial(FakeConn(), route, fallback, ctx, None, connect)
    assert connect.tried == [B]


async def test_none_left_is_none() -> None:
    built, route, _ = routes_with_fallback()
    connect = Connector(A, B)
    assert await dial(FakeConn(), route, None, context(built), None, connect) is None
    assert connect.tried == [A, B]


async def test_an_unconfirmed_socket_reports_no_success() -> None:
    """UDP: a connected socket proves nothing; the backend's first reply does."""
    built, route, _ = routes_with_fallback()
    health = RecordingHealth()
    ctx = context(built, health)
    backend = await dial(FakeConn(), route, None, ctx, None, Connector(), confirmed=False)
    assert backend is not None and health.reports == []


async def test_a_client_gone_after_a_failure_stops_the_plan() -> None:
    built, route, fallback = routes_with_fallback()
    conn = FakeConn()
    tried: list[str] = []

    async def connect(address: Address) -> FakeBackend:
        tried.append(str(address))
        conn.closed = True  # the client left while this dial failed
        raise ConnectionRefusedError(111, "Connection refused")

    assert await dial(conn, route, fallback, context(built), None, connect) is None
    assert tried == [A]


class Policy(EndpointHooks):
    def __init__(self, refuse: str = "", refuse_backend: bool = False) -> None:
        self.refuse = refuse
        self.refuse_backend = refuse_backend
        self.seen: list[tuple[str, object]] = []

    def before_connect(self, remote_addr: tuple[str, int], conn: object) -> object:
        self.seen.append(("before_connect", remote_addr))
        if f"{remote_addr[0]}:{remote_addr[1]}" == self.refuse:
            return Reject(451, b"not there")
        return None

    def after_handshake(self, conn: object) -> object:
        side = conn.side.value  # type: ignore[attr-defined]
        self.seen.append(("after_handshake", side))
        if side == "client" and self.refuse_backend:
            return Reject(403, b"no")
        return None


def gate_for(hook: Policy, conn: FakeConn) -> Gate:
    return Gate(EndpointChain([hook]), conn, 1, conn.client_addr, None)


async def test_before_connect_runs_per_candidate_and_a_reject_stops_the_dial() -> None:
    built, route, fallback = routes_with_fallback()
    conn, hook, connect = FakeConn(), Policy(refuse=B), Connector(A)
    backend = await dial(conn, route, fallback, context(built), gate_for(hook, conn), connect)
    assert backend is None
    assert connect.tried == [A]  # B was never dialled
    assert hook.seen == [
        ("after_handshake", "server"),
        ("before_connect", ("127.0.0.1", 7001)),
        ("before_connect", ("127.0.0.1", 7002)),
    ]
    [(verdict, where)] = conn.rejected
    assert where == "before_connect" and verdict == Reject(451, b"not there")


async def test_the_outgoing_after_handshake_can_refuse_the_backend() -> None:
    built, route, _ = routes_with_fallback()
    conn, hook = FakeConn(), Policy(refuse_backend=True)
    opened: list[FakeBackend] = []

    async def connect(address: Address) -> FakeBackend:
        opened.append(FakeBackend(address))
        return opened[-1]

    assert await dial(conn, route, None, context(built), gate_for(hook, conn), connect) is None
    assert opened[0].closed, "a refused backend connection is closed"
    assert conn.rejected[0][1] == "after_handshake"
    assert ("after_handshake", "client") in hook.seen


async def test_the_incoming_after_handshake_decides_before_any_dial() -> None:
    class Closed(EndpointHooks):
        def after_handshake(self, conn: object) -> object:
            return Reject(403, b"closed") if conn.side.value == "server" else None  # type: ignore[attr-defined]

    built, route, fallback = routes_with_fallback()
    conn, connect = FakeConn(), Connector()
    gate = Gate(EndpointChain([Closed()]), conn, 1, conn.client_addr, None)
    assert await dial(conn, route, fallback, context(built), gate, connect) is None
    assert connect.tried == []
    assert conn.rejected == [(Reject(403, b"closed"), "after_handshake")]

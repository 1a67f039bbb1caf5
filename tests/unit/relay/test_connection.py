"""The relay Protocols against fake transports: hand-over, flow control, half-close."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from refractium.backends.health import HealthChecker
from refractium.config import parse_config
from refractium.hooks.dispatch import HookStats
from refractium.relay.connection import (
    CLOSED,
    CONNECTING,
    READ_MAX,
    RELAYING,
    BackendProtocol,
    ClientProtocol,
)
from refractium.relay.context import TcpContext
from refractium.relay.snapshot import Settings, Snapshot
from refractium.routing import build_tables
from tests.unit.relay.fakes import FakeTransport


@pytest.fixture
def no_dial(monkeypatch: pytest.MonkeyPatch) -> None:
    """Identification still runs; the dial is done by the test via backend_up.

    The loop's connect never completes: patched on the loop, not on
    ClientProtocol, whose methods call each other directly when compiled.
    """

    async def parked(self: asyncio.AbstractEventLoop, *args: Any, **kwargs: Any) -> None:
        await asyncio.Event().wait()

    monkeypatch.setattr(asyncio.BaseEventLoop, "create_connection", parked)


async def service(**server: Any) -> TcpContext:
    config = parse_config(
        {
            "server": server,
            "protocols": [
                {"name": "http", "forward_to": "127.0.0.1:1"},
                {"name": "ssh", "forward_to": "127.0.0.1:2"},
            ],
        },
        source="test",
    )
    snapshot = Snapshot(build_tables(config), None, Settings.from_server(config.server))
    return TcpContext(snapshot, HealthChecker(), HookStats())


async def connected(svc: TcpContext, first: bytes) -> tuple[ClientProtocol, FakeTransport]:
    client = FakeTransport()
    proto = ClientProtocol(svc)
    proto.connection_made(client)  # type: ignore[arg-type]
    proto.data_received(first)
    return proto, client


def backend_up(proto: ClientProtocol) -> tuple[BackendProtocol, FakeTransport]:
    backend = FakeTransport(("127.0.0.1", 1))
    bp = proto._make_backend()
    bp.connection_made(backend)  # type: ignore[arg-type]
    return bp, backend


@pytest.mark.usefixtures("no_dial")
async def test_peeked_bytes_and_early_data_reach_the_backend_in_order() -> None:
    svc = await service()
    proto, client = await connected(svc, b"GET / HT")
    assert proto.state == CONNECTING
    assert proto.route is not None and proto.route.name == "http"
    assert not client.paused, "a few bytes while dialling do not pause reading"
    proto.data_received(b"TP/1.1\r\n")
    _, backend = backend_up(proto)
    assert proto.state == RELAYING
    assert not client.paused
    proto.data_received(b"Host: x\r\n\r\n")
    assert bytes(backend.written) == b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    assert proto.bytes_in == len(backend.written)


@pytest.mark.usefixtures("no_dial")
async def test_an_upload_while_dialling_pauses_reading_then_arrives_whole() -> None:
    svc = await service()
    limit = svc.snapshot.settings.peek_buffer_size
    proto, client = await connected(svc, b"POST /up HTTP/1.1\r\n\r\n")
    body = bytes(range(256)) * (limit // 256 + 1)  # past the peek buffer
    proto.data_received(body[:100])
    assert not client.paused
    proto.data_received(body[100:])
    assert client.paused and svc.paused == {proto}, "paused once past the peek buffer"
    proto.data_received(b"tail")  # a read already in flight when it paused
    _, backend = backend_up(proto)
    assert not client.paused and not svc.paused
    assert bytes(backend.written) == b"POST /up HTTP/1.1\r\n\r\n" + body + b"tail"


@pytest.mark.usefixtures("no_dial")
async def test_a_client_that_floods_while_dialling_is_cut() -> None:
    svc = await service()
    proto, client = await connected(svc, b"POST /up HTTP/1.1\r\n\r\n")
    proto.data_received(bytes(svc.snapshot.settings.peek_buffer_size + 2 * READ_MAX + 1))
    assert proto.state == CLOSED and client.closed
    assert proto.reason == "client sent too much before the backend was up"


@pytest.mark.usefixtures("no_dial")
async def test_flow_control_is_crosswise() -> None:
    svc = await service()
    proto, client = await connected(svc, b"GET / HTTP/1.1\r\n\r\n")
    bp, backend = backend_up(proto)
    bp.pause_writing()  # backend's send buffer full: stop reading the client
    assert client.paused
    bp.resume_writing()
    assert not client.paused
    proto.pause_writing()  # client's send buffer full: stop reading the backend
    assert backend.paused
    proto.resume_writing()
    assert not backend.paused


@pytest.mark.usefixtures("no_dial")
async def test_half_close_each_way_then_close() -> None:
    svc = await service()
    proto, client = await connected(svc, b"GET / HTTP/1.1\r\n\r\n")
    bp, backend = backend_up(proto)
    assert proto.eof_received() is True  # keep the client's side open for the reply
    assert backend.eof_written and not backend.closed
    bp.data_received(b"HTTP/1.1 200 OK\r\n\r\nreply")
    assert bp.eof_received() is True
    assert bytes(client.written) == b"HTTP/1.1 200 OK\r\n\r\nreply"
    # Both directions ended: close() flushes and sends the FIN itself.
    assert client.closed and backend.closed


@pytest.mark.usefixtures("no_dial")
async def test_eof_while_dialling_is_forwarded_after_the_data() -> None:
    svc = await service()
    proto, _client = await connected(svc, b"GET / HTTP/1.1\r\n\r\n")
    assert proto.eof_received() is True
    _, backend = backend_up(proto)
    assert bytes(backend.written) == b"GET / HTTP/1.1\r\n\r\n"
    assert backend.eof_written


@pytest.mark.usefixtures("no_dial")
async def test_client_gone_closes_backend_and_releases_limits() -> None:
    svc = await service()
    proto, _client = await connected(svc, b"GET / HTTP/1.1\r\n\r\n")
    _, backend = backend_up(proto)
    assert svc.limits.total == 1
    proto.connection_lost(ConnectionResetError())
    assert proto.state == CLOSED
    assert backend.closed
    assert svc.limits.total == 0 and svc.limits.by_ip == {}


@pytest.mark.usefixtures("no_dial")
async def test_backend_gone_closes_client() -> None:
    svc = await service()
    proto, client = await connected(svc, b"GET / HTTP/1.1\r\n\r\n")
    bp, _backend = backend_up(proto)
    bp.connection_lost(None)
    assert client.closed


async def test_unidentified_without_fallback_is_closed_and_counted() -> None:
    svc = await service()
    proto, client = await connected(svc, b"\x00\x01garbage")
    assert client.closed and proto.state == CLOSED
    assert svc.stats.unidentified_closed == 1


async def test_per_ip_cap_refuses_and_counts() -> None:
    svc = await service(max_connections_per_ip=2)
    protos = [ClientProtocol(svc) for _ in range(3)]
    transports = [FakeTransport() for _ in range(3)]
    for p, t in zip(protos, transports, strict=True):
        p.connection_made(t)  # type: ignore[arg-type]
    assert [t.closed for t in transports] == [False, False, True]
    assert svc.stats.refused["per_ip_limit"] == 1
    protos[0].connection_lost(None)
    late = FakeTransport()
    ClientProtocol(svc).connection_made(late)  # type: ignore[arg-type]
    assert not late.closed
    for p in protos:
        if p.state != CLOSED:
            p.connection_lost(None)


@pytest.mark.usefixtures("no_dial")
async def test_eof_waits_for_the_buffer_to_drain() -> None:
    """A FIN may not overtake data still queued; it is sent once drained."""
    svc = await service()
    proto, client = await connected(svc, b"GET / HTTP/1.1\r\n\r\n")
    bp, backend = backend_up(proto)
    backend.buffered = 70_000
    proto.eof_received()
    assert not backend.eof_written
    assert backend.limits == (0, 0), "asks to be told when the buffer is empty"
    backend.buffered = 0
    bp.resume_writing()
    assert backend.eof_written
    assert not client.paused

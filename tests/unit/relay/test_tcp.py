"""The TCP side's bookkeeping and service against fake transports: no sockets."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from refractium.backends.health import HealthChecker
from refractium.config import parse_config
from refractium.endpoint import EndpointHooks
from refractium.endpoint.chain import EndpointChain
from refractium.hooks.dispatch import HookStats
from refractium.relay.connection import ClientProtocol
from refractium.relay.context import TcpContext
from refractium.relay.pipe import BackendProtocol
from refractium.relay.snapshot import Settings, Snapshot
from refractium.relay.state import CLOSED, RELAYING
from refractium.relay.tcp import TcpService
from refractium.routing import build_tables
from tests.unit.relay.fakes import FakeSocket, FakeTransport


def snapshot(hooks: list[object] | None = None, **server: Any) -> Snapshot:
    config = parse_config(
        {"server": server, "protocols": [{"name": "http", "forward_to": "127.0.0.1:1"}]},
        source="test",
    )
    chain = EndpointChain(hooks) if hooks else None
    return Snapshot(build_tables(config), chain, Settings.from_server(config.server))


@pytest.fixture
def no_dial(monkeypatch: pytest.MonkeyPatch) -> None:
    """Identification still runs; the dial is done by the test via backend_up.

    The loop's connect never completes: patched on the loop, not on
    ClientProtocol, whose methods call each other directly when compiled.
    """

    async def parked(self: asyncio.AbstractEventLoop, *args: Any, **kwargs: Any) -> None:
        await asyncio.Event().wait()

    monkeypatch.setattr(asyncio.BaseEventLoop, "create_connection", parked)


def relaying(
    ctx: TcpContext,
) -> tuple[ClientProtocol, FakeTransport, FakeTransport, BackendProtocol]:
    client = FakeTransport()
    client.socket = FakeSocket()
    conn = ClientProtocol(ctx)
    conn.connection_made(client)  # type: ignore[arg-type]
    conn.data_received(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    backend = FakeTransport(("127.0.0.1", 1))
    protocol = conn._make_backend()
    protocol.connection_made(backend)  # type: ignore[arg-type]
    assert conn.state == RELAYING
    return conn, client, backend, protocol


@pytest.mark.usefixtures("no_dial")
async def test_a_paused_client_that_reset_is_ended_and_its_slot_freed() -> None:
    ctx = TcpContext(snapshot(), HealthChecker(), HookStats())
    gone, gone_client, gone_backend, gone_protocol = relaying(ctx)
    alive, alive_client, _, alive_protocol = relaying(ctx)
    for protocol in (gone_protocol, alive_protocol):
        protocol.pause_writing()  # the backend stopped reading: so do we, the client
    assert ctx.paused == {gone, alive} and gone_client.paused
    gone_client.socket.tcp_state = FakeSocket.CLOSE  # type: ignore[union-attr]
    ctx.sweep_paused()
    assert gone_client.aborted and not alive_client.aborted
    gone.connection_lost(ConnectionResetError())  # what the loop does after abort()
    assert ctx.limits.total == 1 and gone not in ctx.connections
    assert gone_backend.closed and not gone_backend.aborted  # flushed, not cut
    assert ctx.paused == {alive}
    ctx.stop_sweeping()


@pytest.mark.usefixtures("no_dial")
async def test_the_sweep_runs_only_while_something_is_paused() -> None:
    ctx = TcpContext(snapshot(), HealthChecker(), HookStats())
    _, _, _, protocol = relaying(ctx)  # a dial pauses nothing: no sweep is due
    ctx.sweep_paused()  # finds nothing paused: no new timer
    assert ctx._sweep is None and not ctx.paused
    protocol.pause_writing()
    assert ctx._sweep is not None
    protocol.resume_writing()
    ctx.sweep_paused()
    assert ctx._sweep is None and not ctx.paused


async def test_a_client_gone_before_accept_reaches_no_hook_and_no_limit() -> None:
    seen: list[tuple[str, int]] = []

    class Door(EndpointHooks):
        def on_incoming(self, addr: tuple[str, int]) -> Any:
            seen.append(addr)
            return None

    ctx = TcpContext(snapshot([Door()]), HealthChecker(), HookStats())
    client = FakeTransport()
    client.peer = None  # type: ignore[assignment]  # getpeername() failed: it reset
    conn = ClientProtocol(ctx)
    conn.connection_made(client)  # type: ignore[arg-type]
    assert client.aborted and conn.state == CLOSED
    assert seen == [] and conn.gate is None
    assert ctx.limits.total == 0 and ctx.stats.refused["reset"] == 1
    ok = ClientProtocol(ctx)
    ok.connection_made(FakeTransport())  # type: ignore[arg-type]
    assert seen == [("192.0.2.7", 40000)]


@pytest.mark.usefixtures("no_dial")
async def test_shutdown_drops_the_unidentified_and_cuts_the_rest_after_the_grace() -> None:
    service = TcpService(snapshot(), HealthChecker(), HookStats())
    peeking_client = FakeTransport(("192.0.2.8", 1))
    peeking = ClientProtocol(service.ctx)
    peeking.connection_made(peeking_client)  # type: ignore[arg-type]
    _, client, backend, _ = relaying(service.ctx)
    stopping = asyncio.get_running_loop().create_task(service.shutdown(0.1))
    await asyncio.sleep(0.02)
    assert peeking_client.closed and not client.closed  # relaying ones may finish
    await stopping
    assert client.aborted and backend.aborted  # still relaying when the grace ran out
    assert service.ctx.closing


async def test_a_connection_keeps_its_snapshot_across_a_swap() -> None:
    ctx = TcpContext(snapshot(peek_timeout_ms=1000), HealthChecker(), HookStats())
    conn = ClientProtocol(ctx)
    ctx.snapshot = snapshot(peek_timeout_ms=5)  # a reload
    later = ClientProtocol(ctx)
    assert conn._snap.settings.peek_timeout_s == 1.0
    assert later._snap.settings.peek_timeout_s == 0.005


@pytest.mark.usefixtures("no_dial")
async def test_an_idle_connection_ends_with_the_idle_outcome() -> None:
    ctx = TcpContext(snapshot(idle_timeout_s=30), HealthChecker(), HookStats())
    conn, client, backend, _ = relaying(ctx)
    assert len(ctx.idle) == 1  # watched once relaying, with the server's timeout
    conn.idle_out(30.5)
    assert client.closed and backend.closed
    conn.connection_lost(None)
    assert ctx.stats.closed["http", "idle"] == 1
    assert len(ctx.idle) == 0
    ctx.stop_sweeping()

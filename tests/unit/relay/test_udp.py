"""UDP listeners and flows against fake datagram transports: no sockets."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from refractium.addr import Address
from refractium.config import parse_config
from refractium.endpoint import EndpointHooks, Reject
from refractium.endpoint.chain import EndpointChain
from refractium.hooks.dispatch import HookStats
from refractium.relay.context import UdpContext
from refractium.relay.flow import Flow
from refractium.relay.snapshot import Settings, Snapshot
from refractium.relay.state import CLOSED, RELAYING
from refractium.relay.udp import UdpListener
from tests.unit.relay.fakes import RecordingHealth, tables

CLIENT = ("192.0.2.7", 5353)
# A DNS query for example.com A (RFC 1035 4.1).
QUERY = bytes.fromhex("12340100000100000000000007") + b"example\x03com\x00\x00\x01\x00\x01"


class FakeDatagrams:
    """A datagram transport that records what was sent."""

    def __init__(
        self, name: tuple[str, int] = ("127.0.0.1", 53), sock: socket.socket | None = None
    ) -> None:
        self.sent: list[tuple[bytes, Any]] = []
        self.closed = False
        self.name = name
        self.sock = sock  # the flow's own socket, when it opened one

    def sendto(self, data: bytes, addr: Any = None) -> None:
        self.sent.append((data, addr))

    def get_write_buffer_size(self) -> int:
        return 0

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self.limits = (high, low)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.name if name == "sockname" else default

    def close(self) -> None:
        self.closed = True
        if self.sock is not None:
            self.sock.close()


class Loop:
    """Wraps the running loop: create_datagram_endpoint hands out fake sockets."""

    def __init__(self, ctx: UdpContext) -> None:
        self.real = ctx.loop
        self.opened: list[tuple[FakeDatagrams, Any, tuple[str, int]]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    async def create_datagram_endpoint(
        self, factory: Any, remote_addr: Any = None, sock: socket.socket | None = None
    ) -> Any:
        if sock is not None:  # a flow connects its socket itself
            remote_addr = sock.getpeername()[:2]
        transport = FakeDatagrams(remote_addr, sock)
        protocol = factory()
        self.opened.append((transport, protocol, remote_addr))
        return transport, protocol


def udp_context(
    hooks: list[object] | None = None, health: RecordingHealth | None = None, **server: Any
) -> tuple[UdpContext, Loop]:
    built = tables([{"name": "dns", "forward_to": "127.0.0.1:5300"}], **server)
    config = parse_config({"server": server}, source="test")
    chain = EndpointChain(hooks) if hooks else None
    snapshot = Snapshot(built, chain, Settings.from_server(config.server))
    ctx = UdpContext(snapshot, health or RecordingHealth(), HookStats())
    loop = Loop(ctx)
    ctx.loop = loop  # type: ignore[assignment]
    return ctx, loop


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_flow_is_identified_relayed_and_answered() -> None:
    ctx, loop = udp_context()
    listener = UdpListener(ctx)
    listener.connection_made(FakeDatagrams(("0.0.0.0", 53)))  # type: ignore[arg-type]
    listener.datagram_received(QUERY, CLIENT)
    await settle()
    (backend, protocol, remote) = loop.opened[0]
    assert remote == ("127.0.0.1", 5300)
    assert backend.sent == [(QUERY, None)]  # the held first datagram, as received
    flow = ctx.flows[CLIENT]
    assert isinstance(flow, Flow) and flow.state == RELAYING
    listener.datagram_received(b"second", CLIENT)  # same client: same flow, same socket
    await settle()  # the datagrams of a loop turn leave at its end
    assert backend.sent[-1] == (b"second", None) and len(loop.opened) == 1
    protocol.datagram_received(b"reply", remote)
    await settle()
    assert listener.transport.sent == [(b"reply", CLIENT)]  # type: ignore[union-attr]
    assert ctx.stats.routed["dns"] == 1 and ctx.active[Address("127.0.0.1", 5300)] == 1
    flow.end()
    assert backend.closed and CLIENT not in ctx.flows
    assert ctx.stats.closed["dns", "relayed"] == 1
    assert ctx.stats.bytes_in == len(QUERY) + 6 and ctx.stats.bytes_out == 5
    assert not ctx.active


async def test_the_first_reply_reports_the_backend_up() -> None:
    """A UDP socket proves nothing; the backend's answer does (a passive health report)."""
    health = RecordingHealth()
    ctx, loop = udp_context(health=health)
    listener = UdpListener(ctx)
    listener.connection_made(FakeDatagrams())  # type: ignore[arg-type]
    listener.datagram_received(QUERY, CLIENT)
    await settle()
    assert health.reports == []
    _, protocol, remote = loop.opened[0]
    protocol.datagram_received(b"reply", remote)
    protocol.datagram_received(b"reply", remote)
    assert health.reports == [("success", "127.0.0.1:5300")]


async def test_the_flow_cap_refuses_a_new_client() -> None:
    ctx, _ = udp_context(udp_max_sessions=1)
    listener = UdpListener(ctx)
    listener.connection_made(FakeDatagrams())  # type: ignore[arg-type]
    listener.datagram_received(QUERY, CLIENT)
    listener.datagram_received(QUERY, ("192.0.2.8", 5353))
    assert list(ctx.flows) == [CLIENT] and ctx.stats.refused == 1


async def test_unidentified_datagrams_are_dropped_until_the_flow_idles_out() -> None:
    ctx, loop = udp_context()
    listener = UdpListener(ctx)
    listener.connection_made(FakeDatagrams())  # type: ignore[arg-type]
    listener.datagram_received(b"", CLIENT)  # an empty datagram identifies nothing
    await settle()
    flow = ctx.flows[CLIENT]
    assert flow.state == CLOSED and not loop.opened  # type: ignore[attr-defined]
    listener.datagram_received(b"more", CLIENT)
    assert ctx.stats.unidentified == 1 and ctx.stats.dropped == 1


async def test_a_rejected_flow_opens_no_backend_socket() -> None:
    class No(EndpointHooks):
        def after_handshake(self, conn: Any) -> Any:
            return Reject(403, b"no")

    ctx, loop = udp_context(hooks=[No()])
    listener = UdpListener(ctx)
    listener.connection_made(FakeDatagrams())  # type: ignore[arg-type]
    listener.datagram_received(QUERY, CLIENT)
    await settle()
    assert not loop.opened
    assert ctx.stats.rejected[403] == 1
    flow = ctx.flows[CLIENT]
    flow.end()
    assert ctx.stats.closed["dns", "rejected"] == 1

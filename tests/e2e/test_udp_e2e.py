"""UDP end to end: flows, datagrams intact, idle expiry, the session cap, hooks.

The proxy runs as `refractium run` (TCP and UDP on one port) in a subprocess,
on uvloop and on asyncio; clients are plain UDP sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from refractium import Refractium
from refractium.endpoint import (
    Accept,
    ConnectionInfo,
    ConnectionStats,
    EndpointHooks,
    Ignore,
    Reject,
)
from tests.kit.backends import http_backend, run
from tests.kit.dnsserver import dns_server
from tests.kit.proxy import RunningProxy, running_proxy

HOST = "127.0.0.1"
# The repository root, on the proxy's PYTHONPATH so hook specs can name tests.kit.hookmods.
ROOT = Path(__file__).resolve().parents[2]
LOOPS = ["uvloop", "asyncio"]


class Server(asyncio.DatagramProtocol):
    """A UDP backend: answers each datagram with ``reply(data, addr)``."""

    def __init__(self, reply: Callable[[bytes, Any], bytes]) -> None:
        self.reply = reply
        self.peers: list[Any] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.DatagramTransport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.peers.append(addr)
        self.transport.sendto(self.reply(data, addr), addr)


@contextlib.asynccontextmanager
async def udp_server(reply: Callable[[bytes, Any], bytes]) -> AsyncIterator[tuple[Server, int]]:
    loop = asyncio.get_running_loop()
    transport, server = await loop.create_datagram_endpoint(
        lambda: Server(reply), local_addr=(HOST, 0)
    )
    transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    try:
        yield server, transport.get_extra_info("sockname")[1]
    finally:
        transport.close()


def echo(data: bytes, addr: Any) -> bytes:
    return data


def whoami(data: bytes, addr: Any) -> bytes:
    return b"%s %d" % (data, addr[1])


class Client:
    """A blocking UDP socket used from a thread."""

    def __init__(self, port: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.sock.connect((HOST, port))

    async def ask(self, data: bytes, timeout: float = 3) -> bytes | None:
        def exchange() -> bytes | None:
            self.sock.settimeout(timeout)
            self.sock.send(data)
            try:
                return self.sock.recv(65535)
            except TimeoutError:
                return None

        return await asyncio.to_thread(exchange)

    def close(self) -> None:
        self.sock.close()


def config(backend_port: int, **server: Any) -> str:
    settings = "".join(f"{key} = {value!r}\n" for key, value in server.items())
    return (
        f"[server]\nmax_connections_per_ip = 0\n{settings}\n"
        f'[[protocols]]\nname = "echo"\npatterns = ["PING"]\nforward_to = "{HOST}:{backend_port}"\n'
    )


def run_args(loop: str) -> tuple[str, ...]:
    return ("run", "-b", HOST, "-p", "0", "--loop", loop)


@contextlib.asynccontextmanager
async def udp_proxy(
    loop: str, text: str, env: dict[str, str] | None = None
) -> AsyncIterator[RunningProxy]:
    """`refractium run`, yielded once its UDP listener (on the TCP port) is up."""
    async with running_proxy(*run_args(loop), config=text, env=env) as proxy:
        await proxy.wait_for(rf"listening on udp 127\.0\.0\.1:{proxy.port}\b")
        yield proxy


@pytest.mark.parametrize("loop", LOOPS)
async def test_a_60000_byte_datagram_comes_back_intact(loop: str) -> None:
    async with udp_server(echo) as (_, port), udp_proxy(loop, config(port)) as p:
        client = Client(p.port)
        try:
            big = b"PING" + os.urandom(59_996)
            assert await client.ask(big) == big
            for size in (1, 1400, 9000, 65_000):  # later datagrams of the flow, any size
                data = os.urandom(size)
                assert await client.ask(data) == data
        finally:
            client.close()


@pytest.mark.parametrize("loop", LOOPS)
async def test_a_burst_comes_back_whole_and_in_order(loop: str) -> None:
    """Datagrams sent back to back leave the proxy together (one GSO send per run of
    one size on uvloop): each still arrives as the datagram it was, in order."""
    sizes = [512] * 40 + [300] + [1200] * 7 + [1] + [65_000] * 2 + [512] * 3 + [17]
    burst = [b"PING" + b"%04d" % n + os.urandom(size) for n, size in enumerate(sizes)]
    async with udp_server(echo) as (_, port), udp_proxy(loop, config(port)) as p:
        client = Client(p.port)
        try:
            assert await client.ask(b"PING") == b"PING"  # the flow is relaying

            def exchange() -> list[bytes]:
                client.sock.settimeout(3)
                for data in burst:
                    client.sock.send(data)
                return [client.sock.recv(65535) for _ in burst]

            assert await asyncio.to_thread(exchange) == burst
        finally:
            client.close()


@pytest.mark.parametrize("loop", LOOPS)
async def test_an_idle_flow_expires_and_traffic_keeps_one_alive(loop: str) -> None:
    async with (
        udp_server(whoami) as (_, port),
        udp_proxy(loop, config(port, udp_session_timeout_s=0.6)) as p,
    ):
        client = Client(p.port)
        try:
            first = await client.ask(b"PING")
            assert first is not None
            for _ in range(5):  # 1 s of traffic, every 0.2 s: the flow stays
                await asyncio.sleep(0.2)
                assert await client.ask(b"PING") == first
            await asyncio.sleep(1.5)  # idle past the timeout: a new flow, a new backend socket
            again = await client.ask(b"PING")
            assert again is not None and again != first
        finally:
            client.close()


async def test_the_session_cap_refuses_new_flows_and_keeps_the_old_ones() -> None:
    async with (
        udp_server(echo) as (_, port),
        udp_proxy("uvloop", config(port, udp_max_sessions=2)) as p,
    ):
        clients = [Client(p.port) for _ in range(3)]
        try:
            assert await clients[0].ask(b"PING 0") == b"PING 0"
            assert await clients[1].ask(b"PING 1") == b"PING 1"
            assert await clients[2].ask(b"PING 2", timeout=0.5) is None
            await p.wait_for(r"refused udp 127\.0\.0\.1:\d+: udp_max_sessions \(2\) reached")
            assert await clients[0].ask(b"still 0") == b"still 0"
            assert await clients[1].ask(b"still 1") == b"still 1"
        finally:
            for client in clients:
                client.close()


async def test_packet_hooks_get_one_packet_per_datagram(tmp_path: Path) -> None:
    async with udp_server(echo) as (_, port):
        text = (
            config(port)
            + f'hooks = [{{ use = "tests.kit.hookmods:Recorder", dir = "{tmp_path}" }}]\n'
        )
        env = {"PYTHONPATH": str(ROOT)}
        async with udp_proxy("uvloop", text, env) as p:
            client = Client(p.port)
            sizes = [4, 100, 1, 30_000, 7]
            sent = [b"PING"] + [os.urandom(n) for n in sizes[1:]]
            try:
                for data in sent:
                    assert await client.ask(data) == data
            finally:
                client.close()
            async with asyncio.timeout(5):
                while not list(tmp_path.glob("*.order")) or len(
                    next(tmp_path.glob("*.order")).read_text().splitlines()
                ) < 2 * len(sent):
                    await asyncio.sleep(0.05)
        (order,) = tmp_path.glob("*.order")
        expected = [f"{side} {len(d)}" for d in sent for side in ("in", "out")]
        assert order.read_text().splitlines() == expected
        assert order.with_suffix(".in").read_bytes() == b"".join(sent)


class FlowWatcher(EndpointHooks):
    def __init__(self, ignore: str | None = None) -> None:
        self.ignore = ignore
        self.closed: list[tuple[ConnectionInfo, ConnectionStats]] = []

    def on_incoming(self, addr: tuple[str, int]) -> Any:
        return Ignore if self.ignore == "all" else Accept

    def on_close(self, conn: ConnectionInfo, stats: ConnectionStats) -> None:
        self.closed.append((conn, stats))


async def in_process(hook: EndpointHooks, backend: int, **server: Any) -> Refractium:
    engine = (
        Refractium.builder()
        .bind(HOST)
        .port(0)
        .option(**server)
        .route("echo", f"{HOST}:{backend}", patterns=["PING"])
        .hooks(hook)
        .build()
    )
    await engine.start_udp()
    return engine


async def test_endpoint_hooks_see_each_flow_once_with_its_figures() -> None:
    watcher = FlowWatcher()
    async with udp_server(echo) as (_, port):
        engine = await in_process(watcher, port, udp_session_timeout_s=0.3)
        try:
            client = Client(engine.udp_addresses[0][1])
            for data in (b"PING", b"12345", b"x" * 1000):
                assert await client.ask(data) == data
            async with asyncio.timeout(5):
                while not watcher.closed:
                    await asyncio.sleep(0.05)
            client.close()
        finally:
            await engine.shutdown(0)
    ((info, stats),) = watcher.closed
    assert info.protocol == "echo" and info.client_addr[0] == HOST
    assert (stats.packets_in, stats.packets_out) == (3, 3)
    assert stats.bytes_in == stats.bytes_out == 4 + 5 + 1000
    assert stats.outcome == "relayed"


async def test_on_incoming_ignore_drops_a_flow_silently() -> None:
    watcher = FlowWatcher(ignore="all")
    async with udp_server(echo) as (server, port):
        engine = await in_process(watcher, port)
        try:
            client = Client(engine.udp_addresses[0][1])
            assert await client.ask(b"PING", timeout=0.5) is None
            assert await client.ask(b"PING again", timeout=0.3) is None
            client.close()
            assert server.peers == []
            assert engine.udp_stats.ignored == 1
            assert engine.udp_stats.dropped >= 1
        finally:
            await engine.shutdown(0)


@pytest.mark.parametrize("loop", LOOPS)
async def test_dig_through_a_dns_route_over_udp_and_tcp(loop: str) -> None:
    async with dns_server("192.0.2.53") as dns, http_backend("web") as web:
        text = (
            "[server]\nmax_connections_per_ip = 0\n"
            f'[[protocols]]\nname = "dns"\nforward_to = "{HOST}:{dns.port}"\n'
            f'[[protocols]]\nname = "http"\nforward_to = "{web.address}"\n'
        )
        async with udp_proxy(loop, text) as p:
            base = ["dig", f"@{HOST}", "-p", str(p.port), "+short", "+time=3", "+tries=1"]
            over_udp = await run([*base, "a.example"])
            over_tcp = await run([*base, "+tcp", "b.example"])
            web_reply = await run(["curl", "-s", f"http://{HOST}:{p.port}/"])
        assert over_udp.out.strip() == "192.0.2.53", over_udp.err
        assert over_tcp.out.strip() == "192.0.2.53", over_tcp.err
        assert (dns.udp_queries, dns.tcp_queries) == (1, 1)
        assert web_reply.out == "web\n", "one port: DNS on UDP and TCP, HTTP on TCP"


class RejectFlows(EndpointHooks):
    def __init__(self) -> None:
        self.sides: list[str] = []

    async def after_handshake(self, conn: ConnectionInfo) -> Any:
        self.sides.append(f"{conn.side.value}:{conn.protocol}")
        await asyncio.sleep(0.01)  # a hook that really waits
        return Reject(403, b"no udp for you")


async def test_after_handshake_reject_keeps_the_flow_from_its_backend() -> None:
    hook = RejectFlows()
    async with udp_server(echo) as (server, port):
        engine = await in_process(hook, port)
        try:
            client = Client(engine.udp_addresses[0][1])
            assert await client.ask(b"PING", timeout=0.5) is None
            assert await client.ask(b"PING more", timeout=0.3) is None
            client.close()
            assert server.peers == []
            assert hook.sides == ["server:echo"]
            assert engine.udp_stats.rejected[403] == 1
        finally:
            await engine.shutdown(0)

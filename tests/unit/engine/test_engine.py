"""The engine: one snapshot per reload, health per transport, configured once for every start."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

from refractium import Refractium
from refractium.addr import Address
from refractium.config import parse_config
from refractium.engine.snapshot import health_checks
from refractium.protocols.base import Transport
from refractium.remotes import RemoteMap
from refractium.routing import build_tables

HOST = "127.0.0.1"
# A DNS query for example.com A (RFC 1035 4.1): id, RD, one question.
QUERY = bytes.fromhex("12340100000100000000000007") + b"example\x03com\x00\x00\x01\x00\x01"


@contextlib.asynccontextmanager
async def counting_server() -> AsyncIterator[tuple[int, list[int]]]:
    """A TCP server that counts connections (a health check is one); yields port and count."""
    accepted: list[int] = []

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(1)
        writer.close()

    server = await asyncio.start_server(on_connect, HOST, 0)
    try:
        yield server.sockets[0].getsockname()[1], accepted
    finally:
        server.close()
        await server.wait_closed()


async def until(condition: Callable[[], bool], timeout: float = 3.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)


def engine_for(routes: list[dict[str, object]], **server: object) -> Refractium:
    config = parse_config(
        {"server": {"bind": HOST, "port": 0, **server}, "protocols": routes}, source="test"
    )
    return Refractium(config)


async def test_a_tcp_engine_checks_a_backend_a_reload_adds() -> None:
    """start_tcp alone, then a reload adding a checked backend: its checks run."""
    async with counting_server() as (port, accepted):
        engine = engine_for([{"name": "http", "forward_to": f"{HOST}:9"}])
        await engine.start_tcp()
        try:
            engine.reload_routes(
                [
                    {"name": "http", "forward_to": f"{HOST}:9"},
                    {
                        "name": "ssh",
                        "forward_to": f"{HOST}:{port}",
                        "health_check": {"interval_ms": 50},
                    },
                ]
            )
            await until(lambda: len(accepted) >= 2)
        finally:
            await engine.shutdown(0)


async def test_a_reload_stops_checking_a_removed_backend() -> None:
    async with counting_server() as (port, accepted):
        checked = {
            "name": "ssh",
            "forward_to": f"{HOST}:{port}",
            "health_check": {"interval_ms": 50},
        }
        engine = engine_for([checked])
        await engine.start_tcp()
        try:
            await until(lambda: len(accepted) >= 1)
            engine.reload_routes([{"name": "ssh", "forward_to": f"{HOST}:9"}])
            await asyncio.sleep(0.05)
            settled = len(accepted)
            await asyncio.sleep(0.3)
            assert len(accepted) == settled
        finally:
            await engine.shutdown(0)


def test_health_is_per_transport_and_active_checks_are_tcp_only() -> None:
    config = parse_config(
        {
            "protocols": [
                {"name": "dns", "forward_to": f"{HOST}:53", "health_check": True},
                {"name": "http", "forward_to": f"{HOST}:80"},
            ]
        },
        source="test",
    )
    tables = build_tables(config)
    tcp = health_checks(tables, Transport.TCP)
    udp = health_checks(tables, Transport.UDP)
    dns = Address(HOST, 53)
    assert tcp[dns] is not None  # dns serves TCP too: checked there
    assert udp == {dns: None}  # UDP: passive marking only, never a TCP check
    assert Address(HOST, 80) in tcp


def test_checks_cover_every_backend_and_the_fallback_in_file_order() -> None:
    config = parse_config(
        {
            "server": {"fallback_tcp": "127.0.0.1:7000"},
            "protocols": [
                {"name": "ssh", "forward_to": ["127.0.0.1:22"]},
                {"name": "http", "forward_to": ["127.0.0.1:22", "127.0.0.1:80"]},
                {
                    "name": "tls",
                    "forward_to": "127.0.0.1:443",
                    "health_check": {"interval_ms": 100},
                },
            ],
        },
        source="test",
    )
    checks = health_checks(build_tables(config), Transport.TCP)
    assert list(checks) == [
        Address("127.0.0.1", 22),
        Address("127.0.0.1", 80),
        Address("127.0.0.1", 443),
        Address("127.0.0.1", 7000),
    ]
    assert checks[Address("127.0.0.1", 22)] is None
    assert checks[Address("127.0.0.1", 443)] is not None


async def test_a_tcp_dial_failure_leaves_the_udp_side_up() -> None:
    engine = engine_for([{"name": "dns", "forward_to": f"{HOST}:9"}])
    await engine.start_both()
    try:
        proxy = engine.tcp_addresses[0][1]
        reader, writer = await asyncio.open_connection(HOST, proxy)
        writer.write(len(QUERY).to_bytes(2, "big") + QUERY)  # DNS over TCP
        await writer.drain()
        async with asyncio.timeout(5):
            assert await reader.read() == b""  # nothing listens on TCP port 9
        writer.close()
        states = {(b.transport, b.address): b.up for b in engine.backends()}
        assert states[("tcp", f"{HOST}:9")] is False
        assert states[("udp", f"{HOST}:9")] is True
    finally:
        await engine.shutdown(0)


async def test_a_connection_keeps_the_snapshot_it_was_accepted_with() -> None:
    """A reload while a client is being identified does not change where it goes."""
    answers: dict[str, int] = {}

    async def backend(tag: str) -> asyncio.Server:
        async def reply(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(tag.encode())
            writer.close()

        server = await asyncio.start_server(reply, HOST, 0)
        answers[tag] = server.sockets[0].getsockname()[1]
        return server

    old, new = await backend("old"), await backend("new")
    engine = engine_for([{"name": "http", "forward_to": f"{HOST}:{answers['old']}"}])
    await engine.start_tcp()
    try:
        reader, writer = await asyncio.open_connection(HOST, engine.tcp_addresses[0][1])
        writer.write(b"GE")  # not enough to identify yet
        await writer.drain()
        await asyncio.sleep(0.05)
        engine.reload_routes([{"name": "http", "forward_to": f"{HOST}:{answers['new']}"}])
        writer.write(b"T / HTTP/1.1\r\nHost: x\r\n\r\n")
        async with asyncio.timeout(5):
            assert await reader.read() == b"old"
        writer.close()
        reader, writer = await asyncio.open_connection(HOST, engine.tcp_addresses[0][1])
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        async with asyncio.timeout(5):
            assert await reader.read() == b"new"
        writer.close()
    finally:
        await engine.shutdown(0)
        for server in (old, new):
            server.close()


def test_with_admin_on_a_remote_map_is_kept_by_default() -> None:
    engine = engine_for([{"name": "http", "forward_to": f"{HOST}:9"}])
    assert not any(isinstance(h, RemoteMap) for h in engine.endpoint_hooks)
    config = parse_config(
        {
            "admin": {"bind": f"{HOST}:9901"},
            "protocols": [{"name": "http", "forward_to": f"{HOST}:9"}],
        },
        source="test",
    )
    with_admin = Refractium(config)
    maps = [h for h in with_admin.endpoint_hooks if isinstance(h, RemoteMap)]
    assert len(maps) == 1
    # One configured already: no second one.
    config = parse_config(
        {
            "admin": {"bind": f"{HOST}:9901"},
            "endpoint": {"hooks": ["refractium.remotes:RemoteMap"]},
            "protocols": [{"name": "http", "forward_to": f"{HOST}:9"}],
        },
        source="test",
    )
    assert sum(isinstance(h, RemoteMap) for h in Refractium(config).endpoint_hooks) == 1

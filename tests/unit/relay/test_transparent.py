"""Transparent dialling: the backend sees the client's address, on asyncio and uvloop.

The client connects from 127.0.0.2, a loopback address of its own, so that
no policy routing is needed: the backend's replies to 127.0.0.2 stay on this
host. Setting IP_TRANSPARENT needs CAP_NET_ADMIN (the tests run as root);
without it the dial fails with a reason that says so.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Callable
from typing import Any

import pytest
import uvloop

from refractium import Refractium
from refractium.config import parse_config
from refractium.relay import transparent
from refractium.relay.transparent import NEEDS_CAP, transparent_socket

HOST = "127.0.0.1"
CLIENT = "127.0.0.2"
LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}


async def peer_reporter() -> asyncio.Server:
    """A backend that answers each connection with the address it came from."""

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(f"{writer.get_extra_info('peername')[0]}\n".encode())
        await writer.drain()
        writer.close()

    return await asyncio.start_server(on_connect, HOST, 0)


async def seen_by_backend(*, transparent: bool) -> str:
    """What the backend says the source was, for one SSH client through the proxy."""
    backend = await peer_reporter()
    port = backend.sockets[0].getsockname()[1]
    config = parse_config(
        {
            "server": {"bind": HOST, "port": 0, "connect_timeout_ms": 2000},
            "protocols": [
                {"name": "ssh", "forward_to": f"{HOST}:{port}", "transparent": transparent}
            ],
        },
        source="test",
    )
    engine = Refractium(config)
    [(_, proxy_port)] = await engine.start_tcp()
    try:
        reader, writer = await asyncio.open_connection(HOST, proxy_port, local_addr=(CLIENT, 0))
        writer.write(b"SSH-2.0-test\r\n")
        async with asyncio.timeout(5):
            answer = await reader.read()
        writer.close()
        return answer.decode().strip()
    finally:
        await engine.shutdown(0)
        backend.close()
        await backend.wait_closed()


@pytest.mark.parametrize("loop", LOOPS)
def test_a_transparent_route_dials_from_the_clients_address(loop: str) -> None:
    with asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
        assert runner.run(seen_by_backend(transparent=True)) == CLIENT


@pytest.mark.parametrize("loop", LOOPS)
def test_other_routes_dial_from_the_proxys_address(loop: str) -> None:
    with asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
        assert runner.run(seen_by_backend(transparent=False)) == HOST


class _NoCapability(socket.socket):
    """A socket on a kernel that refuses IP_TRANSPARENT, as without CAP_NET_ADMIN."""

    def setsockopt(self, *args: Any) -> None:
        if args[:2] in ((socket.SOL_IP, 19), (socket.IPPROTO_IPV6, 75)):
            raise PermissionError(errno.EPERM, "Operation not permitted")
        super().setsockopt(*args)


async def test_without_cap_net_admin_the_dial_fails_and_says_why(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(socket, "socket", _NoCapability)
    caplog.set_level(logging.WARNING, logger="refractium")
    assert await seen_by_backend(transparent=True) == ""  # the client is closed
    dial_lines = [r.getMessage() for r in caplog.records if "cannot connect" in r.getMessage()]
    assert len(dial_lines) == 1
    assert dial_lines[0].startswith("route ssh: cannot connect to 127.0.0.1:")
    assert dial_lines[0].endswith(": transparent: needs CAP_NET_ADMIN")


def test_the_refused_option_closes_the_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[socket.socket] = []

    class Recorded(_NoCapability):
        def __init__(self, *args: Any) -> None:
            super().__init__(*args)
            made.append(self)

    monkeypatch.setattr(socket, "socket", Recorded)
    with pytest.raises(OSError, match=f"^{NEEDS_CAP}$"):
        transparent_socket("10.1.2.3")
    assert made[0].fileno() == -1


def test_an_ipv6_client_gets_an_ipv6_socket_bound_to_its_address() -> None:
    sock = transparent_socket("2001:db8::7")
    try:
        assert sock.family == socket.AF_INET6
        assert sock.getsockname()[0] == "2001:db8::7"
        assert sock.getsockopt(socket.IPPROTO_IPV6, transparent.IPV6_TRANSPARENT) == 1
        assert not sock.getblocking()
    finally:
        sock.close()

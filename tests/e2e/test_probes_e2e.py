"""Every built-in protocol, through one running proxy, reaches its own backend.

One `refractium run` port with a route per protocol, each to an echo backend
of its own (TCP, or UDP for the datagram protocols). The first bytes of each
protocol are sent whole and, on TCP, one byte every 2 ms; the backend that
received them (and only it) is the one its route names, byte for byte.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.kit.backends import Backend, echo_backend
from tests.kit.clients import exchange
from tests.kit.proxy import RunningProxy, running_proxy

HOST = "127.0.0.1"

# A real first flight of each protocol (the unit tests hold captures of dig,
# curl's SOCKS5 and FTP clients and logger; these are the same messages).
TCP_FIRST = {
    "socks5": b"\x05\x02\x00\x01",
    "dns": b"\x00\x21\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00"
    b"\x03www\x07example\x03com\x00\x00\x01\x00\x01",
    "openvpn": b"\x00\x0e\x38" + bytes(range(1, 9)) + bytes(5),
    "xmpp": b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' to='example.com'>",
    "tinc": b"0 alpha 17.7\n",
    "adb": b"CNXN\x01\x00\x00\x01\x00\x00\x10\x00\x07\x00\x00\x00\x00\x00\x00\x00"
    b"\xbc\xb1\xa7\xb1host::\x00",
    "rdp": b"\x03\x00\x00\x13\x0e\xe0\x00\x00\x00\x00\x00\x01\x00\x08\x00\x0b\x00\x00\x00",
    "ftp": b"USER anonymous\r\n",
}
UDP_FIRST = {
    "dns": b"\x12\x34\x01\x20\x00\x01\x00\x00\x00\x00\x00\x00"
    b"\x03www\x07example\x03com\x00\x00\x01\x00\x01",
    "openvpn": b"\x38" + bytes(range(1, 9)) + bytes(5),
    "wireguard": b"\x01\x00\x00\x00" + bytes(range(144)),
    "syslog": b"<13>1 2026-11-21T23:36:34Z host app - - - hello",
}


class TaggedEcho(asyncio.DatagramProtocol):
    """A UDP backend answering ``tag + datagram``."""

    def __init__(self, tag: bytes) -> None:
        self.tag = tag

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.DatagramTransport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.transport.sendto(self.tag + data, addr)


@contextlib.asynccontextmanager
async def everything() -> AsyncIterator[tuple[RunningProxy, dict[str, Backend]]]:
    loop = asyncio.get_running_loop()
    async with contextlib.AsyncExitStack() as stack:
        tcp = {name: await stack.enter_async_context(echo_backend()) for name in TCP_FIRST}
        udp_ports = {}
        for name in UDP_FIRST:
            transport, _ = await loop.create_datagram_endpoint(
                lambda name=name: TaggedEcho(name.encode() + b":"), local_addr=(HOST, 0)
            )
            stack.callback(transport.close)
            udp_ports[name] = transport.get_extra_info("sockname")[1]
        routes = []
        for name, backend in tcp.items():  # socks5 first: see identification.md
            routes.append((name, f"{HOST}:{backend.port}", "tcp"))
        for name, port in udp_ports.items():
            routes.append((name, f"{HOST}:{port}", "udp"))
        config = "[server]\nmax_connections_per_ip = 0\npeek_timeout_ms = 10000\n" + "".join(
            f'[[protocols]]\nname = "{n}"\nforward_to = "{a}"\ntransport = "{t}"\n'
            for n, a, t in routes
        )
        proxy = await stack.enter_async_context(
            running_proxy("run", "-b", HOST, "-p", "0", config=config)
        )
        await proxy.wait_for(rf"listening on udp 127\.0\.0\.1:{proxy.port}\b")
        yield proxy, tcp


@pytest.mark.parametrize("byte_delay", [None, 0.002], ids=["whole", "byte-by-byte"])
async def test_every_tcp_protocol_reaches_its_route(byte_delay: float | None) -> None:
    async with everything() as (proxy, backends):
        for name, first in TCP_FIRST.items():
            echoed = await exchange(proxy.port, first, byte_delay=byte_delay)
            assert echoed == first, name
        for name, backend in backends.items():
            assert backend.received == [TCP_FIRST[name]], name


async def test_every_udp_protocol_reaches_its_route() -> None:
    async with everything() as (proxy, _):
        for name, first in UDP_FIRST.items():

            def ask(first: bytes = first) -> bytes:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                    sock.settimeout(5)
                    sock.sendto(first, (HOST, proxy.port))
                    return sock.recv(65535)

            assert await asyncio.to_thread(ask) == name.encode() + b":" + first, name

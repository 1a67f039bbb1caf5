"""A tiny authoritative DNS server for the tests: UDP and TCP, one A record per name.

It answers every query for any name with one A record, ``address``, so a
test can tell which backend answered ``dig``. Enough of RFC 1035 for that:
the header, the question echoed back, one answer pointing at the question's
name (compression pointer 0xC00C).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

HOST = "127.0.0.1"


def answer(query: bytes, address: str) -> bytes:
    """The response to ``query`` (a DNS message) giving ``address`` for its name."""
    ident, flags = struct.unpack_from("!HH", query)
    end = 12
    while query[end] != 0:
        end += 1 + query[end]
    end += 5  # the root label, QTYPE, QCLASS
    question = query[12:end]
    rd = flags & 0x0100
    header = struct.pack("!HHHHHH", ident, 0x8400 | rd, 1, 1, 0, 0)  # QR, AA, RD copied
    record = struct.pack("!HHHIH", 0xC00C, 1, 1, 60, 4) + socket.inet_aton(address)
    return header + question + record


@dataclass
class DnsServer:
    address: str
    port: int = 0
    udp_queries: int = 0
    tcp_queries: int = 0
    peers: list[Any] = field(default_factory=list)


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, info: DnsServer) -> None:
        self.info = info

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.DatagramTransport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.info.udp_queries += 1
        self.info.peers.append(addr)
        self.transport.sendto(answer(data, self.info.address), addr)


@contextlib.asynccontextmanager
async def dns_server(address: str) -> AsyncIterator[DnsServer]:
    """Serve DNS on one free port, UDP and TCP, answering ``address`` for every name."""
    info = DnsServer(address)
    loop = asyncio.get_running_loop()

    async def tcp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                (length,) = struct.unpack("!H", await reader.readexactly(2))
                query = await reader.readexactly(length)
                info.tcp_queries += 1
                reply = answer(query, address)
                writer.write(struct.pack("!H", len(reply)) + reply)
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(tcp, HOST, 0)
    info.port = server.sockets[0].getsockname()[1]
    transport, _ = await loop.create_datagram_endpoint(
        lambda: _Udp(info), local_addr=(HOST, info.port)
    )
    try:
        yield info
    finally:
        transport.close()
        server.close()
        await server.wait_closed()

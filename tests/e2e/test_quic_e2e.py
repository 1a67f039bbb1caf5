"""QUIC routed by the SNI inside its encrypted Initial: aioquic clients and servers.

Two aioquic servers (a.example, b.example) behind one UDP port of the proxy;
each client must reach the server its SNI names, finish the handshake and
exchange data on a stream. A client whose ClientHello is too big for one
Initial packet (many ALPN names) is reassembled before routing.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from pathlib import Path

from aioquic.asyncio import QuicConnectionProtocol, connect, serve
from aioquic.asyncio.server import QuicServer
from aioquic.quic.configuration import QuicConfiguration

from tests.kit.backends import make_certificates
from tests.kit.proxy import running_proxy

HOST = "127.0.0.1"
ALPN = "refractium-test"


@contextlib.asynccontextmanager
async def quic_server(tag: str, names: list[str], tmp: Path) -> AsyncIterator[tuple[int, Path]]:
    """An aioquic server answering each stream with ``tag: <what it read>``."""
    (tmp / tag).mkdir()
    certs = make_certificates(tmp / tag, names)
    config = QuicConfiguration(is_client=False, alpn_protocols=[ALPN])
    config.load_cert_chain(certs.cert_file, certs.key_file)

    def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async def answer() -> None:
            data = await reader.read()
            writer.write(f"{tag}: ".encode() + data)
            writer.write_eof()

        asyncio.get_running_loop().create_task(answer())

    server: QuicServer = await serve(HOST, 0, configuration=config, stream_handler=handler)
    port = server._transport.get_extra_info("sockname")[1]  # type: ignore[union-attr]
    try:
        yield port, certs.ca_file
    finally:
        server.close()


async def ask(port: int, name: str, ca_file: Path, alpn: list[str]) -> bytes:
    config = QuicConfiguration(is_client=True, server_name=name, alpn_protocols=alpn)
    config.load_verify_locations(str(ca_file))
    async with asyncio.timeout(10):
        async with connect(HOST, port, configuration=config) as client:
            assert isinstance(client, QuicConnectionProtocol)
            reader, writer = await client.create_stream()
            writer.write(b"hello " + name.encode())
            writer.write_eof()
            return await reader.read()


async def test_quic_clients_reach_the_server_their_sni_names(tmp_path: Path) -> None:
    async with (
        quic_server("A", ["a.example"], tmp_path) as (port_a, ca_a),
        quic_server("B", ["b.example"], tmp_path) as (port_b, ca_b),
    ):
        config = f"""
[server]
max_connections_per_ip = 0

[[protocols]]
name = "quic"
sni = ["a.example"]
forward_to = "{HOST}:{port_a}"

[[protocols]]
name = "quic"
sni = ["b.example"]
forward_to = "{HOST}:{port_b}"
"""
        # QUIC routes only: `run` opens UDP listeners and no TCP one.
        ready = re.compile(r"listening on udp (\S+):(\d+)")
        async with running_proxy("run", "-b", HOST, "-p", "0", config=config, ready=ready) as proxy:
            assert "listening on tcp" not in proxy.stderr
            assert await ask(proxy.port, "a.example", ca_a, [ALPN]) == b"A: hello a.example"
            assert await ask(proxy.port, "b.example", ca_b, [ALPN]) == b"B: hello b.example"
            # A ClientHello bigger than one Initial packet: 60 long ALPN names first.
            many = [f"refractium-padding-protocol-{i:03d}" for i in range(60)] + [ALPN]
            assert await ask(proxy.port, "b.example", ca_b, many) == b"B: hello b.example"

"""JA4 of real clients: curl, openssl s_client, Python's ssl and aioquic.

Each client connects to a server in the test that records the first flight
it receives (TCP) or the datagrams (UDP). The fingerprint Refractium's probes
compute from those bytes must be the one FoxIO's reference implementation
gave the same client build (tests/unit/protocols/data/ja4: reference.json and
README.md, which say how each capture was made). The clients are this
machine's Debian packages and the virtualenv's aioquic; each test first
checks that the build is the one the value was recorded for.

Last, the endpoint hook that docs/identification.md gives as an example
turns curl away by its fingerprint and lets openssl s_client through.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator, Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
from aioquic.asyncio import connect
from aioquic.quic.configuration import QuicConfiguration

from refractium import Refractium
from refractium.endpoint import Accept, ConnectionInfo, Reject, Side
from refractium.protocols.base import Match
from refractium.protocols.quic import QuicProbe
from refractium.protocols.tls import TlsProbe
from tests.kit.backends import run as run_tool
from tests.kit.backends import tls_backend
from tests.kit.clients import openssl_get

HOST = "127.0.0.1"
NAME = "ja4.example"  # the name of the captures: it sets the hello's length
DATA = Path(__file__).parents[1] / "unit" / "protocols" / "data" / "ja4"
REFERENCE: dict[str, str] = json.loads((DATA / "reference.json").read_text())["captures"]


def tool_version(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


def recorded_with(then: str, now: str) -> str:
    """Why a fingerprint may differ: the reference was taken from another build of the client.

    The clients' versions are not asserted: a patch release sends the same
    hello, and the fingerprint is what the test checks.
    """
    return f"the reference was recorded with {then}; this machine has {now.strip()}"


@contextlib.asynccontextmanager
async def first_flight_server() -> AsyncIterator[tuple[int, asyncio.Future[bytes]]]:
    """A TCP server that keeps what its first client sends until a whole hello."""
    loop = asyncio.get_running_loop()
    received: asyncio.Future[bytes] = loop.create_future()
    probe = TlsProbe()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = b""
        with contextlib.suppress(OSError):
            while not isinstance(probe.probe(data), Match):
                chunk = await reader.read(65536)
                if not chunk:
                    break
                data += chunk
        if not received.done():
            received.set_result(data)
        writer.close()

    server = await asyncio.start_server(handle, HOST, 0)
    try:
        yield server.sockets[0].getsockname()[1], received
    finally:
        server.close()
        await server.wait_closed()


async def tls_ja4(run_client: Callable[[int], Any]) -> str | None:
    """Start the server, run the client against it, fingerprint what arrived."""
    async with first_flight_server() as (port, received):
        client = asyncio.create_task(asyncio.to_thread(run_client, port))
        async with asyncio.timeout(10):
            data = await received
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client, 10)
    match = TlsProbe().probe(data)
    assert isinstance(match, Match)
    return match.ja4


def run(argv: list[str]) -> None:
    subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=10, check=False)


async def test_curl() -> None:
    def curl(port: int) -> None:
        resolve = f"{NAME}:{port}:{HOST}"
        run(["curl", "-sk", "--max-time", "5", "--resolve", resolve, f"https://{NAME}:{port}/"])

    ja4 = await tls_ja4(curl)
    assert ja4 == REFERENCE["curl.pcap"] == "t13d3112h2_e8f1e7e78f70_b26ce05bbdd6", recorded_with(
        "curl 7.88.1", tool_version("curl", "--version")
    )


@pytest.mark.parametrize(
    ("capture", "options", "expected"),
    [
        # TLS 1.2 only, with a name.
        (
            "openssl-tls12.pcap",
            ["-servername", NAME, "-tls1_2"],
            "t12d280700_d943125447b4_e7e480e5a997",
        ),
        # TLS 1.3 without a name or ALPN: "i" and "00".
        ("openssl-nosni.pcap", ["-noservername"], "t13i310900_e8f1e7e78f70_1f22a2ca17c4"),
    ],
)
async def test_openssl_s_client(capture: str, options: list[str], expected: str) -> None:
    ja4 = await tls_ja4(
        lambda port: run(["openssl", "s_client", "-connect", f"{HOST}:{port}", *options])
    )
    assert ja4 == REFERENCE[capture] == expected, recorded_with(
        "OpenSSL 3.0.19", tool_version("openssl", "version")
    )


def python_client(port: int) -> None:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["http/1.1"])
    with socket.create_connection((HOST, port), timeout=5) as sock, contextlib.suppress(OSError):
        ctx.wrap_socket(sock, server_hostname=NAME)


async def test_python_ssl() -> None:
    ja4 = await tls_ja4(python_client)
    assert ja4 == REFERENCE["python-ssl.pcap"] == "t13d1812h1_85036bcba153_d41ae481755e", (
        recorded_with("OpenSSL 3.0.19", ssl.OPENSSL_VERSION)
    )


class Datagrams(asyncio.DatagramProtocol):
    """Keeps every datagram received."""

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.arrived = asyncio.Event()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.received.append(data)
        self.arrived.set()


async def test_aioquic() -> None:
    loop = asyncio.get_running_loop()
    transport, sink = await loop.create_datagram_endpoint(Datagrams, local_addr=(HOST, 0))
    port = transport.get_extra_info("sockname")[1]
    config = QuicConfiguration(is_client=True, server_name=NAME, alpn_protocols=["h3"])
    config.idle_timeout = 1.0

    async def client() -> None:
        # No server answers: the client gives up after its idle timeout.
        with contextlib.suppress(ConnectionError, TimeoutError):
            async with connect(HOST, port, configuration=config):
                pass

    attempt = asyncio.create_task(client())
    try:
        async with asyncio.timeout(10):
            await sink.arrived.wait()
        match = QuicProbe().probe_datagrams(sink.received[:1])
        assert isinstance(match, Match)
        assert match.sni == NAME
        assert match.ja4 == REFERENCE["aioquic.pcap"] == "q13d0307h3_55b375c5d22e_1cecd519fee8", (
            recorded_with("aioquic 1.7.2", f"aioquic {version('aioquic')}")
        )
    finally:
        async with asyncio.timeout(10):
            await attempt
        transport.close()


# The endpoint hook of docs/identification.md ("JA4 fingerprints"), as written there.
BLOCKED = {"t13d3112h2_e8f1e7e78f70_b26ce05bbdd6"}


class BlockFingerprints:
    def after_handshake(self, conn: ConnectionInfo) -> object:
        if conn.side is Side.SERVER and conn.ja4 in BLOCKED:
            return Reject(403, b"client not allowed")
        return Accept


async def test_the_documented_hook_turns_curl_away_and_lets_openssl_through() -> None:
    assert {REFERENCE["curl.pcap"]} == BLOCKED
    async with tls_backend("web", ["a.example"]) as web:
        engine = (
            Refractium.builder()
            .bind(HOST)
            .port(0)
            .option(max_connections_per_ip=0)
            .route("tls", web.address)
            .hooks(BlockFingerprints())
            .build()
        )
        await engine.start_tcp()
        try:
            port = engine.tcp_addresses[0][1]
            url, resolve = f"https://a.example:{port}/", f"a.example:{port}:{HOST}"
            ca = str(web.ca_file)
            by_curl = await run_tool(["curl", "-s", "--cacert", ca, "--resolve", resolve, url])
            by_openssl = await openssl_get(port, "a.example")
        finally:
            await engine.shutdown(0)
    # curl: a TLS alert instead of a handshake; the backend never saw it.
    assert by_curl.returncode != 0
    assert engine.tcp_stats.rejected[403] == 1
    assert b"web sni=a.example" in by_openssl.out.encode()
    assert (web.accepted, web.handshakes) == (1, 1)

"""The client's JA4 as hooks see it: ``ctx.ja4`` (packet hooks) and ``conn.ja4`` (endpoint hooks).

The engine runs in the test's process, so the hooks are objects the test
inspects; the client is curl, and its fingerprint is checked against the
JA4 of the hello the same curl sends a plain socket.
"""

from __future__ import annotations

import asyncio

from refractium import Refractium
from refractium.endpoint import Accept, ConnectionInfo, EndpointHooks, Side
from refractium.hooks import Direction, HookContext, define_hook, hook_protocol
from refractium.protocols.tls import TlsProbe
from tests.e2e.test_access_log_e2e import curl_tls, hello_of, ja4_of
from tests.kit.backends import HOST, free_port, http_backend, run, tls_backend


class SeenJa4(EndpointHooks):
    """Keeps ``conn.ja4`` as after_handshake sees it on the incoming side."""

    def __init__(self) -> None:
        self.seen: list[str | None] = []

    def after_handshake(self, conn: ConnectionInfo) -> object:
        if conn.side is Side.SERVER:
            self.seen.append(conn.ja4)
        return Accept


async def test_hooks_see_the_ja4_of_a_tls_client_and_none_for_http() -> None:
    port = free_port()
    expected = ja4_of(await hello_of(curl_tls(port), port))
    packets: list[tuple[str, str | None]] = []

    def record(ctx: HookContext, direction: Direction, packet: bytes) -> None:
        if direction is Direction.INBOUND:
            packets.append((ctx.protocol, ctx.ja4))

    endpoint = SeenJa4()
    async with tls_backend("a", ["a.example"]) as tls, http_backend("web") as web:
        engine = (
            Refractium.builder()
            .bind(HOST)
            .port(0)
            .route(
                hook_protocol(TlsProbe("tls"), hooks=[define_hook("record", record)]), tls.address
            )
            .route("http", web.address, hooks=[])
            .hooks(endpoint)
            .build()
        )
        await engine.start_tcp()
        try:
            done = await run(curl_tls(engine.tcp_addresses[0][1], tls.ca_file))
            assert done.out.startswith("a sni=a.example")
            done = await run(["curl", "-s", f"http://{HOST}:{engine.tcp_addresses[0][1]}/"])
            assert done.out == "web\n"
            async with asyncio.timeout(5):
                while not packets:
                    await asyncio.sleep(0.02)
        finally:
            await engine.shutdown(0)
    assert packets[0] == ("tls", expected)
    assert endpoint.seen == [expected, None]

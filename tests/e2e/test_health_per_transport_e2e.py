"""Backend health is kept per transport: TCP failures never take a UDP backend down.

A DNS resolver that serves UDP only is the case: a query over TCP to it
fails (nothing listens on TCP), and an active check (a TCP connect) fails
too, yet UDP queries must keep being answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from typing import Any

from tests.kit.backends import run
from tests.kit.dnsserver import answer
from tests.kit.proxy import running_proxy

HOST = "127.0.0.1"
ADDRESS = "192.0.2.53"
UDP_READY = re.compile(r"listening on udp (\S+):(\d+)")


class _UdpOnly(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.DatagramTransport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.transport.sendto(answer(data, ADDRESS), addr)


@contextlib.asynccontextmanager
async def udp_only_resolver() -> AsyncIterator[int]:
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        _UdpOnly, local_addr=(HOST, 0)
    )
    try:
        yield transport.get_extra_info("sockname")[1]
    finally:
        transport.close()


async def dig(port: int, *options: str) -> str:
    done = await run(
        ["dig", f"@{HOST}", "-p", str(port), "+short", "+tries=1", "+time=2", *options, "a.example"]
    )
    return done.out.strip()


async def test_a_tcp_query_that_fails_leaves_udp_dns_up() -> None:
    async with udp_only_resolver() as resolver:
        config = f"""
[[protocols]]
name = "dns"
forward_to = "{HOST}:{resolver}"
"""
        async with running_proxy("run", "-b", HOST, "-p", "0", config=config) as proxy:
            assert await dig(proxy.port) == ADDRESS
            assert await dig(proxy.port, "+tcp") != ADDRESS  # no TCP there: it fails
            await proxy.wait_for("cannot connect to")
            assert await dig(proxy.port) == ADDRESS  # UDP: still up


async def test_an_active_check_on_a_dns_route_does_not_take_udp_down() -> None:
    async with udp_only_resolver() as resolver:
        config = f"""
[[protocols]]
name = "dns"
forward_to = "{HOST}:{resolver}"
health_check = {{ interval_ms = 100, fall = 1 }}
"""
        for command in ("udp", "run"):
            args = (command, "-b", HOST, "-p", "0")
            async with running_proxy(*args, config=config, ready=UDP_READY) as proxy:
                if command == "run":
                    await proxy.wait_for("down: connection refused")  # the TCP side's check
                else:
                    await asyncio.sleep(0.5)  # several check intervals
                for _ in range(3):
                    assert await dig(proxy.port) == ADDRESS, command

"""``bind = ["0.0.0.0", "::"]`` (the README's dual-stack file) serves TCP and UDP on both."""

from __future__ import annotations

from tests.kit.backends import http_backend, run
from tests.kit.dnsserver import dns_server
from tests.kit.proxy import running_proxy


async def test_run_on_both_wildcards_serves_udp_and_tcp_on_each_family() -> None:
    async with http_backend("web") as web, dns_server("192.0.2.53") as dns:
        config = f"""
[server]
bind = ["0.0.0.0", "::"]
port = 0

[[protocols]]
name = "dns"
forward_to = "127.0.0.1:{dns.port}"

[[protocols]]
name = "http"
forward_to = "{web.address}"
"""
        async with running_proxy("run", config=config) as proxy:
            await proxy.wait_for(r"listening on udp \[::\]")
            port = proxy.port
            for server, url in (("127.0.0.1", "127.0.0.1"), ("::1", "[::1]")):
                dig = ["dig", f"@{server}", "-p", str(port), "+short", "+tries=1", "+time=3"]
                answer = await run([*dig, "a.example"])
                assert answer.out.strip() == "192.0.2.53", server
                page = await run(["curl", "-s", "-g", f"http://{url}:{port}/"])
                assert page.out == "web\n", server

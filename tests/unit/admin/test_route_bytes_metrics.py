"""refractium_route_bytes_total and refractium_udp_route_bytes_total, by route and direction."""

from __future__ import annotations

from refractium import Refractium
from refractium.relay.stats import UdpStats
from tests.unit.admin.test_metrics import (
    REPLY,
    UdpOnlyView,
    backend,
    get,
    scrape,
    settled,
    value,
)

REQUEST = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"


async def test_tcp_route_bytes_follow_real_connections() -> None:
    async with backend() as port:
        engine = (
            Refractium.builder()
            .bind("127.0.0.1")
            .port(0)
            .route("http", f"127.0.0.1:{port}")
            .route("ssh", "127.0.0.1:9")
            .build()
        )
        (_, proxy), *_ = await engine.start_tcp()
        try:
            before = scrape(engine)
            for _ in range(2):
                assert (await get(proxy)).endswith(b"ok\n")
            await settled(engine)
            after = scrape(engine)
        finally:
            await engine.shutdown(0)

    # No route has ended a connection yet: the family is there, with no samples.
    assert before["refractium_route_bytes"].samples == []
    family = after["refractium_route_bytes"]
    name = "refractium_route_bytes_total"
    assert value(family, name, route="http", direction="in") == 2 * len(REQUEST)
    assert value(family, name, route="http", direction="out") == 2 * len(REPLY)
    # The route that carried nothing has no series.
    assert {s.labels["route"] for s in family.samples} == {"http"}


def test_udp_route_bytes() -> None:
    stats = UdpStats()
    stats.route_bytes_in["dns"] = 120
    stats.route_bytes_out["dns"] = 480
    stats.route_bytes_out["syslog#2"] = 7  # one direction only: the other reads 0
    family = scrape(UdpOnlyView(stats))["refractium_udp_route_bytes"]
    name = "refractium_udp_route_bytes_total"
    assert value(family, name, route="dns", direction="in") == 120
    assert value(family, name, route="dns", direction="out") == 480
    assert value(family, name, route="syslog#2", direction="in") == 0
    assert value(family, name, route="syslog#2", direction="out") == 7
    assert family.type == "counter"

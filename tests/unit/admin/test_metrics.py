"""The Prometheus collector against a running engine, parsed as a scraper would."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from refractium import Refractium
from refractium.abuse.guard import Guard
from refractium.admin.metrics import EngineCollector
from refractium.admin.view import BackendState, EngineView
from refractium.config.model import LimitsConfig
from refractium.errors import RefractiumError
from refractium.hooks.dispatch import HookStats
from refractium.relay.stats import IDENTIFY_BUCKETS, TcpStats, UdpStats

ACCEPTED = "refractium_connections_accepted_total"
REPLY = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n"


@contextlib.asynccontextmanager
async def backend() -> AsyncIterator[int]:
    """An HTTP server answering each connection's request with ``ok``; yields its port."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(REPLY)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def get(port: int) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    async with asyncio.timeout(5):
        data = await reader.read()
    writer.close()
    return data


async def settled(engine: Refractium) -> None:
    """Wait until the proxy has released every connection (bytes are counted then)."""
    async with asyncio.timeout(5):
        while engine.open_connections:
            await asyncio.sleep(0.01)


def scrape(engine: EngineView) -> dict[str, Metric]:
    """Family name (as the parser names it: no ``_total``) -> family, from the text."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(EngineCollector(engine))
    text = generate_latest(registry).decode()
    return {family.name: family for family in text_string_to_metric_families(text)}


def value(family: Metric, name: str, **labels: str) -> float:
    """The value of the one sample of ``family`` called ``name`` with exactly ``labels``."""
    matches = [s.value for s in family.samples if s.name == name and s.labels == labels]
    assert len(matches) == 1, (name, labels, family.samples)
    return matches[0]


async def test_counters_follow_real_traffic() -> None:
    async with backend() as port:
        engine = (
            Refractium.builder()
            .bind("127.0.0.1")
            .port(0)
            .route("http", f"127.0.0.1:{port}")
            .build()
        )
        (_, proxy), *_ = await engine.start_tcp()
        try:
            before = scrape(engine)
            assert value(before["refractium_connections_accepted"], ACCEPTED) == 0
            for _ in range(3):
                assert (await get(proxy)).endswith(b"ok\n")
            await settled(engine)
            after = scrape(engine)
        finally:
            await engine.shutdown(0)

    assert value(after["refractium_connections_accepted"], ACCEPTED) == 3
    assert value(after["refractium_routed"], "refractium_routed_total", route="http") == 3
    stats = engine.tcp_stats
    request = len(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    assert stats.bytes_in == 3 * request and stats.bytes_out == 3 * len(REPLY)
    relayed = after["refractium_bytes"]
    assert value(relayed, "refractium_bytes_total", direction="in") == stats.bytes_in
    assert value(relayed, "refractium_bytes_total", direction="out") == stats.bytes_out
    assert value(after["refractium_connections_open"], "refractium_connections_open") == 0
    backend_id = f"127.0.0.1:{port}"
    up = after["refractium_backend_up"]
    assert value(up, "refractium_backend_up", backend=backend_id, transport="tcp") == 1
    active = after["refractium_backend_active_connections"]
    labels = {"backend": backend_id, "transport": "tcp"}
    assert value(active, "refractium_backend_active_connections", **labels) == 0
    # Whatever the data path records in the histogram, the export is cumulative.
    assert_cumulative(after["refractium_identify_seconds"], engine.tcp_stats.identify_seconds.count)


def assert_cumulative(family: Metric, count: int) -> None:
    """Buckets never decrease and end with ``+Inf`` = ``_count`` = ``count``."""
    assert family.type == "histogram"
    buckets = [s for s in family.samples if s.name == "refractium_identify_seconds_bucket"]
    values = [s.value for s in buckets]
    assert values == sorted(values)
    assert len(buckets) == len(IDENTIFY_BUCKETS) + 1
    assert buckets[-1].labels == {"le": "+Inf"}
    assert values[-1] == count
    assert value(family, "refractium_identify_seconds_count") == count


async def test_every_counter_is_exported_with_its_labels() -> None:
    # Counters the data path may not have moved in a short test are set
    # directly, so each family's names, labels and values can be checked.
    engine = Refractium.builder().bind("127.0.0.1").port(0).route("http", "127.0.0.1:9").build()
    await engine.start_tcp()
    try:
        stats = engine.tcp_stats
        stats.refused["per_ip_limit"] += 2
        stats.closed[("http", "relayed")] += 5
        stats.closed[("", "unidentified")] += 1
        stats.rejected[403] += 4
        stats.ignored += 6
        stats.peek_timeouts += 7
        stats.dial_failures += 8
        histogram = stats.identify_seconds
        for seconds in (0.00005, 0.0003, 0.0003, 0.02, 9.0):
            histogram.observe(seconds)
        hooks = engine.hook_stats["tap"]
        hooks.packets, hooks.bytes, hooks.errors = 10, 1000, 1
        hooks.dropped_packets, hooks.dropped_bytes = 2, 200
        families = scrape(engine)
    finally:
        await engine.shutdown(0)

    refused = families["refractium_connections_refused"]
    assert value(refused, "refractium_connections_refused_total", reason="per_ip_limit") == 2
    closed = families["refractium_connections"]
    assert value(closed, "refractium_connections_total", route="http", outcome="relayed") == 5
    assert value(closed, "refractium_connections_total", route="", outcome="unidentified") == 1
    assert value(families["refractium_rejections"], "refractium_rejections_total", code="403") == 4
    assert value(families["refractium_ignored"], "refractium_ignored_total") == 6
    assert value(families["refractium_peek_timeouts"], "refractium_peek_timeouts_total") == 7
    assert value(families["refractium_dial_failures"], "refractium_dial_failures_total") == 8

    identify = families["refractium_identify_seconds"]
    assert_cumulative(identify, 5)
    bucket = "refractium_identify_seconds_bucket"
    assert value(identify, bucket, le="0.0001") == 1
    assert value(identify, bucket, le="0.0005") == 3
    assert value(identify, bucket, le="0.05") == 4
    assert value(identify, bucket, le="5.0") == 4
    assert value(identify, "refractium_identify_seconds_sum") == histogram.sum

    for family, expected in (
        ("packets", 10),
        ("bytes", 1000),
        ("dropped_packets", 2),
        ("dropped_bytes", 200),
        ("errors", 1),
    ):
        name = f"refractium_hook_{family}"
        assert value(families[name], f"{name}_total", hook="tap") == expected


async def test_types_and_no_tcp_families_before_start() -> None:
    engine = Refractium.builder().route("http", "127.0.0.1:9").build()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(EngineCollector(engine))
    text = generate_latest(registry).decode()
    types = {f.name: f.type for f in text_string_to_metric_families(text)}
    # Not listening yet: no TCP counters (zeros would claim an idle running proxy).
    assert "refractium_connections_accepted" not in types
    assert types["refractium_connections_open"] == "gauge"

    await engine.start_tcp()
    try:
        text = generate_latest(registry).decode()
    finally:
        await engine.shutdown(0)
    types = {f.name: f.type for f in text_string_to_metric_families(text)}
    assert types == {
        "refractium_connections_accepted": "counter",
        "refractium_connections_refused": "counter",
        "refractium_connections": "counter",
        "refractium_connections_open": "gauge",
        "refractium_routed": "counter",
        "refractium_peek_timeouts": "counter",
        "refractium_dial_failures": "counter",
        "refractium_bytes": "counter",
        "refractium_route_bytes": "counter",
        "refractium_rejections": "counter",
        "refractium_ignored": "counter",
        "refractium_identify_seconds": "histogram",
        "refractium_hook_packets": "counter",
        "refractium_hook_bytes": "counter",
        "refractium_hook_dropped_packets": "counter",
        "refractium_hook_dropped_bytes": "counter",
        "refractium_hook_errors": "counter",
        "refractium_backend_up": "gauge",
        "refractium_backend_active_connections": "gauge",
        "refractium_offences": "counter",
        "refractium_bans": "counter",
        "refractium_bans_active": "gauge",
        "refractium_limiter_evictions": "counter",
    }
    # The exposed names carry _total exactly once.
    assert "# TYPE refractium_connections_accepted_total counter" in text
    assert "_total_total" not in text


class UdpOnlyView:
    """An EngineView serving UDP only, with counters the test sets (no engine, no socket)."""

    routes: tuple[object, ...] = ()
    config_source = "test"
    open_connections = 0
    open_flows = 3
    endpoint_hooks: tuple[object, ...] = ()

    def __init__(self, stats: UdpStats) -> None:
        self.udp_stats = stats
        self.hook_stats = HookStats()
        self.guard = Guard(LimitsConfig())

    @property
    def tcp_stats(self) -> TcpStats:
        raise RefractiumError("the TCP listener is not running")

    def backends(self) -> list[BackendState]:
        return [
            BackendState("udp", "127.0.0.1:53", True, 3),
            BackendState("tcp", "127.0.0.1:53", False, 0),
        ]

    def reload_routes(self) -> None:
        raise RefractiumError("not here")


def test_every_udp_counter_is_exported() -> None:
    stats = UdpStats(flows=9, refused=1, unidentified=2, failed=1, expired=4, dropped=5)
    stats.routed["dns"] = 6
    stats.bytes_in, stats.bytes_out = 700, 1400
    stats.closed["dns", "relayed"] = 4
    stats.closed["", "unidentified"] = 2
    stats.rejected[403] = 1
    stats.ignored = 1
    registry = CollectorRegistry(auto_describe=False)
    registry.register(EngineCollector(UdpOnlyView(stats)))
    text = generate_latest(registry).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}

    def udp(name: str, **labels: str) -> float:
        family = families[f"refractium_udp_{name}"]
        return value(family, f"refractium_udp_{name}_total", **labels)

    assert udp("flows") == 9 and udp("refused") == 1 and udp("expired") == 4
    assert udp("unidentified") == 2 and udp("failed") == 1 and udp("dropped") == 5
    assert udp("routed", route="dns") == 6
    assert udp("bytes", direction="in") == 700 and udp("bytes", direction="out") == 1400
    assert udp("flows_ended", route="dns", outcome="relayed") == 4
    assert udp("flows_ended", route="", outcome="unidentified") == 2
    assert udp("rejections", code="403") == 1 and udp("ignored") == 1
    up = families["refractium_backend_up"]
    assert value(up, "refractium_backend_up", backend="127.0.0.1:53", transport="udp") == 1
    assert value(up, "refractium_backend_up", backend="127.0.0.1:53", transport="tcp") == 0
    assert "refractium_connections_accepted" not in families  # no TCP side served

"""Prometheus metrics, read from the engine's counters when scraped.

The data path only bumps plain integers (see :mod:`refractium.relay.stats`); this
collector turns them into metric families at scrape time, so exporting costs
nothing between scrapes. A family is yielded on every scrape even before it
has samples, so its name and type are known from the first scrape on.

Counter families are named with their ``_total`` suffix here so the code
reads like the exposition: ``CounterMetricFamily`` strips it from the family
name and puts it back on the samples, giving the same output either way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import cast

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from refractium.abuse.guard import Guard
from refractium.admin.view import BackendState, EngineView
from refractium.errors import RefractiumError
from refractium.hooks.dispatch import HookCounters
from refractium.relay.stats import Histogram, TcpStats, UdpStats

PREFIX = "refractium_"

# Bucket bounds written as prometheus_client's own histograms write them
# ("0.00025", "5.0"); the function is untyped upstream.
_format_bound = cast(Callable[[float], str], floatToGoString)

# HookCounters attribute, metric name (without the prefix), help text.
_HOOK_FAMILIES = (
    ("packets", "hook_packets_total", "Chunks handed to each packet hook."),
    ("bytes", "hook_bytes_total", "Bytes handed to each packet hook."),
    ("dropped_packets", "hook_dropped_packets_total", "Chunks a lagging packet hook missed."),
    ("dropped_bytes", "hook_dropped_bytes_total", "Bytes a lagging packet hook missed."),
    ("errors", "hook_errors_total", "Exceptions raised by each packet hook."),
)


class EngineCollector(Collector):
    """Every ``refractium_*`` metric of one engine, computed when collected.

    Runs in the event loop thread (the admin server scrapes from there), so
    it reads the counters while nothing else changes them.
    """

    def __init__(self, engine: EngineView) -> None:
        self._engine = engine

    def collect(self) -> Iterator[Metric]:
        engine = self._engine
        # Before start_tcp the engine has no TCP counters: export none
        # rather than zeros that would look like a running, idle proxy.
        serving = False
        try:
            stats = engine.tcp_stats
        except RefractiumError:
            pass
        else:
            serving = True
            yield from tcp_families(stats)
        try:
            udp = engine.udp_stats
        except RefractiumError:
            pass
        else:
            serving = True
            yield from udp_families(udp, engine.open_flows)
        if serving:
            yield from hook_families(engine.hook_stats)
        yield _gauge("connections_open", "TCP connections open now.", engine.open_connections)
        yield from backend_families(engine.backends())
        yield from guard_families(engine.guard)


def udp_families(stats: UdpStats, open_flows: int) -> Iterator[Metric]:
    """The UDP side's counters."""
    yield _counter("udp_flows_total", "UDP flows started.", stats.flows)
    yield _gauge("udp_flows_open", "UDP flows alive now.", open_flows)
    yield _counter(
        "udp_refused_total", "New UDP flows refused: udp_max_sessions reached.", stats.refused
    )
    yield _labelled(
        "udp_blocked_total",
        "Datagrams that would have started a flow, refused by [limits], by reason.",
        "reason",
        sorted(stats.blocked.items()),
    )
    yield _counter("udp_expired_total", "UDP flows ended by the idle timeout.", stats.expired)
    yield _counter(
        "udp_dropped_total",
        "Datagrams dropped (held too many, send backlog full, rejected flow).",
        stats.dropped,
    )
    yield _labelled(
        "udp_routed_total", "UDP flows relayed, by route.", "route", sorted(stats.routed.items())
    )
    yield _counter(
        "udp_unidentified_total",
        "UDP flows no route (nor fallback_udp) took.",
        stats.unidentified,
    )
    yield _counter(
        "udp_failed_total", "UDP flows whose route had no backend to reach.", stats.failed
    )
    ended = CounterMetricFamily(
        PREFIX + "udp_flows_ended_total",
        "Ended UDP flows, by route and outcome.",
        labels=["route", "outcome"],
    )
    for (route, outcome), n in sorted(stats.closed.items()):
        ended.add_metric([route, outcome], n)
    yield ended
    relayed = CounterMetricFamily(
        PREFIX + "udp_bytes_total",
        "Bytes relayed by ended UDP flows: in = client to backend, out = back.",
        labels=["direction"],
    )
    relayed.add_metric(["in"], stats.bytes_in)
    relayed.add_metric(["out"], stats.bytes_out)
    yield relayed
    yield route_bytes_family(
        "udp_route_bytes_total",
        "Bytes relayed by ended UDP flows, by route: in = client to backend, out = back.",
        stats.route_bytes_in,
        stats.route_bytes_out,
    )
    yield _labelled(
        "udp_rejections_total",
        "UDP flows an endpoint hook rejected, by error code.",
        "code",
        ((str(code), n) for code, n in sorted(stats.rejected.items())),
    )
    yield _counter("udp_ignored_total", "UDP flows an endpoint hook ignored.", stats.ignored)
    yield histogram_family(
        "udp_identify_seconds",
        "From a UDP flow's first datagram to its route decision.",
        stats.identify_seconds,
    )


def tcp_families(stats: TcpStats) -> Iterator[Metric]:
    """The families fed by :class:`~refractium.stats.TcpStats`."""
    yield _counter("connections_accepted_total", "TCP connections admitted.", stats.accepted)
    yield _labelled(
        "connections_refused_total",
        "TCP connections refused before identification, by reason.",
        "reason",
        sorted(stats.refused.items()),
    )
    connections = CounterMetricFamily(
        PREFIX + "connections_total",
        "Ended TCP connections, by route and outcome.",
        labels=["route", "outcome"],
    )
    for (route, outcome), n in sorted(stats.closed.items()):
        connections.add_metric([route, outcome], n)
    yield connections
    yield _labelled(
        "routed_total",
        "TCP connections relayed to a backend, by route.",
        "route",
        sorted(stats.routed.items()),
    )
    yield _counter(
        "peek_timeouts_total", "Connections not identified in time.", stats.peek_timeouts
    )
    yield _counter(
        "dial_failures_total", "Failed dials to backends (each retry counts).", stats.dial_failures
    )
    relayed = CounterMetricFamily(
        PREFIX + "bytes_total",
        "Bytes relayed by ended connections: in = client to backend, out = back.",
        labels=["direction"],
    )
    relayed.add_metric(["in"], stats.bytes_in)
    relayed.add_metric(["out"], stats.bytes_out)
    yield relayed
    yield route_bytes_family(
        "route_bytes_total",
        "Bytes relayed by ended TCP connections, by route: in = client to backend, out = back.",
        stats.route_bytes_in,
        stats.route_bytes_out,
    )
    yield _labelled(
        "rejections_total",
        "Connections an endpoint hook rejected, by error code.",
        "code",
        ((str(code), n) for code, n in sorted(stats.rejected.items())),
    )
    yield _counter("ignored_total", "Connections an endpoint hook ignored.", stats.ignored)
    yield histogram_family(
        "identify_seconds",
        "Time from a connection's first byte to its route decision.",
        stats.identify_seconds,
    )


def route_bytes_family(
    name: str, text: str, bytes_in: Mapping[str, int], bytes_out: Mapping[str, int]
) -> CounterMetricFamily:
    """Bytes by route and direction; a route has both series once either has counted."""
    family = CounterMetricFamily(PREFIX + name, text, labels=["route", "direction"])
    for route in sorted(bytes_in.keys() | bytes_out.keys()):
        family.add_metric([route, "in"], bytes_in.get(route, 0))
        family.add_metric([route, "out"], bytes_out.get(route, 0))
    return family


def guard_families(guard: Guard) -> Iterator[Metric]:
    """What ``[limits]`` did: offences, bans made and in force, clients forgotten.

    Refusals by reason (denied, banned, limited) are ``connections_refused_total``.
    """
    stats = guard.stats
    yield _labelled(
        "offences_total",
        "Offences counted toward a ban, by kind.",
        "kind",
        sorted(stats.offences.items()),
    )
    yield _labelled(
        "bans_total",
        "Client groups banned for their offences, by the last one.",
        "reason",
        sorted(stats.bans.items()),
    )
    yield _gauge("bans_active", "Bans in force now (offences, the API, hooks).", len(guard.bans()))
    if guard.state_up is not None:
        yield _gauge(
            "state_up", "Whether the fleet's shared state (Redis) answers.", int(guard.state_up())
        )
    stores = guard.stores
    yield _counter(
        "limiter_evictions_total",
        "Clients forgotten by the rate and offence tables to make room (max_clients).",
        stores.buckets.evictions + stores.offences.evictions,
    )


def hook_families(hooks: Mapping[str, HookCounters]) -> Iterator[Metric]:
    """One family per :class:`~refractium.hooks.dispatch.HookCounters` field, by hook."""
    names = sorted(hooks)
    for attribute, name, text in _HOOK_FAMILIES:
        yield _labelled(name, text, "hook", ((n, getattr(hooks[n], attribute)) for n in names))


def backend_families(backends: Sequence[BackendState]) -> Iterator[Metric]:
    """Up state and what relays to each backend, per transport (health is per transport).

    Every backend a transport knows gets both series (0 included), so a
    backend's series do not vanish while it is idle.
    """
    up = GaugeMetricFamily(
        PREFIX + "backend_up",
        "Whether the backend is up (1) or down (0), as each transport sees it.",
        labels=["backend", "transport"],
    )
    active = GaugeMetricFamily(
        PREFIX + "backend_active_connections",
        "TCP connections (UDP flows) relaying to the backend now.",
        labels=["backend", "transport"],
    )
    for backend in backends:
        up.add_metric([backend.address, backend.transport], int(backend.up))
        active.add_metric([backend.address, backend.transport], backend.active)
    yield up
    yield active


def histogram_family(name: str, text: str, histogram: Histogram) -> HistogramMetricFamily:
    """``histogram`` with its per-bucket counts made cumulative, as Prometheus wants."""
    buckets: list[tuple[str, float]] = []
    total = 0
    bounds = [_format_bound(b) for b in histogram.bounds] + ["+Inf"]
    for bound, n in zip(bounds, histogram.counts, strict=True):
        total += n
        buckets.append((bound, total))
    return HistogramMetricFamily(PREFIX + name, text, buckets=buckets, sum_value=histogram.sum)


def _counter(name: str, text: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(PREFIX + name, text, value=value)


def _gauge(name: str, text: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(PREFIX + name, text, value=value)


def _labelled(
    name: str,
    text: str,
    label: str,
    samples: Iterable[tuple[str, float]],
    *,
    gauge: bool = False,
) -> Metric:
    """A family with one label, one sample per ``(label value, value)``."""
    family: CounterMetricFamily | GaugeMetricFamily
    if gauge:
        family = GaugeMetricFamily(PREFIX + name, text, labels=[label])
    else:
        family = CounterMetricFamily(PREFIX + name, text, labels=[label])
    for value, n in samples:
        family.add_metric([value], n)
    return family

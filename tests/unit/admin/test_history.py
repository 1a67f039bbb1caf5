"""The dashboard's ring buffer of rates, and the sampler that fills it."""

from __future__ import annotations

import asyncio

import pytest

from refractium.admin.history import History, Sampler, Totals
from refractium.admin.view import RouteLoad
from refractium.errors import RefractiumError
from refractium.relay.stats import TcpStats, UdpStats


def totals(
    at: float, connections: int = 0, flows: int = 0, b_in: int = 0, b_out: int = 0
) -> Totals:
    return Totals(at, connections, flows, b_in, b_out)


def test_the_first_reading_is_only_the_base() -> None:
    history = History()
    history.add(totals(10.0, 5, 1, 100, 200), wall=1000.0, open_connections=2, open_flows=0)
    assert len(history) == 0 and history.seq == 0 and history.since(0) == []


def test_rates_are_differences_over_elapsed_time() -> None:
    history = History()
    history.add(totals(10.0, 100, 4, 1_000, 5_000), 1000.0, 0, 0)
    history.add(totals(11.0, 130, 6, 4_000, 5_000), 1001.0, 7, 2)
    # Two seconds this time (a late tick): the rate is per second, not per tick.
    history.add(totals(13.0, 150, 6, 10_000, 9_000), 1003.0, 3, 1)
    first, second = history.since(0)
    assert (first.seq, first.at) == (1, 1001.0)
    assert first.connections == 30 and first.flows == 2
    assert first.bytes_in == 3_000 and first.bytes_out == 0
    assert (first.open_connections, first.open_flows) == (7, 2)
    assert (second.seq, second.at) == (2, 1003.0)
    assert second.connections == 10 and second.flows == 0
    assert second.bytes_in == 3_000 and second.bytes_out == 2_000
    assert (second.open_connections, second.open_flows) == (3, 1)
    assert second.as_json() == {
        "seq": 2,
        "at": 1003.0,
        "connections": 10.0,
        "flows": 0.0,
        "bytes_in": 3000.0,
        "bytes_out": 2000.0,
        "open_connections": 3,
        "open_flows": 1,
    }


def test_counters_that_went_back_count_as_nothing() -> None:
    history = History()
    history.add(totals(1.0, 500, 0, 9_000, 9_000), 1.0, 0, 0)
    history.add(totals(2.0, 3, 0, 100, 50), 2.0, 0, 0)  # fresh counters after a restart
    (rate,) = history.since(0)
    assert (rate.connections, rate.bytes_in, rate.bytes_out) == (0, 0, 0)
    # A clock that did not move gives no sample rather than a division by zero.
    history.add(totals(2.0, 9, 0, 100, 50), 2.0, 0, 0)
    assert len(history) == 1


def test_bounded_to_its_size_oldest_dropped() -> None:
    history = History(size=300)
    for second in range(401):  # 400 rates
        history.add(totals(float(second), connections=2 * second), float(second), 0, 0)
    assert len(history) == 300
    rates = history.since(0)
    assert [r.seq for r in rates] == list(range(101, 401))
    assert all(r.connections == 2 for r in rates)
    assert history.seq == 400


def test_since_gives_what_a_page_has_not_seen() -> None:
    history = History(size=5)
    for second in range(9):  # rates 1..8, 4..8 kept
        history.add(totals(float(second)), float(second), 0, 0)
    assert [r.seq for r in history.since(6)] == [7, 8]
    assert history.since(8) == []
    # A page further behind than the buffer gets all of it.
    assert [r.seq for r in history.since(2)] == [4, 5, 6, 7, 8]
    assert [r.seq for r in history.since(0)] == [4, 5, 6, 7, 8]


class FakeEngine:
    """An EngineView whose counters and open-connection load the test sets."""

    routes: tuple[object, ...] = ()
    config_source = "test"
    endpoint_hooks: tuple[object, ...] = ()

    def __init__(self) -> None:
        self.tcp = TcpStats()
        self.udp: UdpStats | None = None
        self.load: dict[tuple[str, str], RouteLoad] = {}
        self.open_connections = 0
        self.open_flows = 0

    @property
    def tcp_stats(self) -> TcpStats:
        return self.tcp

    @property
    def udp_stats(self) -> UdpStats:
        if self.udp is None:
            raise RefractiumError("the UDP listener is not running")
        return self.udp

    def live_load(self) -> dict[tuple[str, str], RouteLoad]:
        return self.load


def test_sampler_counts_bytes_of_open_connections_as_they_flow(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = iter([100.0, 101.0, 102.0])
    monkeypatch.setattr("refractium.admin.history.time.monotonic", lambda: next(clock))
    engine = FakeEngine()
    sampler = Sampler(engine)  # type: ignore[arg-type]
    engine.load = {("tcp", "ssh"): RouteLoad(1, 1_000, 2_000)}
    sampler.sample()
    # One long transfer still open: its bytes show while it runs...
    engine.load = {("tcp", "ssh"): RouteLoad(1, 501_000, 1_002_000)}
    engine.open_connections = 1
    sampler.sample()
    # ...and when it ends they move to the ended totals without a bump.
    engine.load = {}
    engine.tcp.bytes_in, engine.tcp.bytes_out = 501_000, 1_002_000
    engine.tcp.accepted = 4
    engine.open_connections = 0
    sampler.sample()
    moving, ended = sampler.history.since(0)
    assert (moving.bytes_in, moving.bytes_out, moving.open_connections) == (500_000, 1_000_000, 1)
    assert (ended.bytes_in, ended.bytes_out, ended.connections) == (0, 0, 4)
    assert sampler.load == {}


async def test_sampler_task_runs_between_start_and_stop() -> None:
    engine = FakeEngine()
    engine.udp = UdpStats()
    sampler = Sampler(engine, interval_s=0.02)  # type: ignore[arg-type]
    sampler.start()
    try:
        engine.udp.flows = 10
        async with asyncio.timeout(5):
            while not any(r.flows for r in sampler.history.since(0)):
                await asyncio.sleep(0.01)
    finally:
        await sampler.stop()
    count = len(sampler.history)
    await asyncio.sleep(0.1)
    assert len(sampler.history) == count  # stopped: no more samples
    # The counter moved once, between two samples: one rate shows it.
    assert len([r for r in sampler.history.since(0) if r.flows]) == 1

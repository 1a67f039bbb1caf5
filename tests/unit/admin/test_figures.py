"""Merging the workers' figures: what the supervisor's admin API shows for the instance."""

from __future__ import annotations

import asyncio

from refractium.abuse.guard import Guard
from refractium.admin.figures import Figures, merge, retired
from refractium.admin.instance import InstanceView
from refractium.admin.view import BackendState, RouteLoad
from refractium.config.model import LimitsConfig
from refractium.endpoint.remotes import merge_snapshots
from refractium.hooks.dispatch import HookStats
from refractium.relay.stats import RECENT_REFUSALS, Refused, TcpStats, UdpStats


def worker(accepted: int, *, up: bool = True, at: float = 0.0) -> Figures:
    tcp = TcpStats(accepted=accepted, bytes_in=10 * accepted)
    tcp.routed["web"] = accepted
    tcp.closed["web", "relayed"] = accepted
    tcp.refused["per_ip_limit"] = 1
    tcp.identify_seconds.observe(0.0002)
    tcp.recent.append(Refused(at, "tcp", "127.0.0.1:1", None, 0, "max_connections_per_ip reached"))
    hooks = HookStats()
    hooks["audit"].packets = accepted
    return Figures(
        tcp=tcp,
        hooks=hooks,
        open_connections=2,
        backends=[BackendState("tcp", "127.0.0.1:8080", up, 2)],
        load={("tcp", "web"): RouteLoad(2, 100, 200)},
        remotes=[row("127.0.0.1", active=2, total=accepted, last_seen=at, last=at + 1)],
    )


def row(
    remote: str, *, active: int, total: int, last_seen: float, last: float
) -> dict[str, object]:
    return {
        "remote": remote,
        "active": active,
        "total": total,
        "rejected": 1,
        "bytes_in": 5,
        "bytes_out": 7,
        "connect_ms": {"min": last - 0.5, "max": last + 0.5, "last": last},
        "last_seen": last_seen,
    }


def test_counters_are_summed_and_histograms_merged() -> None:
    merged = merge([worker(3, at=1.0), worker(4, at=2.0)])
    tcp = merged.tcp
    assert tcp is not None
    assert tcp.accepted == 7
    assert tcp.bytes_in == 70
    assert tcp.routed["web"] == 7
    assert tcp.closed["web", "relayed"] == 7
    assert tcp.refused["per_ip_limit"] == 2
    assert tcp.identify_seconds.count == 2
    assert tcp.identify_seconds.counts[1] == 2  # both in the 0.00025 bucket
    assert [r.at for r in tcp.recent] == [1.0, 2.0]  # oldest first, as one worker keeps them
    assert merged.udp is None
    assert merged.hooks["audit"].packets == 7
    assert merged.open_connections == 4
    assert merged.load == {("tcp", "web"): RouteLoad(4, 200, 400)}


def test_the_parts_are_left_as_they_were() -> None:
    one, two = worker(3), worker(4)
    merge([one, two])
    assert one.tcp is not None and one.tcp.accepted == 3
    assert one.hooks["audit"].packets == 3


def test_a_backend_is_up_only_where_every_worker_sees_it_up() -> None:
    merged = merge([worker(1, up=True), worker(1, up=False)])
    assert merged.backends == [BackendState("tcp", "127.0.0.1:8080", False, 4)]
    assert merge([worker(1), worker(1)]).backends[0].up


def test_recent_refusals_keep_the_newest_of_all_workers() -> None:
    parts = []
    for n in range(3):
        stats = TcpStats()
        for i in range(RECENT_REFUSALS):
            stats.recent.append(Refused(float(i * 3 + n), "tcp", "x", None, 0, "r"))
        parts.append(Figures(tcp=stats))
    recent = merge(parts).tcp.recent  # type: ignore[union-attr]
    assert len(recent) == RECENT_REFUSALS
    assert [r.at for r in recent] == [float(t) for t in range(100, 150)]


def test_udp_counters_merge_too() -> None:
    one, two = UdpStats(flows=2), UdpStats(flows=5, dropped=1)
    merged = merge([Figures(udp=one), Figures(udp=two)])
    assert merged.udp is not None
    assert (merged.udp.flows, merged.udp.dropped) == (7, 1)


def test_remotes_merge_by_address() -> None:
    rows = merge_snapshots(
        [
            [row("10.0.0.1", active=1, total=2, last_seen=5.0, last=3.0)],
            [
                row("10.0.0.1", active=2, total=3, last_seen=9.0, last=7.0),
                row("10.0.0.2", active=0, total=1, last_seen=1.0, last=1.0),
            ],
        ]
    )
    assert [r["remote"] for r in rows] == ["10.0.0.1", "10.0.0.2"]  # most recent first
    first = rows[0]
    assert (first["active"], first["total"], first["rejected"]) == (3, 5, 2)
    assert (first["bytes_in"], first["bytes_out"]) == (10, 14)
    assert first["connect_ms"] == {"min": 2.5, "max": 7.5, "last": 7.0}
    assert first["last_seen"] == 9.0


def test_a_dead_worker_leaves_its_counters_not_its_connections() -> None:
    left = retired(worker(5))
    assert left.tcp is not None and left.tcp.accepted == 5
    assert left.open_connections == 0
    assert left.load == {}
    assert left.backends == []
    assert left.remotes is not None and left.remotes[0]["active"] == 0


async def test_the_instance_view_keeps_a_dead_workers_totals() -> None:
    answers: dict[int, Figures] = {101: worker(3), 102: worker(4)}
    asked = 0

    async def pull() -> dict[int, Figures]:
        nonlocal asked
        asked += 1
        await asyncio.sleep(0.01)
        return dict(answers)

    view = InstanceView((), "x.toml", pull, lambda: (), Guard(LimitsConfig()))
    await asyncio.gather(view.refresh(), view.refresh(), view.refresh())
    assert asked == 2  # the first asks; the two that came meanwhile share the next question
    await view.refresh()
    assert asked == 3  # a later request never takes an older answer
    assert view.tcp_stats.accepted == 7
    assert view.open_connections == 4
    assert view.workers_reporting == 2

    # Worker 102 dies; its replacement 103 starts from zero.
    view.worker_gone(102)
    assert view.tcp_stats.accepted == 7
    assert view.open_connections == 2
    del answers[102]
    answers[103] = worker(1)
    await view.refresh()
    assert view.tcp_stats.accepted == 3 + 4 + 1
    assert view.open_connections == 4
    remotes = view.endpoint_hooks[0].snapshot()  # type: ignore[attr-defined]
    assert remotes[0]["total"] == 8
    assert remotes[0]["active"] == 4


async def test_an_answer_from_a_worker_already_gone_is_not_counted_twice() -> None:
    async def pull() -> dict[int, Figures]:
        return {7: worker(2)}

    view = InstanceView((), None, pull, lambda: (), Guard(LimitsConfig()))
    await view.refresh()
    view.worker_gone(7)
    await view.refresh()  # a late answer from pid 7
    assert view.tcp_stats.accepted == 2
    assert view.open_connections == 0

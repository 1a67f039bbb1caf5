"""One worker's figures, read at once, and the instance's, merged from every worker's.

With ``workers > 1`` the admin API runs in the supervisor, which relays
nothing: it asks each worker for a :class:`Figures` (its counters, open
connections, backends and remotes, read in the worker's event loop between
two callbacks, so they are consistent) and merges them. Counters are
summed, histograms merged bucket by bucket, open counts summed, a backend is
up only where every worker sees it up, and the recent refusals are the
newest of all. A worker that died leaves its last counters behind
(:func:`retired`), so the instance's totals never go back.
"""

from __future__ import annotations

import heapq
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

from refractium.abuse.guard import GuardStats
from refractium.admin.view import BackendState, EngineView, RouteLoad, served_stats
from refractium.endpoint.remotes import RemoteMap, merge_snapshots
from refractium.hooks.dispatch import HookCounters, HookStats
from refractium.relay.stats import RECENT_REFUSALS, Histogram, Refused, TcpStats, UdpStats

__all__ = ["Figures", "merge", "read", "retired"]


@dataclass(slots=True)
class Figures:
    """What one worker (or, merged, the instance) reports to the admin API."""

    tcp: TcpStats | None = None
    udp: UdpStats | None = None
    hooks: HookStats = field(default_factory=HookStats)
    open_connections: int = 0
    open_flows: int = 0
    backends: list[BackendState] = field(default_factory=list)
    load: dict[tuple[str, str], RouteLoad] = field(default_factory=dict)
    # RemoteMap.snapshot() rows; None when no RemoteMap runs.
    remotes: list[dict[str, Any]] | None = None
    guard: GuardStats = field(default_factory=GuardStats)


def read(engine: EngineView) -> Figures:
    """The figures of the engine of this process, now."""
    tcp, udp = served_stats(engine)
    remote_map = next((h for h in engine.endpoint_hooks if isinstance(h, RemoteMap)), None)
    return Figures(
        tcp=tcp,
        udp=udp,
        hooks=engine.hook_stats,
        open_connections=engine.open_connections,
        open_flows=engine.open_flows,
        backends=list(engine.backends()),
        load=dict(engine.live_load()),
        remotes=remote_map.snapshot() if remote_map is not None else None,
        guard=engine.guard.stats,
    )


def retired(figures: Figures) -> Figures:
    """What a dead worker leaves behind: its counters, none of its open connections."""
    return Figures(
        tcp=figures.tcp,
        udp=figures.udp,
        hooks=figures.hooks,
        remotes=[{**row, "active": 0} for row in figures.remotes or ()],
        guard=figures.guard,
    )


def merge(parts: Iterable[Figures]) -> Figures:
    """The instance's figures from its workers' (and its dead workers' leftovers)."""
    out = Figures()
    backends: dict[tuple[str, str], BackendState] = {}
    remotes: list[list[dict[str, Any]]] = []
    any_remotes = False
    for part in parts:
        if part.tcp is not None:
            out.tcp = _add(out.tcp or TcpStats(), part.tcp)
        if part.udp is not None:
            out.udp = _add(out.udp or UdpStats(), part.udp)
        for name, counters in part.hooks.items():
            _add(out.hooks[name], counters)
        _add(out.guard, part.guard)
        out.open_connections += part.open_connections
        out.open_flows += part.open_flows
        for backend in part.backends:
            key = (backend.transport, backend.address)
            seen = backends.get(key)
            backends[key] = backend if seen is None else _both(seen, backend)
        for key, load in part.load.items():
            seen_load = out.load.get(key)
            out.load[key] = load if seen_load is None else _sum_load(seen_load, load)
        if part.remotes is not None:
            any_remotes = True
            remotes.append(part.remotes)
    out.backends = list(backends.values())
    out.remotes = merge_snapshots(remotes) if any_remotes else None
    return out


_Stats = TypeVar("_Stats", TcpStats, UdpStats, HookCounters, GuardStats)


def _add(into: _Stats, part: _Stats) -> _Stats:
    """Add ``part``'s counters to ``into``'s, field by field, by the field's kind."""
    for spec in fields(into):
        name = spec.name
        mine: Any = getattr(into, name)
        theirs: Any = getattr(part, name)
        if isinstance(mine, int):
            setattr(into, name, mine + theirs)
        elif isinstance(mine, Counter):
            mine.update(theirs)
        elif isinstance(mine, Histogram):
            mine.counts = [a + b for a, b in zip(mine.counts, theirs.counts, strict=True)]
            mine.sum += theirs.sum
            mine.count += theirs.count
        elif isinstance(mine, deque):
            newest: list[Refused] = heapq.nlargest(
                RECENT_REFUSALS, [*mine, *theirs], key=lambda r: r.at
            )
            setattr(into, name, deque(reversed(newest), maxlen=RECENT_REFUSALS))
        else:  # a new kind of field: merging it needs a decision, not a guess
            raise TypeError(f"cannot merge {type(into).__name__}.{name}")
    return into


def _both(a: BackendState, b: BackendState) -> BackendState:
    """One backend seen by two workers: up where both see it up, their load summed."""
    return BackendState(a.transport, a.address, a.up and b.up, a.active + b.active)


def _sum_load(a: RouteLoad, b: RouteLoad) -> RouteLoad:
    return RouteLoad(a.active + b.active, a.bytes_in + b.bytes_in, a.bytes_out + b.bytes_out)

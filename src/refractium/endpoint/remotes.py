"""RemoteMap: what the proxy knows about each remote address, from endpoint hooks.

Add it to the endpoint hooks and the admin API serves it on ``/remotes``::

    [endpoint]
    hooks = [{ use = "refractium.remotes:RemoteMap", idle_expiry_s = 600 }]

Per client IP it keeps: active and total connections, rejected connections,
bytes each way, the backend connect latency (min / max / last) and when the
remote was last seen. Remotes idle (no open connection) for longer than
``idle_expiry_s`` are forgotten; at most ``max_remotes`` are kept (the
longest idle go first), so a scan from many addresses cannot grow it
without bound. Everything runs in the event loop; no locks.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from refractium.endpoint import Accept, ConnectionInfo, ConnectionStats, EndpointHooks, Side
from refractium.endpoint.api import REJECTED


@dataclass(slots=True)
class RemoteStats:
    """The figures of one remote address."""

    active: int = 0
    total: int = 0
    rejected: int = 0
    bytes_in: int = 0  # from the remote, relayed to backends
    bytes_out: int = 0  # from backends, relayed to the remote
    connect_min_s: float | None = None
    connect_max_s: float | None = None
    connect_last_s: float | None = None
    last_seen: float = 0.0  # time.time()

    def connected(self, seconds: float) -> None:
        self.connect_last_s = seconds
        if self.connect_min_s is None or seconds < self.connect_min_s:
            self.connect_min_s = seconds
        if self.connect_max_s is None or seconds > self.connect_max_s:
            self.connect_max_s = seconds


class RemoteMap(EndpointHooks):
    """Per-remote statistics, aggregated from every connection's life."""

    name = "remote-map"

    def __init__(self, idle_expiry_s: float = 600.0, max_remotes: int = 100_000) -> None:
        if idle_expiry_s <= 0:
            raise ValueError("idle_expiry_s must be positive")
        if max_remotes < 1:
            raise ValueError("max_remotes must be at least 1")
        self.idle_expiry_s = idle_expiry_s
        self.max_remotes = max_remotes
        self._remotes: dict[str, RemoteStats] = {}
        # Open, identified connections -> their remote, so on_close finds them.
        self._sessions: dict[int, str] = {}
        self._next_sweep = 0.0

    # -- the hooks ----------------------------------------------------------

    def after_handshake(self, conn: ConnectionInfo) -> Any:
        if conn.side is Side.SERVER:
            remote = self._remote(conn.client_addr[0])
            remote.active += 1
            remote.total += 1
            self._sessions[conn.session_id] = conn.client_addr[0]
        return Accept

    def on_close(self, conn: ConnectionInfo, stats: ConnectionStats) -> None:
        ip = self._sessions.pop(conn.session_id, None)
        if ip is None:  # closed before it was identified (or rejected on accept)
            ip = conn.client_addr[0]
            remote = self._remote(ip)
            remote.total += 1
        else:
            remote = self._remote(ip)
            remote.active = max(0, remote.active - 1)
        if stats.outcome == REJECTED:
            remote.rejected += 1
        remote.bytes_in += stats.bytes_in
        remote.bytes_out += stats.bytes_out
        if stats.connect_s is not None:
            remote.connected(stats.connect_s)
        remote.last_seen = time.time()

    # -- reading it -----------------------------------------------------------

    def get(self, ip: str) -> RemoteStats | None:
        """The figures of ``ip``, if it is known."""
        return self._remotes.get(ip)

    def snapshot(self) -> list[dict[str, Any]]:
        """Every known remote, most recently seen first, ready for JSON."""
        self._sweep(time.time(), force=True)
        rows = sorted(self._remotes.items(), key=lambda item: item[1].last_seen, reverse=True)
        return [
            {
                "remote": ip,
                "active": r.active,
                "total": r.total,
                "rejected": r.rejected,
                "bytes_in": r.bytes_in,
                "bytes_out": r.bytes_out,
                "connect_ms": {
                    "min": _ms(r.connect_min_s),
                    "max": _ms(r.connect_max_s),
                    "last": _ms(r.connect_last_s),
                },
                "last_seen": r.last_seen,
            }
            for ip, r in rows
        ]

    def __len__(self) -> int:
        return len(self._remotes)

    # -- keeping it bounded ---------------------------------------------------

    def _remote(self, ip: str) -> RemoteStats:
        now = time.time()
        remote = self._remotes.get(ip)
        if remote is None:
            self._sweep(now)
            if len(self._remotes) >= self.max_remotes:
                self._evict_one()
            remote = self._remotes[ip] = RemoteStats()
        remote.last_seen = now
        return remote

    def _sweep(self, now: float, force: bool = False) -> None:
        """Forget remotes idle past the expiry (at most once a second unless forced)."""
        if not force and now < self._next_sweep:
            return
        self._next_sweep = now + 1.0
        cutoff = now - self.idle_expiry_s
        stale = [ip for ip, r in self._remotes.items() if r.active == 0 and r.last_seen < cutoff]
        for ip in stale:
            del self._remotes[ip]

    def _evict_one(self) -> None:
        idle = [(r.last_seen, ip) for ip, r in self._remotes.items() if r.active == 0]
        if idle:
            del self._remotes[min(idle)[1]]


def merge_snapshots(parts: Iterable[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Several RemoteMaps' :meth:`RemoteMap.snapshot` rows as one (one map per worker).

    Per remote: counts and bytes summed, the fastest and slowest connect
    kept, the last connect and ``last_seen`` taken from the map that saw the
    remote last. Most recently seen first, as ``snapshot`` orders them.
    """
    merged: dict[str, dict[str, Any]] = {}
    for rows in parts:
        for row in rows:
            seen = merged.get(row["remote"])
            if seen is None:
                merged[row["remote"]] = {**row, "connect_ms": dict(row["connect_ms"])}
                continue
            for key in ("active", "total", "rejected", "bytes_in", "bytes_out"):
                seen[key] += row[key]
            mine, theirs = seen["connect_ms"], row["connect_ms"]
            mine["min"] = _pick(mine["min"], theirs["min"], min)
            mine["max"] = _pick(mine["max"], theirs["max"], max)
            if row["last_seen"] > seen["last_seen"]:
                seen["last_seen"] = row["last_seen"]
                if theirs["last"] is not None:
                    mine["last"] = theirs["last"]
    return sorted(merged.values(), key=lambda row: row["last_seen"], reverse=True)


def _pick(a: float | None, b: float | None, pick: Callable[[float, float], float]) -> float | None:
    """``pick(a, b)``, or whichever of them is known."""
    if a is None:
        return b
    return a if b is None else pick(a, b)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)

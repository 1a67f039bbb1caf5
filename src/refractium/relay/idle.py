"""Closing relayed TCP connections that move no byte either way for ``idle_timeout_s``.

No timer per connection and no work per chunk: the relay already counts
the reads it relays each way, so one sweep per listener looks at each
watched connection's count and closes those whose count has not moved for
their timeout. A half-closed connection is idle like any other when
nothing moves. The sweep runs only while something is watched.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

#: The longest gap between two sweeps; shorter when a timeout is short, so a
#: connection is closed within about a quarter of its timeout after it.
MAX_SWEEP_S = 1.0
MIN_SWEEP_S = 0.05


class Watched(Protocol):
    """A relaying connection as the idle sweep sees it."""

    packets_in: int
    packets_out: int

    def idle_out(self, idle_s: float) -> None:
        """Nothing moved for ``idle_s``: close both sides."""


class IdleWatch:
    """The relaying connections of one listener that have an idle timeout."""

    __slots__ = ("_interval", "_loop", "_sweep", "_watched")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        # connection -> [reads relayed so far, when that count last moved, timeout]
        self._watched: dict[Watched, list[float]] = {}
        self._sweep: asyncio.TimerHandle | None = None
        self._interval = MAX_SWEEP_S

    def watch(self, conn: Watched, timeout_s: float) -> None:
        now = self._loop.time()
        self._watched[conn] = [conn.packets_in + conn.packets_out, now, timeout_s]
        self._interval = min(self._interval, max(MIN_SWEEP_S, timeout_s / 4))
        if self._sweep is None:
            self._sweep = self._loop.call_at(now + self._interval, self.sweep)

    def forget(self, conn: Watched) -> None:
        self._watched.pop(conn, None)

    def __len__(self) -> int:
        return len(self._watched)

    def sweep(self) -> None:
        """Close what has been idle for its timeout; come back while anything is watched."""
        self._sweep = None
        now = self._loop.time()
        idle: list[tuple[Watched, float]] = []
        for conn, seen in self._watched.items():
            moved = conn.packets_in + conn.packets_out
            if moved != seen[0]:
                seen[0], seen[1] = moved, now
            elif now - seen[1] >= seen[2]:
                idle.append((conn, now - seen[1]))
        for conn, idle_s in idle:
            self._watched.pop(conn, None)
            conn.idle_out(idle_s)
        if self._watched:
            self._sweep = self._loop.call_at(now + self._interval, self.sweep)
        else:
            self._interval = MAX_SWEEP_S

    def stop(self) -> None:
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None

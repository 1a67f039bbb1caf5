"""The dashboard's last five minutes: one sample a second, kept in a ring buffer.

The data path keeps only cumulative integers (:mod:`refractium.relay.stats`)
and the bytes of each open connection. A :class:`Sampler` task in the admin
server reads them once a second, turns the difference from the previous
reading into rates (connections/s, flows/s, bytes/s each way) and appends
them to a :class:`History` of :data:`HISTORY_SAMPLES` entries, so a page
opened later still shows the past five minutes. The walk over open
connections that live bytes need (:meth:`EngineView.live_load`) happens here,
once per sample, whatever the number of pages watching.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from refractium.admin.view import EngineView, RouteLoad, served_stats
from refractium.util.tasks import spawn

log = logging.getLogger(__name__)

#: Samples kept: five minutes at one a second.
HISTORY_SAMPLES = 300
#: Seconds between samples.
SAMPLE_INTERVAL_S = 1.0


@dataclass(frozen=True, slots=True)
class Totals:
    """Cumulative figures read at one moment; each only grows while the listeners run."""

    at: float  # time.monotonic()
    connections: int  # TCP connections admitted
    flows: int  # UDP flows started
    bytes_in: int  # client -> backend: ended connections and flows plus open ones
    bytes_out: int  # backend -> client


@dataclass(frozen=True, slots=True)
class Rate:
    """What happened between two readings, per second, and what was open at the second."""

    seq: int  # 1, 2, ...: lets a page ask only for the samples it has not seen
    at: float  # wall-clock time (time.time()) of the later reading
    connections: float  # TCP connections admitted per second
    flows: float  # UDP flows started per second
    bytes_in: float  # bytes per second, client -> backend
    bytes_out: float  # bytes per second, backend -> client
    open_connections: int
    open_flows: int

    def as_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "at": round(self.at, 3),
            "connections": round(self.connections, 3),
            "flows": round(self.flows, 3),
            "bytes_in": round(self.bytes_in, 1),
            "bytes_out": round(self.bytes_out, 1),
            "open_connections": self.open_connections,
            "open_flows": self.open_flows,
        }


class History:
    """The last ``size`` rates, oldest first; older ones fall off the front."""

    def __init__(self, size: int = HISTORY_SAMPLES) -> None:
        self._rates: deque[Rate] = deque(maxlen=size)
        self._last: Totals | None = None
        self._seq = 0

    def add(self, totals: Totals, wall: float, open_connections: int, open_flows: int) -> None:
        """Record a reading: the rate since the previous one (the first only sets the base)."""
        previous, self._last = self._last, totals
        if previous is None:
            return
        elapsed = totals.at - previous.at
        if elapsed <= 0:
            return

        def per_second(now: int, before: int) -> float:
            # A counter that went back (the TCP side was stopped and started
            # again with fresh counters) counts as nothing, not as negative.
            return max(now - before, 0) / elapsed

        self._seq += 1
        self._rates.append(
            Rate(
                seq=self._seq,
                at=wall,
                connections=per_second(totals.connections, previous.connections),
                flows=per_second(totals.flows, previous.flows),
                bytes_in=per_second(totals.bytes_in, previous.bytes_in),
                bytes_out=per_second(totals.bytes_out, previous.bytes_out),
                open_connections=open_connections,
                open_flows=open_flows,
            )
        )

    def since(self, seq: int) -> list[Rate]:
        """The rates after ``seq`` (all of them for 0), oldest first."""
        if seq <= 0 or not self._rates or seq < self._rates[0].seq:
            return list(self._rates)
        return [rate for rate in self._rates if rate.seq > seq]

    @property
    def seq(self) -> int:
        """The newest rate's number (0 before the second reading)."""
        return self._seq

    def __len__(self) -> int:
        return len(self._rates)


class Sampler:
    """Reads an engine every :data:`SAMPLE_INTERVAL_S` into a :class:`History`.

    Also keeps the last per-route load it read (:attr:`load`), which the
    dashboard shows as each route's active connections and live bytes.
    """

    def __init__(
        self,
        engine: EngineView,
        history: History | None = None,
        interval_s: float = SAMPLE_INTERVAL_S,
    ) -> None:
        self._engine = engine
        self.history = history if history is not None else History()
        self._interval_s = interval_s
        self._tasks: set[asyncio.Task[Any]] = set()
        self._task: asyncio.Task[None] | None = None
        #: ``(transport, route id)`` -> the load read by the last sample.
        self.load: Mapping[tuple[str, str], RouteLoad] = {}

    def sample(self) -> None:
        """Take one reading now."""
        engine = self._engine
        load = engine.live_load()
        connections = flows = bytes_in = bytes_out = 0
        tcp, udp = served_stats(engine)
        if tcp is not None:
            connections = tcp.accepted
            bytes_in += tcp.bytes_in
            bytes_out += tcp.bytes_out
        if udp is not None:
            flows = udp.flows
            bytes_in += udp.bytes_in
            bytes_out += udp.bytes_out
        for row in load.values():
            bytes_in += row.bytes_in
            bytes_out += row.bytes_out
        self.load = load
        totals = Totals(time.monotonic(), connections, flows, bytes_in, bytes_out)
        self.history.add(totals, time.time(), engine.open_connections, engine.open_flows)

    def start(self) -> None:
        """Take a first reading (the base of the first rate) and sample every interval."""
        if self._task is not None:
            return
        self.sample()
        self._task = spawn(self._run(), name="admin-sampler", owner=self._tasks)

    async def stop(self) -> None:
        """Stop sampling; the history stays readable."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        # wait() neither raises the task's CancelledError nor hides our own.
        await asyncio.wait([task])

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        # Aim at fixed ticks so the samples do not drift by the time each takes.
        due = loop.time()
        while True:
            due += self._interval_s
            await asyncio.sleep(max(due - loop.time(), 0))
            try:
                self.sample()
            except Exception:  # a bug of ours: say it once per tick, keep the history going
                log.error("dashboard sample failed", exc_info=True)
            if loop.time() - due > self._interval_s:
                due = loop.time()  # the loop was stalled: start ticking from now

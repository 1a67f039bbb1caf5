"""Running packet hooks: one task per hooked connection, fed by one queue.

The relay appends each chunk it reads, from either side, to the
connection's queue and returns at once; the connection's hook task takes
chunks off in the same order and calls every hook of the route on each. So
hooks see every chunk exactly once, in the order the proxy read them across
both directions, and a slow hook delays only its own queue.

The queue is bounded in bytes (:data:`QUEUE_LIMIT`). When it is full:

* ``overflow = "drop"`` (the default) drops the chunk for the hooks (never
  for the relay), counts it and warns (rate-limited);
* ``overflow = "block"`` pauses reading from both sides of the connection
  until the hooks have caught up with half the queue: lossless, at the cost
  of slowing the connection to the hooks' pace.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from refractium.hooks.api import Direction, HookContext, ProtocolHook
from refractium.logs import RateLimitedLog

log = logging.getLogger(__name__)
events = RateLimitedLog(log)

#: Bytes a connection's hook queue may hold before ``overflow`` applies.
QUEUE_LIMIT = 4 << 20


@dataclass(slots=True)
class HookCounters:
    """What one hook (by name) was given, missed and failed on."""

    packets: int = 0
    bytes: int = 0
    dropped_packets: int = 0
    dropped_bytes: int = 0
    errors: int = 0


class HookStats(defaultdict[str, HookCounters]):
    """Counters per hook name, for the whole engine."""

    def __init__(self) -> None:
        super().__init__(HookCounters)


class Dispatcher:
    """The hook queue and task of one connection."""

    __slots__ = (
        "_block",
        "_counters",
        "_ctx",
        "_ended",
        "_hooks",
        "_limit",
        "_loop",
        "_on_drained",
        "_on_full",
        "_paused",
        "_queue",
        "_queued",
        "_waiter",
        "dropped",
    )

    def __init__(
        self,
        ctx: HookContext,
        hooks: Sequence[ProtocolHook],
        stats: HookStats,
        *,
        block: bool,
        on_full: Callable[[], None],
        on_drained: Callable[[], None],
        limit: int = QUEUE_LIMIT,
    ) -> None:
        self._ctx = ctx
        self._hooks = tuple(hooks)
        self._counters = tuple(stats[hook.name] for hook in self._hooks)
        self._block = block
        self._on_full = on_full
        self._on_drained = on_drained
        self._limit = limit
        self._loop = asyncio.get_running_loop()
        self._queue: deque[tuple[Direction, bytes]] = deque()
        self._queued = 0
        self._waiter: asyncio.Future[None] | None = None
        self._ended = False
        self._paused = False
        self.dropped = 0

    # -- the relay's side (hot path) ---------------------------------------

    def push(self, direction: Direction, data: bytes) -> None:
        """Queue one chunk the relay has read; never blocks."""
        size = len(data)
        if self._queued + size > self._limit and not self._block and self._queue:
            self._drop(size)
            return
        self._queue.append((direction, data))
        self._queued += size
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            waiter.set_result(None)
        if self._block and not self._paused and self._queued > self._limit:
            self._paused = True
            self._on_full()

    def end(self) -> None:
        """The connection is over: deliver what is queued, then stop."""
        self._ended = True
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            waiter.set_result(None)

    def _drop(self, size: int) -> None:
        self.dropped += 1
        for counters in self._counters:
            counters.dropped_packets += 1
            counters.dropped_bytes += size
        events.log(
            logging.WARNING,
            "hook-drop",
            "[%016x] hook queue full (%d bytes): dropping packets for %s",
            self._ctx.session_id,
            self._limit,
            ", ".join(hook.name for hook in self._hooks),
        )

    # -- the hook task -----------------------------------------------------

    async def run(self) -> None:
        """Deliver queued chunks to the hooks until the connection has ended."""
        queue = self._queue
        ctx = self._ctx
        pairs = tuple(zip(self._hooks, self._counters, strict=True))
        while True:
            while queue:
                direction, data = queue.popleft()
                size = len(data)
                for hook, counters in pairs:
                    counters.packets += 1
                    counters.bytes += size
                    try:
                        result = hook.on_packet(ctx, direction, data)
                        if result is not None:
                            await result
                    except Exception:
                        counters.errors += 1
                        self._hook_failed(hook, "on_packet")
                self._queued -= size
                if self._paused and self._queued <= self._limit // 2:
                    self._paused = False
                    self._on_drained()
            if self._ended:
                break
            self._waiter = self._loop.create_future()
            await self._waiter
        for hook, counters in pairs:
            try:
                result = hook.on_close(ctx)
                if result is not None:
                    await result
            except Exception:
                counters.errors += 1
                self._hook_failed(hook, "on_close")

    def _hook_failed(self, hook: ProtocolHook, method: str) -> None:
        # A hook's bug must not touch the connection: log it and go on.
        events.log(
            logging.ERROR,
            f"hook-error:{hook.name}",
            "[%016x] hook %s raised in %s (it keeps receiving packets)",
            self._ctx.session_id,
            hook.name,
            method,
            exc_info=True,
        )

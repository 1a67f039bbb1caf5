"""Running packet hooks: one queue per hooked connection, drained in order.

The relay appends each chunk it reads, from either side, to the
connection's queue and returns at once; the chunks are taken off later, in
the same order, and every hook of the route is called on each. So hooks see
every chunk exactly once, in the order the proxy read them across both
directions, and a slow hook delays only its own queue, never the relay.

How the hooks are called depends on them:

* if every hook of the route is a plain function (the built-in logger and
  pcap writer, most audit hooks), they are called on each chunk right
  after the relay has passed it on, in the relay's own callback. A plain
  hook runs on the event loop whenever it runs: queueing its calls would
  not save the relay a microsecond, but would keep every chunk alive a
  loop turn longer (a bulk read is up to 32 chunks of 256 KiB per turn)
  and cost a wake-up per chunk. Called at once, plain hooks never fall
  behind, so nothing is ever dropped for them.
* if any hook is a coroutine function, the connection gets a task of its
  own fed by a queue, and each call is awaited in turn. A plain hook that
  returns an awaitable anyway moves its connection to such a task for good,
  without reordering anything.

The queue of a hook task is bounded in bytes (:data:`QUEUE_LIMIT`). When
it is full:

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
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from refractium.hooks.api import Direction, HookContext, ProtocolHook, is_async_hook
from refractium.util.logs import RateLimitedLog
from refractium.util.safecall import Failed, HookFailures, safeawait, safecall

log = logging.getLogger(__name__)
events = RateLimitedLog(log)
failures = HookFailures(log)

#: Bytes a connection's hook queue may hold before ``overflow`` applies. A
#: bulk read on uvloop is up to 32 reads of 256 KiB in one loop turn, before
#: the hook task gets a turn: the queue must take that without dropping.
QUEUE_LIMIT = 16 << 20


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

    def __reduce__(self) -> tuple[Any, ...]:
        # defaultdict's own passes the factory to __init__, which takes none here.
        return (HookStats, (), None, None, iter(self.items()))


Spawn = Callable[[Coroutine[Any, Any, Any]], object]


def _nothing() -> None:
    pass


class Dispatcher:
    """The packet hooks of one connection: called at once, or through a task."""

    __slots__ = (
        "_block",
        "_ctx",
        "_ended",
        "_inline",
        "_limit",
        "_on_drained",
        "_on_full",
        "_pairs",
        "_paused",
        "_queue",
        "_queued",
        "_spawn",
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
        spawn: Spawn,
        inline: bool | None = None,
        limit: int = QUEUE_LIMIT,
    ) -> None:
        """``inline``: whether every hook is plain (worked out when not given)."""
        self._ctx = ctx
        self._pairs = tuple((hook, stats[hook.name]) for hook in hooks)
        self._block = block
        self._on_full = on_full
        self._on_drained = on_drained
        self._spawn = spawn
        self._limit = limit
        self._queue: deque[tuple[Direction, bytes]] = deque()
        self._queued = 0
        self._waiter: asyncio.Future[None] | None = None
        self._ended = False
        self._paused = False
        self.dropped = 0
        if inline is None:
            inline = not any(is_async_hook(hook) for hook in hooks)
        self._inline = inline
        if not self._inline:
            spawn(self.run())

    # -- the relay's side (hot path) ---------------------------------------

    def push(self, direction: Direction, data: bytes) -> None:
        """Give the hooks one chunk the relay has read; never waits for them."""
        if self._inline:
            self._call_now(direction, data)
            return
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
        """The connection is over: deliver what is queued, then ``on_close``."""
        if self._ended:
            return
        self._ended = True
        if self._inline:
            self._close_now()
            return
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            waiter.set_result(None)

    def _drop(self, size: int) -> None:
        self.dropped += 1
        for _, counters in self._pairs:
            counters.dropped_packets += 1
            counters.dropped_bytes += size
        events.log(
            logging.WARNING,
            "hook-drop",
            "[%016x] hook queue full (%d bytes): dropping packets for %s",
            self._ctx.session_id,
            self._limit,
            ", ".join(hook.name for hook, _ in self._pairs),
        )

    def _delivered(self, size: int) -> None:
        self._queued -= size
        if self._paused and self._queued <= self._limit // 2:
            self._paused = False
            self._on_drained()

    # -- plain hooks: called at once ------------------------------------------

    def _call_now(self, direction: Direction, data: bytes) -> None:
        ctx = self._ctx
        size = len(data)
        for position, (hook, counters) in enumerate(self._pairs):
            counters.packets += 1
            counters.bytes += size
            # Inline, not safecall(): this runs for every chunk of the connection.
            try:
                result = hook.on_packet(ctx, direction, data)
            except Exception:
                self._hook_failed(hook, counters, "on_packet")
                continue
            if result is not None:
                # Not so plain after all: await it, and from now on queue this
                # connection's chunks for a task, which keeps the order.
                self._inline = False
                self._queued += size
                self._spawn(self._resume(result, position, direction, data))
                return

    def _close_now(self) -> None:
        for hook, counters in self._pairs:
            report = partial(self._hook_failed, hook, counters, "on_close")
            result = safecall(report, hook.on_close, self._ctx)
            if result is not None and not isinstance(result, Failed):
                self._spawn(safeawait(report, result))
        self._pairs = ()  # a read racing the close reaches no hook
        self._release()

    async def _resume(
        self, result: Awaitable[None], position: int, direction: Direction, data: bytes
    ) -> None:
        """Finish the packet a plain hook returned an awaitable for, then run()."""
        hook, counters = self._pairs[position]
        await safeawait(partial(self._hook_failed, hook, counters, "on_packet"), result)
        for hook, counters in self._pairs[position + 1 :]:
            counters.packets += 1
            counters.bytes += len(data)
            await self._call(hook, counters, "on_packet", direction, data)
        self._delivered(len(data))
        await self.run()

    async def _call(
        self, hook: ProtocolHook, counters: HookCounters, method: str, *args: object
    ) -> None:
        """``hook.method(ctx, *args)``, awaited if it gives an awaitable; failures reported."""
        report = partial(self._hook_failed, hook, counters, method)
        result = safecall(report, getattr(hook, method), self._ctx, *args)
        if result is not None and not isinstance(result, Failed):
            await safeawait(report, result)

    # -- coroutine hooks: a task per connection ------------------------------

    async def run(self) -> None:
        """Deliver queued chunks to the hooks until the connection has ended."""
        queue = self._queue
        ctx = self._ctx
        pairs = self._pairs
        try:
            while True:
                while queue:
                    direction, data = queue.popleft()
                    size = len(data)
                    for hook, counters in pairs:
                        counters.packets += 1
                        counters.bytes += size
                        # Inline, not safecall(): this runs for every chunk.
                        try:
                            result = hook.on_packet(ctx, direction, data)
                            if result is not None:
                                await result
                        except Exception:
                            self._hook_failed(hook, counters, "on_packet")
                    self._delivered(size)
                if self._ended:
                    break
                self._waiter = asyncio.get_running_loop().create_future()
                await self._waiter
            for hook, counters in pairs:
                await self._call(hook, counters, "on_close")
        finally:
            self._release()

    def _release(self) -> None:
        # The callbacks are bound methods of the connection, which holds this
        # dispatcher: dropping them breaks the cycle, so a finished connection
        # is freed by reference counting instead of waiting for the GC.
        self._on_full = self._on_drained = _nothing

    def _hook_failed(self, hook: ProtocolHook, counters: HookCounters, method: str) -> None:
        """Count and report the exception ``hook.method`` raised (called in ``except``)."""
        # A hook's bug must not touch the connection: count it, log it, go on.
        counters.errors += 1
        failures.report(
            f"hook-error:{hook.name}",
            "[%016x] hook %s raised in %s (it keeps receiving packets)",
            self._ctx.session_id,
            hook.name,
            method,
        )

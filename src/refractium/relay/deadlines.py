"""Per-connection deadlines without a loop timer each: the peek and the dial timeouts.

Every connection is given the same few timeouts (``peek_timeout_ms``,
``connect_timeout_ms``), so the deadlines of one length are set in the order
they fall due. :class:`Deadlines` keeps them in a FIFO queue with one loop
timer for the whole queue, where a ``call_later`` per connection would put
one timer into, and later take it out of, the loop's heap: about 2 µs a
connection, twice per connection. Cancelling only drops the callback (and
with it the reference to the connection); the entry leaves the queue when
its time comes. The timer fires at most every ``resolution`` seconds, so a
deadline may be met up to that much late.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

#: How late a deadline may fire, at most: a fraction of its length, within bounds.
MAX_RESOLUTION_S = 0.05
RESOLUTION_FRACTION = 0.125


class Deadline:
    """One pending deadline; :meth:`cancel` keeps its callback from being called."""

    __slots__ = ("at", "callback")

    def __init__(self, at: float, callback: Callable[[], None]) -> None:
        self.at = at
        self.callback: Callable[[], None] | None = callback

    def cancel(self) -> None:
        self.callback = None


class Deadlines:
    """Deadlines of one length, fired in the order they were set, by one loop timer."""

    __slots__ = ("_loop", "_queue", "_resolution", "_timer", "delay")

    def __init__(self, loop: asyncio.AbstractEventLoop, delay: float) -> None:
        self._loop = loop
        self.delay = delay
        self._resolution = min(MAX_RESOLUTION_S, delay * RESOLUTION_FRACTION)
        self._queue: deque[Deadline] = deque()
        self._timer: asyncio.TimerHandle | None = None

    def add(self, callback: Callable[[], None]) -> Deadline:
        """Call ``callback`` once ``delay`` seconds have passed, unless cancelled first."""
        deadline = Deadline(self._loop.time() + self.delay, callback)
        self._queue.append(deadline)
        if self._timer is None:
            self._timer = self._loop.call_at(deadline.at, self._fire)
        return deadline

    def __len__(self) -> int:
        return len(self._queue)

    def _fire(self) -> None:
        self._timer = None
        now = self._loop.time()
        queue = self._queue
        while queue:
            head = queue[0]
            callback = head.callback
            if callback is not None and head.at > now:
                break
            queue.popleft()
            if callback is not None:
                head.callback = None
                callback()
        if queue and self._timer is None:
            # Not before the resolution: a busy queue wakes the loop a few
            # times a second, not once per connection.
            self._timer = self._loop.call_at(max(queue[0].at, now + self._resolution), self._fire)

    def stop(self) -> None:
        """Cancel every pending deadline (the loop is stopping)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for deadline in self._queue:
            deadline.callback = None
        self._queue.clear()


class DeadlineSet:
    """The queues of a context, one per length (a reload may change the lengths)."""

    __slots__ = ("_loop", "_queues")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._queues: dict[float, Deadlines] = {}

    def after(self, delay: float, callback: Callable[[], None]) -> Deadline:
        """Call ``callback`` in ``delay`` seconds (unless cancelled)."""
        queue = self._queues.get(delay)
        if queue is None:
            queue = self._queues[delay] = Deadlines(self._loop, delay)
        return queue.add(callback)

    def pending(self) -> int:
        return sum(len(queue) for queue in self._queues.values())

    def stop(self) -> None:
        for queue in self._queues.values():
            queue.stop()
        self._queues.clear()

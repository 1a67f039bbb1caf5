"""Run a coroutine as far as it goes without waiting, and finish it later if it must.

Endpoint hooks are often coroutines that never actually wait (a dict lookup
behind ``async def``). Giving each call a task costs a task, a context and
a loop turn per connection; stepping the coroutine by hand costs nothing
when it completes at once, which is what Python 3.12's eager tasks do.
When the coroutine does wait, :class:`Suspended` carries it, and awaiting
that (in whatever task the caller has) drives it to the end exactly as a
task would: it waits on the future the coroutine yielded, then resumes it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Coroutine, Generator
from typing import Any


class Suspended:
    """A coroutine that has started and is waiting: await this to finish it."""

    __slots__ = ("_coro", "_yielded")

    def __init__(self, coro: Coroutine[Any, Any, Any], yielded: Any) -> None:
        self._coro = coro
        self._yielded = yielded

    def __await__(self) -> Generator[Any, None, Any]:
        return self._finish().__await__()

    async def _finish(self) -> Any:
        coro, waiting_on = self._coro, self._yielded
        while True:
            try:
                if waiting_on is None:
                    await asyncio.sleep(0)  # a bare yield: give the loop one turn
                else:
                    # The coroutine yielded it as "blocking", for a task to take
                    # over; a task clears the flag before waiting on it, so do we.
                    waiting_on._asyncio_future_blocking = False
                    await waiting_on
            except BaseException as exc:
                try:
                    waiting_on = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
                continue
            try:
                waiting_on = coro.send(None)
            except StopIteration as stop:
                return stop.value


async def _wrap(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


def start(awaitable: Awaitable[Any]) -> Any:
    """Run ``awaitable`` until it first waits: its result, or a :class:`Suspended`.

    Exceptions it raises before waiting propagate from here.
    """
    coro = awaitable if isinstance(awaitable, Coroutine) else _wrap(awaitable)
    try:
        yielded = coro.send(None)
    except StopIteration as stop:
        return stop.value
    return Suspended(coro, yielded)

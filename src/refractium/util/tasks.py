"""Named, owned background tasks: the one place the proxy starts a task.

The event loop keeps only weak references to tasks, so a task nobody holds
can vanish mid-flight together with its exception. Every task the proxy
starts goes through :func:`spawn` (named, for long-lived work such as health
checks) or :meth:`Tasks.start` (per connection: unnamed, as cheap as the
loop allows); both keep the task in their owner's set until it finishes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

log = logging.getLogger(__name__)


def spawn(
    coro: Coroutine[Any, Any, T], *, name: str, owner: set[asyncio.Task[Any]]
) -> asyncio.Task[T]:
    """Start ``coro`` as a task named ``name`` held in ``owner`` until done."""
    task = asyncio.get_running_loop().create_task(coro, name=name)
    owner.add(task)
    task.add_done_callback(_finished(owner))
    return task


def _finished(owner: set[asyncio.Task[Any]]) -> Any:
    def done(task: asyncio.Task[Any]) -> None:
        owner.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("task %s failed", task.get_name(), exc_info=exc)

    return done


class Tasks:
    """The tasks of one owner (a listener's connections), held until they finish.

    :meth:`start` runs once per connection, so it skips the name formatting
    and the running-loop lookup of :func:`spawn`.
    """

    __slots__ = ("_loop", "_tasks")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._tasks: set[asyncio.Task[Any]] = set()

    def start(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        """Run ``coro`` as a task held until it finishes."""
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def pending(self) -> list[asyncio.Task[Any]]:
        """The tasks not finished yet."""
        return [task for task in self._tasks if not task.done()]

    def cancel_all(self) -> None:
        for task in list(self._tasks):
            task.cancel()

    def __len__(self) -> int:
        return len(self._tasks)

"""Named, owned background tasks.

The event loop keeps only weak references to tasks, so a task nobody holds
can vanish mid-flight together with its exception. Every task the proxy
starts goes through :func:`spawn`, which names it and keeps it in its
owner's set until it finishes.
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

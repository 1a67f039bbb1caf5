"""Reload on config file changes (``hot_reload = true``), with watchfiles.

The directory is watched, not the file: editors and deployment tools often
replace a file by renaming a new one over it, which a watch on the old
inode would miss.
"""

from __future__ import annotations

import asyncio
import logging
import os.path
from collections.abc import Callable

log = logging.getLogger(__name__)

# Coalesce the bursts of events one save makes; well inside the 3 s a
# change should take to be in force.
DEBOUNCE_MS = 300


def _absolute(path: str) -> str:
    return os.path.normpath(os.path.abspath(path))


async def watch_file(path: str, on_change: Callable[[], None], stop: asyncio.Event) -> None:
    """Call ``on_change()`` after each change of ``path``, until ``stop`` is set."""
    from watchfiles import awatch

    target = _absolute(path)
    log.info("watching %s for changes", path)
    async for changes in awatch(
        os.path.dirname(target), stop_event=stop, debounce=DEBOUNCE_MS, recursive=False
    ):
        if any(_absolute(changed) == target for _, changed in changes):
            on_change()

"""``[limits] deny_file``: read at start, read again whenever it changes.

A bad line is logged with its line number and skipped; the rest applies. A
file that cannot be read (yet) denies nothing more than the config's
``deny`` until it can: the directory is watched, so the file may be created
later. Reading happens in the event loop; a deny file of 10,000 lines takes
a few milliseconds.
"""

from __future__ import annotations

import asyncio
import logging
import os.path

from refractium.abuse.denyfile import read_deny_file
from refractium.abuse.guard import Guard
from refractium.engine.watch import watch_file
from refractium.util.tasks import spawn

log = logging.getLogger(__name__)

__all__ = ["DenyFileWatch"]


class DenyFileWatch:
    """Keeps a guard's file-denied networks in step with one deny file."""

    def __init__(self, guard: Guard) -> None:
        self._guard = guard
        self._path: str | None = None
        self._stop: asyncio.Event | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def follow(self, path: str | None) -> None:
        """Read ``path`` now and on each change (None: no file); a new path replaces the old."""
        if path == self._path:
            return
        self.stop()
        self._path = path
        if path is None:
            self._guard.deny_file(())
            return
        self.read()
        if not os.path.isdir(os.path.dirname(os.path.abspath(path))):
            log.warning("limits.deny_file %s: its directory does not exist: not watched", path)
            return
        self._stop = asyncio.Event()
        spawn(watch_file(path, self.read, self._stop), name="deny-file", owner=self._tasks)

    def read(self) -> None:
        """Read the file again and hand its networks to the guard."""
        path = self._path
        if path is None:
            return
        denied = read_deny_file(path)
        for error in denied.errors:
            log.warning("limits.deny_file: %s", error)
        self._guard.deny_file(denied.networks)
        log.info("limits.deny_file %s: %d network(s) denied", path, len(denied.networks))

    def stop(self) -> None:
        """Stop watching (the networks read stay until the next follow)."""
        if self._stop is not None:
            self._stop.set()
            self._stop = None

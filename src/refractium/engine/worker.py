"""One of a supervisor's worker processes: its link back, saying it is ready, leaving with it.

A worker is the ``refractium`` command started again by the supervisor
(:mod:`refractium.engine.supervisor`) with ``--worker INDEX:PID:FD``: it
reads the same file, opens its own listeners with ``SO_REUSEPORT``, writes
one line to the descriptor ``FD`` once it listens, and stops when the
supervisor ``PID`` goes away (``PR_SET_PDEATHSIG``, and a once-a-second
``getppid()`` check where that is not available or came too late).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import logging
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass

from refractium.errors import RefractiumError

log = logging.getLogger(__name__)

__all__ = ["PARENT_CHECK_S", "READY_LINE", "WorkerLink", "watch_parent"]

#: How often a worker checks that its supervisor is still its parent.
PARENT_CHECK_S = 1.0
#: What a worker writes to its ready descriptor once it listens.
READY_LINE = b"ready\n"
# linux/prctl.h
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True, slots=True)
class WorkerLink:
    """What a worker knows of its supervisor: its own number, the supervisor, the ready pipe."""

    index: int
    supervisor_pid: int
    ready_fd: int

    @classmethod
    def parse(cls, text: str) -> WorkerLink:
        """``INDEX:PID:FD`` as the supervisor writes it.

        Raises:
            RefractiumError: not three non-negative integers.
        """
        parts = text.split(":")
        if len(parts) != 3 or not all(part.isdigit() for part in parts):
            raise RefractiumError(f"--worker: expected INDEX:PID:FD, got {text!r}")
        index, pid, fd = (int(part) for part in parts)
        return cls(index, pid, fd)

    def __str__(self) -> str:
        return f"{self.index}:{self.supervisor_pid}:{self.ready_fd}"

    def follow_parent(self) -> None:
        """Have the kernel send SIGTERM when the supervisor dies (Linux; elsewhere a no-op).

        Set as early as possible; :meth:`orphaned` covers a supervisor that
        died before this ran.
        """
        name = ctypes.util.find_library("c")
        try:
            libc = ctypes.CDLL(name, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        except (OSError, AttributeError):
            log.debug("prctl(PR_SET_PDEATHSIG) unavailable: relying on the parent check")

    def orphaned(self) -> bool:
        """Whether the supervisor is gone (this process was handed to another parent)."""
        return os.getppid() != self.supervisor_pid

    def ready(self) -> None:
        """Tell the supervisor this worker listens (once; the descriptor is closed after)."""
        try:
            os.write(self.ready_fd, READY_LINE)
        except OSError as exc:
            log.debug("cannot tell the supervisor this worker is ready: %s", exc.strerror)
        with contextlib.suppress(OSError):
            os.close(self.ready_fd)


async def watch_parent(link: WorkerLink, stop: Callable[[], None]) -> None:
    """Call ``stop()`` once the supervisor is gone: a worker never outlives it."""
    while not link.orphaned():
        await asyncio.sleep(PARENT_CHECK_S)
    log.warning("worker %d: supervisor (pid %d) is gone: stopping", link.index, link.supervisor_pid)
    stop()

"""One worker slot of a supervisor: the process in it, its restart back-off, its figures.

A slot outlives its processes: when the worker in it dies, the supervisor
starts another in the same slot (same index, same count column of the
shared tables) after :class:`Backoff` says how long to wait.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass, field

from refractium.admin.figures import Figures
from refractium.engine.worker import ask_figures

log = logging.getLogger("refractium.engine.supervisor")

__all__ = ["FIGURES_TIMEOUT_S", "Backoff", "WorkerSlot", "describe_exit"]

#: How long a worker has to answer a request for its figures.
FIGURES_TIMEOUT_S = 2.0


@dataclass(slots=True)
class Backoff:
    """How long to wait before starting a worker again: doubling, capped, forgiven.

    A worker that lived ``reset_after_s`` or longer is not crashing in a
    loop: its replacement starts after ``initial_s`` again.
    """

    initial_s: float = 0.1
    maximum_s: float = 10.0
    reset_after_s: float = 10.0
    _next_s: float = field(default=0.0, init=False)

    def delay(self, lived_s: float) -> float:
        """The wait before the next start, for a worker that ran ``lived_s`` seconds."""
        if lived_s >= self.reset_after_s or self._next_s == 0.0:
            self._next_s = self.initial_s
        delay = self._next_s
        self._next_s = min(self._next_s * 2, self.maximum_s)
        return delay


def describe_exit(returncode: int) -> str:
    """``killed by SIGKILL`` or ``exit status 1``, from a subprocess return code."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit status {returncode}"


class WorkerSlot:
    """One worker slot: the process in it now, and its restart history."""

    __slots__ = ("backoff", "channel", "index", "proc", "ready", "started")

    def __init__(self, index: int) -> None:
        self.index = index
        self.proc: asyncio.subprocess.Process | None = None
        self.backoff = Backoff()
        self.started = 0.0
        # Set once the first process of this slot listened.
        self.ready = asyncio.Event()
        # Where the figures of the process now running are asked for.
        self.channel: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def figures(self) -> tuple[int, Figures | None]:
        """This worker's pid and figures; None when it is not running or did not answer."""
        proc, channel = self.proc, self.channel
        if proc is None or channel is None or proc.returncode is not None:
            return 0, None
        try:
            async with asyncio.timeout(FIGURES_TIMEOUT_S):
                return proc.pid, await ask_figures(*channel)
        except Exception as exc:  # anything from another process: never the admin API's end
            # Half an answer may follow: this channel is done until a restart.
            self.close_channel()
            if proc.returncode is None:
                log.warning("worker %d (pid %d) gave no figures: %r", self.index, proc.pid, exc)
            return proc.pid, None

    def close_channel(self) -> None:
        channel, self.channel = self.channel, None
        if channel is not None:
            channel[1].close()

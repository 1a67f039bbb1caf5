"""One of a supervisor's worker processes: its link back, saying it is ready, leaving with it.

A worker is the ``refractium`` command started again by the supervisor
(:mod:`refractium.engine.supervisor`) with
``--worker INDEX:PID:READY:FIGURES:TABLES``: it reads the same file,
opens its own listeners with ``SO_REUSEPORT``, writes one line to the
descriptor ``READY`` once it listens, and stops when the supervisor ``PID``
goes away (``PR_SET_PDEATHSIG``, and a once-a-second ``getppid()`` check
where that is not available or came too late).

The other descriptors it inherits: ``FIGURES``, a socket on which the
supervisor asks for this worker's figures (:func:`answer_figures`; the
supervisor serves the admin API for the whole instance), and ``TABLES``
(``counts=7,allows=8,...``), the shared-memory tables of
:mod:`refractium.shared` that hold what the workers share: open connections
per client, the allow list, the rate buckets, offence counts and bans.

The figures travel as a pickle (4-byte length first) over a socket pair
only the two processes hold: both ends run this same code.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import logging
import os
import pickle
import signal
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass

from refractium.admin.figures import Figures
from refractium.errors import RefractiumError

log = logging.getLogger(__name__)

__all__ = [
    "PARENT_CHECK_S",
    "READY_LINE",
    "WorkerLink",
    "answer_figures",
    "ask_figures",
    "watch_parent",
]

#: How often a worker checks that its supervisor is still its parent.
PARENT_CHECK_S = 1.0
#: What a worker writes to its ready descriptor once it listens.
READY_LINE = b"ready\n"
# linux/prctl.h
_PR_SET_PDEATHSIG = 1
#: What the supervisor sends to ask for a worker's figures.
ASK = b"?"
_LENGTH = struct.Struct("!I")


@dataclass(frozen=True, slots=True)
class WorkerLink:
    """What a worker knows of its supervisor: its number, the supervisor, the descriptors."""

    index: int  # 1..N
    supervisor_pid: int
    ready_fd: int
    figures_fd: int
    # The shared-memory tables: ("counts", fd), ("allows", fd), ...
    tables: tuple[tuple[str, int], ...] = ()

    @classmethod
    def parse(cls, text: str) -> WorkerLink:
        """``INDEX:PID:READY:FIGURES:NAME=FD,NAME=FD...`` as the supervisor writes it.

        Raises:
            RefractiumError: not four non-negative integers and the tables.
        """
        parts = text.split(":")
        tables: list[tuple[str, int]] = []
        if len(parts) == 5:
            for item in parts[4].split(",") if parts[4] else ():
                name, _, fd = item.partition("=")
                if not (name.isidentifier() and fd.isdigit()):
                    break
                tables.append((name, int(fd)))
            else:
                parts = parts[:4]
        if len(parts) != 4 or not all(part.isdigit() for part in parts):
            raise RefractiumError(
                f"--worker: expected INDEX:PID:READY:FIGURES:NAME=FD,..., got {text!r}"
            )
        index, pid, ready, figures = (int(part) for part in parts)
        return cls(index, pid, ready, figures, tuple(tables))

    def __str__(self) -> str:
        tables = ",".join(f"{name}={fd}" for name, fd in self.tables)
        return f"{self.index}:{self.supervisor_pid}:{self.ready_fd}:{self.figures_fd}:{tables}"

    def table(self, name: str) -> int:
        """The descriptor of the table ``name`` (RefractiumError if the supervisor gave none)."""
        for known, fd in self.tables:
            if known == name:
                return fd
        raise RefractiumError(f"--worker: no {name} table")

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


async def answer_figures(fd: int, read: Callable[[], Figures]) -> None:
    """The worker's side: answer each request on ``fd`` with ``read()``, until EOF."""
    sock = socket.socket(fileno=fd)
    reader, writer = await asyncio.open_connection(sock=sock)
    try:
        while await reader.read(1):
            body = pickle.dumps(read(), protocol=pickle.HIGHEST_PROTOCOL)
            writer.write(_LENGTH.pack(len(body)) + body)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def ask_figures(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> Figures:
    """The supervisor's side: one worker's figures, now (ConnectionError, IncompleteReadError)."""
    writer.write(ASK)
    await writer.drain()
    (length,) = _LENGTH.unpack(await reader.readexactly(_LENGTH.size))
    figures = pickle.loads(await reader.readexactly(length))
    if not isinstance(figures, Figures):
        raise ConnectionError("a worker answered something other than its figures")
    return figures

"""A process killed while it holds a shared table's locks: the test of every table."""

from __future__ import annotations

import fcntl
import multiprocessing
import signal
from collections.abc import Callable
from multiprocessing.connection import Connection

import pytest

FORK = multiprocessing.get_context("fork")


def kill_while_holding(
    holder: Callable[[int, Connection], None], fd: int, probe: tuple[int, int]
) -> None:
    """Fork ``holder(fd, pipe)``, which takes locks and sends ``"holding"``; SIGKILL it.

    ``probe`` is ``(fd, byte)``: a lock the holder must be seen holding (a
    non-blocking attempt fails) before it is killed. On return the holder is
    dead, and the kernel has dropped its locks.
    """
    reader, writer = FORK.Pipe(duplex=False)
    victim = FORK.Process(target=holder, args=(fd, writer))
    victim.start()
    try:
        assert reader.recv() == "holding"
        with pytest.raises(OSError, match="Resource temporarily unavailable"):
            fcntl.lockf(probe[0], fcntl.LOCK_EX | fcntl.LOCK_NB, 1, probe[1])
    finally:
        victim.kill()
        victim.join(10)
    assert victim.exitcode == -signal.SIGKILL

"""An anonymous shared file, mapped, with byte-range locks by number.

The supervisor makes the file with :meth:`SharedMemory.create` (``memfd_create``:
no name in any directory, nothing to clean up, gone when the last descriptor
closes) and hands the descriptor to each worker it starts (``pass_fds``, which
clears close-on-exec in the child only); the worker maps it with
:meth:`SharedMemory.attach`. Every process then sees the same bytes.

Locks are POSIX record locks (``fcntl.lockf``) on one byte each, numbered from
0; they need not lie inside the file. The kernel drops a process's locks when
it dies, so a worker killed while holding one blocks nobody. The same
semantics set two limits, both harmless for one single-threaded worker per
process:

* the locks belong to the process: two objects (or threads) of one process
  never exclude each other;
* closing *any* descriptor of the file drops every lock the process holds on
  it, so a process keeps one descriptor per file while it locks.
"""

from __future__ import annotations

import fcntl
import mmap
import os

_ALIGN = 8  # so a mapping casts to 4-byte words and to 8-byte floats alike


class SharedMemory:
    """One process's mapping of a shared file, and its locks."""

    __slots__ = ("_fd", "mm", "size", "words")

    def __init__(self, fd: int, size: int) -> None:
        self._fd = fd
        self.size = size
        self.mm = mmap.mmap(fd, size)
        self.words = memoryview(self.mm).cast("I")  # unsigned 32-bit words

    @classmethod
    def create(cls, size: int, name: str) -> SharedMemory:
        """A new zero-filled file of at least ``size`` bytes (a multiple of 8).

        The descriptor is close-on-exec: pass it to a child with ``pass_fds``.
        ``name`` shows in ``/proc/PID/fd`` only (``/memfd:NAME``).
        """
        if size <= 0:
            raise ValueError(f"shared memory size must be positive, not {size}")
        size = -(-size // _ALIGN) * _ALIGN
        fd = os.memfd_create(name, os.MFD_CLOEXEC)
        try:
            os.ftruncate(fd, size)
            return cls(fd, size)
        except BaseException:
            os.close(fd)
            raise

    @classmethod
    def attach(cls, fd: int) -> SharedMemory:
        """Map the file behind an inherited descriptor; :meth:`close` closes ``fd``."""
        size = os.fstat(fd).st_size
        if size <= 0 or size % _ALIGN:
            raise ValueError(f"descriptor {fd} is not a shared table ({size} bytes)")
        return cls(fd, size)

    @property
    def fd(self) -> int:
        """The descriptor to pass to the processes that attach."""
        return self._fd

    def lock(self, n: int) -> None:
        """Take lock ``n`` (byte ``n`` of the file), waiting for its holder."""
        fcntl.lockf(self._fd, fcntl.LOCK_EX, 1, n)

    def unlock(self, n: int) -> None:
        """Give lock ``n`` back."""
        fcntl.lockf(self._fd, fcntl.LOCK_UN, 1, n)

    def close(self) -> None:
        """Unmap and close the descriptor (dropping this process's locks); idempotent.

        Views of :attr:`mm` made elsewhere must be released first.
        """
        if self._fd < 0:
            return
        self.words.release()
        self.mm.close()
        os.close(self._fd)
        self._fd = -1

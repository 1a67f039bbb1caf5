"""The shared file: one mapping seen by two processes, locks the kernel frees."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from refractium.shared.memory import SharedMemory


def _child(code: str, fd: int) -> subprocess.Popen[str]:
    """A fresh interpreter that inherits ``fd`` as a worker does (``pass_fds``)."""
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), str(fd)],
        pass_fds=(fd,),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def _held_elsewhere(fd: int, n: int) -> bool:
    """Whether another process holds lock ``n`` (a lock this process takes is given back)."""
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, n)
    except OSError:
        return True
    fcntl.lockf(fd, fcntl.LOCK_UN, 1, n)
    return False


def test_create_is_zeroed_rounded_and_close_on_exec() -> None:
    mem = SharedMemory.create(13, "test")
    try:
        assert mem.size == 16
        assert os.fstat(mem.fd).st_size == 16
        assert len(mem.words) == 4
        assert mem.mm[:] == bytes(16)
        assert os.get_inheritable(mem.fd) is False
        assert os.readlink(f"/proc/self/fd/{mem.fd}").startswith("/memfd:test")
    finally:
        mem.close()


def test_create_refuses_an_empty_size() -> None:
    with pytest.raises(ValueError, match="must be positive, not 0"):
        SharedMemory.create(0, "test")


def test_another_process_sees_and_writes_the_same_words() -> None:
    mem = SharedMemory.create(64, "test")
    try:
        mem.words[3] = 41
        child = _child(
            """
            import sys
            from refractium.shared.memory import SharedMemory
            mem = SharedMemory.attach(int(sys.argv[1]))
            print(mem.size, mem.words[3], flush=True)
            mem.words[5] = mem.words[3] + 1
            mem.close()
            """,
            mem.fd,
        )
        out, _ = child.communicate(timeout=10)
        assert child.returncode == 0
        assert out.split() == ["64", "41"]
        assert mem.words[5] == 42
    finally:
        mem.close()


def test_a_lock_excludes_other_processes_until_its_holder_dies() -> None:
    mem = SharedMemory.create(64, "test")
    try:
        child = _child(
            """
            import sys
            from refractium.shared.memory import SharedMemory
            mem = SharedMemory.attach(int(sys.argv[1]))
            mem.lock(3)
            print("locked", flush=True)
            sys.stdin.read()  # until killed, or until the test lets go of the pipe
            """,
            mem.fd,
        )
        assert child.stdout is not None
        assert child.stdout.readline() == "locked\n"
        assert _held_elsewhere(mem.fd, 3)
        assert not _held_elsewhere(mem.fd, 2)
        assert not _held_elsewhere(mem.fd, 4)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
        assert not _held_elsewhere(mem.fd, 3)  # the kernel dropped the dead holder's lock
        mem.lock(3)
        mem.unlock(3)
    finally:
        mem.close()


def test_unlock_lets_the_next_process_in() -> None:
    mem = SharedMemory.create(64, "test")
    try:
        mem.lock(7)
        child = _child(
            """
            import sys
            from refractium.shared.memory import SharedMemory
            mem = SharedMemory.attach(int(sys.argv[1]))
            print("attached", flush=True)
            mem.lock(7)
            mem.words[0] = 1
            mem.unlock(7)
            """,
            mem.fd,
        )
        assert child.stdout is not None
        assert child.stdout.readline() == "attached\n"
        time.sleep(0.2)
        assert mem.words[0] == 0  # the child waits for the lock
        mem.unlock(7)
        assert child.wait(timeout=10) == 0
        assert mem.words[0] == 1
    finally:
        mem.close()


def test_attach_refuses_a_file_that_is_no_table() -> None:
    fd = os.memfd_create("empty", os.MFD_CLOEXEC)
    try:
        with pytest.raises(ValueError, match=rf"descriptor {fd} is not a shared table \(0 bytes\)"):
            SharedMemory.attach(fd)
    finally:
        os.close(fd)


def test_close_closes_the_descriptor_once() -> None:
    mem = SharedMemory.create(64, "test")
    fd = mem.fd
    mem.close()
    mem.close()
    with pytest.raises(OSError, match="Bad file descriptor"):
        os.fstat(fd)

"""Offence counts shared by worker processes: the window, exact small counts, eviction."""

from __future__ import annotations

import fcntl
import multiprocessing as mp
import os
import signal
import time
from collections.abc import Iterator
from itertools import islice
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Barrier

import pytest

from refractium.shared.keys import EMPTY, address_key, key_hash
from refractium.shared.offences import RING, SharedOffences
from refractium.shared.slots import META_BYTES, SLOTS, WINDOW

FORK = mp.get_context("fork")
A = address_key("192.0.2.1")
B = address_key("2001:db8::")


@pytest.fixture
def table() -> Iterator[SharedOffences]:
    offences = SharedOffences.create(1024)
    yield offences
    offences.close()


def _keys(table: SharedOffences, stripe: int, start: int) -> Iterator[bytes]:
    """Keys first probed at slot ``start`` of ``stripe``."""
    head = os.pread(table.fd, META_BYTES, 0)
    stripes = int.from_bytes(head[4:8], "little")
    mult = int.from_bytes(head[16:32], "little")
    for n in range(1, 1 << 24):
        key = b"\x20\x01\x0d\xb8" + n.to_bytes(12)
        h = key_hash(key, mult)
        if (h >> (32 - (stripes.bit_length() - 1)), h & (SLOTS - 1)) == (stripe, start):
            yield key


def _slot_key(table: SharedOffences, stripe: int, index: int) -> bytes:
    first = META_BYTES + 8 * table.stripes
    return os.pread(table.fd, 16, first + (stripe * SLOTS + index) * SharedOffences.SLOT_BYTES)


def test_offences_in_the_window_are_counted(table: SharedOffences) -> None:
    assert [table.add(A, 60.0, 1000.0 + i) for i in range(RING)] == list(range(1, RING + 1))
    assert table.add(B, 60.0, 1010.0) == 1  # another key, its own count
    assert table.add(A, 60.0, 2000.0) == 1  # the others are out of the window


def test_an_offence_a_window_old_is_out(table: SharedOffences) -> None:
    assert table.add(A, 10.0, 1000.0) == 1
    assert table.add(A, 10.0, 1009.5) == 2
    assert table.add(A, 10.0, 1010.0) == 2  # 1000 is out: the window is (1000, 1010]
    assert table.add(A, 10.0, 1019.6) == 2  # 1010 and 1019.6


def test_the_window_slides(table: SharedOffences) -> None:
    counts = [table.add(A, 10.0, 1000.0 + 3 * i) for i in range(12)]
    assert counts == [1, 2, 3, 4] + [4] * 8  # every 3 s, a 10 s window holds 4


def test_counts_up_to_the_ring_are_exact_at_any_pace(table: SharedOffences) -> None:
    # 8 offences a window, arriving unevenly: the count stays 8 however
    # the oldest leave.
    times = [1000.0, 1000.1, 1003.0, 1003.2, 1005.0, 1009.0, 1009.5, 1009.9]
    assert [table.add(A, 10.0, t) for t in times] == list(range(1, 9))
    assert table.add(A, 10.0, 1010.05) == 8  # 1000.0 left
    assert table.add(A, 10.0, 1013.1) == 7  # 1000.1, 1003.0 and 1003.2 left, 1010.05 came
    assert table.add(A, 10.0, 1019.95) == 3  # 1010.05, 1013.1 and 1019.95


def test_counts_above_the_ring_count_every_offence_while_the_first_is_in_the_window(
    table: SharedOffences,
) -> None:
    assert [table.add(A, 60.0, 1000.0 + i) for i in range(30)] == list(range(1, 31))
    # 1000 leaves the window: the count starts again from the last 8, which
    # are in the window; it never counts more than there are (here 30).
    assert table.add(A, 60.0, 1060.0) == RING
    assert table.add(A, 60.0, 1061.0) == RING + 1


def test_clear_forgets_the_offences(table: SharedOffences) -> None:
    for i in range(5):
        table.add(A, 60.0, 1000.0 + i)
    table.clear(A)
    assert table.add(A, 60.0, 1010.0) == 1
    table.clear(B)  # nothing to forget
    assert table.add(B, 60.0, 1010.0) == 1


def test_a_window_full_of_recent_offenders_forgets_the_one_whose_offences_end_first(
    table: SharedOffences,
) -> None:
    stripe, start = 3, 250  # the window wraps inside the stripe
    keys = list(islice(_keys(table, stripe, start), WINDOW + 2))
    for i, key in enumerate(keys[:WINDOW]):
        assert table.add(key, 60.0, 1000.0 + i) == 1
    assert table.add(keys[0], 60.0, 1020.0) == 2  # keys[0] offends again: its offences end last
    assert table.add(keys[WINDOW], 60.0, 1030.0) == 1
    assert table.evictions == 1
    assert _slot_key(table, stripe, (start + 1) & (SLOTS - 1)) == keys[WINDOW]  # keys[1]'s
    assert table.add(keys[0], 60.0, 1031.0) == 3
    assert table.add(keys[1], 60.0, 1032.0) == 1  # forgotten
    assert table.evictions == 2
    # Offences out of their window leave a free slot (keys[3]'s): no eviction.
    assert table.add(keys[WINDOW + 1], 60.0, 1063.5) == 1
    assert table.evictions == 2


def test_what_is_no_key_or_window_is_refused(table: SharedOffences) -> None:
    with pytest.raises(ValueError, match="not a table key"):
        table.add(EMPTY, 60.0, 1000.0)
    with pytest.raises(ValueError, match="not a table key"):
        table.clear(b"short")
    with pytest.raises(ValueError, match=r"not a window: 0\.0 s"):
        table.add(A, 0.0, 1000.0)


def test_sizes(table: SharedOffences) -> None:
    assert (table.capacity, SharedOffences.SLOT_BYTES) == (1024, 104)
    assert os.fstat(table.fd).st_size == META_BYTES + 8 * 4 + 1024 * 104


def _offender(fd: int, start: Barrier, out: Connection) -> None:
    offences = SharedOffences.attach(os.dup(fd))
    start.wait()
    out.send([offences.add(A, 60.0, 1000.0) for _ in range(50)])
    offences.close()


def test_offences_from_two_processes_add_up(table: SharedOffences) -> None:
    barrier = FORK.Barrier(2)
    pipes = [FORK.Pipe(duplex=False) for _ in range(2)]
    procs = [FORK.Process(target=_offender, args=(table.fd, barrier, w)) for _, w in pipes]
    for p in procs:
        p.start()
    counts = [c for r, _ in pipes for c in r.recv()]
    for p in procs:
        p.join(10)
        assert p.exitcode == 0
    # Each add counted under the lock: every count from 1 to 100 once.
    assert sorted(counts) == list(range(1, 101))
    assert table.add(A, 60.0, 1000.0) == 101


def _holder(fd: int, out: Connection) -> None:
    offences = SharedOffences.attach(os.dup(fd))
    offences.add(A, 60.0, 1000.0)
    fcntl.lockf(offences.fd, fcntl.LOCK_EX, 0, 0)  # every stripe's lock
    out.send("holding")
    time.sleep(60)


def test_a_process_killed_holding_the_locks_blocks_nobody(table: SharedOffences) -> None:
    reader, writer = FORK.Pipe(duplex=False)
    victim = FORK.Process(target=_holder, args=(table.fd, writer))
    victim.start()
    try:
        assert reader.recv() == "holding"
    finally:
        victim.kill()
        victim.join(10)
    assert victim.exitcode == -signal.SIGKILL
    assert table.add(A, 60.0, 1001.0) == 2

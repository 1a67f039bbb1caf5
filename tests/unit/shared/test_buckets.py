"""Token buckets shared by worker processes: bursts, refill, eviction, other processes."""

from __future__ import annotations

import fcntl
import multiprocessing as mp
import os
import time
from array import array
from collections.abc import Iterator
from itertools import islice
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Barrier

import pytest

from refractium.abuse.local import LocalBuckets
from refractium.shared.buckets import SharedBuckets
from refractium.shared.keys import EMPTY, address_key, key_hash
from refractium.shared.memory import SharedMemory
from refractium.shared.slots import META_BYTES, SLOTS, WINDOW
from refractium.shared.stores import Buckets
from tests.kit.locks import kill_while_holding

FORK = mp.get_context("fork")
A = address_key("192.0.2.1")
B = address_key("2001:db8::")
SLOW = 1 / 3600  # a token an hour: a bucket taken from stays short for the whole test


@pytest.fixture
def table() -> Iterator[SharedBuckets]:
    buckets = SharedBuckets.create(1024)
    yield buckets
    buckets.close()


def _place(table: SharedBuckets, key: bytes) -> tuple[int, int]:
    """(stripe, first slot probed) of ``key``, from the header's stripes and multiplier."""
    head = os.pread(table.fd, META_BYTES, 0)
    stripes = int.from_bytes(head[4:8], "little")
    h = key_hash(key, int.from_bytes(head[16:32], "little"))
    return h >> (32 - (stripes.bit_length() - 1)), h & (SLOTS - 1)


def _keys(table: SharedBuckets, stripe: int, start: int) -> Iterator[bytes]:
    """Keys first probed at slot ``start`` of ``stripe``."""
    for n in range(1, 1 << 24):
        key = b"\x20\x01\x0d\xb8" + n.to_bytes(12)
        if _place(table, key) == (stripe, start):
            yield key


def _slot_key(table: SharedBuckets, stripe: int, index: int) -> bytes:
    first = META_BYTES + 8 * table.stripes
    return os.pread(table.fd, 16, first + (stripe * SLOTS + index) * SharedBuckets.SLOT_BYTES)


def test_a_burst_is_taken_then_refused_until_a_token_comes(table: SharedBuckets) -> None:
    assert [table.take(A, 5.0, 5.0, 1000.0) for _ in range(5)] == [0.0] * 5
    assert table.take(A, 5.0, 5.0, 1000.0) == pytest.approx(0.2)
    assert table.take(A, 5.0, 5.0, 1000.0) == pytest.approx(0.2)  # a refusal takes nothing
    assert table.take(A, 5.0, 5.0, 1000.1) == pytest.approx(0.1)
    assert table.take(B, 5.0, 5.0, 1000.1) == 0.0  # another key, another bucket
    assert table.evictions == 0


def test_the_bucket_refills_at_the_rate_up_to_the_burst(table: SharedBuckets) -> None:
    for _ in range(5):
        table.take(A, 5.0, 5.0, 1000.0)
    assert table.take(A, 5.0, 5.0, 1000.2) == 0.0
    assert table.take(A, 5.0, 5.0, 1000.2) == pytest.approx(0.2)
    assert table.take(A, 5.0, 5.0, 1000.5) == 0.0  # 1.5 tokens came
    assert table.take(A, 5.0, 5.0, 1000.5) == pytest.approx(0.1)
    # An hour later the bucket holds the burst, not 18,000 tokens.
    assert [table.take(A, 5.0, 5.0, 4600.0) for _ in range(6)] == [0.0] * 5 + [pytest.approx(0.2)]


def test_the_wall_clock_and_a_burst_of_1000(table: SharedBuckets) -> None:
    now = time.time()
    assert all(table.take(A, 1000.0, 1000.0, now) == 0.0 for _ in range(1000))
    assert table.take(A, 1000.0, 1000.0, now) == pytest.approx(0.001)
    assert table.take(A, 1000.0, 1000.0, now + 0.0105) == 0.0  # 10.5 tokens came
    for _ in range(9):
        assert table.take(A, 1000.0, 1000.0, now + 0.0105) == 0.0
    # Wall-clock seconds are floats spaced 0.24 µs apart.
    assert table.take(A, 1000.0, 1000.0, now + 0.0105) == pytest.approx(0.0005, abs=1e-6)


def test_a_clock_stepped_back_refills_nothing(table: SharedBuckets) -> None:
    assert table.take(A, 1.0, 1.0, 1000.0) == 0.0
    assert table.take(A, 1.0, 1.0, 990.0) == pytest.approx(1.0)
    assert table.take(A, 1.0, 1.0, 1000.5) == pytest.approx(0.5)  # from 1000, not from 990
    assert table.take(A, 1.0, 1.0, 1001.0) == 0.0


def test_a_window_full_of_live_buckets_forgets_the_least_recently_used(
    table: SharedBuckets,
) -> None:
    stripe, start = 2, 40
    keys = list(islice(_keys(table, stripe, start), WINDOW + 1))
    for i, key in enumerate(keys[:WINDOW]):
        assert table.take(key, SLOW, 2.0, 1000.0 + i) == 0.0
    assert table.take(keys[3], SLOW, 2.0, 1100.0) == 0.0  # keys[3] used again: now the latest
    assert table.take(keys[3], SLOW, 2.0, 1100.0) > 0
    assert table.evictions == 0
    assert table.take(keys[WINDOW], SLOW, 2.0, 1200.0) == 0.0
    assert table.evictions == 1
    assert _slot_key(table, stripe, start) == keys[WINDOW]  # keys[0]'s slot
    assert table.take(keys[1], SLOW, 2.0, 1201.0) == 0.0  # kept: one of 2 tokens left
    assert table.take(keys[1], SLOW, 2.0, 1201.0) > 0
    assert table.take(keys[3], SLOW, 2.0, 1201.0) > 0
    # keys[0] comes back with a full bucket, and keys[2] (now the least
    # recently used) makes room for it.
    assert table.take(keys[0], SLOW, 2.0, 1300.0) == 0.0
    assert table.take(keys[0], SLOW, 2.0, 1300.0) == 0.0
    assert table.evictions == 2
    assert _slot_key(table, stripe, start + 2) == keys[0]


def test_a_bucket_full_again_is_reused_without_an_eviction(table: SharedBuckets) -> None:
    stripe, start = 0, SLOTS - 3  # the window wraps inside the stripe
    keys = list(islice(_keys(table, stripe, start), WINDOW + 1))
    for i, key in enumerate(keys[:WINDOW]):
        assert table.take(key, 1.0, 2.0, 1000.0 + i / 100) == 0.0  # full again a second later
    assert table.take(keys[WINDOW], 1.0, 2.0, 1016.0) == 0.0
    assert table.evictions == 0
    assert _slot_key(table, stripe, start) == keys[WINDOW]
    assert _slot_key(table, stripe, (start + WINDOW - 1) & (SLOTS - 1)) == keys[WINDOW - 1]


def test_full_buckets_before_a_never_used_slot_are_emptied(table: SharedBuckets) -> None:
    stripe, start = 1, 7
    a, b, c = islice(_keys(table, stripe, start), 3)
    assert table.take(a, 1.0, 1.0, 1000.0) == 0.0
    assert table.take(b, 1.0, 1.0, 1000.0) == 0.0
    assert _slot_key(table, stripe, start + 1) == b
    assert table.take(c, 1.0, 1.0, 1002.0) == 0.0  # a and b are full again
    assert _slot_key(table, stripe, start) == c
    assert _slot_key(table, stripe, start + 1) == EMPTY
    assert table.evictions == 0


def test_what_is_no_bucket_is_refused(table: SharedBuckets) -> None:
    with pytest.raises(ValueError, match="not a table key"):
        table.take(EMPTY, 1.0, 1.0, 1000.0)
    with pytest.raises(ValueError, match="not a table key"):
        table.take(b"short", 1.0, 1.0, 1000.0)
    with pytest.raises(ValueError, match=r"not a token bucket: 0.0/s, burst 5.0"):
        table.take(A, 0.0, 5.0, 1000.0)
    with pytest.raises(ValueError, match=r"not a token bucket: 1.0/s, burst 0.5"):
        table.take(A, 1.0, 0.5, 1000.0)


def test_sizes_and_headers(table: SharedBuckets) -> None:
    assert (table.capacity, table.stripes) == (1024, 4)
    assert os.fstat(table.fd).st_size == META_BYTES + 8 * 4 + 1024 * 40
    bigger = SharedBuckets.create(100_000)
    assert bigger.capacity == 131072
    bigger.close()
    mem = SharedMemory.create(4096, "test")
    with pytest.raises(ValueError, match="not a table of buckets"):
        SharedBuckets.attach(os.dup(mem.fd))
    mem.words[0:4] = array("I", [SharedBuckets.MAGIC, 4, SLOTS, 40])  # 4 stripes: 41 kB
    with pytest.raises(ValueError, match="a table of buckets with a broken header"):
        SharedBuckets.attach(os.dup(mem.fd))
    mem.close()


def _taker(fd: int, start: Barrier, out: Connection) -> None:
    buckets = SharedBuckets.attach(os.dup(fd))
    start.wait()
    taken = sum(buckets.take(A, SLOW, 50.0, 1000.0) == 0.0 for _ in range(200))
    out.send(taken)
    buckets.close()


def test_two_processes_never_take_more_than_the_burst_together(table: SharedBuckets) -> None:
    barrier = FORK.Barrier(2)
    pipes = [FORK.Pipe(duplex=False) for _ in range(2)]
    procs = [FORK.Process(target=_taker, args=(table.fd, barrier, w)) for _, w in pipes]
    for p in procs:
        p.start()
    taken = [r.recv() for r, _ in pipes]
    for p in procs:
        p.join(10)
        assert p.exitcode == 0
    assert sum(taken) == 50
    assert table.take(A, SLOW, 50.0, 1000.0) > 0


def _evicter(fd: int, keys: list[bytes]) -> None:
    buckets = SharedBuckets.attach(os.dup(fd))
    for key in keys:
        buckets.take(key, SLOW, 2.0, 2000.0)
    buckets.close()


def test_evictions_add_up_over_processes(table: SharedBuckets) -> None:
    keys = list(islice(_keys(table, 3, 100), WINDOW + 2))
    for key in keys[:WINDOW]:
        table.take(key, SLOW, 2.0, 1000.0)
    child = FORK.Process(target=_evicter, args=(table.fd, keys[WINDOW:]))
    child.start()
    child.join(10)
    assert child.exitcode == 0
    assert table.evictions == 2


def _holder(fd: int, out: Connection) -> None:
    buckets = SharedBuckets.attach(os.dup(fd))
    buckets.take(A, 1.0, 3.0, 1000.0)
    fcntl.lockf(buckets.fd, fcntl.LOCK_EX, 0, 0)  # every stripe's lock
    out.send("holding")
    time.sleep(60)


def test_a_process_killed_holding_the_locks_blocks_nobody(table: SharedBuckets) -> None:
    mine = SharedBuckets.attach(os.dup(table.fd))
    kill_while_holding(_holder, table.fd, (mine.fd, 0))
    assert [mine.take(A, 1.0, 3.0, 1000.0) for _ in range(3)] == [0.0, 0.0, pytest.approx(1.0)]
    mine.close()


# --------------------------------------------------------------------------- drain


@pytest.fixture(params=["local", "shared"])
def buckets(request: pytest.FixtureRequest) -> Iterator[Buckets]:
    """Both kinds of buckets: one process's, and the workers' shared table."""
    if request.param == "local":
        yield LocalBuckets(1024)
        return
    shared = SharedBuckets.create(1024)
    yield shared
    shared.close()


def test_draining_takes_tokens_others_took(buckets: Buckets) -> None:
    # Ten a second, burst ten: 3 taken here, 4 drained, 3 left.
    for _ in range(3):
        assert buckets.take(A, 10, 10, 100.0) == 0.0
    buckets.drain(A, 4, 10, 10, 100.0)
    for _ in range(3):
        assert buckets.take(A, 10, 10, 100.0) == 0.0
    assert buckets.take(A, 10, 10, 100.0) == pytest.approx(0.1)


def test_a_new_key_starts_full_then_drained(buckets: Buckets) -> None:
    buckets.drain(B, 7, 10, 10, 100.0)
    taken = sum(buckets.take(B, 10, 10, 100.0) == 0.0 for _ in range(10))
    assert taken == 3


def test_a_debt_is_carried_down_to_minus_the_burst(buckets: Buckets) -> None:
    buckets.drain(A, 15, 4, 10, 100.0)  # 10 - 15 = -5
    # 1.5 s later at four a second: -5 + 6 = 1 token.
    assert buckets.take(A, 4, 10, 101.5) == 0.0
    assert buckets.take(A, 4, 10, 101.5) == 0.25
    buckets.drain(B, 1000, 4, 10, 100.0)  # floored at -10
    assert buckets.take(B, 4, 10, 102.5) == 0.25  # -10 + 10 = 0: a quarter second to one
    assert buckets.take(B, 4, 10, 102.75) == 0.0


def test_a_drained_bucket_refills_first(buckets: Buckets) -> None:
    for _ in range(10):
        buckets.take(A, 10, 10, 100.0)
    buckets.drain(A, 2, 10, 10, 100.5)  # refilled to 5 by then, 3 left
    assert sum(buckets.take(A, 10, 10, 100.5) == 0.0 for _ in range(5)) == 3


def test_a_debt_keeps_the_bucket_from_being_forgotten(buckets: Buckets) -> None:
    # A bucket in debt is not full again until the debt is paid and the burst refilled.
    buckets.drain(A, 20, 1, 10, 100.0)  # -10 at one a second: full at 120
    assert buckets.take(A, 1, 10, 119.0) == 0.0  # 9 tokens by then
    assert buckets.evictions == 0

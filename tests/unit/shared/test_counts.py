"""Connection counts shared by worker processes: exact caps, release, a dead worker."""

from __future__ import annotations

import fcntl
import multiprocessing as mp
import os
import random
import time
from array import array
from collections.abc import Iterator
from itertools import islice
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Barrier

import pytest

from refractium.shared.counts import KEY_WORDS, MAGIC, META_WORDS, SLOTS, SharedCounts
from refractium.shared.deadlines import SharedDeadlines
from refractium.shared.keys import EMPTY, address_key, key_hash
from refractium.shared.memory import SharedMemory
from tests.kit.locks import kill_while_holding

FORK = mp.get_context("fork")
NO_CAP = 1 << 30


@pytest.fixture
def table() -> Iterator[SharedCounts]:
    """The supervisor's view of a table for 2 workers."""
    counts = SharedCounts.create(2, 4096)
    yield counts
    counts.close()


def _worker(table: SharedCounts, column: int) -> SharedCounts:
    """A worker's view, as a worker attaches it (its own descriptor)."""
    return SharedCounts.attach(os.dup(table.fd), column)


def _place(table: SharedCounts, ip: str) -> tuple[int, int]:
    """(stripe, first slot probed) of ``ip``, from the header's stripes and multiplier."""
    head = os.pread(table.fd, 4 * META_WORDS, 0)
    stripes = int.from_bytes(head[8:12], "little")
    mult = int.from_bytes(head[16:32], "little")
    h = key_hash(address_key(ip), mult)
    return h >> (32 - (stripes.bit_length() - 1)), h & (SLOTS - 1)


def _slot_key(table: SharedCounts, stripe: int, index: int) -> bytes:
    """The key stored in slot ``index`` of ``stripe``."""
    slot_bytes = 4 * (KEY_WORDS + table.workers)
    at = 4 * (META_WORDS + table.workers) + (stripe * SLOTS + index) * slot_bytes
    return os.pread(table.fd, 16, at)


def _addresses(table: SharedCounts, stripe: int, start: int | None = None) -> Iterator[str]:
    """IPv4 addresses whose slot is in ``stripe`` (and, if given, first probed at ``start``)."""
    for n in range(1, 1 << 24):
        ip = f"10.{n >> 16}.{(n >> 8) & 255}.{n & 255}"
        where = _place(table, ip)
        if where[0] == stripe and (start is None or where[1] == start):
            yield ip


def test_counts_are_exact_in_total_and_per_address(table: SharedCounts) -> None:
    w = _worker(table, 0)
    for _ in range(3):
        assert w.admit("192.0.2.1", NO_CAP, 0) is None
    for _ in range(2):
        assert w.admit("2001:db8::1", NO_CAP, 0) is None
    assert (table.held("192.0.2.1"), table.held("2001:db8::1"), table.total()) == (3, 2, 5)
    assert table.held("192.0.2.2") == 0
    w.release("192.0.2.1")
    w.release("2001:db8::1")
    w.release("2001:db8::1")
    assert (table.held("192.0.2.1"), table.held("2001:db8::1"), table.total()) == (2, 0, 2)
    w.close()


def test_the_per_address_cap_refuses_the_next_connection(table: SharedCounts) -> None:
    w = _worker(table, 0)
    assert [w.admit("192.0.2.1", NO_CAP, 2) for _ in range(3)] == [None, None, "per_ip"]
    assert w.admit("192.0.2.2", NO_CAP, 2) is None
    assert (table.held("192.0.2.1"), table.total()) == (2, 3)
    w.release("192.0.2.1")
    assert w.admit("192.0.2.1", NO_CAP, 2) is None
    assert [w.admit("192.0.2.9", NO_CAP, 0) for _ in range(20)] == [None] * 20  # 0: no cap
    w.close()


def test_the_global_cap_counts_every_address_and_the_empty_key(table: SharedCounts) -> None:
    w = _worker(table, 0)
    assert w.admit("192.0.2.1", 3, 0) is None
    assert w.admit("", 3, 0) is None
    assert w.admit("2001:db8::7", 3, 0) is None
    assert w.admit("192.0.2.2", 3, 0) == "global"
    assert w.admit("", 3, 0) == "global"
    assert (table.total(), table.held("192.0.2.2")) == (3, 0)
    w.release("")
    assert w.admit("192.0.2.2", 3, 0) is None
    w.close()


def test_the_per_address_cap_is_named_when_both_caps_apply(table: SharedCounts) -> None:
    w = _worker(table, 0)
    assert w.admit("192.0.2.1", 2, 2) is None
    assert w.admit("192.0.2.1", 2, 2) is None
    assert w.admit("192.0.2.1", 2, 2) == "per_ip"
    assert w.admit("192.0.2.2", 2, 2) == "global"
    w.close()


def test_the_empty_key_counts_toward_the_total_only(table: SharedCounts) -> None:
    w = _worker(table, 0)
    assert w.admit("", NO_CAP, 1) is None
    assert w.admit("", NO_CAP, 1) is None  # no per-address cap for ""
    assert (table.total(), table.held("")) == (2, 0)
    w.release("")
    w.release("")
    assert table.total() == 0
    w.close()


def test_an_ipv4_mapped_address_is_the_ipv4_address(table: SharedCounts) -> None:
    w = _worker(table, 0)
    assert w.admit("192.0.2.1", NO_CAP, 2) is None
    assert w.admit("::ffff:192.0.2.1", NO_CAP, 2) is None
    assert w.admit("192.0.2.1", NO_CAP, 2) == "per_ip"
    assert w.admit("::FFFF:c000:201", NO_CAP, 2) == "per_ip"
    assert table.held("::ffff:192.0.2.1") == table.held("192.0.2.1") == 2
    assert w.admit("fe80::1%lo", NO_CAP, 1) is None  # the zone names a link, not a host
    assert w.admit("fe80::1", NO_CAP, 1) == "per_ip"
    w.release("::ffff:192.0.2.1")
    assert table.held("192.0.2.1") == 1
    w.close()


def test_an_address_that_is_no_address_is_refused(table: SharedCounts) -> None:
    w = _worker(table, 0)
    with pytest.raises(ValueError, match=r"not an IP address: 'example\.com'"):
        w.admit("example.com", NO_CAP, 0)
    with pytest.raises(ValueError, match="'::' is no client's address"):
        w.admit("::", NO_CAP, 0)
    assert table.total() == 0
    w.close()


def test_rekey_moves_a_connection_to_the_address_its_proxy_names(table: SharedCounts) -> None:
    w = _worker(table, 0)
    assert w.admit("", NO_CAP, 1) is None  # a trusted proxy's connection, client unknown
    assert w.rekey("", "192.0.2.7", 1) is None
    assert (table.held("192.0.2.7"), table.total()) == (1, 1)
    assert w.admit("", NO_CAP, 1) is None
    assert w.rekey("", "192.0.2.7", 1) == "per_ip"  # refused: still counted under ""
    assert (table.held("192.0.2.7"), table.total()) == (1, 2)
    w.release("")
    assert w.rekey("192.0.2.7", "2001:db8::2", 1) is None
    assert (table.held("192.0.2.7"), table.held("2001:db8::2"), table.total()) == (0, 1, 1)
    w.release("2001:db8::2")
    assert table.total() == 0
    w.close()


def test_every_worker_column_counts_toward_the_caps(table: SharedCounts) -> None:
    one, two = _worker(table, 0), _worker(table, 1)
    assert one.admit("192.0.2.1", 4, 3) is None
    assert two.admit("192.0.2.1", 4, 3) is None
    assert two.admit("192.0.2.1", 4, 3) is None
    assert one.admit("192.0.2.1", 4, 3) == "per_ip"
    assert one.admit("", 4, 3) is None
    assert two.admit("192.0.2.2", 4, 3) == "global"
    assert (table.held("192.0.2.1"), table.total()) == (3, 4)
    table.zero_column(1)  # the supervisor, after worker 2 died
    assert (table.held("192.0.2.1"), table.total()) == (1, 2)
    assert one.admit("192.0.2.1", 4, 3) is None
    one.release("192.0.2.1")
    one.release("192.0.2.1")
    one.release("")
    assert table.total() == 0
    one.close()
    two.close()


def test_sizes_and_views(table: SharedCounts) -> None:
    assert (table.workers, table.capacity, table.column) == (2, 4096, None)
    assert os.fstat(table.fd).st_size == 4 * (META_WORDS + 2 + 4096 * (KEY_WORDS + 2))
    big = SharedCounts.create(3, 5000)
    assert big.capacity == 8192
    big.close()
    with pytest.raises(RuntimeError, match="admits nothing"):
        table.admit("192.0.2.1", NO_CAP, 0)
    with pytest.raises(ValueError, match="column 2 of a table for 2 workers"):
        SharedCounts.attach(os.dup(table.fd), 2)
    w = _worker(table, 1)
    assert (w.workers, w.capacity, w.column) == (2, 4096, 1)
    w.close()
    w.close()
    deadlines = SharedDeadlines.create(1024)
    with pytest.raises(ValueError, match="not a table of connection counts"):
        SharedCounts.attach(os.dup(deadlines.fd), 0)
    deadlines.close()


def test_a_full_stripe_refuses_new_addresses_and_reuses_a_stale_slot(
    table: SharedCounts,
) -> None:
    w = _worker(table, 0)
    addresses = _addresses(table, 5)
    held = [next(addresses) for _ in range(SLOTS)]
    for ip in held:
        assert w.admit(ip, NO_CAP, 0) is None
    newcomer = next(addresses)
    assert w.admit(newcomer, NO_CAP, 0) == "full"
    assert w.admit(held[0], NO_CAP, 0) is None  # an address already in holds on
    elsewhere = next(_addresses(table, 6))
    assert w.admit(elsewhere, NO_CAP, 0) is None
    w.release(held[7])  # its slot is stale now: counts all zero
    assert w.admit(newcomer, NO_CAP, 0) is None
    assert table.held(newcomer) == 1
    assert table.held(held[7]) == 0
    assert table.total() == SLOTS + 2
    w.close()


def test_stale_slots_before_a_never_used_one_are_emptied(table: SharedCounts) -> None:
    w = _worker(table, 0)
    stripe, start = 3, 17
    a, b, c = islice(_addresses(table, stripe, start), 3)
    # a and b collide: a takes the first slot probed, b the next one.
    assert w.admit(a, NO_CAP, 0) is None
    assert w.admit(b, NO_CAP, 0) is None
    assert _slot_key(table, stripe, start) == address_key(a)
    assert _slot_key(table, stripe, start + 1) == address_key(b)
    w.release(a)
    w.release(b)
    # c probes a's and b's stale slots, meets a never-used one, and empties
    # the two on its way back: it takes the first, the second is never-used.
    assert w.admit(c, NO_CAP, 0) is None
    assert _slot_key(table, stripe, start) == address_key(c)
    assert _slot_key(table, stripe, start + 1) == EMPTY
    assert table.held(c) == 1
    w.close()


def test_emptying_stops_at_a_live_slot(table: SharedCounts) -> None:
    w = _worker(table, 0)
    stripe, start = 2, 40
    a, b, c = islice(_addresses(table, stripe, start), 3)
    assert w.admit(a, NO_CAP, 0) is None
    assert w.admit(b, NO_CAP, 0) is None
    w.release(a)  # b, one slot further, still holds a connection
    assert w.admit(c, NO_CAP, 0) is None
    assert _slot_key(table, stripe, start) == address_key(c)
    assert _slot_key(table, stripe, start + 1) == address_key(b)
    assert w.admit(b, NO_CAP, 0) is None  # b's chain is intact: one slot, two connections
    assert (table.held(b), table.held(c), table.held(a)) == (2, 1, 0)
    w.close()


def _contender(fd: int, column: int, seconds: float, out: Connection) -> None:
    """Admit and release at random on 4 addresses, per-address cap 5, global cap 12."""
    counts = SharedCounts.attach(os.dup(fd), column)
    rnd = random.Random(column)
    addresses = ["192.0.2.1", "192.0.2.2", "2001:db8::1", "::ffff:192.0.2.2"]
    mine: list[str] = []
    admitted = 0
    refused = {"per_ip": 0, "global": 0, "full": 0}
    seen_per_ip = seen_total = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if mine and (len(mine) >= 8 or rnd.random() < 0.5):
            counts.release(mine.pop(rnd.randrange(len(mine))))
            continue
        ip = rnd.choice(addresses)
        why = counts.admit(ip, 12, 5)
        if why is not None:
            refused[why] += 1
            continue
        admitted += 1
        mine.append(ip)
        seen_per_ip = max(seen_per_ip, counts.held(ip))
        seen_total = max(seen_total, counts.total())
    for ip in mine:
        counts.release(ip)
    out.send((admitted, refused, seen_per_ip, seen_total))
    counts.close()


def test_three_processes_never_exceed_the_caps() -> None:
    three = SharedCounts.create(3, 4096)
    pipes = [FORK.Pipe(duplex=False) for _ in range(3)]
    procs = [
        FORK.Process(target=_contender, args=(three.fd, i, 1.0, pipes[i][1])) for i in range(3)
    ]
    for p in procs:
        p.start()
    results = [r.recv() for r, _ in pipes]
    for p in procs:
        p.join(10)
        assert p.exitcode == 0
    assert max(r[2] for r in results) == 5
    assert max(r[3] for r in results) == 12
    assert sum(r[0] for r in results) > 1000
    assert all(r[1]["per_ip"] > 0 and r[1]["global"] > 0 for r in results)
    assert sum(r[1]["full"] for r in results) == 0
    assert three.total() == 0
    assert [three.held(ip) for ip in ("192.0.2.1", "192.0.2.2", "2001:db8::1")] == [0, 0, 0]
    three.close()


def _racer(fd: int, column: int, start: Barrier, out: Connection) -> None:
    counts = SharedCounts.attach(os.dup(fd), column)
    start.wait()
    got = sum(counts.admit(f"198.51.100.{column * 20 + i}", 10, 0) is None for i in range(20))
    out.send(got)
    counts.close()


def test_the_global_cap_is_exact_across_processes() -> None:
    three = SharedCounts.create(3, 4096)
    barrier = FORK.Barrier(3)
    pipes = [FORK.Pipe(duplex=False) for _ in range(3)]
    procs = [
        FORK.Process(target=_racer, args=(three.fd, i, barrier, pipes[i][1])) for i in range(3)
    ]
    for p in procs:
        p.start()
    got = [r.recv() for r, _ in pipes]
    for p in procs:
        p.join(10)
    assert sum(got) == 10
    # The racers exited without releasing: their counts stay until zeroed.
    assert three.total() == 10
    for column in range(3):
        three.zero_column(column)
    assert three.total() == 0
    three.close()


def _holder(fd: int, out: Connection) -> None:
    """Worker 2: 3 connections from each of 4 addresses, then every lock, until killed."""
    counts = SharedCounts.attach(os.dup(fd), 1)
    for i in range(4):
        for _ in range(3):
            assert counts.admit(f"192.0.2.{i + 1}", NO_CAP, 0) is None
    fcntl.lockf(counts.fd, fcntl.LOCK_EX, 0, 0)  # the whole file: the global lock, every stripe
    out.send("holding")
    time.sleep(60)


def test_a_killed_worker_leaves_no_lock_and_its_column_is_zeroed(table: SharedCounts) -> None:
    w = _worker(table, 0)
    assert w.admit("192.0.2.1", NO_CAP, 0) is None
    kill_while_holding(_holder, table.fd, (w.fd, 0))
    # The kernel dropped the dead worker's locks: admission goes on at once.
    assert w.admit("192.0.2.1", NO_CAP, 0) is None
    assert (table.held("192.0.2.1"), table.total()) == (5, 14)
    table.zero_column(1)
    assert (table.held("192.0.2.1"), table.held("192.0.2.2"), table.total()) == (2, 0, 2)
    w.release("192.0.2.1")
    w.release("192.0.2.1")
    assert table.total() == 0
    w.close()


def test_a_header_that_does_not_match_the_file_is_refused() -> None:
    mem = SharedMemory.create(4096, "test")
    mem.words[0:4] = array("I", [MAGIC, 2, 16, SLOTS])  # 16 stripes would need 393 kB
    with pytest.raises(ValueError, match="a table of connection counts with a broken header"):
        SharedCounts.attach(os.dup(mem.fd), 0)
    mem.close()

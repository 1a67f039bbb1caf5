"""Deadlines shared by worker processes: set, read, clear, expire, a full stripe."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from array import array
from collections.abc import Iterator
from itertools import islice

import pytest

from refractium.shared.counts import SharedCounts
from refractium.shared.deadlines import MAGIC, META_BYTES, SLOT_BYTES, SLOTS, SharedDeadlines
from refractium.shared.keys import EMPTY, address_key, key_hash
from refractium.shared.memory import SharedMemory

FAR = 4_000_000_000.0  # a deadline well ahead of any test's clock


@pytest.fixture
def table() -> Iterator[SharedDeadlines]:
    deadlines = SharedDeadlines.create(1024)
    yield deadlines
    deadlines.close()


def _place(table: SharedDeadlines, ip: str) -> tuple[int, int]:
    """(stripe, first slot probed) of ``ip``, from the header's stripes and multiplier."""
    head = os.pread(table.fd, META_BYTES, 0)
    stripes = int.from_bytes(head[4:8], "little")
    mult = int.from_bytes(head[16:32], "little")
    h = key_hash(address_key(ip), mult)
    return h >> (32 - (stripes.bit_length() - 1)), h & (SLOTS - 1)


def _slot_key(table: SharedDeadlines, stripe: int, index: int) -> bytes:
    return os.pread(table.fd, 16, META_BYTES + (stripe * SLOTS + index) * SLOT_BYTES)


def _addresses(table: SharedDeadlines, stripe: int, start: int | None = None) -> Iterator[str]:
    """IPv6 addresses whose slot is in ``stripe`` (and, if given, first probed at ``start``)."""
    for n in range(1, 1 << 24):
        ip = f"2001:db8::{n >> 16:x}:{n & 0xFFFF:x}"
        where = _place(table, ip)
        if where[0] == stripe and (start is None or where[1] == start):
            yield ip


def test_set_get_clear(table: SharedDeadlines) -> None:
    assert table.set("192.0.2.1", 1000.5) is True
    assert table.get("192.0.2.1", now=999.0) == 1000.5
    assert table.get("::ffff:192.0.2.1", now=999.0) == 1000.5
    assert table.get("192.0.2.1", now=1000.5) is None  # a deadline reached is past
    assert table.get("192.0.2.2", now=0.0) is None
    assert table.live(now=999.0) == 1
    assert table.live(now=2000.0) == 0
    table.clear("192.0.2.1")
    assert table.get("192.0.2.1", now=0.0) is None
    assert table.live(now=0.0) == 0
    table.clear("192.0.2.3")  # no deadline: nothing to do


def test_a_set_replaces_the_deadline(table: SharedDeadlines) -> None:
    assert table.set("2001:db8::1", 2000.0)
    assert table.set("2001:db8::1", 1500.0)
    assert table.get("2001:db8::1", now=0.0) == 1500.0
    assert table.live(now=0.0) == 1


def test_the_clock_is_the_wall_clock(table: SharedDeadlines) -> None:
    soon = time.time() + 60
    assert table.set("192.0.2.1", soon)
    assert table.set("192.0.2.2", time.time() - 1)
    assert table.get("192.0.2.1") == soon
    assert table.get("192.0.2.2") is None
    assert table.live() == 1


def test_any_16_byte_key(table: SharedDeadlines) -> None:
    key = b"token:" + bytes(range(10))
    assert table.set_key(key, 1000.0)
    assert table.get_key(key, 10.0) == 1000.0
    table.clear_key(key)
    assert table.get_key(key, 10.0) is None
    with pytest.raises(ValueError, match="not a table key"):
        table.set_key(EMPTY, 1000.0)
    with pytest.raises(ValueError, match="not a table key"):
        table.set_key(b"short", 1000.0)
    with pytest.raises(ValueError, match="not an IP address: 'nobody'"):
        table.set("nobody", 1000.0)


def test_a_full_stripe_refuses_until_a_deadline_passes_or_is_cleared(
    table: SharedDeadlines,
) -> None:
    addresses = _addresses(table, 1)
    live = [next(addresses) for _ in range(SLOTS)]
    for ip in live:
        assert table.set(ip, FAR)
    first, second = next(addresses), next(addresses)
    assert table.set(first, FAR) is False
    assert table.set(live[0], FAR + 1)  # an address already in is updated
    assert table.set(next(_addresses(table, 2)), FAR)  # another stripe has room
    assert table.set(live[10], time.time() - 1)  # expired: its slot is free
    assert table.set(first, FAR)
    assert table.set(second, FAR) is False
    table.clear(live[20])
    assert table.set(second, FAR)
    assert table.get(first) == table.get(second) == FAR
    assert table.get(live[10]) is None
    assert table.live() == SLOTS + 1


def test_an_expired_slot_is_reused_and_a_live_chain_kept(table: SharedDeadlines) -> None:
    stripe, start = 0, 100
    a, b, c = islice(_addresses(table, stripe, start), 3)
    assert table.set(a, FAR)
    assert table.set(b, FAR)
    assert _slot_key(table, stripe, start + 1) == address_key(b)
    assert table.set(a, 1.0)  # expired
    assert table.set(c, FAR)
    assert _slot_key(table, stripe, start) == address_key(c)
    assert table.get(b) == FAR
    assert table.get(a, now=0.0) is None  # its slot went to c
    assert table.live() == 2


def test_expired_slots_before_a_never_used_one_are_emptied(table: SharedDeadlines) -> None:
    stripe, start = 3, 7
    a, b, c = islice(_addresses(table, stripe, start), 3)
    assert table.set(a, FAR)
    assert table.set(b, FAR)
    assert _slot_key(table, stripe, start + 1) == address_key(b)
    table.clear(a)
    table.clear(b)
    assert table.set(c, FAR)
    assert _slot_key(table, stripe, start) == address_key(c)
    assert _slot_key(table, stripe, start + 1) == EMPTY


def test_sizes(table: SharedDeadlines) -> None:
    assert table.capacity == 1024
    assert os.fstat(table.fd).st_size == META_BYTES + 1024 * SLOT_BYTES
    bigger = SharedDeadlines.create(3000)
    assert bigger.capacity == 4096
    bigger.close()
    counts = SharedCounts.create(1, 1)
    with pytest.raises(ValueError, match="not a table of deadlines"):
        SharedDeadlines.attach(os.dup(counts.fd))
    counts.close()


def test_a_deadline_set_in_one_process_is_seen_in_another(table: SharedDeadlines) -> None:
    assert table.set("198.51.100.1", FAR)
    code = """
        import sys
        from refractium.shared.deadlines import SharedDeadlines
        table = SharedDeadlines.attach(int(sys.argv[1]))
        print(table.get("198.51.100.1"), table.get("198.51.100.2"), flush=True)
        table.set("2001:db8::77", 1234.5)
        table.clear("198.51.100.1")
        table.close()
    """
    child = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), str(table.fd)],
        pass_fds=(table.fd,),
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    )
    assert child.stdout.split() == [repr(FAR), "None"]
    assert table.get("2001:db8::77", now=1000.0) == 1234.5
    assert table.get("198.51.100.1") is None


def test_a_header_that_does_not_match_the_file_is_refused() -> None:
    mem = SharedMemory.create(4096, "test")
    mem.words[0:3] = array("I", [MAGIC, 3, SLOTS])  # stripes: not a power of two
    with pytest.raises(ValueError, match="a table of deadlines with a broken header"):
        SharedDeadlines.attach(os.dup(mem.fd))
    mem.close()

"""refractium.state's allow list: in one process, and in the table the workers share."""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from collections.abc import Iterator

import pytest

from refractium import state
from refractium.errors import RefractiumError
from refractium.shared import allows
from refractium.shared.allows import LocalAllows, SharedAllows, table_key
from refractium.shared.deadlines import SharedDeadlines


@pytest.fixture(params=["local", "shared"])
def store(request: pytest.FixtureRequest) -> Iterator[str]:
    """refractium.state over each store, put back as it was afterwards."""
    before = allows.current()
    table = None
    if request.param == "shared":
        table = SharedDeadlines.create(1024)
        allows.use(SharedAllows(table))
    else:
        allows.use(LocalAllows())
    try:
        yield request.param
    finally:
        allows.use(before)
        if table is not None:
            table.close()


async def test_allow_revoke_and_expiry(store: str) -> None:
    assert not state.allowed("203.0.113.7")
    await state.allow("203.0.113.7", 0.3)
    assert state.allowed("203.0.113.7")
    assert state.allowed("::ffff:203.0.113.7")  # one address, either form
    assert not state.allowed("203.0.113.8")
    assert 0.2 < state.remaining("203.0.113.7") <= 0.3
    await asyncio.sleep(0.35)
    assert not state.allowed("203.0.113.7")
    assert state.remaining("203.0.113.7") == 0.0
    await state.allow("2001:db8::1", 60)
    await state.revoke("2001:db8::1")
    assert not state.allowed("2001:db8::1")


async def test_keys_that_are_no_address(store: str) -> None:
    await state.allow("user:alice", 60)
    assert state.allowed("user:alice")
    assert not state.allowed("user:bob")
    await state.allow("user:alice", 5)  # a later call replaces the deadline
    assert state.remaining("user:alice") <= 5


async def test_a_ttl_must_be_positive(store: str) -> None:
    for ttl in (0, -1, float("nan")):
        with pytest.raises(ValueError, match="ttl_s must be positive"):
            await state.allow("203.0.113.7", ttl)


def test_addresses_keep_their_own_key_and_names_are_hashed() -> None:
    assert table_key("1.2.3.4") == table_key("::ffff:1.2.3.4")
    assert table_key("1.2.3.4")[:12] == bytes(10) + b"\xff\xff"
    assert table_key("user:alice") != table_key("user:bob")
    assert len(table_key("user:alice")) == 16


def _allow_in_another_process(fd: int, key: str) -> None:
    SharedAllows(SharedDeadlines.attach(fd)).put(key, time.time() + 60)


async def test_a_key_allowed_in_another_process_is_allowed_here() -> None:
    table = SharedDeadlines.create(1024)
    before = allows.current()
    allows.use(SharedAllows(table))
    try:
        for key in ("198.51.100.9", "token:42"):
            assert not state.allowed(key)
            child = multiprocessing.get_context("fork").Process(
                target=_allow_in_another_process, args=(table.fd, key)
            )
            child.start()
            child.join(10)
            assert child.exitcode == 0
            assert state.allowed(key)
    finally:
        allows.use(before)
        table.close()


async def allow_many(count: int) -> None:
    for n in range(count):
        await state.allow(f"10.0.{n // 256}.{n % 256}", 60)


async def test_a_full_shared_list_says_so() -> None:
    table = SharedDeadlines.create(1024)
    before = allows.current()
    allows.use(SharedAllows(table))
    try:
        with pytest.raises(RefractiumError, match=r"the allow list is full: cannot allow '10\."):
            await allow_many(4096)
        assert table.live() >= 256  # full in one stripe, not before
    finally:
        allows.use(before)
        table.close()


def test_entries_and_keys_in_both_stores() -> None:
    """What refractium.fleet reads and writes: 16-byte keys and the live entries."""
    table = SharedDeadlines.create(1024)
    try:
        for store in (LocalAllows(), SharedAllows(table)):
            now = time.time()
            assert store.put("203.0.113.7", now + 60)
            assert store.put("a token", now + 0.2)
            assert store.put_key(table_key("another"), now + 30)
            assert store.until("another", now) == now + 30
            assert store.entries(now) == {
                table_key("203.0.113.7"): now + 60,
                table_key("a token"): now + 0.2,
                table_key("another"): now + 30,
            }
            assert store.entries(now + 1) == {
                table_key("203.0.113.7"): now + 60,
                table_key("another"): now + 30,
            }
            store.drop_key(table_key("203.0.113.7"))
            assert store.until("::ffff:203.0.113.7", now) is None
            assert store.entries(now + 1) == {table_key("another"): now + 30}
    finally:
        table.close()

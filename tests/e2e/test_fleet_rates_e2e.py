"""Connection rates held by a fleet through a real ``redis-server`` (refractium.fleet.rates).

Each "instance" is a :class:`Guard` and a :class:`RateExchange` on a link of
its own, as an engine holds them, or two guards over one shared table of
buckets with an exchange each, as the workers of one instance do. One client
is offered to all of them at a steady pace; the fleet must admit its rate,
within 20 %, once the first second is over.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator, Sequence

import pytest
import redis.asyncio as aioredis

from refractium.abuse.guard import Guard, Stores
from refractium.abuse.local import LocalBans, LocalOffences
from refractium.config.model import LimitsConfig, Rate
from refractium.fleet import RedisLink
from refractium.fleet.rates import RateExchange
from refractium.shared.buckets import SharedBuckets
from tests.kit.redis import RedisServer, need_redis, redis_server

pytestmark = need_redis

TEN = Rate(count=10, period_s=1.0, burst=10, text="10/s")
CLIENT = "198.51.100.20"


@pytest.fixture
async def server() -> AsyncIterator[RedisServer]:
    async with redis_server() as running:
        yield running


@pytest.fixture
def table() -> Iterator[SharedBuckets]:
    buckets = SharedBuckets.create(1024)
    yield buckets
    buckets.close()


@contextlib.asynccontextmanager
async def exchanging(
    url: str, guard: Guard, instance_id: str, *, drain: bool = True, prefix: str = "rates-test:"
) -> AsyncIterator[RateExchange]:
    exchange = RateExchange(RedisLink(url, prefix), guard, instance_id, drain=drain, keep_link=True)
    exchange.start()
    try:
        yield exchange
    finally:
        await exchange.close()


def engine_guard() -> Guard:
    return Guard(LimitsConfig(connection_rate=TEN))


def worker_guard(table: SharedBuckets) -> Guard:
    return Guard(LimitsConfig(connection_rate=TEN), Stores(table, LocalOffences(64), LocalBans()))


async def offer(guards: Sequence[Guard], per_s: float, seconds: float) -> list[list[float]]:
    """``CLIENT`` at ``per_s`` to each guard; the times (from the start) each admitted it."""
    admitted: list[list[float]] = [[] for _ in guards]
    start = time.monotonic()
    for i in range(int(per_s * seconds)):
        await asyncio.sleep(max(0.0, start + i / per_s - time.monotonic()))
        at = time.monotonic() - start
        for guard, times in zip(guards, admitted, strict=True):
            if guard.at_accept(CLIENT) is None:
                times.append(at)
    return admitted


def per_second(admitted: Sequence[Sequence[float]], seconds: int) -> list[int]:
    """Admissions of all the guards together in each whole second."""
    return [sum(1 for times in admitted for t in times if s <= t < s + 1) for s in range(seconds)]


async def until_up(*exchanges: RateExchange) -> None:
    async with asyncio.timeout(5):
        while not all(exchange.link.up for exchange in exchanges):
            await asyncio.sleep(0.01)


def alive(*exchanges: RateExchange) -> bool:
    return all(not task.done() for exchange in exchanges for task in exchange._tasks)


async def test_two_instances_admit_the_rate_together_and_another_prefix_its_own(
    server: RedisServer,
) -> None:
    a, b, c = engine_guard(), engine_guard(), engine_guard()
    async with (
        exchanging(server.url, a, "instance-a") as xa,
        exchanging(server.url, b, "instance-b") as xb,
        exchanging(server.url, c, "instance-c", prefix="other:") as xc,
    ):
        await until_up(xa, xb, xc)
        *fleet, other = await offer([a, b, c], 20, 3.0)
        # Offered 40 a second between them; after the first second, 10 a second in all.
        counts = per_second(fleet, 3)
        assert counts[0] <= 2 * 10 + 10 + 2, counts  # a burst each, and the first refill
        for count in counts[1:]:
            assert 8 <= count <= 12, counts
        # The other prefix is another fleet, with a budget of its own.
        assert all(9 <= count <= 11 for count in per_second([other], 3)[1:]), other
        assert xc.drained == 0
        assert xa.drained + xb.drained > 0
        # In Redis: what each instance took, under the client's key.
        await asyncio.sleep(0.3)  # the last takes sent
        redis = aioredis.Redis.from_url(server.url)
        try:
            name = "rates-test:rate:" + (bytes(10) + b"\xff\xff" + bytes([198, 51, 100, 20])).hex()
            counts_there = await redis.hgetall(name)
            assert set(counts_there) == {b"instance-a", b"instance-b"}
            assert sum(int(v) for v in counts_there.values()) == len(fleet[0]) + len(fleet[1])
            assert 9_000 < await redis.pttl(name) <= 10_000
            assert await redis.keys("other:*") == [
                b"other:rate:" + name.removeprefix("rates-test:rate:").encode()
            ]
        finally:
            await redis.aclose()
        assert alive(xa, xb, xc)


async def test_the_workers_of_an_instance_drain_once_and_learn_each_others_keys(
    server: RedisServer, table: SharedBuckets
) -> None:
    # Instance W: two workers over one table; worker 1 drains, worker 2 only sends.
    # The client reaches worker 2 and instance E only: worker 1 learns its key from
    # worker 2's announcement, and drains W's table of what E took (once).
    w1, w2, e = worker_guard(table), worker_guard(table), engine_guard()
    async with (
        exchanging(server.url, w1, "instance-w") as x1,
        exchanging(server.url, w2, "instance-w", drain=False) as x2,
        exchanging(server.url, e, "instance-e") as xe,
    ):
        await until_up(x1, x2, xe)
        admitted = await offer([w2, e], 20, 3.0)
        counts = per_second(admitted, 3)
        for count in counts[1:]:
            assert 8 <= count <= 12, counts
        await asyncio.sleep(0.3)  # the last takes sent
        assert x1.watched == 1 and x2.watched == 0
        assert x1.drained > 0 and x2.drained == 0
        assert x2.sent == len(admitted[0]) and x1.sent == 0
        assert alive(x1, x2, xe)


async def test_without_redis_each_instance_counts_alone_then_together_again(
    server: RedisServer,
) -> None:
    a, b = engine_guard(), engine_guard()
    async with (
        exchanging(server.url, a, "instance-a") as xa,
        exchanging(server.url, b, "instance-b") as xb,
    ):
        await until_up(xa, xb)
        await server.stop()
        async with asyncio.timeout(5):
            while xa.link.up or xb.link.up:
                await asyncio.sleep(0.01)
        alone = await offer([a, b], 20, 2.0)
        # Each its own ten a second: twenty in all.
        assert 16 <= per_second(alone, 2)[1] <= 24, per_second(alone, 2)
        assert a.pending == {} or sum((a.pending or {}).values()) <= 2  # nothing piles up
        await server.start()
        await until_up(xa, xb)
        together = await offer([a, b], 20, 3.0)
        assert 8 <= per_second(together, 3)[2] <= 12, per_second(together, 3)
        assert alive(xa, xb)


def still_guard() -> Guard:
    """A guard whose clock stands still: no bucket refills during the test."""
    return Guard(LimitsConfig(connection_rate=TEN), clock=lambda: 100.0)


def still_exchange(url: str, guard: Guard, name: str, *, drain: bool = True) -> RateExchange:
    guard.note_takes()
    return RateExchange(RedisLink(url, "still:"), guard, name, drain=drain, clock=lambda: 100.0)


async def test_one_exchange_drains_exactly_what_the_others_took(server: RedisServer) -> None:
    a, b = still_guard(), still_guard()
    xa, xb = still_exchange(server.url, a, "a"), still_exchange(server.url, b, "b")
    client = aioredis.Redis.from_url(server.url)
    try:
        assert a.at_accept(CLIENT) is None
        await xa.exchange(client)  # A watches the client: what others took so far is the base
        for _ in range(4):
            assert b.at_accept(CLIENT) is None
        await xb.exchange(client)
        await xa.exchange(client)
        assert (xa.drained, xb.drained, xa.sent, xb.sent) == (4, 0, 1, 4)
        # 10 - 1 taken here - 4 taken there: 5 left.
        assert sum(a.at_accept(CLIENT) is None for _ in range(10)) == 5
        await xa.exchange(client)
        await xb.exchange(client)  # B watches since its first exchange: it drains A's five
        assert xb.drained == 5
        # 10 - 4 taken there - 5 taken here: 1 left.
        assert sum(b.at_accept(CLIENT) is None for _ in range(10)) == 1
        await xb.exchange(client)
        await xa.exchange(client)
        assert (xa.drained, xb.drained) == (5, 5)
        await xa.exchange(client)  # nothing new: nothing drained
        await xb.exchange(client)
        assert (xa.drained, xb.drained) == (5, 5)
    finally:
        await client.aclose()


async def test_the_keys_watched_are_bounded(
    server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("refractium.fleet.rates.MAX_WATCHED", 3)
    a = still_guard()
    xa = still_exchange(server.url, a, "a")
    client = aioredis.Redis.from_url(server.url)
    try:
        for n in range(1, 6):
            assert a.at_accept(f"192.0.2.{n}") is None
        await xa.exchange(client)
        assert (xa.watched, xa.forgotten) == (3, 2)
        assert len(await client.keys("still:rate:*")) == 5  # every take is still sent
    finally:
        await client.aclose()

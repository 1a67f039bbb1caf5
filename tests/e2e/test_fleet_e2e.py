"""Bans and allows across instances through a real ``redis-server`` (refractium.fleet).

Each "instance" is a :class:`FleetSync` over stores of its own, as an engine
(LocalBans, LocalAllows) or a supervisor (the shared-memory tables) holds
them; what one does must show in the others' stores within a second, with
the same prefix only, and survive Redis going away and coming back.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterator
from ipaddress import ip_network

import pytest
import redis.asyncio as aioredis

from refractium import state
from refractium.abuse.local import LocalBans
from refractium.fleet import FleetSync, RedisLink
from refractium.fleet.messages import parse
from refractium.shared import allows
from refractium.shared.allows import AllowStore, LocalAllows, SharedAllows, table_key
from refractium.shared.bans import SharedBans
from refractium.shared.deadlines import SharedDeadlines
from refractium.shared.stores import Bans
from tests.kit.redis import RedisServer, need_redis, redis_server

pytestmark = need_redis


@pytest.fixture
async def server() -> AsyncIterator[RedisServer]:
    async with redis_server() as running:
        yield running


@pytest.fixture(params=["engine", "supervisor"])
def stores(request: pytest.FixtureRequest) -> Iterator[Callable[[], tuple[Bans, AllowStore]]]:
    """Makes an instance's stores: one process's, or the tables a supervisor shares."""
    tables: list[SharedBans | SharedDeadlines] = []

    def make() -> tuple[Bans, AllowStore]:
        if request.param == "engine":
            return LocalBans(), LocalAllows()
        bans, deadlines = SharedBans.create(256), SharedDeadlines.create(1024)
        tables.extend((bans, deadlines))
        return bans, SharedAllows(deadlines)

    yield make
    for table in tables:
        table.close()


@contextlib.asynccontextmanager
async def instance(
    url: str, make: Callable[[], tuple[Bans, AllowStore]], prefix: str = "fleet-test:"
) -> AsyncIterator[FleetSync]:
    bans, allow_store = make()
    sync = FleetSync(RedisLink(url, prefix), bans, allow_store)
    sync.start()
    try:
        yield sync
    finally:
        await sync.close()


async def eventually(check: Callable[[], bool], within: float) -> float:
    """Seconds until ``check()`` holds; fails after ``within``."""
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < within, f"not within {within} s"
        await asyncio.sleep(0.005)
    return time.monotonic() - start


def alive(*syncs: FleetSync) -> bool:
    """No task of theirs ended (an exception would have ended it)."""
    return all(task.done() is False for sync in syncs for task in sync._tasks)


def banned(sync: FleetSync, ip: str) -> tuple[str, str, float] | None:
    ban = sync.bans.banned(ip, time.time())
    return None if ban is None else (ban.address, ban.reason, ban.expires)


def allowed(sync: FleetSync, key: str) -> float | None:
    return sync.allows.until(key, time.time())


async def test_bans_and_lifts_reach_every_instance_with_the_prefix(
    server: RedisServer, stores: Callable[[], tuple[Bans, AllowStore]]
) -> None:
    async with (
        instance(server.url, stores) as a,
        instance(server.url, stores) as b,
        instance(server.url, stores, prefix="other:") as c,
    ):
        await eventually(lambda: a.up and b.up and c.up, 2)
        now = time.time()
        a.bans.ban(ip_network("198.51.100.7/32"), now + 60, "manual", now)
        delay = await eventually(lambda: banned(b, "198.51.100.7") is not None, 1)
        assert banned(b, "198.51.100.7") == ("198.51.100.7", "manual", now + 60)
        assert delay < 0.5
        await asyncio.sleep(0.3)
        assert (a.sent, b.sent, b.applied) == (1, 0, 1)  # B does not send it back

        # The other way, a network, and the key that stands for it in Redis.
        b.bans.ban(ip_network("192.0.2.0/24"), now + 30, "unidentified", now)
        await eventually(lambda: banned(a, "192.0.2.200") is not None, 1)
        assert banned(a, "192.0.2.200") == ("192.0.2.0/24", "unidentified", now + 30)
        redis = aioredis.Redis.from_url(server.url)
        try:
            stored = await redis.get("fleet-test:ban:192.0.2.0/24")
            assert stored is not None
            assert 29_000 < await redis.pttl("fleet-test:ban:192.0.2.0/24") <= 30_000
        finally:
            await redis.aclose()
        remote = parse(stored)
        assert remote is not None and remote.origin == b.origin

        a.bans.unban(ip_network("198.51.100.7/32"))
        await eventually(lambda: banned(b, "198.51.100.7") is None, 1)
        assert banned(a, "192.0.2.200") is not None  # only that one was lifted
        assert banned(b, "192.0.2.200") is not None

        await asyncio.sleep(0.5)  # time enough for a leak to show
        assert c.bans.all(time.time()) == []
        assert c.applied == 0
        assert alive(a, b, c)


async def test_allows_reach_every_instance_through_the_state_api(
    server: RedisServer, stores: Callable[[], tuple[Bans, AllowStore]]
) -> None:
    before = allows.current()
    async with (
        instance(server.url, stores) as a,
        instance(server.url, stores) as b,
        instance(server.url, stores, prefix="other:") as c,
    ):
        await eventually(lambda: a.up and b.up and c.up, 2)
        allows.use(a.allows)  # refractium.state of the process instance A runs in
        try:
            await state.allow("token 7f3a: any text", ttl_s=30)
            await state.allow("203.0.113.7", ttl_s=30)
        finally:
            allows.use(before)
        until = a.allows.until("203.0.113.7", time.time())
        assert until is not None
        delay = await eventually(lambda: allowed(b, "::ffff:203.0.113.7") == until, 1)
        assert delay < 0.5
        assert allowed(b, "token 7f3a: any text") is not None
        assert b.allows.entries(time.time()) == a.allows.entries(time.time())
        assert table_key("token 7f3a: any text") in b.allows.entries(time.time())

        b.allows.drop("token 7f3a: any text")
        await eventually(lambda: allowed(a, "token 7f3a: any text") is None, 1)
        assert allowed(a, "203.0.113.7") == until

        await asyncio.sleep(0.5)
        assert c.allows.entries(time.time()) == {}
        assert alive(a, b, c)


async def test_redis_away_and_back(
    server: RedisServer, stores: Callable[[], tuple[Bans, AllowStore]]
) -> None:
    async with instance(server.url, stores) as a, instance(server.url, stores) as b:
        await eventually(lambda: a.up and b.up, 2)
        now = time.time()
        a.bans.ban(ip_network("198.51.100.1/32"), now + 60, "manual", now)
        a.bans.ban(ip_network("198.51.100.2/32"), now + 60, "manual", now)
        await eventually(lambda: len(b.bans.all(time.time())) == 2, 1)

        await server.stop()
        await eventually(lambda: not a.up and not b.up, 2)
        # Local state keeps working on each side, and changes are kept for later.
        now = time.time()
        a.bans.ban(ip_network("203.0.113.0/24"), now + 60, "limited", now)
        assert banned(a, "203.0.113.9") == ("203.0.113.0/24", "limited", now + 60)
        assert b.allows.put("203.0.113.50", now + 60)
        a.bans.unban(ip_network("198.51.100.2/32"))  # lifted while away
        await asyncio.sleep(1.5)  # a few reconnections fail meanwhile
        assert not a.up and not b.up
        assert banned(b, "203.0.113.9") is None
        assert alive(a, b)

        await server.start()  # empty: what was in it is gone
        back = await eventually(lambda: a.up and b.up, 10)
        # Redis back: what either side did meanwhile reaches the other.
        await eventually(lambda: banned(b, "203.0.113.9") is not None, 2)
        assert banned(b, "203.0.113.9") == ("203.0.113.0/24", "limited", now + 60)
        await eventually(lambda: allowed(a, "203.0.113.50") == now + 60, 2)
        # The lift made on A while away holds though B sent its ban again.
        await eventually(lambda: banned(b, "198.51.100.2") is None, 2)
        await asyncio.sleep(0.5)
        assert banned(a, "198.51.100.2") is None
        assert banned(b, "198.51.100.2") is None
        assert banned(a, "198.51.100.1") is not None
        assert banned(b, "198.51.100.1") is not None
        assert back < 10
        # And propagation goes on.
        now = time.time()
        b.bans.ban(ip_network("2001:db8::/64"), now + 60, "manual", now)
        await eventually(lambda: banned(a, "2001:db8::1") is not None, 1)
        assert alive(a, b)


async def test_an_instance_started_while_redis_is_away(
    server: RedisServer, stores: Callable[[], tuple[Bans, AllowStore]]
) -> None:
    """Starting without Redis is no error; it catches up with what Redis holds once there."""
    async with instance(server.url, stores) as a:
        await eventually(lambda: a.up, 2)
        now = time.time()
        a.bans.ban(ip_network("198.51.100.9/32"), now + 60, "manual", now)
        await asyncio.sleep(0.3)
        await server.stop()
        async with instance(server.url, stores) as b:
            await asyncio.sleep(0.5)
            assert not b.up
            assert alive(b)
            await server.start()
            await eventually(lambda: a.up and b.up, 10)
            # A sent it again to the empty Redis; B learnt it from there or from the message.
            await eventually(lambda: banned(b, "198.51.100.9") is not None, 2)
            assert banned(b, "198.51.100.9") == ("198.51.100.9", "manual", now + 60)

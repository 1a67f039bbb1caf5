"""Bans and the allow list kept in step between the instances of a fleet, through Redis.

:class:`FleetSync` runs in the one process of an instance that holds its
stores (the supervisor with ``[server] workers > 1``, else the engine). It
never stands between a connection and its decision: the relay reads the
local stores, and this module writes into them what other instances did,
and tells them what happened here:

* every :data:`PUSH_EVERY_S` it compares the local bans and allows with
  what it last saw (sent or received). A ban new or changed here is
  ``SET {prefix}ban:{network}`` (expiring with the ban) and published on
  ``{prefix}bans``; one lifted before its deadline is deleted and a lift
  published. Allows likewise, under ``{prefix}allow:{hex}`` and
  ``{prefix}allows``. Comparing, rather than being told, catches every
  way a ban is made (offences, ``POST /bans``, ``refractium.state``) and
  every worker's allows, which live in shared memory this process reads.
* a subscription to both channels applies what other instances publish
  (its own messages are recognised by their ``origin`` and skipped).
* on each (re)connection it subscribes first, then reads every key under
  the prefix (``SCAN``): a ban or allow there and not here is applied, the
  later deadline wins where both have one, and one that was in step before
  and was lifted here while Redis was away is deleted. What is here and
  not there (made while Redis was away, or Redis restarted empty) goes out
  with the next comparison.

While Redis is away nothing is compared or sent; what was last in step is
kept, so the reconnection above settles the difference.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline

from refractium.fleet.link import CLOSE_S, RedisLink, cancel_all, redis_failures
from refractium.fleet.messages import (
    Allow,
    Lift,
    Network,
    Remote,
    allow_message,
    ban_message,
    glob_escape,
    lift_message,
    parse,
    revoke_message,
)
from refractium.shared.allows import AllowStore
from refractium.shared.stores import Ban, Bans
from refractium.util.logs import RateLimitedLog
from refractium.util.tasks import spawn

__all__ = ["PUSH_EVERY_S", "FleetSync"]

log = logging.getLogger(__name__)

#: How often local changes are looked for and sent: a ban made here is
#: enforced elsewhere within this plus one round trip.
PUSH_EVERY_S = 0.15
_SCAN_BATCH = 500


class FleetSync:
    """Bans and allows of this instance in step with those of every instance on ``link``.

    Args:
        link: the connection to Redis (its url and prefix name the fleet).
        bans: the instance's bans (:class:`~refractium.abuse.local.LocalBans`,
            or the supervisor's :class:`~refractium.shared.bans.SharedBans`).
        allows: the instance's allow list (:mod:`refractium.shared.allows`).
        clock: ``time.time`` or a stand-in; deadlines are absolute times.
        origin: this instance's name in its messages (default: a random one).
        push_every_s: how often local changes are looked for. Each look reads
            every ban and allow: about 3.6 ms with a supervisor's tables
            (4096 bans, 16384 allows), so 2-3 % of a core at the default.
    """

    def __init__(
        self,
        link: RedisLink,
        bans: Bans,
        allows: AllowStore,
        clock: Callable[[], float] = time.time,
        *,
        origin: str | None = None,
        push_every_s: float = PUSH_EVERY_S,
    ) -> None:
        self.link = link
        self.bans = bans
        self.allows = allows
        self.clock = clock
        self.origin = origin or uuid.uuid4().hex[:16]
        self.push_every_s = push_every_s
        prefix = link.prefix
        self._ban_channel = prefix + b"bans"
        self._allow_channel = prefix + b"allows"
        self._ban_key = prefix + b"ban:"
        self._allow_key = prefix + b"allow:"
        # What Redis and this instance last agreed on: network -> (expires, reason),
        # key -> until. Kept while Redis is away, to tell what changed meanwhile.
        self._bans_seen: dict[Network, tuple[float, str]] = {}
        self._allows_seen: dict[bytes, float] = {}
        # Lifted (revoked) here while Redis was away, with the deadline they had:
        # kept until then, so that an instance sending one again is answered with a lift.
        self._lifted: dict[Network, float] = {}
        self._revoked: dict[bytes, float] = {}
        self._relift: set[Network] = set()  # lifts to send (again) with the next push
        self._rerevoke: set[bytes] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._warn = RateLimitedLog(log, burst=1, period_s=30.0)
        self.sent = 0  # changes published
        self.applied = 0  # changes received and applied

    @property
    def up(self) -> bool:
        """Whether Redis answers (``refractium_state_up``)."""
        return self.link.up

    def start(self) -> None:
        """Start keeping the link and the stores in step (in the running loop)."""
        if self._tasks:
            return
        spawn(self.link.run(), name="fleet-link", owner=self._tasks)
        spawn(self._sessions(), name="fleet-sync", owner=self._tasks)

    async def close(self) -> None:
        """Stop: no more messages in or out; the local stores stay as they are."""
        await cancel_all(self._tasks)
        await self.link.close()

    # ------------------------------------------------------------------ the session

    async def _sessions(self) -> None:
        while True:
            client = await self.link.wait_up()
            try:
                await self._session(client)
            except redis_failures as exc:
                self.link.failed(exc)
            except Exception:
                # A bug, not Redis: said, and the stores keep working; try again shortly.
                self._warn.log(logging.ERROR, "bug", "fleet sync failed", exc_info=True)
                await asyncio.sleep(1.0)

    async def _session(self, client: aioredis.Redis) -> None:
        """One connection's worth: subscribe, catch up, then receive and push until it breaks."""
        pubsub = client.pubsub()
        try:
            await pubsub.subscribe(self._ban_channel, self._allow_channel)
            await self._catch_up(client)
            due = time.monotonic()
            while self.link.client is client:
                wait = due - time.monotonic()
                if wait > 0:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=wait)
                    if message is not None:
                        self._receive(message)
                        continue
                await self._push(client)
                due = time.monotonic() + self.push_every_s
        finally:
            # Typed here: some redis-py versions leave PubSub.aclose unannotated.
            aclose: Callable[[], Awaitable[None]] = pubsub.aclose
            with contextlib.suppress(*redis_failures):  # bounded: see link.CLOSE_S
                async with asyncio.timeout(CLOSE_S):
                    await aclose()

    # ------------------------------------------------------------------ receiving

    def _receive(self, message: dict[str, Any]) -> None:
        data = message.get("data")
        parsed = parse(data) if isinstance(data, bytes) else None
        if parsed is None:
            self._warn.log(logging.WARNING, "bad", "ignored a message that is not one: %.80r", data)
            return
        if parsed.origin == self.origin:
            return
        now = self.clock()
        if isinstance(parsed, Remote):
            ban = parsed.ban
            if ban.expires <= now:
                return
            if self._lifted.get(ban.network) == ban.expires:
                # One lifted here while Redis was away, sent again by an
                # instance that kept it: it stays lifted, and is lifted there.
                self._relift.add(ban.network)
                return
            self._apply_ban(ban)
        elif isinstance(parsed, Lift):
            self.bans.unban(parsed.network)
            self._bans_seen.pop(parsed.network, None)
        elif isinstance(parsed, Allow):
            if parsed.until <= now:
                return
            if self._revoked.get(parsed.key) == parsed.until:
                self._rerevoke.add(parsed.key)
                return
            self._apply_allow(parsed.key, parsed.until)
        else:
            self.allows.drop_key(parsed.key)
            self._allows_seen.pop(parsed.key, None)
        self.applied += 1

    def _apply_ban(self, ban: Ban) -> Ban:
        kept = self.bans.ban(ban.network, ban.expires, ban.reason, ban.since)
        # As the store keeps it (a shared table cuts the reason), so it is not news here.
        self._bans_seen[kept.network] = (kept.expires, kept.reason)
        return kept

    def _apply_allow(self, key: bytes, until: float) -> None:
        if self.allows.put_key(key, until):
            self._allows_seen[key] = until

    # ------------------------------------------------------------------ sending

    async def _push(self, client: aioredis.Redis) -> None:
        """Send what changed here since the last agreement with Redis."""
        now = self.clock()
        pipe = client.pipeline(transaction=False)
        bans_seen: dict[Network, tuple[float, str]] = {}
        for ban in self.bans.all(now):
            seen = bans_seen[ban.network] = (ban.expires, ban.reason)
            if self._bans_seen.get(ban.network) != seen:
                data = ban_message(ban, self.origin)
                pipe.set(self._ban_key + str(ban.network).encode(), data, px=_ms(ban.expires, now))
                pipe.publish(self._ban_channel, data)
        lifts = {n for n, (expires, _) in self._bans_seen.items() if expires > now}
        lifts = (lifts | self._relift) - bans_seen.keys()
        for network in lifts:
            self._lift(pipe, network)
        allows_seen = self.allows.entries(now)
        for key, until in allows_seen.items():
            if self._allows_seen.get(key) != until:
                data = allow_message(key, until, self.origin)
                pipe.set(self._allow_key + key.hex().encode(), data, px=_ms(until, now))
                pipe.publish(self._allow_channel, data)
        revokes = {key for key, until in self._allows_seen.items() if until > now}
        revokes = (revokes | self._rerevoke) - allows_seen.keys()
        for key in revokes:
            self._revoke(pipe, key)
        if commands := len(pipe):
            await pipe.execute()
            self.sent += commands // 2  # a SET or DEL and a PUBLISH each
        # Only once Redis has it: a failure above leaves the changes to send again.
        self._bans_seen, self._allows_seen = bans_seen, allows_seen
        self._relift.clear()
        self._rerevoke.clear()
        if self._lifted or self._revoked:
            self._lifted = {n: t for n, t in self._lifted.items() if t > now}
            self._revoked = {k: t for k, t in self._revoked.items() if t > now}

    def _lift(self, pipe: Pipeline, network: Network) -> None:
        pipe.delete(self._ban_key + str(network).encode())
        pipe.publish(self._ban_channel, lift_message(network, self.origin))

    def _revoke(self, pipe: Pipeline, key: bytes) -> None:
        pipe.delete(self._allow_key + key.hex().encode())
        pipe.publish(self._allow_channel, revoke_message(key, self.origin))

    # ------------------------------------------------------------------ (re)connecting

    async def _catch_up(self, client: aioredis.Redis) -> None:
        """Merge what Redis holds with what is here; what is only here goes with the next push.

        What was in step before Redis went away and is gone here was lifted
        here meanwhile: it is lifted everywhere, and stays lifted if an
        instance that kept it (or Redis restarted empty) sends it again.
        """
        now = self.clock()
        local_bans = {ban.network: ban for ban in self.bans.all(now)}
        local_allows = self.allows.entries(now)
        for network, (expires, _) in self._bans_seen.items():
            if network not in local_bans and expires > now:
                self._lifted[network] = expires
        for key, until in self._allows_seen.items():
            if key not in local_allows and until > now:
                self._revoked[key] = until
        bans_seen: dict[Network, tuple[float, str]] = {}
        allows_seen: dict[bytes, float] = {}
        for value in await self._values(client, self._ban_key):
            parsed = parse(value)
            if not isinstance(parsed, Remote) or parsed.ban.expires <= now:
                continue
            remote = parsed.ban
            here = local_bans.get(remote.network)
            if here is None and self._lifted.get(remote.network) == remote.expires:
                continue  # lifted below
            if here is None or remote.expires > here.expires:
                kept = self._apply_ban(remote)
                bans_seen[kept.network] = (kept.expires, kept.reason)
            else:
                bans_seen[remote.network] = (remote.expires, remote.reason)  # ours goes if newer
        for value in await self._values(client, self._allow_key):
            parsed = parse(value)
            if not isinstance(parsed, Allow) or parsed.until <= now:
                continue
            key, until = parsed.key, parsed.until
            mine = local_allows.get(key)
            if mine is None and self._revoked.get(key) == until:
                continue
            if mine is None or until > mine:
                # No room (a full table) leaves it unnoted, so the push revokes nothing.
                if self.allows.put_key(key, until):
                    allows_seen[key] = until
            else:
                allows_seen[key] = until
        self._bans_seen, self._allows_seen = bans_seen, allows_seen
        self._relift |= self._lifted.keys()
        self._rerevoke |= self._revoked.keys()

    async def _values(self, client: aioredis.Redis, start: bytes) -> list[bytes]:
        """The values of every key starting with ``start``."""
        keys = [key async for key in client.scan_iter(match=glob_escape(start) + b"*", count=500)]
        values: list[bytes] = []
        for i in range(0, len(keys), _SCAN_BATCH):
            got = await client.mget(keys[i : i + _SCAN_BATCH])
            values += [value for value in got if isinstance(value, bytes)]
        return values


def _ms(deadline: float, now: float) -> int:
    """Milliseconds from ``now`` to ``deadline``, at least 1 (a key's time to live)."""
    return max(1, int((deadline - now) * 1000))

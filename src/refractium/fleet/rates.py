"""Connection rates that hold for a whole fleet: the tokens taken, exchanged in batches.

Every decision still takes its token from a local bucket (the engine's, or
the table the workers of an instance share) and never waits on Redis. What
makes a rate the fleet's is that every bucket is also drained of the tokens
the other instances took for the same key, a little later:

* the :class:`~refractium.abuse.guard.Guard` of each process that takes
  tokens notes how many it took per bucket key (:meth:`Guard.note_takes`);
* every :data:`EXCHANGE_EVERY_S` a :class:`RateExchange` adds them, in one
  pipeline, to ``HINCRBY {prefix}rate:{key hex} {instance id} n`` (the
  workers of one instance add to the same field) with a time to live, and
  reads back (``HGETALL``) the counts of the keys it is watching: those
  taken from here within the last :func:`watch_s` seconds;
* for each key, what the other instances took since the last read (the
  growth of the sum of the other fields) is drained from the local bucket,
  which may go into debt down to ``-burst``.

With workers, every worker pushes its takes, but only one drains the shared
buckets (once per instance, not once per worker): the others announce the
keys they took from in a set of the instance (``SADD
{prefix}rate-keys:{instance id}``) which the draining one pops, so it
watches them too.

A key is read for the first time when it starts being watched: that read is
the baseline, and what others took before it is not drained (a client's
first connections to an instance may add up to a burst there). The lag is
an exchange interval and a round trip, about 0.1 s: in steady traffic the
fleet admits the rate, and at most a burst more per instance at the start.

While Redis is away nothing is sent, what is taken meanwhile is forgotten
and each instance counts alone; the counts are read afresh once it is back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from refractium.abuse.guard import Guard
from refractium.fleet.link import RedisLink, cancel_all, redis_failures
from refractium.util.logs import RateLimitedLog
from refractium.util.tasks import spawn

__all__ = ["EXCHANGE_EVERY_S", "MAX_WATCHED", "RateExchange", "watch_s"]

log = logging.getLogger(__name__)

#: How often the tokens taken here are sent and those taken elsewhere drained.
EXCHANGE_EVERY_S = 0.1
# A key is watched this long after its last take here: at least a few
# seconds, and a bucket's whole refill time for slower rates, up to a minute.
WATCH_MIN_S = 5.0
WATCH_MAX_S = 60.0
TTL_MIN_S = 10.0  # the counts in Redis outlive every watch of them
#: Keys watched at most, the least recently taken from forgotten first: each is
#: read every exchange, so this bounds what one process asks of Redis (a flood
#: from many addresses must not become a flood of reads).
MAX_WATCHED = 2048
_POP_BATCH = 10_000  # keys announced by the other workers, read per exchange


def watch_s(per_s: float, burst: float) -> float:
    """How long a key is watched after its last take here (its bucket's refill time, clamped)."""
    return min(WATCH_MAX_S, max(WATCH_MIN_S, burst / per_s))


@dataclass(slots=True)
class _Watch:
    """A key whose bucket is drained of what others take."""

    per_s: float
    burst: float
    until: float  # time.time() when it is no longer watched
    others: int | None = None  # what the other instances had taken at the last read


class RateExchange:
    """This process's takes sent to the fleet, and the fleet's drained from its buckets.

    Args:
        link: the connection to Redis (its url and prefix name the fleet).
        guard: the guard whose takes are sent, and whose buckets are drained.
        instance_id: the instance's name in the counts: the same for every
            worker of an instance, different between instances.
        drain: whether this process drains its buckets of the others' takes
            (the engine; with workers, exactly one of them); else it only
            sends its takes and announces their keys.
        keep_link: whether :meth:`start` also keeps ``link`` up (and
            :meth:`close` closes it): a worker's own link, not one shared
            with a :class:`~refractium.fleet.sync.FleetSync`.
        every_s: how often to exchange.
    """

    def __init__(
        self,
        link: RedisLink,
        guard: Guard,
        instance_id: str,
        *,
        drain: bool,
        keep_link: bool = False,
        every_s: float = EXCHANGE_EVERY_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.link = link
        self.guard = guard
        self.instance_id = instance_id
        self.drain = drain
        self.keep_link = keep_link
        self.every_s = every_s
        self.clock = clock
        self._field = instance_id.encode()
        self._counts = link.prefix + b"rate:"
        self._announced = link.prefix + b"rate-keys:" + self._field
        self._watched: dict[bytes, _Watch] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._warn = RateLimitedLog(log, burst=1, period_s=30.0)
        self.sent = 0  # tokens sent
        self.drained = 0  # tokens drained, taken by other instances
        self.forgotten = 0  # keys no longer watched to stay within MAX_WATCHED

    @property
    def watched(self) -> int:
        """Keys watched now."""
        return len(self._watched)

    def start(self) -> None:
        """Start noting takes and exchanging them (in the running loop)."""
        if self._tasks:
            return
        self.guard.note_takes()
        if self.keep_link:
            spawn(self.link.run(), name="rates-link", owner=self._tasks)
        spawn(self._run(), name="fleet-rates", owner=self._tasks)

    async def close(self) -> None:
        """Stop exchanging; the buckets keep what they hold."""
        await cancel_all(self._tasks)
        self.guard.pending = None
        if self.keep_link:
            await self.link.close()

    async def _run(self) -> None:
        due = time.monotonic()
        while True:
            client = self.link.client
            if client is None:
                # Redis away: each instance counts alone; nothing piles up to send later,
                # and the counts are read afresh once it is back.
                self.guard.collect_takes()
                for watch in self._watched.values():
                    watch.others = None
            else:
                try:
                    await self.exchange(client)
                except redis_failures as exc:
                    self.link.failed(exc)
                except Exception:
                    self._warn.log(logging.ERROR, "bug", "rate exchange failed", exc_info=True)
            due = max(due + self.every_s, time.monotonic())
            await asyncio.sleep(due - time.monotonic())

    async def exchange(self, client: aioredis.Redis) -> None:
        """Send the takes noted since the last exchange; drain what the others took."""
        now = self.clock()
        pipe = client.pipeline(transaction=False)
        announce: list[bytes] = []
        for key, n, rate in self.guard.collect_takes():
            name = self._counts + key.hex().encode()
            per_s, burst = rate.per_s, float(rate.burst)
            pipe.hincrby(name, self._field, n)
            pipe.pexpire(name, _ttl_ms(per_s, burst))
            self.sent += n
            if self.drain:
                self._watch(key, per_s, burst, now)
            else:
                announce.append(b"%s %r %r" % (key.hex().encode(), per_s, burst))
        if announce:
            pipe.sadd(self._announced, *announce)
            pipe.pexpire(self._announced, int(TTL_MIN_S * 1000))
        reads: list[tuple[bytes, _Watch]] = []
        if self.drain:
            for key, watch in list(self._watched.items()):
                if watch.until <= now:
                    del self._watched[key]
                    continue
                reads.append((key, watch))
                pipe.hgetall(self._counts + key.hex().encode())
            pipe.spop(self._announced, _POP_BATCH)
        if not len(pipe):
            return
        results = await pipe.execute()
        if not self.drain:
            return
        counts = results[len(results) - len(reads) - 1 : -1]
        self._drain(reads, counts)
        for member in results[-1] or ():
            self._announcement(member, now)

    def _drain(self, reads: list[tuple[bytes, _Watch]], counts: list[Any]) -> None:
        buckets = self.guard.stores.buckets
        field = self._field
        now = self.clock()
        for (key, watch), fields in zip(reads, counts, strict=True):
            others = 0
            for name, value in fields.items():
                if name != field:
                    others += int(value)
            last, watch.others = watch.others, others
            # None: the baseline; less: the counts expired or Redis restarted empty.
            if last is not None and others > last:
                buckets.drain(key, others - last, watch.per_s, watch.burst, now)
                self.drained += others - last

    def _watch(self, key: bytes, per_s: float, burst: float, now: float) -> None:
        watched = self._watched
        until = now + watch_s(per_s, burst)
        watch = watched.pop(key, None)  # back in last: the most recently taken from
        if watch is None:
            watch = _Watch(per_s, burst, until)
            if len(watched) >= MAX_WATCHED:
                del watched[next(iter(watched))]
                self.forgotten += 1
        else:
            watch.per_s, watch.burst, watch.until = per_s, burst, until
        watched[key] = watch

    def _announcement(self, member: bytes, now: float) -> None:
        """A key another worker of this instance took from: ``HEX PER_S BURST``."""
        try:
            hex_key, per_text, burst_text = member.split()
            key = bytes.fromhex(hex_key.decode())
            per_s, burst = float(per_text), float(burst_text)
        except ValueError:
            self._warn.log(
                logging.WARNING, "bad", "ignored a rate key that is not one: %.80r", member
            )
            return
        if len(key) == 16 and per_s > 0 and burst >= 1:
            self._watch(key, per_s, burst, now)


def _ttl_ms(per_s: float, burst: float) -> int:
    """How long a key's counts are kept after the last take anywhere: twice its watch."""
    return int(max(TTL_MIN_S, 2 * watch_s(per_s, burst)) * 1000)

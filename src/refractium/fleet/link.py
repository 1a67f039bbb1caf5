"""The connection to Redis that the instances of a fleet share, kept up in the background.

:class:`RedisLink` holds one redis-py asyncio client (``redis.asyncio``) for
``[state] url`` and says whether it works (:attr:`RedisLink.up`, exported as
``refractium_state_up``). :meth:`RedisLink.run` keeps it: a ``PING`` every
second; on a failure, ``up`` goes False, a warning is logged (one per 30 s at
most, so an outage does not flood the log) and connecting is tried again
after 0.1 s, then 0.2 s, doubling to 10 s; once Redis answers, ``up`` is True
again and the waiters of :meth:`RedisLink.wait_up` get the new client.

Nothing on the data path ever awaits this module: connections decide on
local state, which :mod:`refractium.fleet.sync` keeps in step through here.
redis-py's own retries are turned off, so a command to an absent Redis fails
at once and the keeper, not the caller, decides when to try again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from refractium.util.logs import RateLimitedLog

__all__ = [
    "BACKOFF_MAX_S",
    "BACKOFF_MIN_S",
    "CLOSE_S",
    "PING_EVERY_S",
    "RedisLink",
    "cancel_all",
    "redis_failures",
]

log = logging.getLogger(__name__)

PING_EVERY_S = 1.0
BACKOFF_MIN_S = 0.1
BACKOFF_MAX_S = 10.0
WARN_EVERY_S = 30.0
# A command (or connecting) that takes longer than this counts as a failure:
# a Redis that stopped answering is as good as gone.
TIMEOUT_S = 2.0

#: What a command to an unreachable or broken Redis raises.
redis_failures: tuple[type[BaseException], ...] = (RedisError, OSError, TimeoutError)
#: The longest a client (or a subscription) may take to close.
CLOSE_S = 1.0
#: The longest stopping waits for the tasks that talk to Redis.
CANCEL_WAIT_S = 3.0


class RedisLink:
    """One instance's connection to the Redis at ``url``, under keys starting with ``prefix``.

    Args:
        url: ``redis://host:port/db`` (or ``rediss://``, ``unix://``), as redis-py reads it.
        prefix: the start of every key and channel name; instances sharing url
            and prefix share state, another prefix is another fleet.
    """

    def __init__(self, url: str, prefix: str) -> None:
        self.url = url
        self.prefix = prefix.encode()
        self._client: aioredis.Redis | None = None
        self._up = False
        self._changed = asyncio.Event()  # set on going up, and when a user reports a failure
        self._failed = False
        self._closed = False
        self._warn = RateLimitedLog(log, burst=1, period_s=WARN_EVERY_S)
        self.outages = 0  # times the link went down

    @property
    def up(self) -> bool:
        """Whether the last exchange with Redis worked."""
        return self._up

    @property
    def client(self) -> aioredis.Redis | None:
        """The client while :attr:`up`, else None."""
        return self._client if self._up else None

    async def wait_up(self) -> aioredis.Redis:
        """The client, once the link is up (at once if it is)."""
        while True:
            client = self.client
            if client is not None:
                return client
            self._changed.clear()
            await self._changed.wait()

    def failed(self, exc: BaseException) -> None:
        """Report that a command on :attr:`client` failed: the link goes down and reconnects."""
        if self._up:
            self._down(exc)
        self._failed = True
        self._changed.set()

    async def run(self) -> None:
        """Keep the link until cancelled; never raises what Redis does."""
        delay = BACKOFF_MIN_S
        while not self._closed:
            started = time.monotonic()
            client = self._new_client()
            try:
                await client.ping()
            except redis_failures as exc:
                await _close(client)
                self._down(exc)
                # From one attempt's start to the next's: at most the backoff,
                # so Redis back is seen within BACKOFF_MAX_S however long connecting took.
                await asyncio.sleep(max(0.0, delay - (time.monotonic() - started)))
                delay = min(delay * 2, BACKOFF_MAX_S)
                continue
            delay = BACKOFF_MIN_S
            self._client, self._up, self._failed = client, True, False
            if self.outages:
                log.warning("Redis at %s is back", self._where())
            self._changed.set()
            try:
                await self._keep(client)
            finally:
                if self._client is client:
                    self._client = None
                await _close(client)

    async def _keep(self, client: aioredis.Redis) -> None:
        """PING every second until a PING fails or a user reports a failure."""
        while not self._broken():
            self._changed.clear()
            # Woken early by failed(); else a PING once a second.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(PING_EVERY_S):
                    await self._changed.wait()
            if self._broken():
                return
            try:
                await client.ping()
            except redis_failures as exc:
                self._down(exc)
                return

    def _broken(self) -> bool:
        """Whether a user reported a failure (a method: the flag changes across awaits)."""
        return self._failed

    def _down(self, exc: BaseException) -> None:
        if self._up:
            self.outages += 1
        self._up = False
        self._warn.log(
            logging.WARNING,
            "redis",
            "Redis at %s unreachable (%s): serving on local state, reconnecting",
            self._where(),
            str(exc) or type(exc).__name__,
        )

    def _where(self) -> str:
        # The url without its password, if it has one.
        scheme, sep, rest = self.url.partition("://")
        return f"{scheme}{sep}{rest.rpartition('@')[2]}"

    def _new_client(self) -> aioredis.Redis:
        return aioredis.Redis.from_url(
            self.url,
            decode_responses=False,
            socket_connect_timeout=TIMEOUT_S,
            socket_timeout=TIMEOUT_S,
            retry=Retry(NoBackoff(), 0),
        )

    async def close(self) -> None:
        """Stop keeping the link (the task running :meth:`run` is the caller's to cancel)."""
        self._closed = True
        self._up = False
        client, self._client = self._client, None
        if client is not None:
            await _close(client)


async def cancel_all(tasks: set[asyncio.Task[Any]]) -> None:
    """Cancel ``tasks`` and wait for them, a few seconds at most (then leave them)."""
    pending = list(tasks)
    for task in pending:
        task.cancel()
    if pending:
        _, stuck = await asyncio.wait(pending, timeout=CANCEL_WAIT_S)
        if stuck:
            log.warning("%d Redis task(s) did not stop within %g s", len(stuck), CANCEL_WAIT_S)


async def _close(client: aioredis.Redis) -> None:
    # Bounded: closing runs while a task is cancelled (shutdown), and a client
    # whose connection is busy elsewhere must not hold that up.
    with contextlib.suppress(*redis_failures):  # the connection was gone already
        async with asyncio.timeout(CLOSE_S):
            await client.aclose()

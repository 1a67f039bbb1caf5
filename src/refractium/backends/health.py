"""Backend health: which backends are up, from active checks and from dials.

:class:`HealthChecker` keeps an up/down state per backend address and answers
:meth:`~HealthChecker.is_up` in O(1) for the balancer on every connection.
Two sources feed it:

Active checks (backends whose route has a ``health_check``)
    One task per checked backend connects every ``interval_ms`` (within
    ``timeout_ms``), optionally writes ``send`` and waits for ``expect``, then
    drops the connection (an abort, as HAProxy does, so the proxy keeps no
    ``TIME_WAIT`` per check). ``fall`` consecutive failures take an up
    backend down, ``rise`` consecutive successes bring a down one back.
    Failed dials reported by the relay count toward ``fall`` as well; only a
    check brings such a backend back.

Passive marking (backends without an active check)
    A dial failure reported by the relay takes the backend down at once. It
    is tried again after ``passive_retry_ms`` (half-open): from then on
    :meth:`~HealthChecker.is_up` answers True, the next dial decides, and a
    failure puts it down for another period. Nothing sleeps for this; the
    deadline is compared with the loop's clock when asked.

New backends start UP: a proxy that has just started (or reloaded with a new
backend) must not refuse traffic during the first check interval; a backend
that really is dead costs a few failed dials, which fail over to the rest of
the pool, until ``fall`` is reached. Backends that stay across a reload keep
their state, so a reload does not resurrect a dead backend.

This module does not dial client traffic, pick backends or retry anything:
the relay reports its dials, the balancer reads :meth:`~HealthChecker.is_up`.
Addresses it was not told about are always up and their reports are ignored.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
from collections.abc import Mapping
from typing import Any

from refractium.addr import Address
from refractium.config import HealthCheck
from refractium.util.tasks import spawn

__all__ = ["HealthChecker", "probe"]

log = logging.getLogger(__name__)

# The most an ``expect`` check reads before giving up (unless ``expect`` is longer).
EXPECT_READ_LIMIT = 4096

# ``_down_until`` value of a backend only an active check can bring back.
_NEVER = math.inf

_TASK_PREFIX = "health-check"


async def probe(address: Address, check: HealthCheck) -> str | None:
    """Run one check of ``address``: None if it passed, else why it failed.

    The reasons are ``"connection refused"``, ``"timed out"`` (connect, send
    and expect together took more than ``timeout_ms``), ``"expect not seen"``
    (the backend closed, or sent too much, before ``expect`` appeared) or the
    operating system's wording of another socket error. Other exceptions
    propagate: they are bugs, not check failures.
    """
    try:
        async with asyncio.timeout(check.timeout_ms / 1000):
            reader, writer = await asyncio.open_connection(address.host, address.port)
            try:
                if check.send:
                    writer.write(check.send)
                    await writer.drain()
                if check.expect and not await _read_until(reader, check.expect):
                    return "expect not seen"
            finally:
                writer.transport.abort()
    except TimeoutError:
        return "timed out"
    except OSError as exc:
        return _os_reason(exc)
    return None


async def _read_until(reader: asyncio.StreamReader, expect: bytes) -> bool:
    """Read until ``expect`` appears: True, or False on EOF or past the read limit."""
    limit = max(EXPECT_READ_LIMIT, len(expect))
    seen = bytearray()
    while expect not in seen:
        if len(seen) >= limit:
            return False
        chunk = await reader.read(limit - len(seen))
        if not chunk:
            return False
        seen += chunk
    return True


def _os_reason(exc: OSError) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionResetError):
        return "connection reset"
    text = exc.strerror or str(exc) or type(exc).__name__
    return text[:1].lower() + text[1:]


class _Backend:
    """What the checker knows about one backend."""

    __slots__ = ("check", "failures", "successes", "task", "up")

    def __init__(self, check: HealthCheck | None) -> None:
        self.check = check
        self.up = True
        self.failures = 0  # consecutive, while up
        self.successes = 0  # consecutive, while down
        self.task: asyncio.Task[None] | None = None


class HealthChecker:
    """Up/down state per backend: active checks where configured, passive marking always.

    Create it anywhere; the first :meth:`configure` (or passive report) must
    run inside the event loop that will run the checks.
    """

    __slots__ = ("_backends", "_closed", "_down_until", "_loop", "_retry_s", "_tasks")

    def __init__(self) -> None:
        self._backends: dict[Address, _Backend] = {}
        # Down backends only: loop time from which ``is_up`` answers True
        # again, or _NEVER (an active check must bring it back).
        self._down_until: dict[Address, float] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._retry_s = 5.0
        self._closed = False

    # -- configuration ------------------------------------------------------

    def configure(
        self, checks: Mapping[Address, HealthCheck | None], *, passive_retry_ms: int = 5000
    ) -> None:
        """The backends to know about, each with its active check (None: no active check).

        Backends that stay keep their up/down state (a reload does not forget
        a dead backend); if their check changed, it restarts with the new
        settings and fresh counters. New backends start UP. Removed ones are
        forgotten and their check tasks cancelled. Idempotent. Raises
        RuntimeError after :meth:`close`.
        """
        if self._closed:
            raise RuntimeError("health checker is closed")
        self._retry_s = passive_retry_ms / 1000
        for address in [a for a in self._backends if a not in checks]:
            self._forget(address)
        for address, check in checks.items():
            backend = self._backends.get(address)
            if backend is None:
                backend = self._backends[address] = _Backend(check)
                self._start(address, backend)
            elif backend.check != check:
                self._change_check(address, backend, check)

    def _forget(self, address: Address) -> None:
        backend = self._backends.pop(address)
        self._down_until.pop(address, None)
        if backend.task is not None:
            backend.task.cancel()

    def _change_check(self, address: Address, backend: _Backend, check: HealthCheck | None) -> None:
        if backend.task is not None:
            backend.task.cancel()
            backend.task = None
        backend.check = check
        backend.failures = backend.successes = 0
        if not backend.up:
            # Down stays down, under the rule of the new kind of backend.
            self._down_until[address] = _NEVER if check is not None else self._retry_deadline()
        self._start(address, backend)

    def _start(self, address: Address, backend: _Backend) -> None:
        if backend.check is not None:
            backend.task = spawn(
                self._run(address, backend, backend.check),
                name=f"{_TASK_PREFIX} {address}",
                owner=self._tasks,
            )

    async def close(self) -> None:
        """Cancel every check task and wait for them to end. Final; idempotent."""
        self._closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for backend in self._backends.values():
            backend.task = None
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- queries ------------------------------------------------------------

    def is_up(self, address: Address) -> bool:
        """Whether to send traffic to ``address`` now; unknown addresses are up.

        O(1) and allocation-free for up backends. A passively marked backend
        answers True again once its retry period is over, for every caller
        until a report decides (no side effect: safe to call for every pool
        member on every connection).
        """
        until = self._down_until.get(address)
        if until is None:
            return True
        if until == _NEVER:
            return False
        return until <= self._now()

    def snapshot(self) -> dict[Address, bool]:
        """Every known backend and its state (True: up).

        A passively marked backend reads False during its half-open retry
        too, until a dial succeeds: this is the last known health, whereas
        :meth:`is_up` says whether to try it.
        """
        return {address: backend.up for address, backend in self._backends.items()}

    # -- passive reports ----------------------------------------------------

    def report_failure(self, address: Address, reason: str) -> None:
        """A dial to ``address`` failed (``reason`` goes in the log)."""
        backend = self._backends.get(address)
        if backend is None:
            return
        if backend.check is not None:
            self._failed(address, backend, backend.check, reason)
        elif backend.up:
            backend.up = False
            self._down_until[address] = self._retry_deadline()
            log.warning(
                "backend %s down: %s (dial failed; retry in %gs)", address, reason, self._retry_s
            )
        elif self.is_up(address):
            # Half-open try failed: another period (already logged as down).
            self._down_until[address] = self._retry_deadline()

    def report_success(self, address: Address) -> None:
        """A dial to ``address`` worked."""
        backend = self._backends.get(address)
        if backend is None:
            return
        if backend.check is not None:
            # A checked backend comes back through its check only.
            if backend.up:
                backend.failures = 0
        elif not backend.up:
            backend.up = True
            del self._down_until[address]
            log.info("backend %s up again (dial succeeded)", address)

    # -- state changes ------------------------------------------------------

    def _failed(self, address: Address, backend: _Backend, check: HealthCheck, reason: str) -> None:
        if not backend.up:
            backend.successes = 0
            return
        backend.failures += 1
        if backend.failures >= check.fall:
            backend.up = False
            backend.successes = 0
            self._down_until[address] = _NEVER
            log.warning(
                "backend %s down: %s (%d consecutive failures)",
                address,
                reason,
                backend.failures,
            )

    def _passed(self, address: Address, backend: _Backend, check: HealthCheck) -> None:
        if backend.up:
            backend.failures = 0
            return
        backend.successes += 1
        if backend.successes >= check.rise:
            backend.up = True
            backend.failures = 0
            del self._down_until[address]
            log.info("backend %s up again (%d checks passed)", address, backend.successes)

    # -- active checks ------------------------------------------------------

    async def _run(self, address: Address, backend: _Backend, check: HealthCheck) -> None:
        """Check ``address`` every interval until cancelled; never raises otherwise."""
        loop = asyncio.get_running_loop()
        interval = check.interval_ms / 1000
        # Spread the first checks of a pool over one interval.
        next_at = loop.time() + random.random() * interval
        while True:
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            next_at += interval
            try:
                reason = await probe(address, check)
            except Exception:
                # A bug, not a verdict on the backend: keep its state, say
                # where it broke, and keep checking.
                log.exception("health check of %s crashed", address)
            else:
                if reason is None:
                    self._passed(address, backend, check)
                else:
                    self._failed(address, backend, check, reason)
            # A check slower than the interval: start the next one now,
            # don't try to catch up with the missed ones.
            next_at = max(next_at, loop.time())

    # -- clock --------------------------------------------------------------

    def _now(self) -> float:
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        return loop.time()

    def _retry_deadline(self) -> float:
        return self._now() + self._retry_s

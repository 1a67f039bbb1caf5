"""Calling user code (hooks) so that what it raises is reported, never propagated.

A hook is someone else's code running inside the proxy. When it raises,
the proxy logs the error at ERROR with its traceback, rate-limited per key
(a hook failing on every packet must not flood the log; the suppressed
count comes with the next message), lets the caller count it, and carries
on. What a failure means stays the caller's decision: a packet hook keeps
receiving packets, a failing endpoint hook rejects its connection.

* :class:`HookFailures` is the one place such failures are logged;
* :func:`safecall` and :func:`safeawait` call or await user code and turn
  an exception into :data:`FAILED` after reporting it.

On a per-chunk path, where even a function call counts, callers keep their
``try``/``except`` inline and only report through :class:`HookFailures`.
Only :class:`Exception` is caught: ``CancelledError``, ``KeyboardInterrupt``
and ``SystemExit`` go through.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Final, TypeVar, final

from refractium.util.logs import RateLimitedLog

__all__ = ["FAILED", "Failed", "HookFailures", "Report", "safeawait", "safecall"]

T = TypeVar("T")

#: What to do once user code has raised: called inside the ``except`` block,
#: so the exception (and its traceback) is the one being handled.
Report = Callable[[], object]


@final
class Failed:
    """The type of :data:`FAILED`: what a call that raised gives back."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "FAILED"


#: Returned by :func:`safecall` and :func:`safeawait` when the user code raised.
FAILED: Final = Failed()


class HookFailures:
    """Reports exceptions raised by hooks: ERROR, with traceback, rate-limited per key."""

    __slots__ = ("_log",)

    def __init__(self, logger: logging.Logger, *, burst: int = 5, period_s: float = 10.0) -> None:
        self._log = RateLimitedLog(logger, burst=burst, period_s=period_s)

    def report(self, key: str, msg: str, *args: object) -> None:
        """Log ``msg % args`` with the exception being handled (call it in ``except``).

        Args:
            key: what the rate limit counts by (``hook-error:NAME``): one
                failing hook does not hide another's messages.
        """
        self._log.log(logging.ERROR, key, msg, *args, exc_info=True)


def safecall(report: Report, fn: Callable[..., T], /, *args: object) -> T | Failed:
    """``fn(*args)``; if it raises, ``report()`` and :data:`FAILED` instead.

    ``fn`` may return an awaitable: awaiting it (with :func:`safeawait`) is
    the caller's business.
    """
    try:
        return fn(*args)
    except Exception:
        report()
        return FAILED


async def safeawait(report: Report, awaitable: Awaitable[T]) -> T | Failed:
    """``await awaitable``; if it raises, ``report()`` and :data:`FAILED` instead."""
    try:
        return await awaitable
    except Exception:
        report()
        return FAILED

"""Calling the endpoint hooks: in order, first Reject wins, failures reject.

The relay asks :class:`EndpointChain` for a verdict at each point of a
connection's life. Only the methods a hook overrides are called, so a hook
that only counts closes costs nothing at accept time. A hook may be plain or
``async``; coroutines are stepped eagerly (see :mod:`refractium.util.eager`), so
one that does not actually wait costs no task and no loop turn, and the
verdict comes back at once. Only when a hook really waits does the caller
get an awaitable to finish the chain with.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from inspect import isawaitable
from typing import Any

from refractium.endpoint import (
    Accept,
    ConnectionInfo,
    ConnectionRecord,
    ConnectionStats,
    EndpointHooks,
    Figures,
    Outcome,
    Reject,
    Side,
    Verdict,
)
from refractium.util import eager
from refractium.util.logs import RateLimitedLog
from refractium.util.safecall import Failed, HookFailures, safeawait, safecall

log = logging.getLogger("refractium.endpoint")
events = RateLimitedLog(log)
failures = HookFailures(log)

#: What a hook that raises (or returns nonsense) amounts to: fail closed.
FAILED = Reject(error_code=500, reason=b"internal error")

Call = tuple[str, Callable[..., Any]]


def _overridden(hook: object, method: str) -> Callable[..., Any] | None:
    """The hook's own ``method``, or None if it has none or keeps the no-op default."""
    own = getattr(type(hook), method, None)
    if own is None or own is getattr(EndpointHooks, method):
        return None
    bound = getattr(hook, method)
    return bound if callable(bound) else None


def hook_name(hook: object) -> str:
    name = getattr(hook, "name", None)
    return name if isinstance(name, str) else type(hook).__name__


class EndpointChain:
    """The endpoint hooks of an engine, in order, ready to call."""

    __slots__ = ("after_handshake", "before_connect", "closes", "hooks", "incoming", "needs_record")

    def __init__(self, hooks: Sequence[object]) -> None:
        self.hooks = tuple(hooks)
        self.incoming = self._calls("on_incoming")
        self.before_connect = self._calls("before_connect")
        self.after_handshake = self._calls("after_handshake")
        self.closes = self._calls("on_close")
        # Hooks that see a ConnectionInfo need the connection's record.
        self.needs_record = bool(self.before_connect or self.after_handshake or self.closes)

    def _calls(self, method: str) -> tuple[Call, ...]:
        calls = []
        for hook in self.hooks:
            fn = _overridden(hook, method)
            if fn is not None:
                calls.append((hook_name(hook), fn))
        return tuple(calls)

    def __bool__(self) -> bool:
        return bool(self.incoming or self.needs_record)

    # -- verdicts -----------------------------------------------------------

    def run(
        self, calls: tuple[Call, ...], *args: object, where: str
    ) -> Verdict | Awaitable[Verdict]:
        """Call ``calls`` in order: a verdict now, or an awaitable giving one."""
        for index, (name, fn) in enumerate(calls):
            # Inline, not safecall(): this decides every connection, and a
            # partial and two calls more per hook would show in connections/s.
            try:
                result = fn(*args)
                if isawaitable(result):
                    result = eager.start(result)
                    if isinstance(result, eager.Suspended):
                        return self._finish(calls, index, result, args, where)
            except Exception:
                _report(name, where)
                return FAILED
            verdict = _verdict(result, name, where)
            if verdict is not Accept:
                return verdict
        return Accept

    async def decide(self, calls: tuple[Call, ...], *args: object, where: str) -> Verdict:
        """:meth:`run`, waiting for the hooks that wait."""
        verdict = self.run(calls, *args, where=where)
        if isinstance(verdict, (Outcome, Reject)):
            return verdict
        return await verdict

    async def _finish(
        self,
        calls: tuple[Call, ...],
        index: int,
        waiting: eager.Suspended,
        args: tuple[object, ...],
        where: str,
    ) -> Verdict:
        name = calls[index][0]
        result = await safeawait(partial(_report, name, where), waiting)
        if isinstance(result, Failed):
            return FAILED
        verdict = _verdict(result, name, where)
        if verdict is not Accept:
            return verdict
        rest = self.run(calls[index + 1 :], *args, where=where)
        if isinstance(rest, (Outcome, Reject)):
            return rest
        return await rest

    # -- observing ------------------------------------------------------------

    def ended(
        self,
        record: ConnectionRecord,
        figures: Figures,
        outcome: str,
        route: str | None,
        verdict: Verdict | None,
        spawn: Callable[[Any], object],
    ) -> None:
        """A connection (or UDP flow) is over: final figures, then the on_close hooks."""
        stats = record.finish(figures, outcome, route, verdict)
        if self.closes:
            self.closed(ConnectionInfo(record, Side.SERVER), stats, spawn)

    def closed(
        self, info: ConnectionInfo, stats: ConnectionStats, spawn: Callable[[Any], object]
    ) -> None:
        """Tell every ``on_close`` hook; one that waits finishes in a task of its own."""
        for name, fn in self.closes:
            report = partial(_report, name, "on_close")
            result = safecall(report, _start, fn, (info, stats))
            if isinstance(result, eager.Suspended):
                spawn(safeawait(report, result))


def _start(fn: Callable[..., Any], args: tuple[object, ...]) -> Any:
    """``fn(*args)``, stepped eagerly if a coroutine: a result, or an eager.Suspended."""
    result = fn(*args)
    return eager.start(result) if isawaitable(result) else result


def _verdict(result: object, name: str, where: str) -> Verdict:
    if result is None:
        return Accept
    if isinstance(result, (Outcome, Reject)):
        return result
    events.log(
        logging.ERROR,
        f"endpoint-result:{name}",
        "endpoint hook %s returned %r from %s (not Accept, Reject or Ignore): rejecting",
        name,
        result,
        where,
    )
    return FAILED


def _report(name: str, where: str) -> None:
    """Report the exception the hook ``name`` raised in ``where`` (called in ``except``)."""
    failures.report(
        f"endpoint-error:{name}:{where}",
        "endpoint hook %s raised in %s%s",
        name,
        where,
        "" if where == "on_close" else " (the connection is rejected)",
    )

"""Calling user code: a failure is reported (inside the except) and becomes FAILED."""

from __future__ import annotations

import asyncio
import logging
import sys

import pytest

from refractium.util.safecall import FAILED, HookFailures, safeawait, safecall


def test_safecall_returns_the_result_or_failed_after_reporting() -> None:
    seen: list[BaseException | None] = []

    def report() -> None:
        seen.append(sys.exc_info()[1])  # the exception being handled

    assert safecall(report, divmod, 7, 2) == (3, 1)
    assert seen == []
    assert safecall(report, divmod, 7, 0) is FAILED
    assert len(seen) == 1 and isinstance(seen[0], ZeroDivisionError)
    assert repr(FAILED) == "FAILED"


def test_safecall_lets_cancellation_and_exit_through() -> None:
    def cancelled() -> None:
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        safecall(lambda: pytest.fail("not a hook failure"), cancelled)
    with pytest.raises(SystemExit):
        safecall(lambda: pytest.fail("not a hook failure"), sys.exit, 3)


async def test_safeawait_returns_the_result_or_failed_after_reporting() -> None:
    reports: list[str] = []

    async def ok() -> int:
        await asyncio.sleep(0)
        return 5

    async def boom() -> int:
        await asyncio.sleep(0)
        raise KeyError("k")

    assert await safeawait(lambda: reports.append("x"), ok()) == 5
    assert await safeawait(lambda: reports.append(repr(sys.exc_info()[1])), boom()) is FAILED
    assert reports == ["KeyError('k')"]

    async def cancelled() -> None:
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await safeawait(lambda: reports.append("no"), cancelled())


def test_hook_failures_log_errors_with_the_traceback_rate_limited(
    caplog: pytest.LogCaptureFixture,
) -> None:
    failures = HookFailures(logging.getLogger("refractium.test.safecall"), burst=2)
    caplog.set_level(logging.ERROR, "refractium.test.safecall")

    def hook() -> None:
        raise ValueError("the hook's own bug")

    for _ in range(5):
        safecall(lambda: failures.report("hook-error:a", "hook %s raised", "a"), hook)
    safecall(lambda: failures.report("hook-error:b", "hook %s raised", "b"), hook)
    assert [r.getMessage() for r in caplog.records] == [
        "hook a raised",
        "hook a raised",
        "hook b raised",
    ], "two per key, and one hook does not silence another"
    assert all(r.levelno == logging.ERROR for r in caplog.records)
    assert "ValueError: the hook's own bug" in caplog.text  # the traceback
    assert caplog.records[0].exc_info is not None

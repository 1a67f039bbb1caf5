"""The endpoint-hook chain: order, short-circuit, fail closed, eager coroutines."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from refractium.endpoint import Accept, EndpointHooks, Ignore, Outcome, Reject
from refractium.endpoint.chain import FAILED, EndpointChain
from refractium.util import eager

ADDR = ("192.0.2.7", 5000)


class Incoming(EndpointHooks):
    def __init__(self, name: str, log: list[str], verdict: Any = Accept, wait: float = 0) -> None:
        self.name = name
        self.log = log
        self.verdict = verdict
        self.wait = wait

    async def on_incoming(self, addr: tuple[str, int]) -> Any:
        self.log.append(self.name)
        if self.wait:
            await asyncio.sleep(self.wait)
        return self.verdict


class PlainIncoming(Incoming):
    def on_incoming(self, addr: tuple[str, int]) -> Any:
        self.log.append(self.name)
        return self.verdict


async def verdict_of(chain: EndpointChain) -> Any:
    result = chain.run(chain.incoming, ADDR, where="on_incoming")
    if isinstance(result, (Outcome, Reject)):
        return result, False
    return await result, True


async def test_only_overridden_methods_are_called() -> None:
    chain = EndpointChain([EndpointHooks(), Incoming("a", [])])
    assert [name for name, _ in chain.incoming] == ["a"]
    assert chain.before_connect == chain.after_handshake == chain.closes == ()
    assert not chain.needs_record
    assert not EndpointChain([EndpointHooks()])


async def test_coroutines_that_do_not_wait_give_a_verdict_at_once() -> None:
    log: list[str] = []
    chain = EndpointChain([Incoming("a", log), PlainIncoming("b", log), Incoming("c", log)])
    assert await verdict_of(chain) == (Accept, False)
    assert log == ["a", "b", "c"]


async def test_the_first_reject_short_circuits() -> None:
    log: list[str] = []
    no = Reject(401, b"who?")
    chain = EndpointChain([Incoming("a", log), Incoming("b", log, no), Incoming("c", log)])
    assert await verdict_of(chain) == (no, False)
    assert log == ["a", "b"]


async def test_a_hook_that_waits_finishes_the_chain_later_in_order() -> None:
    log: list[str] = []
    chain = EndpointChain(
        [Incoming("a", log), Incoming("b", log, wait=0.01), Incoming("c", log, Ignore)]
    )
    assert await verdict_of(chain) == (Ignore, True)
    assert log == ["a", "b", "c"]


async def test_raising_or_returning_nonsense_fails_closed(caplog: pytest.LogCaptureFixture) -> None:
    class Boom(EndpointHooks):
        async def on_incoming(self, addr: tuple[str, int]) -> Any:
            await asyncio.sleep(0)
            raise ValueError("boom")

    class Nonsense(EndpointHooks):
        def on_incoming(self, addr: tuple[str, int]) -> Any:
            return "yes"

    log: list[str] = []
    caplog.set_level(logging.ERROR)
    assert await verdict_of(EndpointChain([Boom(), Incoming("after", log)])) == (FAILED, True)
    assert log == []
    assert "endpoint hook Boom raised in on_incoming" in caplog.text
    assert await verdict_of(EndpointChain([Nonsense()])) == (FAILED, False)
    assert "returned 'yes'" in caplog.text


async def test_on_close_hooks_all_run_and_a_waiting_one_gets_a_task() -> None:
    seen: list[str] = []

    class Fast(EndpointHooks):
        def on_close(self, conn: Any, stats: Any) -> None:
            seen.append("fast")

    class Slow(EndpointHooks):
        async def on_close(self, conn: Any, stats: Any) -> None:
            await asyncio.sleep(0.01)
            seen.append("slow")

    class Broken(EndpointHooks):
        def on_close(self, conn: Any, stats: Any) -> None:
            raise RuntimeError("ignored")

    tasks: list[asyncio.Task[Any]] = []
    chain = EndpointChain([Slow(), Broken(), Fast()])
    chain.closed(None, None, lambda c: tasks.append(asyncio.ensure_future(c)))  # type: ignore[arg-type]
    assert seen == ["fast"] and len(tasks) == 1
    await asyncio.gather(*tasks)
    assert seen == ["fast", "slow"]


async def test_eager_start_returns_values_and_finishes_suspended_coroutines() -> None:
    async def now() -> int:
        return 1

    async def later() -> int:
        await asyncio.sleep(0.01)
        await asyncio.sleep(0)
        return 2

    async def fails_later() -> int:
        await asyncio.sleep(0)
        raise KeyError("k")

    assert eager.start(now()) == 1
    suspended = eager.start(later())
    assert isinstance(suspended, eager.Suspended)
    assert await suspended == 2
    with pytest.raises(KeyError):
        await eager.start(fails_later())
    future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    pending = eager.start(future)
    asyncio.get_running_loop().call_soon(future.set_result, 3)
    assert await pending == 3


async def test_a_cancelled_wait_reaches_the_coroutine() -> None:
    cleaned: list[str] = []

    async def waits() -> None:
        try:
            await asyncio.sleep(10)
        finally:
            cleaned.append("finally")

    suspended = eager.start(waits())

    async def finish() -> None:
        await suspended

    task = asyncio.ensure_future(finish())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cleaned == ["finally"]


async def test_a_hook_that_raises_before_or_after_waiting_is_logged_with_its_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class RaisesAtOnce(EndpointHooks):
        async def on_incoming(self, addr: tuple[str, int]) -> Any:
            raise LookupError("no such client")

    class RaisesPlainly(EndpointHooks):
        def on_incoming(self, addr: tuple[str, int]) -> Any:
            raise LookupError("plain failure")

    caplog.set_level(logging.ERROR, "refractium.endpoint")
    assert await verdict_of(EndpointChain([RaisesAtOnce()])) == (FAILED, False)
    assert await verdict_of(EndpointChain([RaisesPlainly()])) == (FAILED, False)
    assert [r.getMessage() for r in caplog.records] == [
        "endpoint hook RaisesAtOnce raised in on_incoming (the connection is rejected)",
        "endpoint hook RaisesPlainly raised in on_incoming (the connection is rejected)",
    ]
    assert "LookupError: no such client" in caplog.text
    assert "LookupError: plain failure" in caplog.text


async def test_an_on_close_hook_that_raises_is_logged_and_the_others_still_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: list[str] = []

    class BreaksLater(EndpointHooks):
        async def on_close(self, conn: Any, stats: Any) -> None:
            await asyncio.sleep(0)
            raise RuntimeError("late failure")

    class BreaksAtOnce(EndpointHooks):
        def on_close(self, conn: Any, stats: Any) -> None:
            raise RuntimeError("early failure")

    class Counts(EndpointHooks):
        def on_close(self, conn: Any, stats: Any) -> None:
            seen.append("counted")

    caplog.set_level(logging.ERROR, "refractium.endpoint")
    tasks: list[asyncio.Task[Any]] = []
    chain = EndpointChain([BreaksLater(), BreaksAtOnce(), Counts()])
    chain.closed(None, None, lambda c: tasks.append(asyncio.ensure_future(c)))  # type: ignore[arg-type]
    await asyncio.gather(*tasks)
    assert seen == ["counted"]
    assert sorted(r.getMessage() for r in caplog.records) == [
        "endpoint hook BreaksAtOnce raised in on_close",
        "endpoint hook BreaksLater raised in on_close",
    ]
    assert "RuntimeError: late failure" in caplog.text

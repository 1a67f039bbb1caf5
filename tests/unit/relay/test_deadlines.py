"""The peek and dial deadlines: one loop timer per length, in order, cancellable."""

from __future__ import annotations

import asyncio
from functools import partial
from typing import Any

import pytest

from refractium.relay.deadlines import MAX_RESOLUTION_S, Deadlines, DeadlineSet


async def test_deadlines_fire_in_order_after_their_delay() -> None:
    loop = asyncio.get_running_loop()
    queue = Deadlines(loop, 0.05)
    fired: list[tuple[str, float]] = []
    start = loop.time()
    queue.add(lambda: fired.append(("a", loop.time() - start)))
    await asyncio.sleep(0.02)
    queue.add(lambda: fired.append(("b", loop.time() - start)))
    await asyncio.sleep(0.2)
    assert [name for name, _ in fired] == ["a", "b"]
    a, b = fired[0][1], fired[1][1]
    # Not early; late by at most the resolution (plus a loose margin for the loop).
    assert 0.045 <= a <= 0.05 + MAX_RESOLUTION_S + 0.05
    assert 0.065 <= b <= 0.07 + MAX_RESOLUTION_S + 0.05
    assert len(queue) == 0


async def test_a_cancelled_deadline_never_fires_and_drops_its_callback() -> None:
    loop = asyncio.get_running_loop()
    queue = Deadlines(loop, 0.02)
    fired: list[str] = []
    first = queue.add(lambda: fired.append("first"))
    queue.add(lambda: fired.append("second"))
    first.cancel()
    assert first.callback is None  # the connection it named is no longer held
    await asyncio.sleep(0.1)
    assert fired == ["second"]


async def test_a_callback_may_set_a_new_deadline_in_the_same_queue() -> None:
    loop = asyncio.get_running_loop()
    deadlines = DeadlineSet(loop)
    fired: list[int] = []

    def again() -> None:
        fired.append(len(fired))
        if len(fired) < 3:
            deadlines.after(0.01, again)

    deadlines.after(0.01, again)
    await asyncio.sleep(0.3)
    assert fired == [0, 1, 2]
    assert deadlines.pending() == 0


async def test_stop_cancels_everything_pending() -> None:
    loop = asyncio.get_running_loop()
    deadlines = DeadlineSet(loop)
    fired: list[str] = []
    deadlines.after(0.01, lambda: fired.append("peek"))
    deadlines.after(0.02, lambda: fired.append("dial"))
    assert deadlines.pending() == 2
    deadlines.stop()
    await asyncio.sleep(0.05)
    assert fired == [] and deadlines.pending() == 0


async def test_many_deadlines_wake_the_loop_a_few_times_not_once_each(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    loop = asyncio.get_running_loop()
    timers = 0
    call_at = loop.call_at

    def counted(when: float, callback: Any, *args: Any, **kwargs: Any) -> asyncio.TimerHandle:
        nonlocal timers
        if getattr(callback, "__self__", None) is queue:
            timers += 1
        return call_at(when, callback, *args, **kwargs)

    queue = Deadlines(loop, 0.05)
    monkeypatch.setattr(loop, "call_at", counted)
    fired: list[int] = []
    for i in range(200):  # one every ~1 ms over 0.2 s or more
        queue.add(partial(fired.append, i))
        await asyncio.sleep(0.001)
    await asyncio.sleep(0.2)
    assert fired == list(range(200))
    # About one timer per resolution (6.25 ms here) over the run, not 200.
    assert timers < 100, timers

"""The per-connection hook queue: order, the two ways of draining it, bounds."""

from __future__ import annotations

import asyncio
import gc
import logging
import weakref
from collections.abc import Coroutine
from typing import Any

import pytest

from refractium.hooks import Direction, HookContext, ProtocolHook, define_hook
from refractium.hooks.api import is_async_hook
from refractium.hooks.dispatch import Dispatcher, HookStats

IN, OUT = Direction.INBOUND, Direction.OUTBOUND
CTX = HookContext(client_addr=("192.0.2.1", 4000), protocol="http", session_id=7)


class Log(ProtocolHook):
    """Records (name, direction, packet) and closes into a shared list."""

    def __init__(self, name: str, seen: list[tuple[str, str, bytes]]) -> None:
        self.name = name
        self.seen = seen

    def on_packet(self, ctx: HookContext, direction: Direction, packet: bytes) -> None:
        self.seen.append((self.name, direction.value, packet))

    def on_close(self, ctx: HookContext) -> None:
        self.seen.append((self.name, "close", b""))


class AsyncLog(Log):
    async def on_packet(  # type: ignore[override]
        self, ctx: HookContext, direction: Direction, packet: bytes
    ) -> None:
        await asyncio.sleep(0)
        super().on_packet(ctx, direction, packet)


class LateLog(Log):
    """Plain method; returns a coroutine for packets that start with b"late"."""

    def on_packet(self, ctx: HookContext, direction: Direction, packet: bytes) -> Any:
        if packet.startswith(b"late"):
            return self._later(ctx, direction, packet)
        return super().on_packet(ctx, direction, packet)

    async def _later(self, ctx: HookContext, direction: Direction, packet: bytes) -> None:
        await asyncio.sleep(0.01)
        super().on_packet(ctx, direction, packet)


class Harness:
    """A dispatcher with its spawned tasks and pause events recorded."""

    def __init__(self, hooks: list[ProtocolHook], *, block: bool = False, limit: int = 100):
        self.tasks: list[asyncio.Task[None]] = []
        self.events: list[str] = []
        self.stats = HookStats()
        self.dispatcher = Dispatcher(
            CTX,
            hooks,
            self.stats,
            block=block,
            on_full=lambda: self.events.append("full"),
            on_drained=lambda: self.events.append("drained"),
            spawn=self.spawn,
            limit=limit,
        )

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.append(task)
        return task

    async def settle(self) -> None:
        for _ in range(5):
            await asyncio.sleep(0)
        if self.tasks:
            await asyncio.wait_for(asyncio.gather(*self.tasks), 5)


def test_a_hook_is_async_when_either_method_is_a_coroutine() -> None:
    class CloseOnly(ProtocolHook):
        async def on_close(self, ctx: HookContext) -> None:
            return None

    async def fn(ctx: HookContext, direction: Direction, packet: bytes) -> None:
        return None

    assert not is_async_hook(ProtocolHook())
    assert is_async_hook(CloseOnly())
    assert is_async_hook(define_hook("a", fn))
    assert not is_async_hook(define_hook("p", lambda ctx, d, p: None))


async def test_plain_hooks_are_called_at_once_in_order_then_closed_once() -> None:
    seen: list[tuple[str, str, bytes]] = []
    h = Harness([Log("a", seen), Log("b", seen)], limit=1)
    h.dispatcher.push(IN, b"1")
    assert seen == [("a", "inbound", b"1"), ("b", "inbound", b"1")]
    h.dispatcher.push(OUT, b"2")
    h.dispatcher.push(IN, b"3")
    h.dispatcher.end()
    assert h.tasks == []
    assert h.dispatcher.dropped == 0, "plain hooks never fall behind, whatever the limit"
    assert seen == [
        ("a", "inbound", b"1"),
        ("b", "inbound", b"1"),
        ("a", "outbound", b"2"),
        ("b", "outbound", b"2"),
        ("a", "inbound", b"3"),
        ("b", "inbound", b"3"),
        ("a", "close", b""),
        ("b", "close", b""),
    ]
    h.dispatcher.push(IN, b"after")  # a read racing the close: not delivered
    h.dispatcher.end()
    await h.settle()
    assert seen[-1] == ("b", "close", b"")
    assert len(seen) == 8
    assert h.stats["a"].packets == 3 and h.stats["a"].bytes == 3


async def test_a_coroutine_hook_gets_one_task_and_the_same_order() -> None:
    seen: list[tuple[str, str, bytes]] = []
    h = Harness([Log("a", seen), AsyncLog("b", seen)])
    for i in range(5):
        h.dispatcher.push(IN if i % 2 else OUT, b"%d" % i)
    h.dispatcher.end()
    await h.settle()
    assert len(h.tasks) == 1
    assert [(n, p) for n, _, p in seen] == [
        *[(name, b"%d" % i) for i in range(5) for name in ("a", "b")],
        ("a", b""),
        ("b", b""),
    ]


async def test_a_plain_hook_returning_an_awaitable_moves_to_a_task_without_reordering() -> None:
    seen: list[tuple[str, str, bytes]] = []
    h = Harness([LateLog("a", seen), Log("b", seen)], limit=1 << 20)
    for packet in (b"p1", b"late2", b"p3", b"late4", b"p5"):
        h.dispatcher.push(IN, packet)
    await asyncio.sleep(0)  # the first drain ran and hit the awaitable
    h.dispatcher.push(OUT, b"p6")
    h.dispatcher.end()
    await h.settle()
    packets = [b"p1", b"late2", b"p3", b"late4", b"p5", b"p6"]
    assert [(n, p) for n, _, p in seen] == [
        *[(name, p) for p in packets for name in ("a", "b")],
        ("a", b""),
        ("b", b""),
    ]
    assert h.stats["b"].packets == 6


async def test_drop_mode_drops_past_the_limit_and_counts() -> None:
    seen: list[tuple[str, str, bytes]] = []
    h = Harness([AsyncLog("a", seen)], limit=10)
    for _ in range(5):
        h.dispatcher.push(IN, b"x" * 4)  # 4, 8 fit; 12 does not
    h.dispatcher.end()
    await h.settle()
    assert [p for _, _, p in seen if p] == [b"xxxx", b"xxxx"]
    assert h.dispatcher.dropped == 3
    assert (h.stats["a"].dropped_packets, h.stats["a"].dropped_bytes) == (3, 12)


async def test_block_mode_keeps_everything_and_pauses_until_half_drained() -> None:
    seen: list[tuple[str, str, bytes]] = []
    h = Harness([AsyncLog("a", seen)], block=True, limit=10)
    for _ in range(5):
        h.dispatcher.push(IN, b"x" * 4)
    assert h.events == ["full"]
    h.dispatcher.end()
    await h.settle()
    assert len([p for _, _, p in seen if p]) == 5
    assert h.events == ["full", "drained"]
    assert h.dispatcher.dropped == 0


@pytest.mark.parametrize("hook", [Log, AsyncLog])
async def test_a_finished_dispatcher_does_not_keep_its_connection_alive(hook: type[Log]) -> None:
    class Connection:
        def paused(self) -> None: ...

    owner = Connection()
    gone = weakref.ref(owner)
    tasks: list[asyncio.Task[None]] = []
    gc.disable()
    try:
        owner.hooks = Dispatcher(  # type: ignore[attr-defined]
            CTX,
            [hook("a", [])],
            HookStats(),
            block=False,
            on_full=owner.paused,
            on_drained=owner.paused,
            spawn=lambda coro: tasks.append(asyncio.get_running_loop().create_task(coro)),
        )
        owner.hooks.push(IN, b"data")  # type: ignore[attr-defined]
        owner.hooks.end()  # type: ignore[attr-defined]
        for _ in range(5):
            await asyncio.sleep(0)
        tasks.clear()
        del owner
        assert gone() is None, "freed by reference counting, not left to the GC"
    finally:
        gc.enable()


class Faulty(Log):
    """Raises on packets that start with b"bad", and in on_close."""

    def on_packet(self, ctx: HookContext, direction: Direction, packet: bytes) -> Any:
        if packet.startswith(b"bad"):
            raise ValueError(f"{self.name} cannot take {packet!r}")
        return super().on_packet(ctx, direction, packet)

    def on_close(self, ctx: HookContext) -> None:
        raise ValueError(f"{self.name} cannot close")


class AsyncFaulty(Faulty):
    async def on_packet(  # type: ignore[override]
        self, ctx: HookContext, direction: Direction, packet: bytes
    ) -> None:
        await asyncio.sleep(0)
        super().on_packet(ctx, direction, packet)

    async def on_close(self, ctx: HookContext) -> None:  # type: ignore[override]
        await asyncio.sleep(0)
        super().on_close(ctx)


class LateFaulty(Faulty):
    """Plain; returns a coroutine that raises for packets that start with b"late"."""

    def on_packet(self, ctx: HookContext, direction: Direction, packet: bytes) -> Any:
        if packet.startswith(b"late"):
            return self._later(packet)
        return super().on_packet(ctx, direction, packet)

    async def _later(self, packet: bytes) -> None:
        await asyncio.sleep(0)
        raise ValueError(f"{self.name} cannot take {packet!r} later")

    def on_close(self, ctx: HookContext) -> Any:
        return self._close_later()

    async def _close_later(self) -> None:
        await asyncio.sleep(0)
        raise ValueError(f"{self.name} cannot close later")


@pytest.mark.parametrize("faulty", [Faulty, AsyncFaulty, LateFaulty])
async def test_a_hook_that_raises_is_counted_logged_and_keeps_receiving(
    faulty: type[Faulty], caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[tuple[str, str, bytes]] = []
    name = f"f-{faulty.__name__}"
    h = Harness([faulty(name, seen), Log("ok", seen)], limit=1 << 20)
    caplog.set_level(logging.ERROR, "refractium.hooks.dispatch")
    packets = [b"one", b"bad", b"late", b"two"]
    for packet in packets:
        h.dispatcher.push(IN, packet)
    h.dispatcher.end()
    await h.settle()
    failing = [b"bad", b"late"] if faulty is LateFaulty else [b"bad"]
    assert [p for n, _, p in seen if n == name] == [p for p in packets if p not in failing]
    assert [p for n, _, p in seen if n == "ok"] == [*packets, b""], "the other hook misses nothing"
    assert h.stats[name].errors == len(failing) + 1  # the packets and on_close
    assert h.stats[name].packets == 4 and h.stats["ok"].errors == 0
    messages = [r.getMessage() for r in caplog.records]
    assert messages.count(
        f"[0000000000000007] hook {name} raised in on_packet (it keeps receiving packets)"
    ) == len(failing)
    assert f"[0000000000000007] hook {name} raised in on_close" in messages[-1]
    assert f"ValueError: {name} cannot take b'bad'" in caplog.text  # with the traceback


async def test_an_awaitable_a_plain_on_close_returns_is_awaited_and_its_failure_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: list[tuple[str, str, bytes]] = []
    h = Harness([LateFaulty("late-close", seen), Log("ok", seen)])
    caplog.set_level(logging.ERROR, "refractium.hooks.dispatch")
    h.dispatcher.push(IN, b"one")
    h.dispatcher.end()
    assert len(h.tasks) == 1, "the plain hooks were closed at once; the awaitable got a task"
    await h.settle()
    assert seen == [
        ("late-close", "inbound", b"one"),
        ("ok", "inbound", b"one"),
        ("ok", "close", b""),
    ]
    assert h.stats["late-close"].errors == 1
    assert "ValueError: late-close cannot close later" in caplog.text

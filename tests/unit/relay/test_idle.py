"""The idle sweep: one timer for every watched connection, no work per chunk."""

from __future__ import annotations

import asyncio

from refractium.relay.idle import IdleWatch


class Conn:
    def __init__(self) -> None:
        self.packets_in = self.packets_out = 0
        self.idled: list[float] = []

    def idle_out(self, idle_s: float) -> None:
        self.idled.append(idle_s)


async def test_a_connection_that_moves_survives_and_a_still_one_is_closed() -> None:
    watch = IdleWatch(asyncio.get_running_loop())
    still, busy = Conn(), Conn()
    watch.watch(still, 0.2)
    watch.watch(busy, 0.2)
    for _ in range(8):  # 0.4 s: twice the timeout
        await asyncio.sleep(0.05)
        busy.packets_in += 1
    assert len(still.idled) == 1 and 0.2 <= still.idled[0] < 0.35
    assert busy.idled == []
    assert len(watch) == 1  # the closed one is forgotten
    busy.packets_out += 0  # nothing moves from now on
    await asyncio.sleep(0.35)
    assert len(busy.idled) == 1
    assert watch._sweep is None, "no timer once nothing is watched"


async def test_a_forgotten_connection_is_never_closed() -> None:
    watch = IdleWatch(asyncio.get_running_loop())
    conn = Conn()
    watch.watch(conn, 0.1)
    watch.forget(conn)
    await asyncio.sleep(0.25)
    assert conn.idled == []
    watch.stop()


async def test_each_connection_has_its_own_timeout() -> None:
    watch = IdleWatch(asyncio.get_running_loop())
    short, long = Conn(), Conn()
    watch.watch(short, 0.1)
    watch.watch(long, 5.0)
    await asyncio.sleep(0.3)
    assert short.idled and not long.idled
    watch.stop()

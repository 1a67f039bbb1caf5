"""RedisLink against a port where Redis is not: backoff, one warning, no exception."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time

import pytest

from refractium.fleet.link import RedisLink


async def test_backoff_and_one_warning_while_redis_is_away(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A listener that takes each connection and closes it: every attempt fails
    # at once, and each one is seen (a refused port would show none).
    attempts: list[float] = []

    def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        attempts.append(time.monotonic())
        writer.close()

    server = await asyncio.start_server(accepted, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    link = RedisLink(f"redis://:secret@127.0.0.1:{port}/0", "test:")
    caplog.set_level(logging.WARNING, logger="refractium.fleet.link")
    runner = asyncio.get_running_loop().create_task(link.run())
    try:
        await asyncio.sleep(3.4)
        assert not link.up
        assert link.client is None
        assert not runner.done()  # nothing escaped
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        await link.close()
        server.close()
        await server.wait_closed()
    # Attempts at 0, 0.1, 0.3, 0.7, 1.5 and 3.1 s: each wait twice the one before.
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    assert len(attempts) == 6, gaps
    for gap, want in zip(gaps, (0.1, 0.2, 0.4, 0.8, 1.6), strict=True):
        assert want * 0.9 < gap < want + 0.15, gaps
    warnings = [r for r in caplog.records if r.name == "refractium.fleet.link"]
    assert len(warnings) == 1  # one per 30 s, however many attempts
    message = warnings[0].getMessage()
    assert message.startswith(f"Redis at redis://127.0.0.1:{port}/0 unreachable (")
    assert "secret" not in message

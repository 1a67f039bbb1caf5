"""Backend health: active checks against loopback sockets, passive marking, reconfiguration.

Intervals are tens of milliseconds; assertions about *when* a state changes
count checks (through a wrapper around :func:`refractium.health.probe`)
rather than measure time, and every wait is bounded loosely.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest

from refractium.addr import Address
from refractium.backends import health
from refractium.backends.health import HealthChecker, probe
from refractium.config import HealthCheck

FAST = HealthCheck(interval_ms=20, timeout_ms=200, rise=2, fall=3)
LOOPBACK = "127.0.0.1"


# -- helpers --------------------------------------------------------------------


async def wait_for(condition: Callable[[], bool], timeout: float = 3.0) -> None:
    """Poll ``condition`` until true; fail the test after ``timeout`` seconds."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.005)


def health_tasks() -> set[asyncio.Task[object]]:
    return {t for t in asyncio.all_tasks() if t.get_name().startswith("health-check")}


@pytest.fixture
def closed_port() -> Iterator[socket.socket]:
    """A socket bound to a loopback port but not listening: connecting is refused.

    Calling ``listen()`` on it later brings a listener up on the same port.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((LOOPBACK, 0))
    sock.setblocking(False)
    yield sock
    sock.close()


def address_of(sock: socket.socket) -> Address:
    return Address(LOOPBACK, sock.getsockname()[1])


async def serve(
    handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
    sock: socket.socket | None = None,
) -> asyncio.Server:
    if sock is not None:
        return await asyncio.start_server(handler, sock=sock)
    return await asyncio.start_server(handler, LOOPBACK, 0)


def server_address(server: asyncio.Server) -> Address:
    return Address(LOOPBACK, server.sockets[0].getsockname()[1])


async def accept_and_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.close()


async def ping_pong(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        if await reader.readexactly(4) == b"PING":
            writer.write(b"+PONG\r\n")
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def wrong_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        await reader.readexactly(4)
        writer.write(b"-ERR unknown command\r\n")
        await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        await reader.read()  # until the checker gives up and hangs up
    except ConnectionError:
        pass
    finally:
        writer.close()


@pytest.fixture
async def listener() -> AsyncIterator[asyncio.Server]:
    server = await serve(accept_and_close)
    yield server
    server.close()
    await server.wait_closed()


class Recorder:
    """Wraps :func:`probe`: records ``(is_up before the check, result)`` per check."""

    def __init__(self, checker: HealthChecker, address: Address) -> None:
        self.checker = checker
        self.address = address
        self.calls: list[tuple[bool, str | None]] = []
        self.real = probe

    async def __call__(self, address: Address, check: HealthCheck) -> str | None:
        before = self.checker.is_up(self.address)
        result = await self.real(address, check)
        if address == self.address:
            self.calls.append((before, result))
        return result


@pytest.fixture
async def checker() -> AsyncIterator[HealthChecker]:
    hc = HealthChecker()
    yield hc
    await hc.close()


# -- probe ----------------------------------------------------------------------


async def test_probe_connect_only(listener: asyncio.Server) -> None:
    assert await probe(server_address(listener), FAST) is None


async def test_probe_refused(closed_port: socket.socket) -> None:
    assert await probe(address_of(closed_port), FAST) == "connection refused"


async def test_probe_send_expect() -> None:
    check = HealthCheck(timeout_ms=500, send=b"PING", expect=b"PONG")
    good = await serve(ping_pong)
    bad = await serve(wrong_answer)
    try:
        assert await probe(server_address(good), check) is None
        assert await probe(server_address(bad), check) == "expect not seen"
    finally:
        for server in (good, bad):
            server.close()
            await server.wait_closed()


async def test_probe_expect_times_out() -> None:
    server = await serve(silent)
    check = HealthCheck(timeout_ms=50, send=b"PING", expect=b"PONG")
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert await probe(server_address(server), check) == "timed out"
        assert loop.time() - started < 2.0
    finally:
        server.close()
        await server.wait_closed()


async def test_probe_expect_reads_a_bounded_amount() -> None:
    async def chatty(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                writer.write(b"x" * 1024)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    server = await serve(chatty)
    try:
        result = await probe(server_address(server), HealthCheck(timeout_ms=2000, expect=b"OK"))
        assert result == "expect not seen"
    finally:
        server.close()
        await server.wait_closed()


# -- active checks ------------------------------------------------------------------


async def test_unknown_addresses_are_up(checker: HealthChecker) -> None:
    assert checker.is_up(Address(LOOPBACK, 1))
    checker.report_failure(Address(LOOPBACK, 1), "connection refused")
    assert checker.is_up(Address(LOOPBACK, 1))
    assert checker.snapshot() == {}


async def test_starts_up_and_a_listening_backend_stays_up(
    checker: HealthChecker, listener: asyncio.Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    address = server_address(listener)
    recorder = Recorder(checker, address)
    monkeypatch.setattr(health, "probe", recorder)
    checker.configure({address: FAST})
    assert checker.is_up(address)
    assert checker.snapshot() == {address: True}
    await wait_for(lambda: len(recorder.calls) >= 5)
    assert recorder.calls[:5] == [(True, None)] * 5
    assert checker.is_up(address)


async def test_closed_port_goes_down_after_fall_and_back_after_rise(
    checker: HealthChecker,
    closed_port: socket.socket,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="refractium.backends.health")
    address = address_of(closed_port)
    recorder = Recorder(checker, address)
    monkeypatch.setattr(health, "probe", recorder)
    checker.configure({address: FAST})

    await wait_for(lambda: len(recorder.calls) >= FAST.fall + 1)
    # Up while the first `fall` checks ran, down right after the last of them.
    assert recorder.calls[: FAST.fall] == [(True, "connection refused")] * FAST.fall
    assert recorder.calls[FAST.fall][0] is False
    assert not checker.is_up(address)
    assert checker.snapshot() == {address: False}

    # The service comes back on the same port.
    closed_port.listen()
    server = await serve(accept_and_close, closed_port)
    try:
        await wait_for(lambda: checker.is_up(address))
        passed = [before for before, result in recorder.calls if result is None]
        # Still down while the first `rise` successful checks ran.
        assert passed[: FAST.rise] == [False] * FAST.rise
        assert checker.snapshot() == {address: True}
    finally:
        server.close()
        await server.wait_closed()

    messages = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert messages == [
        (logging.WARNING, f"backend {address} down: connection refused (3 consecutive failures)"),
        (logging.INFO, f"backend {address} up again (2 checks passed)"),
    ]


async def test_send_expect_up(checker: HealthChecker) -> None:
    server = await serve(ping_pong)
    address = server_address(server)
    try:
        checker.configure({address: HealthCheck(20, 500, 1, 1, send=b"PING", expect=b"PONG")})
        await asyncio.sleep(0.2)
        assert checker.is_up(address)
    finally:
        server.close()
        await server.wait_closed()


async def test_send_expect_wrong_answer_goes_down(
    checker: HealthChecker, caplog: pytest.LogCaptureFixture
) -> None:
    server = await serve(wrong_answer)
    address = server_address(server)
    try:
        checker.configure({address: HealthCheck(20, 500, 1, 2, send=b"PING", expect=b"PONG")})
        with caplog.at_level(logging.WARNING, logger="refractium.backends.health"):
            await wait_for(lambda: not checker.is_up(address))
            await asyncio.sleep(0.1)  # more failed checks: no more log lines
    finally:
        server.close()
        await server.wait_closed()
    [record] = [r for r in caplog.records if r.name == "refractium.backends.health"]
    assert record.levelno == logging.WARNING
    assert str(address) in record.getMessage()
    assert "expect not seen" in record.getMessage()


async def test_expect_never_answered_times_out(
    checker: HealthChecker, caplog: pytest.LogCaptureFixture
) -> None:
    server = await serve(silent)
    address = server_address(server)
    try:
        checker.configure({address: HealthCheck(20, 40, 1, 1, send=b"PING", expect=b"PONG")})
        with caplog.at_level(logging.WARNING, logger="refractium.backends.health"):
            await wait_for(lambda: not checker.is_up(address))
    finally:
        server.close()
        await server.wait_closed()
    assert "timed out" in caplog.records[0].getMessage()


async def test_check_bug_is_logged_and_checking_goes_on(
    checker: HealthChecker,
    listener: asyncio.Server,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls = 0

    async def buggy(address: Address, check: HealthCheck) -> str | None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("boom")
        return await probe(address, check)

    monkeypatch.setattr(health, "probe", buggy)
    address = server_address(listener)
    with caplog.at_level(logging.ERROR, logger="refractium.backends.health"):
        checker.configure({address: FAST})
        await wait_for(lambda: calls >= 3)
    assert checker.is_up(address)
    [record] = [r for r in caplog.records if r.name == "refractium.backends.health"]
    assert record.exc_info is not None and isinstance(record.exc_info[1], RuntimeError)
    assert str(address) in record.getMessage()
    assert all(not task.done() for task in health_tasks())


# -- passive marking ------------------------------------------------------------------


async def test_passive_failure_without_check_is_down_then_retried(
    checker: HealthChecker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="refractium.backends.health")
    address = Address(LOOPBACK, 9)
    checker.configure({address: None}, passive_retry_ms=100)
    assert not health_tasks()

    checker.report_failure(address, "connection refused")
    assert not checker.is_up(address)
    assert checker.snapshot() == {address: False}

    await wait_for(lambda: checker.is_up(address))  # half-open after the retry period
    assert checker.snapshot() == {address: False}  # but not known healthy yet

    checker.report_failure(address, "connection refused")  # the try failed
    assert not checker.is_up(address)
    await wait_for(lambda: checker.is_up(address))
    checker.report_success(address)  # this try worked
    assert checker.is_up(address)
    assert checker.snapshot() == {address: True}

    messages = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert messages == [
        (
            logging.WARNING,
            f"backend {address} down: connection refused (dial failed; retry in 0.1s)",
        ),
        (logging.INFO, f"backend {address} up again (dial succeeded)"),
    ]


async def test_passive_failure_stays_down_within_retry_period(checker: HealthChecker) -> None:
    address = Address(LOOPBACK, 9)
    checker.configure({address: None}, passive_retry_ms=60_000)
    checker.report_failure(address, "timed out")
    checker.report_failure(address, "timed out")
    await asyncio.sleep(0.05)
    assert not checker.is_up(address)


async def test_passive_failures_with_check_count_toward_fall(
    checker: HealthChecker, listener: asyncio.Server
) -> None:
    address = server_address(listener)
    checker.configure({address: FAST}, passive_retry_ms=10)
    for _ in range(FAST.fall - 1):
        checker.report_failure(address, "connection refused")
    assert checker.is_up(address)
    checker.report_failure(address, "connection refused")
    assert not checker.is_up(address)
    # A dial success does not bring a checked backend back, nor does the passive retry...
    checker.report_success(address)
    assert not checker.is_up(address)
    assert checker.snapshot() == {address: False}
    # ...its check does (the listener is there).
    await wait_for(lambda: checker.is_up(address))


async def test_passive_success_resets_the_fall_count(checker: HealthChecker) -> None:
    address = Address(LOOPBACK, 9)
    checker.configure({address: HealthCheck(interval_ms=600_000, fall=2)})
    checker.report_failure(address, "connection refused")
    checker.report_success(address)
    checker.report_failure(address, "connection refused")
    assert checker.is_up(address)


# -- configure and close ----------------------------------------------------------------


async def test_configure_keeps_staying_backends_and_forgets_removed(
    checker: HealthChecker, listener: asyncio.Server, closed_port: socket.socket
) -> None:
    passive = Address(LOOPBACK, 9)
    checked = server_address(listener)
    dead = address_of(closed_port)
    checker.configure({passive: None, checked: FAST, dead: FAST}, passive_retry_ms=60_000)
    checker.report_failure(passive, "connection refused")
    await wait_for(lambda: not checker.is_up(dead))
    tasks = health_tasks()
    assert len(tasks) == 2

    # Same configuration again: nothing restarts, nothing changes.
    checker.configure({passive: None, checked: FAST, dead: FAST}, passive_retry_ms=60_000)
    assert health_tasks() == tasks
    assert checker.snapshot() == {passive: False, checked: True, dead: False}

    # A reload that keeps `passive` and `dead`, drops `checked`, adds `fresh`.
    fresh = Address(LOOPBACK, 10)
    checker.configure({passive: None, dead: FAST, fresh: None}, passive_retry_ms=60_000)
    assert checker.snapshot() == {passive: False, dead: False, fresh: True}
    assert not checker.is_up(passive)
    assert not checker.is_up(dead)
    assert checker.is_up(checked)  # unknown again
    await wait_for(lambda: len(health_tasks()) == 1)
    [remaining] = health_tasks()
    assert remaining.get_name() == f"health-check {dead}"

    # Everything removed: no task left.
    checker.configure({})
    assert checker.snapshot() == {}
    assert checker.is_up(dead)
    await wait_for(lambda: not health_tasks())


async def test_changed_check_restarts_and_keeps_state(
    checker: HealthChecker, closed_port: socket.socket
) -> None:
    dead = address_of(closed_port)
    checker.configure({dead: FAST}, passive_retry_ms=60_000)
    await wait_for(lambda: not checker.is_up(dead))
    [old_task] = health_tasks()

    checker.configure({dead: HealthCheck(interval_ms=30, timeout_ms=200)}, passive_retry_ms=60_000)
    assert not checker.is_up(dead)
    await wait_for(lambda: old_task.done())
    assert len(health_tasks()) == 1

    # No check any more: still down, now under the passive retry rule.
    checker.configure({dead: None}, passive_retry_ms=50)
    assert not checker.is_up(dead)
    await wait_for(lambda: not health_tasks())
    await wait_for(lambda: checker.is_up(dead))


async def test_close_cancels_everything(closed_port: socket.socket) -> None:
    checker = HealthChecker()
    addresses = {Address(LOOPBACK, 20000 + n): FAST for n in range(5)}
    addresses[address_of(closed_port)] = FAST
    checker.configure(addresses)
    assert len(health_tasks()) == 6
    await asyncio.sleep(0.05)
    await checker.close()
    assert not health_tasks()
    await checker.close()  # idempotent
    with pytest.raises(RuntimeError):
        checker.configure(addresses)


async def test_first_checks_are_spread_over_the_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    loop = asyncio.get_running_loop()
    started: list[float] = []

    async def instant(address: Address, check: HealthCheck) -> str | None:
        started.append(loop.time())
        return None

    monkeypatch.setattr(health, "probe", instant)
    checker = HealthChecker()
    origin = loop.time()
    checker.configure({Address(LOOPBACK, 20000 + n): HealthCheck(500) for n in range(20)})
    try:
        await wait_for(lambda: len(started) >= 20)
    finally:
        await checker.close()
    offsets = sorted(t - origin for t in started[:20])
    assert offsets[-1] < 1.0  # each within (about) one interval
    assert offsets[-1] - offsets[0] > 0.05  # not all at once

"""Mirror: what a mirror receiver gets, and that a slow or absent one costs nothing.

Real loopback sockets throughout. The hook is called directly, as the
dispatcher does (``on_packet`` per chunk, then ``on_close``), from the test's
task. Every wait is bounded; speed is asserted loosely (per call, well
above what a non-blocking write costs, far below any network timeout).
"""

from __future__ import annotations

import asyncio
import re
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from refractium.config import HookSpec
from refractium.errors import HookLoadError
from refractium.hooks import Direction, HookContext
from refractium.hooks import mirror as mirror_module
from refractium.hooks.loader import load_hook
from refractium.hooks.mirror import Mirror

IN, OUT = Direction.INBOUND, Direction.OUTBOUND
LOOPBACK = "127.0.0.1"


def ctx(session_id: int = 0xC0FFEE) -> HookContext:
    return HookContext(client_addr=("192.0.2.7", 40000), protocol="http", session_id=session_id)


async def wait_for(condition: Callable[[], bool], timeout: float = 3.0) -> None:
    """Poll ``condition`` until true; fail the test after ``timeout`` seconds."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.005)


def mirror_tasks() -> set[asyncio.Task[Any]]:
    return {t for t in asyncio.all_tasks() if t.get_name().startswith("mirror-connect")}


async def assert_all_gone(hook: Mirror) -> None:
    """Nothing of any session is left: no state, no task, no socket."""
    await wait_for(lambda: hook.open_connections == 0 and not hook._tasks and not mirror_tasks())
    assert hook._sessions == {}
    assert hook._live == set()
    assert hook._tasks == set()
    assert hook.active_sessions == 0


class Receiver:
    """A mirror receiver: one bytearray per accepted connection, in accept order."""

    def __init__(self) -> None:
        self.streams: list[bytearray] = []
        self.ended = 0  # connections that reached end of stream
        self.server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[Any]] = set()

    @property
    def to(self) -> str:
        assert self.server is not None
        return f"{LOOPBACK}:{self.server.sockets[0].getsockname()[1]}"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        data = bytearray()
        self.streams.append(data)
        try:
            while chunk := await reader.read(65536):
                data += chunk
            self.ended += 1
        finally:
            writer.close()
            self._handlers.discard(task)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    rec.server = await asyncio.start_server(rec.handle, LOOPBACK, 0)
    yield rec
    rec.server.close()
    await rec.server.wait_closed()
    for task in list(rec._handlers):
        task.cancel()
    await asyncio.sleep(0)


@pytest.fixture
def closed_port() -> Iterator[str]:
    """A loopback port with nothing listening: connecting is refused."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((LOOPBACK, 0))
    yield f"{LOOPBACK}:{sock.getsockname()[1]}"
    sock.close()


@pytest.fixture
async def black_hole() -> AsyncIterator[str]:
    """A port whose accept queue is full: a SYN gets no answer, connecting hangs."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind((LOOPBACK, 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(3):
        filler = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        filler.setblocking(False)
        filler.connect_ex((LOOPBACK, port))
        fillers.append(filler)
    await asyncio.sleep(0.05)
    yield f"{LOOPBACK}:{port}"
    for sock in (*fillers, listener):
        sock.close()


@pytest.fixture
async def hooks() -> AsyncIterator[list[Mirror]]:
    """Mirrors a test made, closed at its end (even when it fails)."""
    made: list[Mirror] = []
    yield made
    for hook in made:
        await hook.aclose()


def make(hooks: list[Mirror], to: str, **kwargs: Any) -> Mirror:
    hook = Mirror(to, **kwargs)
    hooks.append(hook)
    return hook


EXCHANGE = [
    (IN, b"GET / HTTP/1.1\r\n"),
    (OUT, b"HTTP/1.1 200 OK\r\n"),
    (IN, b"Host: example.org\r\n\r\n"),
    (OUT, b"\r\nbody\x00\xff"),
    (IN, b"second request"),
]


# -- what the receiver gets -------------------------------------------------------


@pytest.mark.parametrize("directions", ["inbound", "outbound", "both"])
async def test_receiver_gets_the_chosen_directions_in_order(
    hooks: list[Mirror], receiver: Receiver, directions: str
) -> None:
    hook = make(hooks, receiver.to, directions=directions)
    chosen = {"inbound": {IN}, "outbound": {OUT}, "both": {IN, OUT}}[directions]
    expected = b"".join(packet for direction, packet in EXCHANGE if direction in chosen)
    for i, (direction, packet) in enumerate(EXCHANGE):
        hook.on_packet(ctx(), direction, packet)
        if i == 1:
            await asyncio.sleep(0.05)  # some before the connection is up, some after
    hook.on_close(ctx())

    await wait_for(lambda: receiver.ended == 1)
    assert receiver.streams == [expected]
    assert hook.stats() == {
        "sessions": 1,
        "mirrored_bytes": len(expected),
        "dropped_bytes": 0,
        "failed_sessions": 0,
        "active_sessions": 0,
        "open_connections": hook.open_connections,
    }
    await assert_all_gone(hook)


async def test_a_connection_per_session(hooks: list[Mirror], receiver: Receiver) -> None:
    hook = make(hooks, receiver.to, directions="inbound")
    for i in range(20):
        for session in range(3):
            hook.on_packet(ctx(session), IN, f"s{session}p{i};".encode())
        await asyncio.sleep(0)
    for session in range(3):
        hook.on_close(ctx(session))
    await wait_for(lambda: receiver.ended == 3)
    assert sorted(receiver.streams) == [
        bytearray(b"".join(f"s{session}p{i};".encode() for i in range(20))) for session in range(3)
    ]
    assert hook.sessions == 3
    await assert_all_gone(hook)


async def test_a_session_without_chosen_packets_opens_nothing(
    hooks: list[Mirror], receiver: Receiver
) -> None:
    hook = make(hooks, receiver.to, directions="inbound")
    hook.on_packet(ctx(), OUT, b"banner")
    hook.on_close(ctx())
    assert hook.sessions == 0
    assert not mirror_tasks()
    await asyncio.sleep(0.05)
    assert receiver.streams == []


async def test_session_closed_while_connecting_still_gets_its_bytes(
    hooks: list[Mirror], receiver: Receiver
) -> None:
    hook = make(hooks, receiver.to)
    hook.on_packet(ctx(), IN, b"quick")
    hook.on_close(ctx())  # before the connect task has even run
    await wait_for(lambda: receiver.ended == 1)
    assert receiver.streams == [bytearray(b"quick")]
    await assert_all_gone(hook)


# -- a mirror that is down or slow -----------------------------------------------------


async def test_refused_mirror_costs_nothing_and_drops_everything(
    hooks: list[Mirror], closed_port: str, caplog: pytest.LogCaptureFixture
) -> None:
    hook = make(hooks, closed_port)
    packet = b"x" * 1000
    started = time.perf_counter()
    for i in range(1000):
        hook.on_packet(ctx(), IN if i % 2 else OUT, packet)
    assert time.perf_counter() - started < 0.5  # ~10 ms unloaded
    await wait_for(lambda: hook.open_connections == 0)  # the refusal has arrived
    assert hook.failed_sessions == 1

    started = time.perf_counter()
    for _ in range(1000):  # no retry per packet: dropped at once
        hook.on_packet(ctx(), IN, packet)
    assert time.perf_counter() - started < 0.25
    assert not mirror_tasks()
    hook.on_close(ctx())

    assert hook.mirrored_bytes == 0
    assert hook.dropped_bytes == 2000 * len(packet)
    assert hook.sessions == 1
    warnings = [r for r in caplog.records if "cannot connect" in r.getMessage()]
    assert len(warnings) == 1
    await assert_all_gone(hook)


async def test_after_a_failure_new_sessions_skip_the_mirror_for_a_while(
    hooks: list[Mirror], closed_port: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    hook = make(hooks, closed_port)
    hook.on_packet(ctx(1), IN, b"a")
    await wait_for(lambda: hook.failed_sessions == 1)
    hook.on_packet(ctx(2), IN, b"bb")  # within the pause: no connect attempt
    assert not mirror_tasks()
    assert hook.failed_sessions == 2
    hook.on_close(ctx(1))
    hook.on_close(ctx(2))
    assert hook.dropped_bytes == 3

    # Once the pause is over, a new session tries again (and doubles the pause).
    monkeypatch.setattr(hook, "_skip_until", 0.0)
    hook.on_packet(ctx(3), IN, b"c")
    assert len(mirror_tasks()) == 1
    await wait_for(lambda: hook.failed_sessions == 3)
    assert hook._backoff == 2 * mirror_module.BACKOFF_MIN_S
    hook.on_close(ctx(3))
    await assert_all_gone(hook)


async def test_connect_timeout(hooks: list[Mirror], black_hole: str) -> None:
    hook = make(hooks, black_hole, connect_timeout_ms=100)
    started = time.perf_counter()
    for _ in range(100):
        hook.on_packet(ctx(), IN, b"y" * 100)
    assert time.perf_counter() - started < 0.25
    await wait_for(lambda: hook.failed_sessions == 1, timeout=2)
    assert 0.09 < time.perf_counter() - started < 1.5
    hook.on_close(ctx())
    assert hook.dropped_bytes == 100 * 100
    await assert_all_gone(hook)


async def test_buffer_while_connecting_is_capped_and_keeps_an_exact_prefix(
    hooks: list[Mirror], receiver: Receiver
) -> None:
    hook = make(hooks, receiver.to, max_buffer=100)
    for part in (b"a" * 60, b"b" * 30, b"c" * 30, b"d" * 5):  # c does not fit: the rest goes
        hook.on_packet(ctx(), IN, part)
    await asyncio.sleep(0.05)
    hook.on_packet(ctx(), IN, b"e" * 5)  # connected by now: still dropped, no hole
    hook.on_close(ctx())
    await wait_for(lambda: receiver.ended == 1)
    assert receiver.streams == [bytearray(b"a" * 60 + b"b" * 30)]
    assert (hook.mirrored_bytes, hook.dropped_bytes, hook.failed_sessions) == (90, 40, 1)
    await assert_all_gone(hook)


@pytest.fixture
async def stuck_receiver() -> AsyncIterator[tuple[str, asyncio.Event]]:
    """A receiver that accepts (with a small receive buffer) and never reads."""
    accepted = asyncio.Event()
    writers: list[asyncio.StreamWriter] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert isinstance(writer.transport, asyncio.ReadTransport)
        writer.transport.pause_reading()
        writers.append(writer)
        accepted.set()

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # inherited by accepted ones
    sock.bind((LOOPBACK, 0))
    server = await asyncio.start_server(handle, sock=sock)
    yield f"{LOOPBACK}:{sock.getsockname()[1]}", accepted
    server.close()
    for writer in writers:
        writer.transport.abort()
    await server.wait_closed()


async def test_receiver_that_never_reads(
    hooks: list[Mirror], stuck_receiver: tuple[str, asyncio.Event]
) -> None:
    to, accepted = stuck_receiver
    cap = 64 * 1024
    hook = make(hooks, to, max_buffer=cap, close_timeout_ms=100)
    packet = b"z" * cap
    hook.on_packet(ctx(), IN, packet)
    await asyncio.wait_for(accepted.wait(), 3)
    stream = hook._sessions[ctx().session_id]
    await wait_for(lambda: stream.transport is not None)

    sent, slowest = 1, 0.0
    while hook.dropped_bytes == 0 and sent < 2000:  # the kernel's buffers fill first
        started = time.perf_counter()
        hook.on_packet(ctx(), IN, packet)
        slowest = max(slowest, time.perf_counter() - started)
        sent += 1
    assert hook.dropped_bytes > 0
    assert hook.failed_sessions == 1
    for _ in range(100):  # and everything after it is dropped, just as fast
        started = time.perf_counter()
        hook.on_packet(ctx(), IN, packet)
        slowest = max(slowest, time.perf_counter() - started)
        sent += 1
    assert slowest < 0.2  # microseconds unloaded; a stuck write would be forever
    assert hook.mirrored_bytes + hook.dropped_bytes == sent * len(packet)

    hook.on_close(ctx())
    # The stuck connection is aborted after close_timeout_ms, not kept forever.
    await assert_all_gone(hook)


async def test_mirror_closing_the_connection_is_not_retried(
    hooks: list[Mirror], caplog: pytest.LogCaptureFixture
) -> None:
    accepts = 0

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal accepts
        accepts += 1
        writer.transport.abort()

    server = await asyncio.start_server(hang_up, LOOPBACK, 0)
    try:
        hook = make(hooks, f"{LOOPBACK}:{server.sockets[0].getsockname()[1]}")
        hook.on_packet(ctx(), IN, b"first")
        await wait_for(lambda: hook.failed_sessions == 1)
        for _ in range(10):
            hook.on_packet(ctx(), IN, b"later")
        hook.on_close(ctx())
        assert accepts == 1
        assert hook.dropped_bytes == 50
        assert any("closed the connection" in r.getMessage() for r in caplog.records)
        await assert_all_gone(hook)
    finally:
        server.close()
        await server.wait_closed()


async def test_replies_and_half_close_from_the_mirror_are_harmless(
    hooks: list[Mirror],
) -> None:
    received = bytearray()
    done = asyncio.Event()

    async def chatty(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"noise" * 10000)
        writer.write_eof()  # it is done talking, not listening
        while chunk := await reader.read(65536):
            received.extend(chunk)
        writer.close()
        done.set()

    server = await asyncio.start_server(chatty, LOOPBACK, 0)
    try:
        hook = make(hooks, f"{LOOPBACK}:{server.sockets[0].getsockname()[1]}")
        hook.on_packet(ctx(), IN, b"one")
        await asyncio.sleep(0.05)
        hook.on_packet(ctx(), IN, b"two")
        hook.on_close(ctx())
        await asyncio.wait_for(done.wait(), 3)
        assert received == b"onetwo"
        assert hook.failed_sessions == 0
        await assert_all_gone(hook)
    finally:
        server.close()
        await server.wait_closed()


# -- shutdown and arguments ----------------------------------------------------------------


async def test_aclose_aborts_everything(
    hooks: list[Mirror], receiver: Receiver, black_hole: str
) -> None:
    open_hook = make(hooks, receiver.to)
    open_hook.on_packet(ctx(1), IN, b"a")
    await wait_for(lambda: len(receiver.streams) == 1)
    hanging = make(hooks, black_hole, connect_timeout_ms=10_000)
    hanging.on_packet(ctx(2), IN, b"b")
    assert len(mirror_tasks()) >= 1

    for hook in (open_hook, hanging):
        await hook.aclose()
    for hook in (open_hook, hanging):
        await assert_all_gone(hook)
    # A closed hook mirrors nothing more, and starts nothing.
    hanging.on_packet(ctx(3), IN, b"cc")
    assert not mirror_tasks()
    assert hanging.dropped_bytes == 3
    hanging.on_close(ctx(3))


async def test_close_from_another_thread_is_handed_to_the_loop(
    hooks: list[Mirror], receiver: Receiver
) -> None:
    hook = make(hooks, receiver.to)
    hook.on_packet(ctx(), IN, b"a")
    await wait_for(lambda: len(receiver.streams) == 1)
    await asyncio.to_thread(hook.close)  # as a shutdown that runs close() in a worker
    await assert_all_gone(hook)
    hook.on_close(ctx())


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"to": 9000}, TypeError, "to must be a 'host:port' string"),
        ({"to": "nohost"}, ValueError, "to = 'nohost': not host:port"),
        ({"to": "h:0"}, ValueError, "port out of range"),
        ({"to": "h:1", "directions": "up"}, ValueError, "directions must be 'inbound'"),
        ({"to": "h:1", "max_buffer": 0}, ValueError, "max_buffer must be at least 1"),
        ({"to": "h:1", "max_buffer": "1M"}, TypeError, "max_buffer must be a whole number"),
        ({"to": "h:1", "connect_timeout_ms": True}, TypeError, "connect_timeout_ms must be"),
        ({"to": "h:1", "close_timeout_ms": -5}, ValueError, "close_timeout_ms must be at"),
        ({"to": "h:1", "direction": "both"}, TypeError, "unexpected keyword argument"),
        ({}, TypeError, "missing 1 required positional argument: 'to'"),
    ],
)
def test_bad_arguments(kwargs: dict[str, Any], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=re.escape(message)):
        Mirror(**kwargs)


def test_loaded_from_the_config() -> None:
    use = "refractium.hooks.mirror:Mirror"
    kwargs = {"to": "[::1]:9000", "directions": "inbound", "max_buffer": 4096}
    hook = load_hook(HookSpec(use, kwargs, key="h"), "r.toml")
    assert isinstance(hook, Mirror)
    assert hook.name == "mirror"
    assert str(hook.target) == "[::1]:9000"
    assert hook.max_buffer == 4096
    with pytest.raises(HookLoadError, match="directions must be"):
        load_hook(HookSpec(use, {"to": "h:1", "directions": "in"}, key="h"), "r.toml")

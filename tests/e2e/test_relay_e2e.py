"""The data path end to end: exact bytes, half-close, limits, draining, loops."""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import socket
import struct
from collections import Counter

import pytest

from tests.kit.backends import echo_backend
from tests.kit.clients import close, exchange, open_nodelay
from tests.kit.proxy import LOCAL_TCP, running_proxy
from tests.kit.sinksource import expected_sha256, sink_source_backend, sink_source_exchange

MiB = 1 << 20
LOOPS = ["uvloop", "asyncio"]


def routes_to(address: str, **server: object) -> str:
    lines = ["[server]"] + [f"{k} = {v!r}".replace("'", '"') for k, v in server.items()]
    lines += ["[[protocols]]", 'name = "bulk"', 'patterns = ["BULK"]', f'forward_to = "{address}"']
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("loop", LOOPS)
async def test_256_mib_each_way_arrives_intact(loop: str) -> None:
    async with sink_source_backend() as backend:
        config = f'[server]\nfallback_tcp = "{backend.address}"\n'
        config += '[[protocols]]\nname = "http"\nforward_to = "127.0.0.1:9"\n'
        async with running_proxy(*LOCAL_TCP, "--loop", loop, config=config) as proxy:
            # The sink/source header is binary: it reaches the backend as fallback
            # traffic, and the client shuts down writing before reading the reply.
            result = await sink_source_exchange(proxy.port, upload=256 * MiB, download=256 * MiB)
            result.check(upload=256 * MiB, download=256 * MiB)


async def test_half_closed_client_gets_the_whole_reply() -> None:
    async with (
        echo_backend() as echo,
        running_proxy(*LOCAL_TCP, config=routes_to(echo.address)) as proxy,
    ):
        payload = b"BULK" + random.randbytes(3 * MiB)
        assert await exchange(proxy.port, payload) == payload


async def test_sixth_connection_from_one_ip_is_refused_while_five_work() -> None:
    async with echo_backend() as echo:
        config = routes_to(echo.address, max_connections_per_ip=5)
        async with running_proxy(*LOCAL_TCP, config=config) as proxy:
            conns = [await open_nodelay(proxy.port) for _ in range(5)]
            for i, (reader, writer) in enumerate(conns):
                writer.write(b"BULK %d\n" % i)
                async with asyncio.timeout(5):
                    assert await reader.readline() == b"BULK %d\n" % i
            reader, writer = await open_nodelay(proxy.port)
            writer.write(b"BULK 6\n")
            # Closed unanswered: an EOF, or a reset when our bytes were still unread.
            async with asyncio.timeout(5):
                with contextlib.suppress(ConnectionResetError):
                    assert await reader.read() == b""
            await close(writer)
            for i, (reader, writer) in enumerate(conns):
                writer.write(b"still %d\n" % i)
                async with asyncio.timeout(5):
                    assert await reader.readline() == b"still %d\n" % i
            await close(conns[0][1])
            await asyncio.sleep(0.2)
            assert await exchange(proxy.port, b"BULK again") == b"BULK again"
            for _, writer in conns[1:]:
                await close(writer)
            await proxy.wait_for(r"refused 127\.0\.0\.1:\d+: max_connections_per_ip reached")
        assert echo.accepted == 6


async def test_sigterm_lets_a_transfer_in_flight_finish_and_exits_0() -> None:
    async with sink_source_backend() as backend:
        config = f'[server]\nfallback_tcp = "{backend.address}"\nshutdown_grace_ms = 20000\n'
        config += '[[protocols]]\nname = "http"\nforward_to = "127.0.0.1:9"\n'
        async with running_proxy(*LOCAL_TCP, config=config) as proxy:
            size = 64 * MiB
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            writer.write(struct.pack(">Q", size) + b"u" * MiB)
            first = await reader.readexactly(MiB)
            proxy.send_signal(signal.SIGTERM)
            await proxy.wait_for("draining 1 connection")
            # New connections are no longer accepted...
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection(("127.0.0.1", proxy.port), timeout=2).close()
            # ...while the one in flight completes, both ways.
            writer.write(b"u" * MiB)
            writer.write_eof()
            rest = await reader.read()
            await close(writer)
            async with asyncio.timeout(20):
                assert await proxy.proc.wait() == 0
        data = first + rest
        assert len(data) >= size
        assert expected_sha256(size) == __import__("hashlib").sha256(data[:size]).hexdigest()
        assert data[size:].decode().startswith("sha256=")


@pytest.mark.parametrize("loop", LOOPS)
async def test_half_close_under_load_survives(loop: str) -> None:
    """Thousands of short half-closing connections, some reset mid-reply.

    uvloop has been seen to crash when a transport with a pending write_eof()
    is destroyed; this drives exactly that: the backend writes a large reply
    then EOF while the client resets the connection.
    """

    async def backend(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await reader.read()
            size = int(request.split()[1])
            writer.write(b"x" * size)
            writer.write_eof()
            await writer.drain()
        except (OSError, ValueError, IndexError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(backend, "127.0.0.1", 0)
    address = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    config = f"""
[server]
max_connections_per_ip = 0
max_connections = 10000

[[protocols]]
name = "http"
forward_to = "{address}"
"""
    outcomes: Counter[str] = Counter()
    limit = asyncio.Semaphore(100)

    async def client(mode: str, size: int) -> None:
        async with limit:
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            writer.write(b"GET %d HTTP/1.1\r\n\r\n" % size)
            writer.write_eof()
            if mode == "full":
                got = await reader.read()
                outcomes["full-ok" if len(got) == size else "full-short"] += 1
                await close(writer)
            else:
                await reader.read(random.choice([1, 4096, 65536]))
                sock = writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                writer.transport.abort()
                outcomes["reset"] += 1

    async with (
        server,
        running_proxy(
            *LOCAL_TCP,
            "--loop",
            loop,
            config=config,
        ) as proxy,
    ):
        jobs = [
            client(random.choice(["full", "reset"]), random.choice([10, 100_000, MiB]))
            for _ in range(3000)
        ]
        async with asyncio.timeout(120):
            await asyncio.gather(*jobs)
        assert proxy.proc.returncode is None, "the proxy died under load"
        assert await exchange(proxy.port, b"GET 5 HTTP/1.1\r\n\r\n") == b"xxxxx"
        assert await proxy.stop() == 0
    assert outcomes["full-short"] == 0
    assert outcomes["full-ok"] + outcomes["reset"] == 3000
    assert "Traceback" not in proxy.stderr and "Fatal" not in proxy.stderr, proxy.stderr


async def test_dead_and_silent_backends_fail_over_within_connect_timeout() -> None:
    """A refused dial and a dial that hangs both move on to the next backend."""
    with socket.socket() as refused:
        refused.bind(("127.0.0.1", 0))
        refused_address = f"127.0.0.1:{refused.getsockname()[1]}"  # bound, not listening
    # A listener whose accept queue is full drops further SYNs: dials hang.
    hanging = socket.socket()
    hanging.bind(("127.0.0.1", 0))
    hanging.listen(0)
    fillers = []
    for _ in range(3):
        filler = socket.socket()
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(hanging.getsockname())
        fillers.append(filler)
    hanging_address = f"127.0.0.1:{hanging.getsockname()[1]}"
    try:
        async with echo_backend() as echo:
            config = f"""
[server]
connect_timeout_ms = 300

[[protocols]]
name = "bulk"
patterns = ["BULK"]
forward_to = ["{hanging_address}", "{refused_address}", "{echo.address}"]
"""
            async with running_proxy(*LOCAL_TCP, config=config) as p:
                loop = asyncio.get_running_loop()
                started = loop.time()
                assert await exchange(p.port, b"BULK one") == b"BULK one"
                assert 0.25 < loop.time() - started < 5
                await p.wait_for(f"cannot connect to {hanging_address}: timed out")
                await p.wait_for(f"cannot connect to {refused_address}: .*refused")
    finally:
        for sock in [hanging, *fillers]:
            sock.close()


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1])


@pytest.mark.parametrize("loop", LOOPS)
async def test_a_backend_that_does_not_read_bounds_the_proxy_memory(loop: str) -> None:
    """Flow control: the client is paused, not buffered, while the backend stalls."""
    stalled = asyncio.Event()
    received = 0

    async def backend(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal received
        await stalled.wait()  # read nothing until released
        while chunk := await reader.read(1 << 20):
            received += len(chunk)
        writer.close()

    server = await asyncio.start_server(backend, "127.0.0.1", 0)
    address = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    async with (
        server,
        running_proxy(*LOCAL_TCP, "--loop", loop, config=routes_to(address)) as proxy,
    ):
        before = rss_kib(proxy.proc.pid)
        _, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"BULK")
        total = 4
        block = b"z" * MiB
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(3):  # the client's writes stall: nobody reads
                for _ in range(256):
                    writer.write(block)
                    total += len(block)
                    await writer.drain()
        grown = rss_kib(proxy.proc.pid) - before
        assert total < 64 * MiB, "the client should have been paused"
        assert grown < 16 * 1024, f"proxy grew by {grown} KiB while the backend stalled"
        stalled.set()
        writer.write_eof()
        async with asyncio.timeout(30):
            while received < total:
                await asyncio.sleep(0.05)
        assert received == total
        await close(writer)


@pytest.mark.parametrize("loop", LOOPS)
def test_both_sockets_have_tcp_nodelay(loop: str) -> None:
    """Both event loops set TCP_NODELAY on accepted and dialled sockets; the relay relies on it."""
    import uvloop

    from refractium import Refractium

    async def check() -> list[int]:
        backend = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = backend.sockets[0].getsockname()[1]
        engine = (
            Refractium.builder().bind("127.0.0.1").port(0).route("http", f"127.0.0.1:{port}")
        ).build()
        (_, proxy_port), *_ = await engine.start_tcp()
        _, writer = await asyncio.open_connection("127.0.0.1", proxy_port)
        writer.write(b"GET / HTTP/1.1\r\n")
        conns = engine._tcp.ctx.connections  # type: ignore[union-attr]  # white-box
        async with asyncio.timeout(5):
            while not conns or next(iter(conns)).backend is None:
                await asyncio.sleep(0.01)
        conn = next(iter(conns))
        flags = [
            t.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            for t in (conn.transport, conn.backend)
        ]
        writer.close()
        await engine.shutdown(grace_ms=0)
        backend.close()
        return flags

    factory = uvloop.new_event_loop if loop == "uvloop" else asyncio.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        assert all(runner.run(check()))

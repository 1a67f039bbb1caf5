"""``workers = N > 1``: a supervisor and its worker processes, seen from outside.

Real processes and sockets: the worker processes are found in /proc as the
supervisor's children; which worker holds an accepted connection is read
from /proc too (the socket's inode among the worker's descriptors).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

from tests.kit.backends import HOST, free_port, http_backend
from tests.kit.proxy import RunningProxy, run_cli, running_proxy
from tests.kit.sinksource import sink_source_backend, sink_source_exchange

MiB = 1 << 20


def config(*routes: str, port: int, extra: str = "") -> str:
    return (
        f'[server]\nbind = "{HOST}"\nport = {port}\nworkers = 2\nhot_reload = false\n'
        f"max_connections_per_ip = 0\npeek_timeout_ms = 10000\n{extra}\n" + "".join(routes)
    )


def route(name: str, to: str, extra: str = "") -> str:
    return f'[[protocols]]\nname = "{name}"\nforward_to = "{to}"\n{extra}\n'


# --------------------------------------------------------------------------- /proc


def children(pid: int) -> set[int]:
    """Live (not zombie) processes whose parent is ``pid``."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces, so split after the last ')'.
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if int(ppid) == pid and state != "Z":
            found.add(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def accepted_on(port: int) -> set[str]:
    """Socket inodes of established TCP connections whose local port is ``port``."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, state, inode = fields[1], fields[3], fields[9]
        if state == "01" and int(local.split(":")[1], 16) == port:
            inodes.add(inode)
    return inodes


def sockets_of(pid: int) -> set[str]:
    """Socket inodes among ``pid``'s open descriptors."""
    found = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                found.add(target[8:-1])
    return found


async def until(condition: object, timeout: float, what: str) -> float:
    """Wait until ``condition()`` is true; return how long it took."""
    assert callable(condition)
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{what}: not within {timeout} s")
        await asyncio.sleep(0.05)
    return time.monotonic() - start


# --------------------------------------------------------------------------- clients


async def get(port: int, path: str = "/") -> bytes:
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        async with asyncio.timeout(10):
            return await reader.read()
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def get_many(port: int, count: int, path: str = "/", parallel: int = 20) -> list[bytes]:
    limit = asyncio.Semaphore(parallel)

    async def one() -> bytes:
        async with limit:
            return await get(port, path)

    return await asyncio.gather(*(one() for _ in range(count)))


def body(response: bytes) -> str:
    assert response.startswith(b"HTTP/1.1 200"), response[:80]
    return response.split(b"\r\n\r\n", 1)[1].decode()


@contextlib.asynccontextmanager
async def two_workers(text: str) -> AsyncIterator[tuple[RunningProxy, set[int]]]:
    async with running_proxy("run", config=text) as proxy:
        await proxy.wait_for(r"2 workers listening")
        workers = children(proxy.pid)
        assert len(workers) == 2, workers
        yield proxy, workers


# --------------------------------------------------------------------------- tests


async def test_two_workers_share_the_connections_and_one_admin_api_counts_them() -> None:
    port = free_port()
    admin = free_port()
    async with http_backend("web") as web:
        text = config(
            route("http", web.address), port=port, extra=f'[admin]\nbind = "{HOST}:{admin}"\n'
        )
        async with two_workers(text) as (proxy, workers):
            assert len(proxy.listeners) == 2  # each worker opened its own listener
            await proxy.wait_for(rf"admin API listening on http://{HOST}:{admin}")
            assert proxy.stderr.count("admin API listening") == 1  # the supervisor's only
            status = await admin_json(admin, "/status")
            assert [w["pid"] for w in status["workers"]] == sorted(workers)
            # Hold 200 connections open (the proxy waits for their first bytes)
            # and see which worker accepted each.
            streams = [await asyncio.open_connection(HOST, port) for _ in range(200)]
            await until(lambda: len(accepted_on(port)) == 200, 10, "200 accepted")
            held = accepted_on(port)
            per_worker = {pid: len(sockets_of(pid) & held) for pid in workers}
            assert sum(per_worker.values()) == 200, per_worker
            assert all(count > 0 for count in per_worker.values()), per_worker
            status = await admin_json(admin, "/status")
            assert status["open_connections"] == 200  # the sum over both workers

            async def finish(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
                writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                async with asyncio.timeout(10):
                    data = await reader.read()
                writer.close()
                return data

            answers = await asyncio.gather(*(finish(r, w) for r, w in streams))
            assert [body(answer) for answer in answers] == ["web\n"] * 200
            assert web.accepted == 200
            await until(lambda: not accepted_on(port), 10, "all closed")
            metrics = await admin_get(admin, "/metrics")
            assert "refractium_connections_accepted_total 200.0" in metrics
            assert 'refractium_connections_total{outcome="relayed",route="http"} 200.0' in metrics
            assert "refractium_workers 2.0" in metrics
            assert "refractium_identify_seconds_count 200.0" in metrics
            status = await admin_json(admin, "/status")
            assert status["open_connections"] == 0
            assert status["routes"][0]["backends"] == [
                {"address": web.address, "up": True, "active": 0}
            ]
            # Every worker's RemoteMap, as one.
            remotes = (await admin_json(admin, "/remotes"))["remotes"]
            assert [(r["remote"], r["total"], r["active"]) for r in remotes] == [(HOST, 200, 0)]
            page = await admin_json(admin, "/dashboard.json")
            assert page["totals"]["connections"] == 200
            assert [(r["id"], r["total"]) for r in page["routes"]] == [("http", 200)]


async def test_post_reload_reaches_every_worker_and_a_broken_file_none() -> None:
    port = free_port()
    admin = free_port()
    extra = f'[admin]\nbind = "{HOST}:{admin}"\n'
    async with http_backend("old") as old, http_backend("new") as new:
        first = config(route("http", old.address), port=port, extra=extra)
        async with two_workers(first) as (proxy, _):
            path = Path(proxy.argv[-1])
            added = route("paths", new.address, 'patterns = ["GET /new"]')
            path.write_text(config(added, route("http", old.address), port=port, extra=extra))
            status, answer = await post(admin, "/reload")
            assert (status, answer) == (200, {"reloaded": True, "routes": 2})
            await until(
                lambda: proxy.stderr.count("routes reloaded: 2 route(s)") == 2, 5, "reloads"
            )
            answers = await get_many(port, 30, "/new")
            assert [body(answer) for answer in answers] == ["new\n"] * 30
            ids = [r["id"] for r in (await admin_json(admin, "/status"))["routes"]]
            assert ids == ["paths", "http"]

            path.write_text(config(route("http", "nowhere"), port=port, extra=extra))
            status, answer = await post(admin, "/reload")
            assert status == 400
            assert answer["error"] == (f"{path}: protocols[0].forward_to: not host:port: 'nowhere'")
            answers = await get_many(port, 10, "/new")
            assert [body(answer) for answer in answers] == ["new\n"] * 10
            assert proxy.stderr.count("routes reloaded") == 2


async def post(port: int, path: str) -> tuple[int, dict[str, Any]]:
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        writer.write(f"POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        async with asyncio.timeout(10):
            response = await reader.read()
    finally:
        writer.close()
    head, _, text = response.partition(b"\r\n\r\n")
    document: dict[str, Any] = json.loads(text)
    return int(head.split()[1]), document


async def test_the_per_ip_cap_holds_across_workers() -> None:
    port = free_port()
    admin = free_port()
    async with http_backend("web") as web:
        text = config(
            route("http", web.address), port=port, extra=f'[admin]\nbind = "{HOST}:{admin}"\n'
        )
        text = text.replace("max_connections_per_ip = 0", "max_connections_per_ip = 5")
        async with two_workers(text) as (proxy, workers):
            holders: set[int] = set()
            for attempt in range(20):
                held = [await asyncio.open_connection(HOST, port) for _ in range(5)]
                await until(lambda: len(accepted_on(port)) == 5, 10, "5 accepted")
                open_now = accepted_on(port)
                holders |= {pid for pid in workers if sockets_of(pid) & open_now}
                # Counted by their workers before the 6th comes.
                await until_status(admin, 5)
                reader, writer = await asyncio.open_connection(HOST, port)
                assert await refused(reader), f"attempt {attempt + 1}: the 6th was admitted"
                writer.close()
                # One closes: a new one is admitted, by whichever worker, and relayed.
                held[0][1].close()
                await until_status(admin, 4)
                reader, writer = await asyncio.open_connection(HOST, port)
                writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                async with asyncio.timeout(10):
                    assert body(await reader.read()) == "web\n"
                writer.close()
                for _, w in held[1:]:
                    w.close()
                await until(lambda: not accepted_on(port), 10, "all closed")
                await until_status(admin, 0)
            # The five were spread over both workers in some rounds: a cap per
            # worker would then have let the 6th in.
            assert holders == workers
            metrics = await admin_get(admin, "/metrics")
            assert 'refractium_connections_refused_total{reason="per_ip_limit"} 20.0' in metrics, (
                metrics
            )
        assert proxy.stderr.count("max_connections_per_ip reached") >= 1


async def test_a_killed_workers_connections_no_longer_count() -> None:
    port = free_port()
    admin = free_port()
    async with http_backend("web") as web:
        extra = f'[admin]\nbind = "{HOST}:{admin}"\n'
        text = config(route("http", web.address), port=port, extra=extra)
        text = text.replace("max_connections_per_ip = 0", "max_connections_per_ip = 5")
        async with two_workers(text) as (proxy, workers):
            # Five held, until the kernel has put some on each worker.
            while True:
                held = [await asyncio.open_connection(HOST, port) for _ in range(5)]
                await until_status(admin, 5)
                open_now = accepted_on(port)
                on = {pid: len(sockets_of(pid) & open_now) for pid in workers}
                if all(on.values()):
                    break
                for _, writer in held:
                    writer.close()
                await until_status(admin, 0)
            victim = min(workers)
            os.kill(victim, signal.SIGKILL)
            await proxy.wait_for(rf"worker \d \(pid {victim}\) died")
            # Its connections are gone, and so is their count: as many new ones are admitted.
            await until_status(admin, 5 - on[victim])
            more = [await asyncio.open_connection(HOST, port) for _ in range(on[victim])]
            await until_status(admin, 5)
            reader, writer = await asyncio.open_connection(HOST, port)
            assert await refused(reader)  # and the cap still holds
            writer.close()
            for _, w in held + more:
                w.close()
            await until_status(admin, 0)


async def refused(reader: asyncio.StreamReader) -> bool:
    """Whether the proxy closed this connection without a byte."""
    try:
        async with asyncio.timeout(5):
            return await reader.read(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


async def until_status(admin: int, open_connections: int) -> None:
    async with asyncio.timeout(10):
        while (await admin_json(admin, "/status"))["open_connections"] != open_connections:
            await asyncio.sleep(0.02)


async def admin_get(port: int, path: str) -> str:
    response = await get(port, path)
    assert response.startswith(b"HTTP/1.1 200"), response[:200]
    return response.split(b"\r\n\r\n", 1)[1].decode()


async def admin_json(port: int, path: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(await admin_get(port, path))
    return document


async def test_a_killed_worker_is_replaced_while_the_other_serves() -> None:
    port = free_port()
    async with (
        http_backend("web") as web,
        two_workers(config(route("http", web.address), port=port)) as (
            proxy,
            workers,
        ),
    ):
        victim = min(workers)
        killed = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        # Reaped (all its threads gone, so its listener closed): the supervisor says so.
        await proxy.wait_for(
            rf"worker \d \(pid {victim}\) died: killed by SIGKILL; restarting in 0\.1 s"
        )
        answers = await get_many(port, 100)  # before the replacement listens
        assert [body(answer) for answer in answers] == ["web\n"] * 100
        await until(lambda: len(children(proxy.pid)) == 2, 5, "a replacement")
        assert time.monotonic() - killed < 5
        replacement = children(proxy.pid) - workers
        assert len(replacement) == 1 and victim not in children(proxy.pid)
        await proxy.wait_for(rf"worker \d \(pid {replacement.pop()}\) listening")
        answers = await get_many(port, 100)
        assert [body(answer) for answer in answers] == ["web\n"] * 100
        assert web.accepted == 200


async def test_sighup_reloads_every_worker_and_a_broken_file_changes_nothing() -> None:
    port = free_port()
    async with http_backend("old") as old, http_backend("new") as new:
        first = config(route("http", old.address), port=port)
        async with two_workers(first) as (proxy, _):
            path = Path(proxy.argv[-1])
            added = route("paths", new.address, 'patterns = ["GET /new"]')
            path.write_text(config(added, route("http", old.address), port=port))
            proxy.send_signal(signal.SIGHUP)
            await proxy.wait_for("reload: file is valid; telling 2 worker")
            await until(
                lambda: proxy.stderr.count("routes reloaded: 2 route(s)") == 2, 5, "reloads"
            )
            answers = await get_many(port, 30, "/new")
            assert [body(answer) for answer in answers] == ["new\n"] * 30
            assert new.accepted == 30

            path.write_text(config(route("paths", "nowhere", 'patterns = ["GET /new"]'), port=port))
            proxy.send_signal(signal.SIGHUP)
            await proxy.wait_for("reload failed, keeping the running routes in every worker")
            answers = await get_many(port, 30, "/new")
            assert [body(answer) for answer in answers] == ["new\n"] * 30
            assert [body(answer) for answer in await get_many(port, 10)] == ["old\n"] * 10
            assert proxy.stderr.count("routes reloaded") == 2


class _Echo(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.sources: list[tuple[str, int]] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.sources.append(addr)
        assert self.transport is not None
        self.transport.sendto(data, addr)


def udp_flow(port: int, count: int) -> None:
    """Send ``count`` datagrams from one socket, each answered before the next."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.settimeout(5)
        for n in range(count):
            payload = f"datagram {n}".encode()
            client.sendto(payload, (HOST, port))
            assert client.recvfrom(2048)[0] == payload


async def test_a_udp_flow_stays_on_one_worker() -> None:
    port = free_port()
    loop = asyncio.get_running_loop()
    transport, echo = await loop.create_datagram_endpoint(_Echo, local_addr=(HOST, 0))
    backend = transport.get_extra_info("sockname")[1]
    try:
        text = config(
            route("http", f"{HOST}:9"), port=port, extra=f'fallback_udp = "{HOST}:{backend}"\n'
        )
        async with two_workers(text):
            # A blocking client in a thread: the echo backend runs on this loop.
            await asyncio.to_thread(udp_flow, port, 100)
        assert len(echo.sources) == 100
        assert len(set(echo.sources)) == 1  # one backend-side socket: one worker had the flow
    finally:
        transport.close()


async def test_sigterm_lets_transfers_in_every_worker_finish() -> None:
    port = free_port()
    # Large enough that no worker has finished its share when the test looks (a worker's
    # 8 MiB transfers could all be done within a quarter of a second).
    size = 32 * MiB
    async with sink_source_backend() as backend:
        bulk = route("bulk", backend.address, 'patterns = ["\\\\x00\\\\x00\\\\x00\\\\x00"]')
        text = config(bulk, port=port, extra="shutdown_grace_ms = 60000\n")
        async with two_workers(text) as (proxy, workers):
            transfers = [
                asyncio.ensure_future(sink_source_exchange(port, upload=size, download=size))
                for _ in range(20)
            ]
            await until(lambda: backend.accepted == 20, 20, "20 transfers under way")
            held = accepted_on(port)
            assert all(sockets_of(pid) & held for pid in workers)  # both workers have some
            proxy.send_signal(signal.SIGTERM)
            results = await asyncio.gather(*transfers)
            for result in results:
                result.check(upload=size, download=size)
            async with asyncio.timeout(30):
                assert await proxy.proc.wait() == 0
            await proxy.stop()  # exited already: collects its last lines
        assert "SIGTERM received: stopping 2 worker(s)" in proxy.stderr
        assert proxy.stderr.count("exited: exit status 0") == 2


async def test_workers_do_not_outlive_a_killed_supervisor() -> None:
    port = free_port()
    async with (
        http_backend("web") as web,
        two_workers(config(route("http", web.address), port=port)) as (
            proxy,
            workers,
        ),
    ):
        proxy.send_signal(signal.SIGKILL)
        for pid in workers:
            await until(lambda pid=pid: not alive(pid), 5, f"worker {pid} gone")


async def test_bad_worker_counts_are_one_line_errors(tmp_path: Path) -> None:
    done = await run_cli("run", "-w", "0", "-f", f"http={HOST}:80")
    assert (done.returncode, done.stderr) == (1, "refractium: -w: must be at least 1, got 0\n")
    done = await run_cli("tcp", "--workers", "lots", "-f", f"http={HOST}:80")
    assert done.returncode == 1
    assert done.stderr == "refractium: -w: expected an integer >= 1 or \"auto\", got 'lots'\n"
    path = tmp_path / "r.toml"
    path.write_text('[server]\nworkers = "many"\n' + route("http", f"{HOST}:80"))
    done = await run_cli("run", "-c", str(path))
    assert done.returncode == 1
    assert done.stderr == (
        f"refractium: {path}: server.workers: expected an integer >= 1 or \"auto\", got 'many'\n"
    )


async def test_a_bad_file_starts_no_worker(tmp_path: Path) -> None:
    path = tmp_path / "r.toml"
    path.write_text(config(route("http", "nowhere"), port=free_port()))
    done = await run_cli("run", "-c", str(path))
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"refractium: {path}: protocols[0].forward_to: not host:port: 'nowhere'"
    ]


async def test_check_shows_the_workers(tmp_path: Path) -> None:
    path = tmp_path / "r.toml"
    extra = f'[admin]\nbind = "{HOST}:9901"\n'
    path.write_text(config(route("http", f"{HOST}:80"), port=8080, extra=extra))
    done = await run_cli("check", "-c", str(path))
    assert done.returncode == 0
    assert "workers:      2" in done.stdout.splitlines()
    assert done.stderr == ""


async def test_a_worker_that_cannot_listen_stops_everything(tmp_path: Path) -> None:
    with socket.socket() as taken:  # no SO_REUSEPORT: no worker may share the port
        taken.bind((HOST, 0))
        taken.listen()
        port = taken.getsockname()[1]
        path = tmp_path / "r.toml"
        path.write_text(config(route("http", f"{HOST}:80"), port=port))
        done = await run_cli("run", "-c", str(path))
    assert done.returncode == 1
    assert f"refractium: {HOST}:{port}: address already in use" in done.stderr
    assert "failed to start: exit status 1: stopping" in done.stderr

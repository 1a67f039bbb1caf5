"""Endpoint hooks end to end: verdicts at each point, rejection per protocol, figures.

The engine runs in the test's process (hooks are Python objects the test can
inspect); clients are real: curl, openssl s_client, ssh-keyscan, raw sockets.
"""

from __future__ import annotations

import asyncio
import gc
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from refractium import Refractium
from refractium.endpoint import (
    Accept,
    ConnectionInfo,
    ConnectionStats,
    EndpointHooks,
    EventKind,
    Ignore,
    Reject,
    Side,
    WeakHandle,
)
from tests.kit.backends import Backend, banner_backend, echo_backend, http_backend, run, tls_backend
from tests.kit.clients import close, open_nodelay, openssl_get, read_all
from tests.kit.proxy import LOCAL_TCP, run_cli, running_proxy
from tests.kit.sshd import sshd_backend

# The repository root, on the proxy's PYTHONPATH so hook specs can name tests.kit.hookmods.
ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"


@asynccontextmanager
async def proxy(*hooks: object, **routes: str | list[str]) -> AsyncIterator[Refractium]:
    """An engine on a free port with ``routes`` (name -> backend) and ``hooks``."""
    builder = Refractium.builder().bind(HOST).port(0).option(max_connections_per_ip=0)
    for name, backend in routes.items():
        builder.route(name, backend)
    engine = builder.hooks(*hooks).build()
    await engine.start_tcp()
    try:
        yield engine
    finally:
        await engine.shutdown(0)


@asynccontextmanager
async def mine(*hooks: object) -> AsyncIterator[tuple[Refractium, Backend]]:
    """An echo backend behind a "mine" route (pattern HELLO) with ``hooks``."""
    async with echo_backend() as echo:
        engine = (
            Refractium.builder()
            .bind(HOST)
            .port(0)
            .route("mine", echo.address, patterns=["HELLO"])
            .hooks(*hooks)
            .build()
        )
        await engine.start_tcp()
        try:
            yield engine, echo
        finally:
            await engine.shutdown(0)


def port_of(engine: Refractium) -> int:
    return engine.tcp_addresses[0][1]


class Rejecting(EndpointHooks):
    """after_handshake rejects the incoming side; counts what it saw."""

    def __init__(self, code: int = 403, reason: bytes = b"nope") -> None:
        self.verdict = Reject(code, reason)
        self.sides: list[Side] = []

    async def after_handshake(self, conn: ConnectionInfo) -> Any:
        self.sides.append(conn.side)
        return self.verdict if conn.side is Side.SERVER else Accept


async def settle(condition: Any, timeout: float = 5) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


# -- rejection in the protocol's own terms ---------------------------------------


async def test_http_reject_is_an_http_response_and_the_backend_sees_nothing() -> None:
    hook = Rejecting(403, b"nope")
    async with http_backend("web") as web, proxy(hook, http=web.address) as engine:
        result = await run(
            ["curl", "-s", "-o", "-", "-w", "\n%{http_code}", f"http://{HOST}:{port_of(engine)}/x"]
        )
        body, status = result.out.rsplit("\n", 1)
        assert (status, body) == ("403", "nope")
        assert web.accepted == 0
        assert engine.tcp_stats.rejected[403] == 1
        assert hook.sides == [Side.SERVER]


async def test_a_code_that_is_not_an_http_status_becomes_403() -> None:
    async with http_backend("web") as web, proxy(Rejecting(7, b"seven"), http=web.address) as e:
        result = await run(["curl", "-s", "-i", f"http://{HOST}:{port_of(e)}/"])
        assert result.out.startswith("HTTP/1.1 403 Forbidden\r\n")
        assert result.out.endswith("\r\n\r\nseven")
        assert e.tcp_stats.rejected[7] == 1


async def test_tls_reject_is_an_access_denied_alert() -> None:
    async with tls_backend("tls", ["a.example"]) as tls, proxy(Rejecting(), tls=tls.address) as e:
        result = await openssl_get(port_of(e), "a.example")
        assert result.returncode != 0
        assert "alert access denied" in result.err, result.err
        assert tls.accepted == 0


async def test_ssh_reject_closes_without_a_byte() -> None:
    async with (
        banner_backend(b"SSH-2.0-backend\r\n") as ssh,
        proxy(Rejecting(), ssh=ssh.address) as e,
    ):
        reader, writer = await open_nodelay(port_of(e))
        writer.write(b"SSH-2.0-OpenSSH_9.2\r\n")
        assert await read_all(reader) == b""
        await close(writer)
        assert ssh.accepted == 0


# -- the order of hooks, and failing closed --------------------------------------------


class Recording(EndpointHooks):
    def __init__(self, name: str, log: list[str], verdict: Any = Accept) -> None:
        self.name = name
        self.log = log
        self.verdict = verdict

    def after_handshake(self, conn: ConnectionInfo) -> Any:
        self.log.append(f"{self.name}:{conn.side.value}")
        return self.verdict


async def test_the_first_reject_stops_the_chain() -> None:
    log: list[str] = []
    hooks = [
        Recording("first", log),
        Recording("second", log, Reject(451, b"second says no")),
        Recording("third", log),
    ]
    async with http_backend("web") as web, proxy(*hooks, http=web.address) as engine:
        result = await run(["curl", "-s", "-i", f"http://{HOST}:{port_of(engine)}/"])
        assert result.out.startswith("HTTP/1.1 451 Unavailable For Legal Reasons")
        assert log == ["first:server", "second:server"]
        assert web.accepted == 0


async def test_all_accept_runs_both_sides_in_order_and_relays() -> None:
    log: list[str] = []
    hooks = [Recording("a", log), Recording("b", log)]
    async with http_backend("web") as web, proxy(*hooks, http=web.address) as engine:
        result = await run(["curl", "-s", f"http://{HOST}:{port_of(engine)}/"])
        assert result.out == "web\n"
        assert log == ["a:server", "b:server", "a:client", "b:client"]


class NoDial(EndpointHooks):
    def __init__(self) -> None:
        self.asked: list[tuple[str, int]] = []

    async def before_connect(self, remote_addr: tuple[str, int], conn: ConnectionInfo) -> Any:
        self.asked.append(remote_addr)
        await asyncio.sleep(0.01)  # a hook that really waits
        return Reject(503, b"not now")


async def test_before_connect_reject_never_dials_the_backend() -> None:
    hook = NoDial()
    async with http_backend("web") as web, proxy(hook, http=web.address) as engine:
        result = await run(["curl", "-s", "-i", f"http://{HOST}:{port_of(engine)}/"])
        assert result.out.startswith("HTTP/1.1 503 Service Unavailable")
        assert result.out.endswith("not now")
        assert hook.asked == [(HOST, web.port)]
        assert web.accepted == 0
        assert engine.health[web.address] is True, "a hook's refusal is not a backend failure"


class Raising(EndpointHooks):
    def after_handshake(self, conn: ConnectionInfo) -> Any:
        raise RuntimeError("bug in a hook")


async def test_a_raising_hook_rejects(caplog: pytest.LogCaptureFixture) -> None:
    async with http_backend("web") as web, proxy(Raising(), http=web.address) as engine:
        result = await run(["curl", "-s", "-i", f"http://{HOST}:{port_of(engine)}/"])
        assert result.out.startswith("HTTP/1.1 500 Internal Server Error")
        assert web.accepted == 0
    assert "endpoint hook Raising raised in after_handshake" in caplog.text
    assert "RuntimeError: bug in a hook" in caplog.text


class Gate(EndpointHooks):
    def __init__(self, verdict: Any, delay: float = 0) -> None:
        self.verdict = verdict
        self.delay = delay
        self.seen: list[tuple[str, int]] = []

    async def on_incoming(self, addr: tuple[str, int]) -> Any:
        self.seen.append(addr)
        if self.delay:
            await asyncio.sleep(self.delay)
        return self.verdict


async def test_on_incoming_ignore_closes_without_a_byte() -> None:
    gate = Gate(Ignore)
    async with http_backend("web") as web, proxy(gate, http=web.address) as engine:
        reader, writer = await open_nodelay(port_of(engine))
        writer.write(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        assert await read_all(reader) == b""
        await close(writer)
        assert gate.seen and gate.seen[0][0] == HOST
        assert web.accepted == 0
        assert engine.tcp_stats.ignored == 1


async def test_a_slow_on_incoming_holds_the_bytes_and_then_lets_them_through() -> None:
    gate = Gate(Accept, delay=0.3)
    async with echo_backend() as echo, proxy(gate, http=echo.address) as engine:
        reader, writer = await open_nodelay(port_of(engine))
        request = b"GET /early HTTP/1.1\r\nHost: t\r\n\r\n"
        writer.write(request)  # sent while on_incoming is still thinking
        async with asyncio.timeout(10):
            assert await reader.readexactly(len(request)) == request
        await close(writer)
        assert len(gate.seen) == 1


# -- what hooks learn: figures, events, and nothing kept alive --------------------------


class Observer(EndpointHooks):
    def __init__(self) -> None:
        self.closed: list[tuple[ConnectionInfo, ConnectionStats]] = []
        self.events: list[list[EventKind]] = []
        self.handles: list[WeakHandle] = []
        self._tasks: set[asyncio.Task[None]] = set()

    def after_handshake(self, conn: ConnectionInfo) -> Any:
        if conn.side is Side.SERVER:
            self.handles.append(conn.weak_handle())
            task = asyncio.get_running_loop().create_task(self._watch(conn))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return Accept

    async def _watch(self, conn: ConnectionInfo) -> None:
        self.events.append([event.kind async for event in conn.events()])

    def on_close(self, conn: ConnectionInfo, stats: ConnectionStats) -> None:
        self.closed.append((conn, stats))


async def test_on_close_reports_what_each_side_sent_and_events_come_in_order() -> None:
    observer = Observer()
    async with mine(observer) as (engine, echo):
        reader, writer = await open_nodelay(port_of(engine))
        sent = [b"HELLO" + os.urandom(100), os.urandom(5000), os.urandom(70_000)]
        for chunk in sent:
            writer.write(chunk)
            async with asyncio.timeout(10):
                assert await reader.readexactly(len(chunk)) == chunk
        await close(writer)
        await settle(lambda: observer.closed and observer.events)
    ((info, stats),) = observer.closed
    total = sum(map(len, sent))
    assert (stats.bytes_in, stats.bytes_out) == (total, total)
    assert (info.bytes_in, info.bytes_out) == (total, total), "final figures stay readable"
    assert stats.packets_in >= len(sent) and stats.packets_out >= 1
    assert stats.outcome == "relayed" and stats.route == "mine"
    assert stats.connect_s is not None and stats.connect_s >= 0
    assert info.protocol == "mine" and info.backend_addr == (HOST, echo.port)
    assert not info.is_alive
    assert observer.events == [
        [EventKind.IDENTIFIED, EventKind.BACKEND_CONNECTED, EventKind.CLOSED]
    ]


async def test_a_finished_connection_is_collected_though_a_hook_kept_its_views() -> None:
    observer = Observer()
    async with mine(observer) as (engine, _):
        reader, writer = await open_nodelay(port_of(engine))
        writer.write(b"HELLO")
        async with asyncio.timeout(10):
            await reader.readexactly(5)
        (handle,) = observer.handles
        live = handle.upgrade()
        assert live is not None and live.info.is_alive
        conn = live._conn  # the relay's protocol object
        # Found again by identity: the relay's objects may be compiled, and a
        # compiled object does not clear its weak references when freed.
        ident, kind = id(conn), type(conn)
        del live, conn
        await close(writer)
        await settle(lambda: observer.closed)
        gc.collect()
        alive = [o for o in gc.get_objects() if id(o) == ident and type(o) is kind]
        assert alive == [], "nothing a hook holds keeps the connection alive"
        assert handle.upgrade() is None
        info, _ = observer.closed[0]
        assert info.stats is not None and info.stats.bytes_in == 5


async def test_a_handle_can_close_the_connection() -> None:
    observer = Observer()
    async with mine(observer) as (engine, _):
        reader, writer = await open_nodelay(port_of(engine))
        writer.write(b"HELLO")
        async with asyncio.timeout(10):
            await reader.readexactly(5)
        handle = observer.handles[0].upgrade()
        assert handle is not None
        handle.close()
        assert await read_all(reader) == b""
        writer.close()


async def test_the_outgoing_side_holds_a_server_that_speaks_first() -> None:
    """SSH speaks first: its banner waits until the outgoing after_handshake accepts."""

    class SlowOutgoing(EndpointHooks):
        async def after_handshake(self, conn: ConnectionInfo) -> Any:
            if conn.side is Side.CLIENT:
                await asyncio.sleep(0.2)
            return Accept

    async with sshd_backend() as sshd, proxy(SlowOutgoing(), ssh=sshd.address) as engine:
        result = await run(["ssh-keyscan", "-t", "ed25519", "-p", str(port_of(engine)), HOST])
        assert sshd.host_key in result.out


# -- from the configuration file ---------------------------------------------------------


async def test_endpoint_hooks_from_the_config_file() -> None:
    async with http_backend("web") as web, echo_backend() as secret:
        config = f"""
[endpoint]
hooks = [{{ use = "tests.kit.hookmods:DenyRoute", route = "secret", code = 403 }}]

[[protocols]]
name = "http"
forward_to = "{web.address}"

[[protocols]]
name = "secret"
patterns = ["SECRET"]
forward_to = "{secret.address}"
"""
        env = {"PYTHONPATH": str(ROOT)}
        async with running_proxy(*LOCAL_TCP, config=config, env=env) as p:
            allowed = await run(["curl", "-s", f"http://{HOST}:{p.port}/"])
            assert allowed.out == "web\n"
            reader, writer = await open_nodelay(p.port)
            writer.write(b"SECRET door")
            assert await read_all(reader) == b"", "a custom protocol is just closed"
            await close(writer)
            await p.wait_for(
                r"rejected 127\.0\.0\.1:\d+ \(secret, after_handshake\): 403 route secret"
            )
        assert secret.accepted == 0


async def test_a_bad_endpoint_hook_is_a_one_line_config_error(tmp_path: Path) -> None:
    path = tmp_path / "refractium.toml"
    path.write_text(
        '[endpoint]\nhooks = ["tests.kit.hookmods:Recorder"]\n'
        '[[protocols]]\nname = "http"\nforward_to = "127.0.0.1:9"\n'
    )
    result = await run_cli("check", "-c", str(path), env={"PYTHONPATH": str(ROOT)})
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"refractium: {path}: endpoint.hooks[0]: tests.kit.hookmods:Recorder: "
        "Recorder.__init__() missing 1 required "
        "positional argument: 'dir'"
    )
    path.write_text(
        '[endpoint]\nhooks = ["tests.kit.hookmods:NoOp"]\n'
        '[[protocols]]\nname = "http"\nforward_to = "127.0.0.1:9"\n'
    )
    result = await run_cli("check", "-c", str(path), env={"PYTHONPATH": str(ROOT)})
    assert result.returncode == 1
    assert (
        "endpoint.hooks[0]: tests.kit.hookmods:NoOp is a packet hook: list it in a route's hooks"
        in result.stderr
    )
    assert len(result.stderr.strip().splitlines()) == 1


async def test_no_hooks_means_no_record() -> None:
    async with mine() as (engine, _):
        reader, writer = await open_nodelay(port_of(engine))
        writer.write(b"HELLO")
        async with asyncio.timeout(10):
            await reader.readexactly(5)
        (conn,) = engine._tcp.ctx.connections  # type: ignore[union-attr]
        assert conn.gate is None, "an engine without endpoint hooks spends nothing on them"
        await close(writer)


async def test_a_half_close_does_not_slip_past_a_slow_on_incoming() -> None:
    gate = Gate(Reject(403, b"later no"), delay=0.3)
    async with http_backend("web") as web, proxy(gate, http=web.address) as engine:
        reader, writer = await open_nodelay(port_of(engine))
        writer.write(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        writer.write_eof()  # the request and its EOF arrive while on_incoming thinks
        assert await read_all(reader) == b""
        writer.close()
        assert web.accepted == 0
        assert engine.tcp_stats.rejected[403] == 1


async def test_a_half_close_after_a_slow_accept_is_still_relayed() -> None:
    async with http_backend("web") as web, proxy(Gate(Accept, delay=0.3), http=web.address) as e:
        reader, writer = await open_nodelay(port_of(e))
        writer.write(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        writer.write_eof()
        assert (await read_all(reader)).endswith(b"\r\n\r\nweb\n")
        writer.close()

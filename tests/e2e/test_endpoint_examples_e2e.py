"""The endpoint-hook examples, end to end: real sockets, a real sshd, real clients.

* ``examples/preauth.py``: ssh-keyscan through the proxy gets no key until
  the client's address has sent ``AUTH <token>``, and none again after the TTL;
* ``examples/monitor.py``: logs each connection's life in order, and what it
  keeps does not keep connections alive;
* ``examples/remote_map.py``: the JSON it prints adds up.
"""

from __future__ import annotations

import asyncio
import gc
import importlib.util
import json
import re
import shutil
import signal
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from refractium import Refractium, state
from tests.kit.backends import echo_backend, free_port, run
from tests.kit.clients import close, open_nodelay, read_all
from tests.kit.proxy import running_proxy
from tests.kit.redis import need_redis, redis_server
from tests.kit.sshd import SSHD, SshdBackend, sshd_backend

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
HOST = "127.0.0.1"
TOKEN = "open-sesame"
#: Short enough to wait out in a test, long enough to start ssh-keyscan within.
TTL_S = 3.0
#: ssh-keyscan waits for the server to speak first: the proxy sends it to the
#: ssh route after peek_timeout_ms (3 s by default, too long for a test).
PEEK_TIMEOUT_MS = 300

HAVE_SSHD = Path(SSHD).exists() and shutil.which("ssh-keyscan") is not None


def load_example(name: str) -> ModuleType:
    """Import ``examples/<name>.py`` as a module (registered, so dataclasses work)."""
    module_name = f"refractium_example_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, EXAMPLES / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    return module


async def say(port: int, line: bytes) -> bytes:
    """Send ``line`` through the proxy, half-close, return everything that comes back."""
    reader, writer = await open_nodelay(port)
    try:
        writer.write(line)
        await writer.drain()
        writer.write_eof()
        return await read_all(reader)
    finally:
        await close(writer)


# --------------------------------------------------------------------------- pre-auth


def sshd_connections(sshd: SshdBackend) -> int:
    """Connections sshd has logged the end of (``LogLevel INFO``)."""
    pattern = re.compile(r"(Connection (closed|reset) by|Disconnected from|Received disconnect)")
    return sum(1 for line in sshd.log_lines if pattern.search(line))


async def wait_until(predicate: Any, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


@pytest.mark.skipif(not HAVE_SSHD, reason=f"needs {SSHD} and ssh-keyscan")
async def test_preauth_lets_ssh_keyscan_through_only_after_the_token() -> None:
    preauth = load_example("preauth")
    await state.revoke(HOST)  # allowed by no earlier test of this process
    async with sshd_backend() as sshd:
        proxy = await preauth.start(sshd.address, TOKEN, TTL_S, peek_timeout_ms=PEEK_TIMEOUT_MS)
        stats = proxy.engine.tcp_stats
        scan = sshd.keyscan_command(port=proxy.port)
        try:
            # 1. Not authenticated: closed by the proxy, sshd never dialled.
            refused = await run(scan)
            assert sshd.host_key not in refused.out, refused.out
            assert "ssh-ed25519" not in refused.out
            assert stats.rejected[403] == 1
            assert stats.routed["ssh"] == 0

            # 2. A wrong token: DENIED, and still refused.
            assert await say(proxy.port, f"AUTH not-{TOKEN}\n".encode()) == b"DENIED\n"
            assert not state.allowed(HOST)
            refused = await run(scan)
            assert "ssh-ed25519" not in refused.out, refused.out
            assert stats.rejected[403] == 2
            assert stats.routed["ssh"] == 0
            assert proxy.auth.denied == 1

            # 3. The right token: OK, and ssh-keyscan gets sshd's host key.
            assert await say(proxy.port, f"AUTH {TOKEN}\n".encode()) == b"OK\n"
            assert state.allowed(HOST)
            allowed = await run(scan)
            assert allowed.returncode == 0, allowed.err
            key_type, key, *_ = (sshd.directory / "host_ed25519.pub").read_text().split()
            assert f"[{HOST}]:{proxy.port} {key_type} {key}" in allowed.out, allowed.out
            assert stats.rejected[403] == 2
            assert stats.routed["ssh"] == 1
            assert stats.routed["auth"] == 2

            # 4. Once the TTL has passed: refused again.
            await asyncio.sleep(state.remaining(HOST) + 0.2)
            assert not state.allowed(HOST)
            refused = await run(scan)
            assert "ssh-ed25519" not in refused.out, refused.out
            assert stats.rejected[403] == 3
            assert stats.routed["ssh"] == 1
        finally:
            await proxy.close()
        # sshd saw exactly one connection: the one that was allowed.
        await wait_until(lambda: sshd_connections(sshd) >= 1)
        await asyncio.sleep(0.2)
        assert sshd_connections(sshd) == 1, "\n".join(sshd.log_lines)


@pytest.mark.skipif(not HAVE_SSHD, reason=f"needs {SSHD} and ssh-keyscan")
async def test_preauth_example_with_two_workers() -> None:
    """``refractium run`` with ``workers = 2``: a token said to one worker opens ssh on both."""
    port, auth_port = free_port(), free_port()
    async with sshd_backend() as sshd:
        shipped = (EXAMPLES / "preauth.toml").read_text()
        text = (
            shipped.replace("port = 2222", f"port = {port}\npeek_timeout_ms = {PEEK_TIMEOUT_MS}")
            .replace("127.0.0.1:2223", f"{HOST}:{auth_port}")
            .replace('forward_to = "127.0.0.1:22"', f'forward_to = "{sshd.address}"')
            .replace('token = "secret"', f'token = "{TOKEN}"')
        )
        assert f'forward_to = "{HOST}:{auth_port}"' in text
        assert f'auth = "{HOST}:{auth_port}"' in text
        assert sshd.address in text
        async with running_proxy("run", config=text, cwd=EXAMPLES) as proxy:
            await proxy.wait_for("2 workers listening")
            scan = sshd.keyscan_command(port=port)
            for _ in range(4):  # refused, whichever worker takes it
                refused = await run(scan)
                assert "ssh-ed25519" not in refused.out, refused.out
            assert await say(port, f"AUTH not-{TOKEN}\n".encode()) == b"DENIED\n"
            assert await say(port, f"AUTH {TOKEN}\n".encode()) == b"OK\n"
            key_type, key, *_ = (sshd.directory / "host_ed25519.pub").read_text().split()
            for _ in range(10):  # the kernel spreads these over both workers
                allowed = await run(scan)
                assert f"[{HOST}]:{port} {key_type} {key}" in allowed.out, allowed.out
        assert proxy.stderr.count("403 pre-authentication required") == 4
        await wait_until(lambda: sshd_connections(sshd) >= 10)
        assert sshd_connections(sshd) == 10, "\n".join(sshd.log_lines)


@need_redis
async def test_preauth_token_said_to_one_instance_opens_ssh_on_another() -> None:
    """Two instances on one Redis (``[state] backend = "redis"``): the allow list is the fleet's."""
    banner = b"SSH-2.0-OpenSSH_9.2p1\r\n"
    ports = [free_port(), free_port()]
    auth_ports = [free_port(), free_port()]
    async with redis_server() as redis, echo_backend() as ssh:

        def instance(n: int) -> str:
            shipped = (EXAMPLES / "preauth.toml").read_text()
            return (
                shipped.replace("workers = 2", "workers = 1")
                .replace("port = 2222", f"port = {ports[n]}")
                .replace("127.0.0.1:2223", f"{HOST}:{auth_ports[n]}")
                .replace('forward_to = "127.0.0.1:22"', f'forward_to = "{ssh.address}"')
                .replace('token = "secret"', f'token = "{TOKEN}"')
                + f'\n[state]\nbackend = "redis"\nurl = "{redis.url}"\n'
            )

        async with (
            running_proxy("run", config=instance(0), cwd=EXAMPLES),
            running_proxy("run", config=instance(1), cwd=EXAMPLES) as second,
        ):
            await second.wait_for("listening on tcp")
            await asyncio.sleep(0.5)  # both linked to Redis
            assert await say(ports[1], banner) == b""  # not allowed anywhere yet
            assert await say(ports[0], f"AUTH {TOKEN}\n".encode()) == b"OK\n"
            allowed_at = asyncio.get_running_loop().time()
            while await say(ports[1], banner) != banner:  # the other instance lets it in
                assert asyncio.get_running_loop().time() - allowed_at < 1.0
                await asyncio.sleep(0.05)
            assert ssh.accepted == 1


async def test_preauth_example_runs_as_a_script() -> None:
    """``python examples/preauth.py --ssh ...`` serves until interrupted (an echo stands in)."""
    async with echo_backend() as ssh:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(EXAMPLES / "preauth.py"),
            "--ssh",
            ssh.address,
            "--token",
            TOKEN,
            "--ttl",
            "30",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert proc.stdout is not None
        assert proc.stderr is not None
        try:
            async with asyncio.timeout(15):
                first = (await proc.stdout.readline()).decode()
            match = re.search(r"on 127\.0\.0\.1:(\d+)", first)
            assert match, first
            port = int(match.group(1))
            banner = b"SSH-2.0-OpenSSH_9.2p1\r\n"

            assert await say(port, banner) == b""  # closed: not allowed yet
            assert ssh.accepted == 0
            assert await say(port, b"AUTH wrong\n") == b"DENIED\n"
            assert await say(port, banner) == b""
            assert await say(port, f"AUTH {TOKEN}\n".encode()) == b"OK\n"
            assert await say(port, banner) == banner  # reaches the "sshd" now
            assert ssh.accepted == 1
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGINT)
            try:
                async with asyncio.timeout(10):
                    out, err = await proc.communicate()
            except TimeoutError:
                proc.kill()
                await proc.wait()
                raise
    assert proc.returncode == 0, err.decode()
    text = first + out.decode()
    assert f"printf 'AUTH {TOKEN}\\n' | nc 127.0.0.1 {port}" in text, text
    assert f"ssh -p {port} user@127.0.0.1" in text, text
    log = err.decode()
    assert "127.0.0.1 allowed for 30 s" in log, log
    assert "403 pre-authentication required" in log, log


# --------------------------------------------------------------------------- monitor

MONITOR_LINE = re.compile(r"^\[([0-9a-f]{16})\] 127\.0\.0\.1:\d+ (?:\+\s*[\d.]+ ms )?(.*)$")


async def test_monitor_example_logs_each_connection_in_order() -> None:
    done = await run([sys.executable, str(EXAMPLES / "monitor.py")], timeout=30)
    assert done.returncode == 0, done.err
    lines = done.out.splitlines()
    sessions: dict[str, list[str]] = {}
    for line in lines:
        match = MONITOR_LINE.match(line)
        if match:
            sessions.setdefault(match.group(1), []).append(match.group(2))
    assert len(sessions) == 3, done.out
    for session, said in sessions.items():
        kinds = [text.split(":", 1)[0] for text in said]
        expected = ["identified", "backend connected", "closed"]
        if "closing" in kinds:  # the idle keep-alive one, closed by the monitor
            expected = ["identified", "backend connected", "closing", "closed"]
        assert kinds == expected, (session, said)
        assert said[0] == "identified: http"
        assert re.fullmatch(r"closed: relayed, \d+ bytes in, \d+ bytes out, .*", said[-1])
        assert not said[-1].startswith("closed: relayed, 0 bytes in"), said
    closing = [s for s in sessions.values() if any(t.startswith("closing") for t in s)]
    assert len(closing) == 1, done.out
    assert lines.count("reply: HTTP/1.1 200 OK") == 3, done.out
    assert lines[-1].startswith("monitored 3 connection(s)"), done.out


async def test_monitor_keeps_no_connection_alive() -> None:
    example = load_example("monitor")
    lines: list[str] = []
    server = await asyncio.start_server(example.backend, HOST, 0)
    backend_port = server.sockets[0].getsockname()[1]
    monitor = example.Monitor(lines.append)
    engine = (
        Refractium.builder()
        .bind(HOST)
        .port(0)
        .route("http", f"{HOST}:{backend_port}")
        .hooks(monitor)
        .build()
    )
    (_, port), *_ = await engine.start_tcp()
    request = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"
    try:
        async with monitor:
            reader, writer = await open_nodelay(port)
            writer.write(request)
            async with asyncio.timeout(10):
                assert (await reader.readuntil(b"ok\n")).startswith(b"HTTP/1.1 200 OK")
                await wait_until(lambda: len(monitor.recent) == 1)
            info = monitor.recent[0]
            handle = info.weak_handle()
            live = handle.upgrade()
            assert live is not None
            assert live._conn in engine._tcp.ctx.connections  # the relay's ClientProtocol
            # Found again by identity, not by a weak reference: the relay's
            # objects may be compiled, and then they do not clear those.
            ident, kind = id(live._conn), type(live._conn)
            del live
            assert info.is_alive

            await close(writer)
            async with asyncio.timeout(10):
                await info.closed()
        # The monitor has followed it to the end and still holds its view.
        match = MONITOR_LINE.match(lines[-1])
        assert match, lines
        assert match.group(1) == f"{info.session_id:016x}"
        assert match.group(2).startswith("closed: relayed"), lines
        assert monitor.recent[0] is info
        assert monitor.queue.empty()
        await wait_until(lambda: engine.open_connections == 0)
        gc.collect()
        alive = [o for o in gc.get_objects() if id(o) == ident and type(o) is kind]
        assert alive == [], gc.get_referrers(*alive)
        assert handle.upgrade() is None
        assert not info.is_alive
        assert info.stats is not None
        assert info.stats.bytes_in == info.bytes_in == len(request)
        assert info.stats.outcome == "relayed"
    finally:
        await engine.shutdown(0)
        server.close()


# --------------------------------------------------------------------------- remote map


async def test_remote_map_example_prints_what_it_sent() -> None:
    example = load_example("remote_map")
    done = await run([sys.executable, str(EXAMPLES / "remote_map.py")], timeout=30)
    assert done.returncode == 0, done.err
    report = json.loads(done.out)
    sent = sum(len(payload) for payload in example.PAYLOADS)
    assert report["connections"] == len(example.PAYLOADS) == 3
    assert report["bytes_sent"] == report["bytes_received"] == sent
    remotes = {row["remote"]: row for row in report["remotes"]}
    local = remotes[HOST]
    assert local["total"] >= report["connections"]
    assert local["active"] == 0
    assert local["rejected"] == 0
    assert local["bytes_in"] == report["bytes_sent"]
    assert local["bytes_out"] == report["bytes_received"]
    connect = local["connect_ms"]
    assert 0 <= connect["min"] <= connect["last"] <= connect["max"], connect
    assert local["last_seen"] > 0

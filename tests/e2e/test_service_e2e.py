"""Running as a service: privilege drop, systemd's notify socket, socket activation, pid file.

Each test runs the ``refractium`` command and checks what an operator would:
``/proc/PID/status``, the messages systemd would receive, curl through a
socket the proxy did not bind, the pid file's content.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import re
import signal
import socket
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from tests.kit.backends import free_port, http_backend, run
from tests.kit.proxy import LISTEN_RE, LOCAL_TCP, RunningProxy, run_cli, running_proxy

AS_ROOT = pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")


async def curl(port: int) -> bytes:
    done = await run(["curl", "-s", "--max-time", "10", f"http://127.0.0.1:{port}/"])
    assert done.returncode == 0, done.stderr
    return done.stdout


def ids(pid: int) -> dict[str, list[int]]:
    """The Uid, Gid and Groups lines of ``/proc/PID/status``."""
    fields: dict[str, list[int]] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("Uid", "Gid", "Groups"):
            fields[key] = [int(v) for v in value.split()]
    return fields


@AS_ROOT
async def test_drops_to_nobody_after_listening_and_still_relays(tmp_path: Path) -> None:
    nobody = pwd.getpwnam("nobody")
    async with http_backend("behind") as backend:
        config = (
            f'[server]\nuser = "nobody"\n'
            f'[[protocols]]\nname = "http"\nforward_to = "{backend.address}"\n'
        )
        async with running_proxy(*LOCAL_TCP, config=config) as proxy:
            await proxy.wait_for(r"running as user 'nobody'")
            assert ids(proxy.pid) == {
                "Uid": [nobody.pw_uid] * 4,
                "Gid": [nobody.pw_gid] * 4,
                "Groups": [nobody.pw_gid],
            }
            assert await curl(proxy.port) == b"behind\n"
            # A reload reads the file as nobody; this one sits in a directory
            # only root may enter: the running routes stay.
            proxy.send_signal(signal.SIGHUP)
            line = await proxy.wait_for(r"reload failed")
            assert line.string.endswith(
                "reload failed, keeping the running routes: "
                f"{proxy.argv[-1]}: cannot read: Permission denied"
            )
            assert await curl(proxy.port) == b"behind\n"
            assert await proxy.stop() == 0
        # The file watcher was set up before the drop: it did not fail for lack of root.
        assert "task watch-config failed" not in proxy.stderr
        assert "Traceback" not in proxy.stderr


async def test_unknown_user_is_one_line_and_nothing_listens(tmp_path: Path) -> None:
    path = tmp_path / "refractium.toml"
    path.write_text(
        '[server]\nuser = "no-such-user-x"\n'
        '[[protocols]]\nname = "http"\nforward_to = "127.0.0.1:9"\n'
    )
    done = await run_cli(*LOCAL_TCP, "-c", str(path))
    assert done.returncode == 1
    assert done.stderr == f"refractium: {path}: server.user: no such user 'no-such-user-x'\n"


@asynccontextmanager
async def notify_socket(tmp_path: Path) -> AsyncIterator[tuple[socket.socket, str]]:
    path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.setblocking(False)
    try:
        yield sock, path
    finally:
        sock.close()


async def next_state(sock: socket.socket, timeout: float = 10.0) -> str:
    """The next message that is not a STATUS= refresh alone."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(timeout):
        while True:
            message = (await loop.sock_recv(sock, 4096)).decode()
            if not message.startswith("STATUS="):
                return message


async def test_tells_systemd_ready_reloading_and_stopping(tmp_path: Path) -> None:
    async with http_backend("one") as backend, notify_socket(tmp_path) as (sock, path):
        config = f'[[protocols]]\nname = "http"\nforward_to = "{backend.address}"\n'
        async with running_proxy(*LOCAL_TCP, config=config, env={"NOTIFY_SOCKET": path}) as proxy:
            ready = await next_state(sock)
            assert ready == "READY=1\nSTATUS=0 connections, 0 UDP flows open"
            assert await curl(proxy.port) == b"one\n"  # READY=1 came once it listened

            proxy.send_signal(signal.SIGHUP)
            reloading = (await next_state(sock)).split("\n")
            assert reloading[0] == "RELOADING=1"
            assert re.fullmatch(r"MONOTONIC_USEC=\d+", reloading[1])
            assert (await next_state(sock)).startswith("READY=1\n")

            proxy.send_signal(signal.SIGTERM)
            assert await next_state(sock) == "STOPPING=1"
            assert await proxy.stop() == 0


async def test_a_reload_through_the_admin_api_tells_systemd_too(tmp_path: Path) -> None:
    admin = free_port()
    async with http_backend("one") as backend, notify_socket(tmp_path) as (sock, path):
        config = (
            f'[admin]\nbind = "127.0.0.1:{admin}"\n'
            f'[[protocols]]\nname = "http"\nforward_to = "{backend.address}"\n'
        )
        async with running_proxy(*LOCAL_TCP, config=config, env={"NOTIFY_SOCKET": path}):
            assert (await next_state(sock)).startswith("READY=1\n")
            done = await run(["curl", "-s", "-X", "POST", f"http://127.0.0.1:{admin}/reload"])
            assert '"reloaded":true' in done.out
            assert (await next_state(sock)).startswith("RELOADING=1\n")
            assert (await next_state(sock)).startswith("READY=1\n")


async def activated(
    sock: socket.socket, args: Sequence[str], config: str, tmp_path: Path
) -> RunningProxy:
    """Start refractium with ``sock`` as fd 3 and LISTEN_FDS=1, as systemd would."""
    path = tmp_path / "refractium.toml"
    path.write_text(config)
    # The wrapper puts the socket at fd 3 and sets LISTEN_PID to its own pid,
    # which exec keeps.
    wrapper = (
        "import os, sys\n"
        "os.dup2(int(sys.argv[1]), 3)\n"
        "os.environ['LISTEN_PID'] = str(os.getpid())\n"
        "os.environ['LISTEN_FDS'] = '1'\n"
        "os.execv(sys.executable, [sys.executable, '-m', 'refractium', *sys.argv[2:]])\n"
    )
    argv = [sys.executable, "-c", wrapper, str(sock.fileno()), *args, "-c", str(path)]
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        pass_fds=[sock.fileno()],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    return RunningProxy(proc, argv)


async def test_socket_activation_serves_on_the_passed_socket(tmp_path: Path) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    async with http_backend("passed") as backend:
        config = (
            f'[server]\nbind = "127.0.0.1"\nport = {port}\n'
            f'[[protocols]]\nname = "http"\nforward_to = "{backend.address}"\n'
        )
        with listener:
            proxy = await activated(listener, ["tcp"], config, tmp_path)
        try:
            # Binding that port again would fail: it is still the test's socket.
            await proxy.wait_for(LISTEN_RE, timeout=15)
            assert f"listening on tcp 127.0.0.1:{port}" in proxy.stderr
            assert await curl(port) == b"passed\n"
        finally:
            assert await proxy.stop() == 0


async def test_a_passed_socket_no_listener_wants_is_an_error(tmp_path: Path) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    config = (
        f'[server]\nbind = "127.0.0.1"\nport = {free_port()}\n'
        '[[protocols]]\nname = "http"\nforward_to = "127.0.0.1:9"\n'
    )
    with listener:
        proxy = await activated(listener, ["tcp"], config, tmp_path)
    assert await proxy.stop(sig=0) == 1
    assert proxy.stderr_lines[-1] == (
        f"refractium: passed socket matches no configured listener: tcp 127.0.0.1:{port} (fd 3)"
    )
    assert "Traceback" not in proxy.stderr
    assert "listening on" not in proxy.stderr  # refused before anything was opened


async def test_pidfile_holds_the_pid_while_running_and_goes_at_exit(tmp_path: Path) -> None:
    pidfile = tmp_path / "refractium.pid"
    config = '[[protocols]]\nname = "http"\nforward_to = "127.0.0.1:9"\n'
    async with running_proxy(*LOCAL_TCP, "--pidfile", str(pidfile), config=config) as proxy:
        # Written whole (never seen empty) soon after the listening line.
        async with asyncio.timeout(5):
            while not pidfile.exists():
                await asyncio.sleep(0.02)
        assert pidfile.read_text() == f"{proxy.pid}\n"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["refractium.pid"]
        assert await proxy.stop() == 0
    assert not pidfile.exists()

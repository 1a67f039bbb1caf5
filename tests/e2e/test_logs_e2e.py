"""``[log]`` on the real command: a log file that logrotate can rotate (SIGUSR1), and syslog.

The proxy logs nothing to stderr here, so these tests start it themselves
and learn that it listens from the file or the syslog datagrams.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from tests.kit.backends import http_backend, run
from tests.kit.proxy import run_cli

LISTENING = re.compile(r"listening on tcp 127\.0\.0\.1:(\d+)")
TIMEOUT_S = 15.0


@contextlib.asynccontextmanager
async def proxy_with(config: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    """``refractium tcp -c CONFIG`` on loopback; stopped (SIGTERM, then kill) on exit."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "refractium",
        "tcp",
        "-b",
        "127.0.0.1",
        "-p",
        "0",
        "-c",
        str(config),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(10):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def until(condition: Callable[[], bool], what: str) -> None:
    async with asyncio.timeout(TIMEOUT_S):
        while not condition():
            await asyncio.sleep(0.05)
    assert condition(), what


def messages(path: Path) -> list[str]:
    """The messages of a text log file (what follows ``logger: ``)."""
    if not path.exists():
        return []
    return [line.split(": ", 1)[1] for line in path.read_text().splitlines()]


async def test_a_log_file_reopened_on_sigusr1(tmp_path: Path) -> None:
    log_file = tmp_path / "refractium.log"
    rotated = tmp_path / "refractium.log.1"
    config = tmp_path / "refractium.toml"
    config.write_text(
        f'[log]\nfile = "{log_file}"\n[[protocols]]\nname = "http"\nforward_to = "127.0.0.1:9"\n'
    )
    async with proxy_with(config) as proc:
        await until(
            lambda: any(LISTENING.search(m) for m in messages(log_file)), "no listening line"
        )
        # What logrotate does: rename the file, then signal the process.
        log_file.rename(rotated)
        proc.send_signal(signal.SIGUSR1)
        await until(log_file.exists, "SIGUSR1 did not reopen the log file")
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(TIMEOUT_S):
            assert await proc.wait() == 0
        _, stderr = await proc.communicate()
    assert any(LISTENING.search(m) for m in messages(rotated))
    assert messages(log_file) == ["SIGTERM received: stopping", "stopped"]
    assert stderr == b""


async def test_an_unwritable_log_file_is_one_line(tmp_path: Path) -> None:
    config = tmp_path / "refractium.toml"
    config.write_text(
        f'[log]\nfile = "{tmp_path}/missing/refractium.log"\n'
        '[[protocols]]\nname = "http"\nforward_to = "127.0.0.1:9"\n'
    )
    result = await run_cli("tcp", "-b", "127.0.0.1", "-p", "0", "-c", str(config))
    assert result.returncode == 1
    assert result.stderr == (
        f"refractium: {config}: log.file: cannot open '{tmp_path}/missing/refractium.log': "
        "No such file or directory\n"
    )


async def test_syslog_over_udp(tmp_path: Path) -> None:
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
        server.bind(("127.0.0.1", 0))
        server.setblocking(False)
        config = tmp_path / "refractium.toml"
        config.write_text(
            f'[log]\nsyslog = "udp:127.0.0.1:{server.getsockname()[1]}"\n'
            '[[protocols]]\nname = "http"\nforward_to = "127.0.0.1:9"\n'
        )
        async with proxy_with(config) as proc:
            received: list[bytes] = []
            async with asyncio.timeout(TIMEOUT_S):
                while not any(LISTENING.search(d.decode()) for d in received):
                    received.append(await loop.sock_recv(server, 65535))
    line = next(d for d in received if LISTENING.search(d.decode()))
    # <30>: facility daemon (3) * 8 + severity info (6), RFC 3164 section 4.1.1.
    assert re.fullmatch(
        rb"<30>refractium\[%d\]: INFO refractium\.relay\.tcp: listening on tcp "
        rb"127\.0\.0\.1:\d+\x00" % proc.pid,
        line,
    ), line


async def test_access_lines_follow_the_log_file_through_a_rotation(tmp_path: Path) -> None:
    log_file = tmp_path / "refractium.log"
    rotated = tmp_path / "refractium.log.1"
    config = tmp_path / "refractium.toml"
    async with http_backend("web") as web:
        config.write_text(
            f'[log]\nfile = "{log_file}"\naccess = true\n'
            f'[[protocols]]\nname = "http"\nforward_to = "{web.address}"\n'
        )
        async with proxy_with(config) as proc:
            await until(lambda: any(LISTENING.search(m) for m in messages(log_file)), "listening")
            (port,) = {int(m[1]) for m in map(LISTENING.search, messages(log_file)) if m}

            async def one() -> None:
                done = await run(["curl", "-s", f"http://127.0.0.1:{port}/"])
                assert done.out == "web\n"

            await one()
            await until(lambda: len(accesses(log_file)) == 1, "no access line")
            log_file.rename(rotated)
            proc.send_signal(signal.SIGUSR1)
            await until(log_file.exists, "SIGUSR1 did not reopen the log file")
            await one()
            await until(lambda: len(accesses(log_file)) == 1, "no access line in the new file")
    (before,), (after,) = accesses(rotated), accesses(log_file)
    assert before.startswith("session=") and " outcome=relayed " in before
    assert after.split()[0] != before.split()[0]  # another session


def accesses(path: Path) -> list[str]:
    """The access lines of a text log file (what follows ``refractium.access: ``)."""
    if not path.exists():
        return []
    return [x.split(": ", 1)[1] for x in path.read_text().splitlines() if "refractium.access:" in x]

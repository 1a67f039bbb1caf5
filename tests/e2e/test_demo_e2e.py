"""`refractium demo` as a newcomer runs it: each printed command works and finishes by itself."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal

import pytest

from tests.kit.backends import Completed, free_port
from tests.kit.proxy import run_cli, running_proxy

BANNER = b"SSH-2.0-RefractiumDemo\r\n"
#: Longer than any printed command should take; a command still running then has hung.
COMMAND_TIMEOUT = 15.0


def printed_commands(printed: str) -> list[str]:
    """The commands the demo printed: the lines indented by four spaces, in order."""
    return [line[4:] for line in printed.splitlines() if line.startswith("    ")]


async def shell(command: str) -> Completed:
    """Run ``command`` as a user pasting it into bash would (pipes, redirections).

    In a session of its own, so that a command that hangs is killed with every
    process of its pipeline (an ``nc`` left behind would hold the demo open).
    """
    args = ["bash", "-c", command]
    proc = await asyncio.create_subprocess_exec(
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    try:
        async with asyncio.timeout(COMMAND_TIMEOUT):
            stdout, stderr = await proc.communicate()
    except TimeoutError:
        raise AssertionError(f"{command!r} did not finish within {COMMAND_TIMEOUT} s") from None
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
    done = Completed(args, proc.returncode, stdout, stderr)
    assert done.returncode == 0, (command, done)
    return done


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
async def test_demo_commands_finish_and_reach_each_backend(host: str) -> None:
    async with running_proxy("demo", "-b", host, "-p", str(free_port())) as demo:
        await demo.wait_for(r"Stop with Ctrl-C", stdout=True)
        printed = "\n".join(demo.stdout_lines)
        where = f"[{host}]:{demo.port}" if ":" in host else f"{host}:{demo.port}"
        assert f"share one port, {where}." in printed
        assert "It is not a real SSH server" in printed
        commands = printed_commands(printed)
        assert [c.split()[0] for c in commands] == [
            "curl",
            "curl",
            "openssl",
            "printf",
            "bash",
            "bash",
        ], printed
        http, https, s_client, nc, bash_banner, bash_silent = commands

        done = await shell(http)
        assert done.out.startswith("Hello from the Refractium demo HTTP backend\n"), done

        done = await shell(https)
        assert "demo TLS backend\nsni: demo.refractium.test\nalpn: http/1.1\n" in done.out, done

        # The CA file is given: the chain verifies (no "verify error" line).
        assert "-CAfile " in s_client and "-servername demo.refractium.test" in s_client
        done = await shell(s_client)
        assert "demo TLS backend\nsni: demo.refractium.test\nalpn: h2\n" in done.out, done
        assert "verify error" not in done.err and "verify return:1" in done.err, done

        # nc -N closes its side after stdin's end, so the backend's echo ends the exchange.
        done = await shell(nc)
        assert done.stdout == BANNER + b"SSH-2.0-me\r\n", done
        done = await shell(bash_banner)
        assert done.stdout == BANNER + b"SSH-2.0-me\r\n", done

        # Says nothing: sent to the SSH route after the peek timeout, reads the banner.
        done = await shell(bash_silent)
        assert done.stdout == BANNER, done

        # Each command left its access line: which route took it.
        async with asyncio.timeout(5):
            while len(routes := access_routes(demo.stderr_lines)) < 6:
                await asyncio.sleep(0.05)
        assert routes == ["http", "tls", "tls", "ssh", "ssh", "ssh"], demo.stderr_lines
        found = re.search(r"The dashboard, live: (http://\S+/)", printed)
        assert found, printed
        done = await shell(f"curl -s {found.group(1)}")
        assert "<title>Refractium" in done.out
        assert await demo.stop() == 0


def access_routes(lines: list[str]) -> list[str]:
    """The ``route`` of each access line, in order."""
    return [
        m.group(1)
        for m in map(re.compile(r"refractium\.access: .* route=(\S+)").search, lines)
        if m
    ]


@pytest.mark.parametrize(
    ("bind", "reason"),
    [
        ("127.0.0.1,::1", "Name or service not known"),
        ("192.0.2.1", "Cannot assign requested address"),
    ],
)
async def test_demo_on_an_address_it_cannot_use_is_one_line(bind: str, reason: str) -> None:
    done = await run_cli("demo", "-b", bind)
    assert done.returncode == 1, done
    assert done.stderr == f"refractium: demo: cannot listen on {bind}: {reason}\n", done

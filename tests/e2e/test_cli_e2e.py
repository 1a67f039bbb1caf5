"""The command line as a user meets it: mistakes are one line, init/check work."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from tests.kit.proxy import CliResult, run_cli, running_proxy


def assert_one_line_error(result: CliResult, *fragments: str) -> str:
    code, stdout, stderr = result
    assert code != 0, (stdout, stderr)
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return str(lines[0])


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        (
            '[[protocols]]\nname = "htp"\nforward_to = "127.0.0.1:80"\n',
            "refractium.toml: protocols[0].name: unknown protocol 'htp'",
        ),
        (
            '[[protocols]]\nname = "http"\nforward_to = "nowhere"\n',
            "refractium.toml: protocols[0].forward_to: not host:port: 'nowhere'",
        ),
        (
            '[[protocols]]\nname = "http"\nforward_to = []\n',
            "refractium.toml: protocols[0].forward_to: empty pool",
        ),
        (
            "[server\nport = 1\n",
            "refractium.toml: invalid TOML",
        ),
        (
            "[server]\npeek_timout_ms = 5\n",
            "refractium.toml: server.peek_timout_ms: unknown key (did you mean 'peek_timeout_ms'?)",
        ),
        (
            '[server]\nport = "eighty"\n',
            "refractium.toml: server.port: expected an integer or a list, got a string",
        ),
    ],
    ids=["unknown-protocol", "bad-address", "empty-pool", "broken-toml", "typo", "type"],
)
@pytest.mark.parametrize("command", ["run", "check"])
async def test_bad_config_is_one_line(
    tmp_path: Path, command: str, toml: str, expected: str
) -> None:
    (tmp_path / "refractium.toml").write_text(toml)
    result = await run_cli(command, "-p", "0", cwd=tmp_path)
    line = assert_one_line_error(result, expected)
    assert line.startswith("refractium: ")


async def test_bad_forward_is_one_line() -> None:
    result = await run_cli("-f", "htp=127.0.0.1:80")
    assert_one_line_error(result, "-f", "unknown protocol 'htp'")
    result = await run_cli("-f", "http=nowhere")
    assert_one_line_error(result, "-f: 'http=nowhere': not host:port")


FIRST_RUN = (
    "refractium: nothing to run: no ./refractium.toml, -c FILE or -f NAME=HOST:PORT; "
    "run 'refractium init' to write a starter config, or 'refractium demo' to try it"
)


async def test_unreadable_file_and_no_routes(tmp_path: Path) -> None:
    assert_one_line_error(await run_cli("-c", str(tmp_path / "missing.toml")), "missing.toml")
    (tmp_path / "refractium.toml").write_text("[server]\nport = 1\n")
    assert_one_line_error(await run_cli("tcp", cwd=tmp_path), "refractium.toml: no routes")


@pytest.mark.parametrize("argv", [(), ("tcp",), ("check",)], ids=["bare", "tcp", "check"])
async def test_first_run_in_an_empty_directory(tmp_path: Path, argv: tuple[str, ...]) -> None:
    result = await run_cli(*argv, cwd=tmp_path)
    assert result.returncode == 1
    assert assert_one_line_error(result) == FIRST_RUN


async def test_a_mistyped_command_lists_the_commands() -> None:
    result = await run_cli("chek")
    assert result.returncode == 2
    assert assert_one_line_error(result) == (
        "refractium: argument COMMAND: invalid choice: 'chek' (choose from 'run', 'tcp', "
        "'udp', 'init', 'check', 'doctor', 'demo'); did you mean check? (see 'refractium --help')"
    )


async def test_short_version_flag() -> None:
    long, short = await run_cli("--version"), await run_cli("-V")
    assert long.returncode == short.returncode == 0
    assert short.stdout == long.stdout
    assert short.stdout.startswith("refractium ")


async def test_help_shows_defaults() -> None:
    code, stdout, _ = await run_cli("run", "--help")
    assert code == 0
    text = " ".join(stdout.split())
    for shown in (
        "(default: ./refractium.toml if present)",
        "(default: server.port, else 8080)",
        "(default: log.level, else info)",
        "(default: log.format, else text)",
    ):
        assert shown in text


async def test_several_ports_from_the_command_line() -> None:
    free = []
    for _ in range(2):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            free.append(probe.getsockname()[1])
    ports = [str(port) for port in free]
    async with running_proxy(
        "tcp", "-b", "127.0.0.1", "-p", ports[0], "-p", ports[1], "-f", "http=127.0.0.1:9"
    ) as proxy:
        await proxy.wait_for(f"listening on tcp 127.0.0.1:{ports[1]}")
        assert sorted(proxy.listeners) == sorted(("127.0.0.1", port) for port in free)
        for port in free:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            await writer.wait_closed()


async def test_port_in_use_is_one_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = await run_cli("tcp", "-b", "127.0.0.1", "-p", str(port), "-f", "http=127.0.0.1:9")
    assert_one_line_error(result, f"127.0.0.1:{port}: address already in use")


async def test_udp_port_in_use_is_one_line() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        result = await run_cli("udp", "-b", "127.0.0.1", "-p", str(port), "-f", "http=127.0.0.1:9")
    assert_one_line_error(result, f"udp 127.0.0.1:{port}: address already in use")


async def test_usage_mistake_is_one_line() -> None:
    result = await run_cli("tcp", "--no-such-flag")
    assert_one_line_error(result, "--no-such-flag")


async def test_init_then_check(tmp_path: Path) -> None:
    target = tmp_path / "refractium.toml"
    code, stdout, stderr = await run_cli("init", str(target))
    assert (code, stderr) == (0, "")
    assert target.is_file()
    code, stdout, stderr = await run_cli("check", "-c", str(target))
    assert code == 0, stderr
    assert "config OK" in stdout
    for route in ("http", "ssh", "https"):
        assert route in stdout
    # init refuses to overwrite
    assert_one_line_error(await run_cli("init", str(target)), "already exists")
    # ./refractium.toml is the default config
    code, stdout, _ = await run_cli("check", cwd=tmp_path)
    assert code == 0 and "config OK" in stdout


async def test_check_prints_priority() -> None:
    code, stdout, stderr = await run_cli(
        "check", "-f", "http=127.0.0.1:80", "-f", "http=127.0.0.1:81", "-f", "ssh=127.0.0.1:22"
    )
    assert code == 0, stderr
    assert "127.0.0.1:80" in stdout and "127.0.0.1:81" in stdout
    assert "match priority" in stdout


async def test_run_is_the_default_command_and_json_logs() -> None:
    async with running_proxy(
        "-b", "127.0.0.1", "-p", "0", "-f", "http=127.0.0.1:9", "--log-format", "json"
    ) as proxy:
        line = next(line for line in proxy.stderr_lines if "listening" in line)
        assert line.startswith("{") and '"level": "info"' in line
        assert await proxy.stop() == 0

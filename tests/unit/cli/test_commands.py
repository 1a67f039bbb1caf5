"""The commands behind ``refractium``: which file they read, what ``check`` prints, exit codes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from refractium.cli import build_parser, main
from refractium.cli import commands as cli_commands
from refractium.config import Config
from refractium.errors import ConfigError, RefractiumError
from refractium.util import logs

ROUTE = '[[protocols]]\nname = "http"\nforward_to = "127.0.0.1:9000"\n'
NO_ROUTES = "no routes: add [[protocols]] to a config file or give -f NAME=HOST:PORT"


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in an empty directory, where ./refractium.toml is the implicit file."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


# -c FILE, and the implicit ./refractium.toml.
FILES = [
    pytest.param("other.toml", ["-c", "other.toml"], id="-c"),
    pytest.param("refractium.toml", [], id="implicit"),
]


@pytest.mark.usefixtures("in_tmp")
@pytest.mark.parametrize(("name", "options"), FILES)
def test_a_deleted_file_cannot_be_read_at_reload(name: str, options: list[str]) -> None:
    Path(name).write_text(ROUTE, encoding="utf-8")
    load = cli_commands.config_loader(build_parser().parse_args(["run", *options]))
    assert load().source == name
    Path(name).unlink()
    with pytest.raises(ConfigError) as caught:
        load()
    assert str(caught.value) == f"{name}: cannot read: No such file or directory"


@pytest.mark.usefixtures("in_tmp")
@pytest.mark.parametrize(("name", "options"), FILES)
def test_run_reloads_the_file_it_started_with(
    name: str, options: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    reloads: list[Callable[[], Config]] = []

    async def serve(engine: object, *, transport: str, reload_config: Callable[[], Config]) -> None:
        reloads.append(reload_config)

    def run(start: Callable[[], Coroutine[Any, Any, None]], loop: str) -> None:
        asyncio.run(start())

    monkeypatch.setattr(cli_commands, "serve", serve)
    monkeypatch.setattr(cli_commands, "run", run)
    monkeypatch.setattr(logs, "configure", lambda level, fmt: None)
    Path(name).write_text(ROUTE, encoding="utf-8")
    assert main(["run", "-p", "0", *options]) == 0
    (reload_config,) = reloads
    assert reload_config().source == name
    Path(name).unlink()
    # What SIGHUP, the file watcher and POST /reload log, keeping the running table.
    with pytest.raises(ConfigError) as caught:
        reload_config()
    assert str(caught.value) == f"{name}: cannot read: No such file or directory"


@pytest.mark.usefixtures("in_tmp")
def test_without_a_file_or_routes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check"]) == 1
    assert capsys.readouterr().err == f"refractium: {NO_ROUTES}\n"
    with pytest.raises(RefractiumError) as caught:
        cli_commands.load_config(build_parser().parse_args(["run"]))
    assert str(caught.value) == NO_ROUTES


@pytest.mark.usefixtures("in_tmp")
def test_a_file_without_routes_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    Path("refractium.toml").write_text("[server]\nport = 1\n", encoding="utf-8")
    assert main(["check"]) == 1
    assert capsys.readouterr().err == f"refractium: refractium.toml: {NO_ROUTES}\n"


@pytest.mark.usefixtures("in_tmp")
def test_a_missing_file_at_start(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "-c", "missing.toml"]) == 1
    assert (
        capsys.readouterr().err
        == "refractium: missing.toml: cannot read: No such file or directory\n"
    )


@pytest.mark.usefixtures("in_tmp")
def test_check_shows_a_syslog_route_serving_tcp_and_udp(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["check", "-f", "syslog=127.0.0.1:514", "-f", "ssh=127.0.0.1:22"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:3] for line in lines[3:6]] == [
        ["#", "name", "transport"],
        ["0", "syslog", "both"],
        ["1", "ssh", "tcp"],
    ]
    assert "  1. syslog [both]" in lines
    assert lines[-1] == "config OK"

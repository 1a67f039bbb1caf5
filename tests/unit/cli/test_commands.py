"""The commands behind ``refractium``: which file they read, what ``check`` prints, exit codes."""

from __future__ import annotations

import asyncio
import logging
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

    async def serve(
        engine: object, *, transport: str, reload_config: Callable[[], Config], pidfile: None
    ) -> None:
        reloads.append(reload_config)

    def run(start: Callable[[], Coroutine[Any, Any, None]], loop: str) -> None:
        asyncio.run(start())

    monkeypatch.setattr(cli_commands, "serve", serve)
    monkeypatch.setattr(cli_commands, "run", run)
    monkeypatch.setattr(logs, "configure", lambda *args, **kwargs: None)
    Path(name).write_text(ROUTE, encoding="utf-8")
    assert main(["run", "-p", "0", *options]) == 0
    (reload_config,) = reloads
    assert reload_config().source == name
    Path(name).unlink()
    # What SIGHUP, the file watcher and POST /reload log, keeping the running table.
    with pytest.raises(ConfigError) as caught:
        reload_config()
    assert str(caught.value) == f"{name}: cannot read: No such file or directory"


FIRST_RUN = (
    "nothing to run: no ./refractium.toml, -c FILE or -f NAME=HOST:PORT; run 'refractium init'"
    " to write a starter config, or 'refractium demo' to try it"
)


@pytest.mark.usefixtures("in_tmp")
@pytest.mark.parametrize("argv", [[], ["check"], ["tcp", "-p", "0"]], ids=str)
def test_without_a_file_or_routes_says_how_to_start(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 1
    assert capsys.readouterr().err == f"refractium: {FIRST_RUN}\n"
    with pytest.raises(RefractiumError) as caught:
        cli_commands.load_config(build_parser().parse_args(["run"]))
    assert str(caught.value) == FIRST_RUN


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
    assert [line.split()[:4] for line in lines[3:6]] == [
        ["#", "id", "name", "transport"],
        ["0", "syslog", "syslog", "both"],
        ["1", "ssh", "ssh", "tcp"],
    ]
    assert "  1. syslog [both]" in lines
    assert lines[-1] == "config OK"


@pytest.mark.usefixtures("in_tmp")
def test_several_ports_from_the_command_line() -> None:
    args = build_parser().parse_args(["run", "-p", "443", "-p", "8443", "-f", "http=10.0.0.1:80"])
    assert cli_commands.load_config(args).server.port == (443, 8443)


LOG_TABLE = '[log]\nlevel = "debug"\nformat = "json"\n'


@pytest.mark.usefixtures("in_tmp")
@pytest.mark.parametrize(
    ("table", "options", "expected"),
    [
        ("", [], ("info", "text")),
        (LOG_TABLE, [], ("debug", "json")),
        (LOG_TABLE, ["--log-level", "error"], ("error", "json")),
        (LOG_TABLE, ["--log-format", "text"], ("debug", "text")),
        ("", ["--log-level", "warning", "--log-format", "json"], ("warning", "json")),
    ],
    ids=["defaults", "file", "level-option-wins", "format-option-wins", "options"],
)
def test_log_options_win_over_the_file(
    table: str,
    options: list[str],
    expected: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[tuple[Any, ...]] = []
    monkeypatch.setattr(logs, "configure", lambda *args, **kwargs: calls.append(args))
    Path("refractium.toml").write_text(table + ROUTE, encoding="utf-8")
    args = build_parser().parse_args(["run", *options])
    cli_commands.configure_logs(args, cli_commands.load_config(args))
    assert calls == [expected]


@pytest.mark.usefixtures("in_tmp")
def test_an_unwritable_log_file_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    Path("refractium.toml").write_text(
        '[log]\nfile = "no/such/dir/refractium.log"\n' + ROUTE, encoding="utf-8"
    )
    assert main(["run", "-p", "0"]) == 1
    assert capsys.readouterr().err == (
        "refractium: refractium.toml: log.file: cannot open 'no/such/dir/refractium.log': "
        "No such file or directory\n"
    )


SHADOWED = ROUTE + ROUTE.replace("9000", "9001")
SHADOW_WARNING = (
    "warning: protocols[1] (http): never matches: protocols[0] (http) comes first with the "
    "same protocol and the same or wider filters\n"
)


@pytest.mark.usefixtures("in_tmp")
def test_check_prints_warnings_and_strict_fails(capsys: pytest.CaptureFixture[str]) -> None:
    Path("refractium.toml").write_text(SHADOWED, encoding="utf-8")
    assert main(["check"]) == 0
    out, err = capsys.readouterr()
    assert err == SHADOW_WARNING
    assert out.splitlines()[-1] == "config OK, 1 warning"
    assert main(["check", "--strict"]) == 1
    out, err = capsys.readouterr()
    assert err == SHADOW_WARNING + "refractium: check --strict: 1 warning\n"
    assert "config OK" not in out


@pytest.mark.usefixtures("in_tmp")
def test_check_says_which_routes_each_port_serves(capsys: pytest.CaptureFixture[str]) -> None:
    Path("refractium.toml").write_text(
        "[server]\nport = [443, 8443]\n"
        + ROUTE
        + '[[protocols]]\nname = "ssh"\nforward_to = "127.0.0.1:22"\nports = [443]\n',
        encoding="utf-8",
    )
    assert main(["check", "--strict"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1:4] == [
        "listen:       0.0.0.0:443, 0.0.0.0:8443",
        "port 443:     0 http, 1 ssh",
        "port 8443:    0 http",
    ]


@pytest.mark.usefixtures("in_tmp")
def test_run_logs_the_warnings_at_start_and_reload(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    reloads: list[Callable[[], Config]] = []

    async def serve(engine: object, *, reload_config: Callable[[], Config], **_: object) -> None:
        reloads.append(reload_config)

    monkeypatch.setattr(cli_commands, "serve", serve)
    monkeypatch.setattr(cli_commands, "run", lambda start, loop: asyncio.run(start()))
    monkeypatch.setattr(logs, "configure", lambda *args, **kwargs: None)
    # caplog listens on the root logger; a real configure() earlier cut the tree off.
    monkeypatch.setattr(logging.getLogger("refractium"), "propagate", True)
    Path("refractium.toml").write_text(SHADOWED, encoding="utf-8")
    with caplog.at_level("WARNING", logger="refractium"):
        assert main(["run", "-p", "0"]) == 0
        reloads[0]()
    expected = SHADOW_WARNING.removeprefix("warning: ").rstrip("\n")
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [("WARNING", expected)] * 2

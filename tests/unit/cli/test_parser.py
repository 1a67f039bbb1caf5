"""The command line's grammar: repeated -p, log options, help texts, a mistyped command, -V."""

from __future__ import annotations

import argparse

import pytest

from refractium import __version__, native
from refractium.cli import main
from refractium.cli.parser import build_parser


def test_port_may_repeat() -> None:
    args = build_parser().parse_args(["run", "-p", "443", "-p", "8443"])
    assert args.port == [443, 8443]
    assert build_parser().parse_args(["check", "--port", "1"]).port == [1]
    assert build_parser().parse_args(["run"]).port is None


@pytest.mark.parametrize("command", ["run", "tcp", "udp", "demo"])
def test_log_options_default_to_unset(command: str) -> None:
    # Unset, so that [log] decides when the command line does not.
    args = build_parser().parse_args([command])
    assert (args.log_level, args.log_format) == (None, None)


def _options(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.Action]]:
    """Every option and positional of ``parser`` and its commands, with a name for reports."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += [(f"{name} {label}", a) for label, a in _options(sub)]
        elif not isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
            found.append(("/".join(action.option_strings) or action.dest, action))
    return found


def test_every_option_says_its_default() -> None:
    options = _options(build_parser())
    assert len(options) > 20
    shown = [(label, action) for label, action in options if action.help != argparse.SUPPRESS]
    missing = [label for label, action in shown if "(default: " not in (action.help or "")]
    assert missing == []


def test_a_mistyped_command_lists_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["chek"])
    assert exited.value.code == 2
    assert capsys.readouterr().err == (
        "refractium: argument COMMAND: invalid choice: 'chek' (choose from 'run', 'tcp', 'udp', "
        "'init', 'check', 'doctor', 'demo'); did you mean check? (see 'refractium --help')\n"
    )


def test_a_word_like_no_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["serve-all"])
    assert capsys.readouterr().err == (
        "refractium: argument COMMAND: invalid choice: 'serve-all' (choose from 'run', 'tcp', "
        "'udp', 'init', 'check', 'doctor', 'demo') (see 'refractium --help')\n"
    )


@pytest.mark.parametrize("flag", ["-V", "--version"])
def test_version(flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main([flag])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"refractium {__version__} ({native.kind()})\n"

"""The ``refractium`` command line's grammar: commands, options and their help.

Only argparse here; what each command does is in :mod:`refractium.cli.commands`.
Every option's help says its default, and a mistyped command is answered
with the list of commands and the nearest one.
"""

from __future__ import annotations

import argparse
import difflib
from typing import NoReturn

from refractium import __version__, native
from refractium.engine.serve import LOOPS

__all__ = [
    "COMMANDS",
    "DEFAULT_CONFIG",
    "LOG_FORMATS",
    "LOG_LEVELS",
    "build_parser",
    "unknown_command",
]

COMMANDS = ("run", "tcp", "udp", "init", "check", "doctor", "demo")
DEFAULT_CONFIG = "refractium.toml"
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line, like every other user error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"refractium: {message} (see 'refractium --help')\n")


def unknown_command(word: str) -> str:
    """The usage error for ``refractium WORD`` when WORD is no command."""
    choices = ", ".join(f"'{name}'" for name in COMMANDS)
    message = f"argument COMMAND: invalid choice: {word!r} (choose from {choices})"
    close = difflib.get_close_matches(word, COMMANDS, n=1)
    return f"{message}; did you mean {close[0]}?" if close else message


def _add_routing_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-c",
        "--config",
        metavar="FILE",
        help=f"config file (default: ./{DEFAULT_CONFIG} if present)",
    )
    parser.add_argument(
        "-b",
        "--bind",
        metavar="ADDR",
        help="listen address, comma-separated for several (default: server.bind, else 0.0.0.0)",
    )
    parser.add_argument(
        "-p",
        "--port",
        metavar="PORT",
        type=int,
        action="append",
        help="listen port; repeat for several; 0: any free port (default: server.port, else 8080)",
    )
    parser.add_argument(
        "-f",
        "--forward",
        metavar="NAME=HOST:PORT",
        action="append",
        default=[],
        help="route protocol NAME to HOST:PORT; repeat a NAME to make a pool "
        "(default: the file's routes only)",
    )


def _add_log_options(parser: argparse.ArgumentParser, *, from_file: bool) -> None:
    # Default None: a value given here wins over [log], and only when
    # neither says anything does the built-in default apply.
    level = "log.level, else info" if from_file else "info"
    fmt = "log.format, else text" if from_file else "text"
    parser.add_argument(
        "--log-level", choices=LOG_LEVELS, help=f"least severe level logged (default: {level})"
    )
    parser.add_argument("--log-format", choices=LOG_FORMATS, help=f"log lines (default: {fmt})")


def _add_loop_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--loop",
        default="auto",
        choices=LOOPS,
        help="event loop (default: auto, which is uvloop when installed)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command (DESIGN section 1)."""
    parser = _Parser(
        prog="refractium",
        description="One port, many services: a layer-4 protocol multiplexer.",
        epilog="'refractium [options]' is short for 'refractium run [options]'. "
        "New here? 'refractium init' writes a starter config; 'refractium demo' shows it working.",
    )
    parser.add_argument(
        "-V", "--version", action="version", version=f"refractium {__version__} ({native.kind()})"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, text in (
        ("run", "run the TCP and UDP listeners (the default)"),
        ("tcp", "run the TCP listener only"),
        ("udp", "run the UDP listener only"),
    ):
        cmd = sub.add_parser(name, help=text, description=text)
        _add_routing_options(cmd)
        _add_log_options(cmd, from_file=True)
        _add_loop_option(cmd)
        cmd.add_argument(
            "--pidfile",
            metavar="FILE",
            help="write the PID here once listening (default: no pid file)",
        )
        cmd.add_argument(
            "-w",
            "--workers",
            metavar="N",
            help='worker processes sharing the listeners, or "auto" for one per CPU '
            "(default: server.workers, else 1: this process alone)",
        )
        # Set by the supervisor when it starts a worker (INDEX:PID:FD); not for users.
        cmd.add_argument("--worker", metavar="LINK", help=argparse.SUPPRESS)
    init = sub.add_parser(
        "init",
        help="write a commented starter refractium.toml",
        description="write a commented starter config file; an existing file is never overwritten",
    )
    init.add_argument(
        "file",
        nargs="?",
        default=DEFAULT_CONFIG,
        help=f"where to write it (default: {DEFAULT_CONFIG})",
    )
    check = sub.add_parser(
        "check",
        help="validate a config, print the route table and warnings",
        description="validate a config as 'run' would, without side effects; print the "
        "route table, each port's routes, and warnings",
    )
    _add_routing_options(check)
    check.add_argument(
        "--strict",
        action="store_true",
        help="exit 1 when there is a warning (default: warnings do not fail)",
    )
    doctor = sub.add_parser(
        "doctor",
        help="check what the transparent routes need from this host",
        description="check this host for what transparent routes need (CAP_NET_ADMIN, "
        "policy routing, the packet mark, route_localnet) and print the commands that fix "
        "what is missing; only reads; exit 1 while something is missing",
    )
    doctor.add_argument(
        "-c",
        "--config",
        metavar="FILE",
        help=f"config file (default: ./{DEFAULT_CONFIG} if present)",
    )
    demo = sub.add_parser(
        "demo", help="start built-in backends behind the proxy and say what to try"
    )
    demo.add_argument(
        "-b",
        "--bind",
        default="127.0.0.1",
        metavar="ADDR",
        help="listen address (default: 127.0.0.1)",
    )
    demo.add_argument(
        "-p",
        "--port",
        type=int,
        default=8080,
        metavar="PORT",
        help="first port to try (default: 8080)",
    )
    _add_log_options(demo, from_file=False)
    _add_loop_option(demo)
    return parser

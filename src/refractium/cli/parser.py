"""The ``refractium`` command line's grammar: commands, options and their help.

Only argparse here; what each command does is in :mod:`refractium.cli.commands`.
"""

from __future__ import annotations

import argparse
from typing import NoReturn

from refractium import __version__
from refractium.engine.serve import LOOPS

__all__ = ["COMMANDS", "DEFAULT_CONFIG", "build_parser"]

COMMANDS = ("run", "tcp", "udp", "init", "check", "demo")
DEFAULT_CONFIG = "refractium.toml"


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line, like every other user error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"refractium: {message} (see 'refractium --help')\n")


def _add_routing_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-c", "--config", metavar="FILE", help="config file (default: ./refractium.toml if present)"
    )
    parser.add_argument(
        "-b", "--bind", metavar="ADDR", help="listen address (overrides server.bind)"
    )
    parser.add_argument(
        "-p",
        "--port",
        metavar="PORT",
        type=int,
        help="listen port (overrides server.port; 0: any free port)",
    )
    parser.add_argument(
        "-f",
        "--forward",
        metavar="NAME=HOST:PORT",
        action="append",
        default=[],
        help="route protocol NAME to HOST:PORT; repeat a NAME to make a pool",
    )


def _add_runtime_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log-level", default="info", choices=("debug", "info", "warning", "error")
    )
    parser.add_argument("--log-format", default="text", choices=("text", "json"))
    parser.add_argument(
        "--loop", default="auto", choices=LOOPS, help="event loop (auto: uvloop when installed)"
    )


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command (DESIGN section 1)."""
    parser = _Parser(
        prog="refractium",
        description="One port, many services: a layer-4 protocol multiplexer.",
        epilog="'refractium [options]' is short for 'refractium run [options]'.",
    )
    parser.add_argument("--version", action="version", version=f"refractium {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, text in (
        ("run", "run the TCP and UDP listeners (the default)"),
        ("tcp", "run the TCP listener only"),
        ("udp", "run the UDP listener only"),
    ):
        cmd = sub.add_parser(name, help=text, description=text)
        _add_routing_options(cmd)
        _add_runtime_options(cmd)
    init = sub.add_parser("init", help="write a commented starter refractium.toml")
    init.add_argument("file", nargs="?", default=DEFAULT_CONFIG)
    check = sub.add_parser("check", help="validate a config and print the route table")
    _add_routing_options(check)
    demo = sub.add_parser(
        "demo", help="start built-in backends behind the proxy and say what to try"
    )
    demo.add_argument("-b", "--bind", default="127.0.0.1", metavar="ADDR")
    demo.add_argument(
        "-p",
        "--port",
        type=int,
        default=8080,
        metavar="PORT",
        help="first port to try (default 8080)",
    )
    _add_runtime_options(demo)
    return parser

"""The ``refractium`` command line (DESIGN section 1).

Only this module turns errors into exit codes: a :class:`RefractiumError`
(a user mistake: bad config, port in use...) becomes one line on stderr and
exit status 1; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from refractium import __version__
from refractium.config import Config, apply_overrides, describe, load_file, parse_config
from refractium.engine.serve import LOOPS, run, serve
from refractium.errors import RefractiumError
from refractium.util import logs

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


def load_config(args: argparse.Namespace) -> Config:
    """The file (``-c``, or ./refractium.toml if present) with command-line overrides."""
    path = args.config
    if path is None and Path(DEFAULT_CONFIG).is_file():
        path = DEFAULT_CONFIG
    config = load_file(path) if path is not None else parse_config({}, source=None)
    config = apply_overrides(config, bind=args.bind, port=args.port, forwards=args.forward)
    if not config.protocols:
        where = f"{path}: " if path else ""
        raise RefractiumError(
            f"{where}no routes: add [[protocols]] to a config file or give -f NAME=HOST:PORT"
        )
    return config


def cmd_run(args: argparse.Namespace) -> int:
    from refractium.engine import Refractium

    logs.configure(args.log_level, args.log_format)
    engine = Refractium(load_config(args))
    transport = {"run": "both", "tcp": "tcp", "udp": "udp"}[args.command]
    run(
        lambda: serve(engine, transport=transport, reload_config=lambda: load_config(args)),
        loop=args.loop,
    )
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    from refractium.config import starter_text

    path = Path(args.file)
    try:
        with path.open("x", encoding="utf-8") as out:
            out.write(starter_text())
    except FileExistsError:
        raise RefractiumError(f"{path}: already exists; not overwriting") from None
    except OSError as exc:
        raise RefractiumError(f"{path}: cannot write: {exc.strerror}") from None
    print(f"wrote {path}; check it with: refractium check -c {path}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from refractium.engine import Refractium

    engine = Refractium(load_config(args))
    print(describe(engine.config))
    print()
    print(describe_priority(engine))
    print("config OK")
    return 0


def describe_priority(engine: object) -> str:
    """The order in which routes are considered, most specific first."""
    from refractium.engine import Refractium

    assert isinstance(engine, Refractium)
    lines = ["match priority (most specific first, then file order):"]
    routes = sorted(engine.tables.routes, key=lambda r: -r.best_key)
    for rank, route in enumerate(routes, 1):
        filters = route.describe_filters()
        lines.append(
            f"  {rank}. {route.name}{' ' + filters if filters else ''} [{route.transport}]"
        )
    return "\n".join(lines)


def cmd_demo(args: argparse.Namespace) -> int:
    from refractium.demo import run_demo

    logs.configure(args.log_level, args.log_format)
    run(lambda: run_demo(args.bind, args.port), loop=args.loop)
    return 0


HANDLERS = {
    "run": cmd_run,
    "tcp": cmd_run,
    "udp": cmd_run,
    "init": cmd_init,
    "check": cmd_check,
    "demo": cmd_demo,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``refractium`` script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0] not in COMMANDS and argv[0] not in ("-h", "--help", "--version")):
        argv.insert(0, "run")
    args = build_parser().parse_args(argv)
    try:
        return HANDLERS[args.command](args)
    except RefractiumError as exc:
        print(f"refractium: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # stdout closed early (`refractium check | head`): not an error of ours.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except asyncio.CancelledError:
        return 1


def entry() -> NoReturn:
    sys.exit(main())


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    entry()

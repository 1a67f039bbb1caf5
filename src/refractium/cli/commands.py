"""What each ``refractium`` command does, given its parsed arguments.

Each ``cmd_*`` returns the exit status, or raises :class:`RefractiumError`
for a user mistake, which :func:`refractium.cli.main` prints as one line.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from refractium.cli.parser import DEFAULT_CONFIG
from refractium.config import Config, apply_overrides, describe, load_file, parse_config
from refractium.engine.serve import run, serve
from refractium.errors import RefractiumError
from refractium.routing import Tables
from refractium.util import logs

__all__ = [
    "HANDLERS",
    "cmd_check",
    "cmd_demo",
    "cmd_init",
    "cmd_run",
    "config_file",
    "config_loader",
    "describe_priority",
    "load_config",
]


def config_file(args: argparse.Namespace) -> str | None:
    """The file to read: ``-c``, else ./refractium.toml when it exists, else None."""
    given: str | None = args.config
    if given is None and Path(DEFAULT_CONFIG).is_file():
        return DEFAULT_CONFIG
    return given


def config_loader(args: argparse.Namespace) -> Callable[[], Config]:
    """A function loading the configuration, now and at each reload.

    The file is chosen once, here: a reload reads the same file, and if it is
    gone says that it cannot be read, rather than going on without a file.
    """
    path = config_file(args)

    def load() -> Config:
        config = load_file(path) if path is not None else parse_config({}, source=None)
        config = apply_overrides(config, bind=args.bind, port=args.port, forwards=args.forward)
        if not config.protocols:
            where = f"{path}: " if path else ""
            raise RefractiumError(
                f"{where}no routes: add [[protocols]] to a config file or give -f NAME=HOST:PORT"
            )
        return config

    return load


def load_config(args: argparse.Namespace) -> Config:
    """The file (``-c``, or ./refractium.toml if present) with command-line overrides."""
    return config_loader(args)()


def cmd_run(args: argparse.Namespace) -> int:
    from refractium.engine import Refractium

    logs.configure(args.log_level, args.log_format)
    load = config_loader(args)
    engine = Refractium(load())
    transport = {"run": "both", "tcp": "tcp", "udp": "udp"}[args.command]
    run(lambda: serve(engine, transport=transport, reload_config=load), loop=args.loop)
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
    """Validate as ``run`` would, without side effects: no hook is built, nothing opened."""
    from refractium.engine.snapshot import validate

    config = load_config(args)
    tables = validate(config)
    print(describe(config))
    print()
    print(describe_priority(tables))
    print("config OK")
    return 0


def describe_priority(tables: Tables) -> str:
    """The order in which routes are considered, most specific first."""
    lines = ["match priority (most specific first, then file order):"]
    routes = sorted(tables.routes, key=lambda r: -r.best_key)
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


HANDLERS: dict[str, Callable[[argparse.Namespace], int]] = {
    "run": cmd_run,
    "tcp": cmd_run,
    "udp": cmd_run,
    "init": cmd_init,
    "check": cmd_check,
    "demo": cmd_demo,
}

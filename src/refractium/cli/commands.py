"""What each ``refractium`` command does, given its parsed arguments.

Each ``cmd_*`` returns the exit status, or raises :class:`RefractiumError`
for a user mistake, which :func:`refractium.cli.main` prints as one line.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from refractium.cli.parser import DEFAULT_CONFIG
from refractium.config import Config, apply_overrides, describe, load_file, parse_config
from refractium.engine.serve import run, serve
from refractium.errors import RefractiumError
from refractium.routing import Tables
from refractium.routing.lint import lint
from refractium.util import logs

log = logging.getLogger(__name__)

__all__ = [
    "FIRST_RUN",
    "HANDLERS",
    "cmd_check",
    "cmd_demo",
    "cmd_doctor",
    "cmd_init",
    "cmd_run",
    "config_file",
    "config_loader",
    "configure_logs",
    "describe_priority",
    "load_config",
]

#: What ``refractium`` says where there is nothing to run: no file, no ``-f``.
FIRST_RUN = (
    f"nothing to run: no ./{DEFAULT_CONFIG}, -c FILE or -f NAME=HOST:PORT; "
    "run 'refractium init' to write a starter config, or 'refractium demo' to try it"
)


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
        if path is None and not args.forward:
            raise RefractiumError(FIRST_RUN)
        config = load_file(path) if path is not None else parse_config({}, source=None)
        config = apply_overrides(config, bind=args.bind, port=args.port, forwards=args.forward)
        if getattr(args, "log_format", None):  # the access log writes in this format too
            config = replace(config, log=replace(config.log, format=args.log_format))
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


def configure_logs(args: argparse.Namespace, config: Config) -> None:
    """Logging as ``--log-level``/``--log-format`` say, else ``[log]``, else info/text.

    Raises:
        ConfigError: ``log.file`` cannot be opened or ``log.syslog`` reached.
    """
    table = config.log
    logs.configure(
        args.log_level or table.level or "info",
        args.log_format or table.format or "text",
        file=table.file,
        syslog=table.syslog,
        access=table.access,
        source=config.source,
    )


def cmd_run(args: argparse.Namespace) -> int:
    from refractium.engine import Refractium

    load = config_loader(args)
    config = load()
    configure_logs(args, config)

    def load_and_warn() -> Config:
        # At start and at each reload: what `check` would warn about.
        loaded = load()
        for warning in lint(loaded):
            log.warning("%s", warning)
        return loaded

    for warning in lint(config):
        log.warning("%s", warning)
    engine = Refractium(config)
    transport = {"run": "both", "tcp": "tcp", "udp": "udp"}[args.command]
    run(
        lambda: serve(
            engine, transport=transport, reload_config=load_and_warn, pidfile=args.pidfile
        ),
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
    """Validate as ``run`` would, without side effects: no hook is built, nothing opened.

    Warnings go to stderr, one line each; with ``--strict`` any of them
    makes the check fail.
    """
    from refractium.engine.snapshot import validate

    config = load_config(args)
    tables = validate(config)
    print(describe(config))
    print()
    print(describe_priority(tables))
    sys.stdout.flush()  # the table before the warnings, even through a pipe
    warnings = lint(config)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    count = f"{len(warnings)} warning{'s' if len(warnings) > 1 else ''}"
    if warnings and args.strict:
        raise RefractiumError(f"check --strict: {count}")
    print(f"config OK, {count}" if warnings else "config OK")
    return 0


def describe_priority(tables: Tables) -> str:
    """The order in which routes are considered, most specific first."""
    lines = ["match priority (most specific first, then file order):"]
    routes = sorted(tables.routes, key=lambda r: -r.best_key)
    for rank, route in enumerate(routes, 1):
        filters = route.describe_filters()
        lines.append(f"  {rank}. {route.id}{' ' + filters if filters else ''} [{route.transport}]")
    return "\n".join(lines)


def cmd_doctor(args: argparse.Namespace) -> int:
    """Check the host for the transparent routes; only reads (DESIGN section 9)."""
    from refractium.engine.doctor import LiveHost, report

    path = config_file(args)
    if path is None:
        raise RefractiumError(f"doctor: no ./{DEFAULT_CONFIG}; give -c FILE")
    text, status = report(load_file(path), LiveHost())
    print(text)
    return status


def cmd_demo(args: argparse.Namespace) -> int:
    from refractium.demo import run_demo

    logs.configure(args.log_level or "info", args.log_format or "text", access=True)
    run(lambda: run_demo(args.bind, args.port), loop=args.loop)
    return 0


HANDLERS: dict[str, Callable[[argparse.Namespace], int]] = {
    "run": cmd_run,
    "tcp": cmd_run,
    "udp": cmd_run,
    "init": cmd_init,
    "check": cmd_check,
    "doctor": cmd_doctor,
    "demo": cmd_demo,
}

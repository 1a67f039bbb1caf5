"""What each ``refractium`` command does, given its parsed arguments.

Each ``cmd_*`` returns the exit status, or raises :class:`RefractiumError`
for a user mistake, which :func:`refractium.cli.main` prints as one line.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from refractium.cli.parser import DEFAULT_CONFIG
from refractium.config import Config, apply_overrides, describe, load_file, parse_config
from refractium.config.load import usable_cpus
from refractium.config.schema import workers
from refractium.engine.serve import run, serve
from refractium.errors import RefractiumError
from refractium.routing import Route, Tables
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
        if getattr(args, "workers", None) is not None:
            count = workers("-w", _count(args.workers), usable_cpus())
            config = replace(config, server=replace(config.server, workers=count))
        if not config.protocols:
            where = f"{path}: " if path else ""
            raise RefractiumError(
                f"{where}no routes: add [[protocols]] to a config file or give -f NAME=HOST:PORT"
            )
        return config

    return load


def _count(text: str) -> int | str:
    """``-w``'s argument: a number as a number, anything else (``auto``) as given."""
    try:
        return int(text)
    except ValueError:
        return text


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
    if args.worker is not None:
        return _run_worker(args, load)
    if config.server.workers > 1:
        return _supervise(args, load, config)

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


def _supervise(args: argparse.Namespace, load: Callable[[], Config], config: Config) -> int:
    """``workers > 1``: validate as ``check`` does, then start and keep the workers."""
    from refractium.engine import privileges
    from refractium.engine.snapshot import validate
    from refractium.engine.supervisor import Supervisor
    from refractium.engine.worker import WorkerLink

    if "LISTEN_FDS" in os.environ:
        raise RefractiumError(
            "server.workers: socket activation (LISTEN_FDS) needs workers = 1; "
            "each worker opens its own listeners"
        )
    if 0 in config.server.port:
        raise RefractiumError(
            "server.workers: port 0 (any free port) needs workers = 1; "
            "each worker would get a port of its own"
        )

    def checked() -> tuple[Config, tuple[Route, ...]]:
        # At start and at each reload: parse, build the tables, say what `check` says.
        loaded = load()
        routes = validate(loaded).routes
        source = loaded.source if loaded.source != "builder" else None
        privileges.resolve(loaded.server.user, loaded.server.group, source)
        for warning in lint(loaded):
            log.warning("%s", warning)
        return loaded, routes

    # The same command line again, as a worker: `refractium [run|tcp|udp] OPTIONS --worker L`.
    given = sys.argv[1:]
    options = given[1:] if given and given[0] in ("run", "tcp", "udp") else given

    def command(link: WorkerLink) -> list[str]:
        return [sys.executable, "-m", "refractium", args.command, *options, "--worker", str(link)]

    supervisor = Supervisor(checked(), command, checked, pidfile=args.pidfile)
    status: int = run(supervisor.run, loop=args.loop)
    return status


def _run_worker(args: argparse.Namespace, load: Callable[[], Config]) -> int:
    """One of the supervisor's workers: serve with SO_REUSEPORT and the instance's tables.

    The supervisor checked the file and logged its warnings, and serves the
    admin API for the instance from every worker's figures.
    """
    from refractium.abuse.guard import Stores
    from refractium.engine import Refractium
    from refractium.engine.share import WorkerShare, read_instance_id
    from refractium.engine.worker import WorkerLink
    from refractium.relay.limits import SharedLimits
    from refractium.shared import allows
    from refractium.shared.bans import SharedBans
    from refractium.shared.buckets import SharedBuckets
    from refractium.shared.counts import SharedCounts
    from refractium.shared.deadlines import SharedDeadlines
    from refractium.shared.memory import SharedMemory
    from refractium.shared.offences import SharedOffences

    link = WorkerLink.parse(args.worker)
    counts = SharedCounts.attach(link.table("counts"), link.index - 1)
    allows.use(allows.SharedAllows(SharedDeadlines.attach(link.table("allows"))))
    stores = Stores(
        SharedBuckets.attach(link.table("buckets")),
        SharedOffences.attach(link.table("offences")),
        SharedBans.attach(link.table("bans")),
    )
    status = SharedMemory.attach(link.table("status"))
    share = WorkerShare(
        SharedLimits(counts),
        stores,
        lambda: status.words[0] == 1,
        instance_id=read_instance_id(status),
        drains_rates=link.index == 1,
    )
    engine = Refractium(load(), worker=share)
    transport = {"run": "both", "tcp": "tcp", "udp": "udp"}[args.command]
    run(
        lambda: serve(engine, transport=transport, reload_config=load, worker=link),
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

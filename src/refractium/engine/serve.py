"""Running an engine as the main program: event loop, signals, file limits, the service.

SIGTERM and SIGINT stop accepting and drain; SIGHUP re-reads the
configuration file and swaps the route table, keeping the running one if
the file is bad. uvloop is used when installed unless told otherwise.

As a service, in this order: ``[server] user``/``group`` are resolved
before anything listens; sockets passed by systemd (``LISTEN_FDS``) are
used instead of binding; once every listener is open the pid file is
written and privileges are dropped; then systemd hears ``READY=1``. Each
reload is bracketed by ``RELOADING=1`` and ``READY=1``, draining starts
with ``STOPPING=1``, and ``STATUS=`` says how many connections are open.

As one of a supervisor's workers (``worker`` given) the listeners are
opened with ``SO_REUSEPORT``; the supervisor is told once they are open,
and owns the pid file, the file watcher and systemd's messages; a repeated
stop signal changes nothing (the supervisor cuts by killing the worker).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import signal
import socket
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any

from refractium import __version__, native
from refractium.admin import figures
from refractium.config import Config
from refractium.engine import Refractium, privileges, systemd
from refractium.engine.watch import watch_file
from refractium.engine.worker import WorkerLink, answer_figures, watch_parent
from refractium.errors import ConfigError, RefractiumError
from refractium.util import accesslog, logs
from refractium.util.tasks import spawn

log = logging.getLogger(__name__)

LOOPS = ("auto", "asyncio", "uvloop")

#: How often systemd's STATUS= line is refreshed (when it changed).
STATUS_INTERVAL_S = 5.0
# How long an access line may wait for its batch to fill before it is written.
ACCESS_FLUSH_S = 0.5


def loop_factory(name: str = "auto") -> Callable[[], asyncio.AbstractEventLoop]:
    """The event loop constructor for ``name`` (auto: uvloop when installed)."""
    if name in ("auto", "uvloop"):
        try:
            import uvloop
        except ImportError:
            if name == "uvloop":
                raise RefractiumError("--loop: uvloop is not installed") from None
        else:
            factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
            return factory
    return asyncio.new_event_loop


def raise_open_file_limit() -> int:
    """Lift the soft RLIMIT_NOFILE to the hard one, so max_connections is reachable."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            log.debug("could not raise the open-file limit from %d", soft)
    return soft


def run(main: Callable[[], Awaitable[Any]], loop: str = "auto") -> Any:
    """Run ``main()`` to completion on the chosen event loop."""
    with asyncio.Runner(loop_factory=loop_factory(loop)) as runner:
        return runner.run(main())  # type: ignore[arg-type]


async def serve(
    engine: Refractium,
    *,
    transport: str = "both",
    reload_config: Callable[[], Config] | None = None,
    pidfile: str | None = None,
    worker: WorkerLink | None = None,
) -> None:
    """Start ``engine`` on ``transport`` (tcp/udp/both) and serve until a signal.

    Args:
        reload_config: what SIGHUP loads (the file plus the command line's
            overrides); by default the engine re-reads its file.
        pidfile: write the process id here once listening; removed at exit.
        worker: set in a supervisor's worker process (see the module's text).

    Raises:
        RefractiumError: a listener cannot be opened, a passed socket is no
            configured listener, the pid file cannot be written, or the
            privilege drop failed (nothing is left listening).
    """
    loop = asyncio.get_running_loop()
    if worker is not None:
        worker.follow_parent()
    limit = raise_open_file_limit()
    config = engine.config
    if limit < config.server.max_connections * 2:
        log.warning(
            "open-file limit %d is below what max_connections=%d may need",
            limit,
            config.server.max_connections,
        )
    source = config.source if config.source != "builder" else None
    # Before anything listens: an unknown user is a config mistake, not a
    # half-started service.
    identity = privileges.resolve(config.server.user, config.server.group, source)
    inherited = systemd.listen_fds()
    tasks: set[asyncio.Task[Any]] = set()

    def stop(signame: str) -> None:
        if any(task.get_name() == "shutdown" for task in tasks):
            if worker is not None:
                # systemd signals the whole group and the supervisor forwards:
                # two signals here are one stop.
                return
            # A second signal while draining: cut the grace period short.
            log.info("%s received again: closing open connections now", signame)
            engine.abort_connections()
            return
        log.info("%s received: stopping", signame)
        systemd.notify("STOPPING=1")
        spawn(engine.shutdown(), name="shutdown", owner=tasks)

    def reload() -> None:
        try:
            engine.reload_routes(reload_config() if reload_config else None)
        except (ConfigError, RefractiumError) as exc:
            log.error("reload failed, keeping the running routes: %s", exc)

    def reloading(done: bool) -> None:
        # Every reload (SIGHUP, the file watcher, POST /reload) goes through
        # the engine; ready again either way: a bad file leaves the old routes.
        if done:
            systemd.notify(f"READY=1\n{status_line(engine)}")
        else:
            systemd.notify(systemd.reloading_message())

    engine.on_reload(reloading)

    watching = asyncio.Event()  # set to stop the file watcher
    # Handlers first: a signal that comes while the listeners open still
    # means a clean stop.
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop, sig.name)
    loop.add_signal_handler(signal.SIGHUP, reload)
    loop.add_signal_handler(signal.SIGUSR1, logs.reopen)  # logrotate's cue
    written = False
    spawn(_flush_access_lines(), name="access-flush", owner=tasks)
    try:
        await _start(engine, transport, inherited, reuse_port=worker is not None)
        if worker is None:  # a worker's supervisor says it once for all
            log.info("refractium %s (%s) started", __version__, native.kind())
        if pidfile is not None:
            write_pidfile(pidfile)
            written = True
        path = engine.config.source
        watch = worker is None and engine.config.server.hot_reload
        if watch and path is not None and path != "builder":
            spawn(watch_file(path, reload, watching), name="watch-config", owner=tasks)
            # Let it import and set up its watch while still privileged.
            await asyncio.sleep(0)
        if identity is not None:
            try:
                privileges.drop(identity)
            except RefractiumError:
                await engine.shutdown(0)
                raise
        if worker is not None:
            worker.ready()
            spawn(watch_parent(worker, lambda: stop("SIGTERM")), name="parent", owner=tasks)
            figures_of = partial(figures.read, engine)
            spawn(answer_figures(worker.figures_fd, figures_of), name="figures", owner=tasks)
        if systemd.notify(f"READY=1\n{status_line(engine)}"):
            spawn(_report_status(engine), name="systemd-status", owner=tasks)
        await engine.wait_stopped()
    finally:
        watching.set()
        for task in tasks:
            if task.get_name() in ("systemd-status", "access-flush", "parent", "figures"):
                task.cancel()
        accesslog.flush()
        loop.remove_signal_handler(signal.SIGHUP)
        loop.remove_signal_handler(signal.SIGUSR1)
        if written and pidfile is not None:
            remove_pidfile(pidfile)
    log.info("stopped")


async def _flush_access_lines() -> None:
    """Write waiting access lines twice a second: a quiet proxy's lines show soon too."""
    while True:
        await asyncio.sleep(ACCESS_FLUSH_S)
        accesslog.flush()


async def _start(
    engine: Refractium, transport: str, inherited: Sequence[socket.socket], reuse_port: bool
) -> None:
    if transport == "tcp":
        await engine.start_tcp(inherited=inherited, reuse_port=reuse_port)
    elif transport == "udp":
        await engine.start_udp(inherited=inherited, reuse_port=reuse_port)
    else:
        await engine.start_both(inherited=inherited, reuse_port=reuse_port)


def status_line(engine: Refractium) -> str:
    """systemd's ``STATUS=`` line: what ``systemctl status`` shows."""
    return f"STATUS={engine.open_connections} connections, {engine.open_flows} UDP flows open"


async def _report_status(engine: Refractium) -> None:
    last = status_line(engine)
    while True:
        await asyncio.sleep(STATUS_INTERVAL_S)
        line = status_line(engine)
        if line != last:
            systemd.notify(line)
            last = line


def write_pidfile(path: str) -> None:
    """Write this process's id to ``path`` (one line), replacing what was there.

    Raises:
        RefractiumError: the file cannot be written.
    """
    # Written aside and renamed over: a reader never sees it empty or half written.
    aside = f"{path}.{os.getpid()}.tmp"
    try:
        with open(aside, "w", encoding="ascii") as out:
            out.write(f"{os.getpid()}\n")
        os.replace(aside, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(aside)
        raise RefractiumError(f"{path}: cannot write the pid file: {exc.strerror}") from None


def remove_pidfile(path: str) -> None:
    """Remove ``path`` if it still holds this process's id (another may have taken it)."""
    try:
        with open(path, encoding="ascii") as held:
            if held.read().strip() != str(os.getpid()):
                return
        os.unlink(path)
    except OSError as exc:
        # After a privilege drop the directory must be writable by that user.
        log.warning("cannot remove the pid file %s: %s", path, exc.strerror)

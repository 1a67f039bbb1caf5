"""Running an engine as the main program: event loop, signals, file limits.

SIGTERM and SIGINT stop accepting and drain (DESIGN section 1); SIGHUP
re-reads the configuration file and swaps the route table, keeping the
running one if the file is bad. uvloop is used when installed unless told
otherwise.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import signal
from collections.abc import Awaitable, Callable
from typing import Any

from refractium.config import Config
from refractium.engine import Refractium
from refractium.engine.watch import watch_file
from refractium.errors import ConfigError, RefractiumError
from refractium.util.tasks import spawn

log = logging.getLogger(__name__)

LOOPS = ("auto", "asyncio", "uvloop")


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
) -> None:
    """Start ``engine`` on ``transport`` (tcp/udp/both) and serve until a signal.

    Args:
        reload_config: what SIGHUP loads (the file plus the command line's
            overrides); by default the engine re-reads its file.
    """
    loop = asyncio.get_running_loop()
    limit = raise_open_file_limit()
    if limit < engine.config.server.max_connections * 2:
        log.warning(
            "open-file limit %d is below what max_connections=%d may need",
            limit,
            engine.config.server.max_connections,
        )
    tasks: set[asyncio.Task[Any]] = set()

    def stop(signame: str) -> None:
        if any(task.get_name() == "shutdown" for task in tasks):
            # A second signal while draining: cut the grace period short.
            log.info("%s received again: closing open connections now", signame)
            engine.abort_connections()
            return
        log.info("%s received: stopping", signame)
        spawn(engine.shutdown(), name="shutdown", owner=tasks)

    def reload() -> None:
        try:
            engine.reload_routes(reload_config() if reload_config else None)
        except (ConfigError, RefractiumError) as exc:
            log.error("reload failed, keeping the running routes: %s", exc)

    watching = asyncio.Event()  # set to stop the file watcher
    # Handlers first: a signal that comes while the listeners open still
    # means a clean stop.
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop, sig.name)
    loop.add_signal_handler(signal.SIGHUP, reload)
    if transport == "tcp":
        await engine.start_tcp()
    elif transport == "udp":
        await engine.start_udp()
    else:
        await engine.start_both()
    source = engine.config.source
    if engine.config.server.hot_reload and source is not None and source != "builder":
        spawn(watch_file(source, reload, watching), name="watch-config", owner=tasks)
    try:
        await engine.wait_stopped()
    finally:
        watching.set()
        loop.remove_signal_handler(signal.SIGHUP)
    log.info("stopped")

"""The whole instance as the admin API sees it in a supervisor: every worker's figures, merged.

:class:`InstanceView` satisfies :class:`~refractium.admin.view.EngineView`,
so the admin server, the metrics collector, ``/status``, ``/remotes`` and
the dashboard run in the supervisor unchanged. Its figures come from
``pull`` (the supervisor asks every worker over its socket), taken again
before each admin request (requests arriving together share one question)
and once a second for the dashboard's history; the routes are the ones the supervisor
validated. A dead worker's last counters are kept (:func:`figures.retired`)
so the instance's totals never go back when one is replaced.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from refractium.abuse.guard import Guard
from refractium.admin.figures import Figures, merge, retired
from refractium.admin.view import BackendState, RouteLoad
from refractium.endpoint.remotes import RemoteMap
from refractium.errors import RefractiumError
from refractium.hooks.dispatch import HookStats
from refractium.relay.stats import TcpStats, UdpStats
from refractium.routing import Route

__all__ = ["InstanceView", "MergedRemotes"]


class MergedRemotes(RemoteMap):
    """What every worker's RemoteMap has seen, as one map for ``/remotes`` and the dashboard."""

    name = "remote-map (all workers)"

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        super().__init__()
        self._rows = rows

    def snapshot(self) -> list[dict[str, Any]]:
        return self._rows

    def __len__(self) -> int:
        return len(self._rows)


class InstanceView:
    """Every worker of one instance, read as one engine."""

    def __init__(
        self,
        routes: tuple[Route, ...],
        source: str | None,
        pull: Callable[[], Awaitable[Mapping[int, Figures]]],
        reload: Callable[[], tuple[Route, ...]],
        guard: Guard,
    ) -> None:
        """
        Args:
            routes: the routes of the file the supervisor validated.
            source: that file.
            pull: each running worker's figures now, by process id (a
                worker that did not answer is left out).
            reload: validate the file and have every worker reload; the new
                routes (raises ConfigError, RefractiumError).
            guard: abuse control over the tables the workers share: the bans
                are read and made there; its counters are the workers' sum.
        """
        self._routes = routes
        self._source = source
        self._pull = pull
        self._reload = reload
        self._guard = guard
        self._latest: dict[int, Figures] = {}
        self._gone: set[int] = set()
        self._retired = Figures()
        self._merged = Figures()
        self._asked = 0  # questions to the workers begun so far
        self._pulling: asyncio.Future[None] | None = None

    # -- keeping it current ---------------------------------------------------

    async def refresh(self) -> None:
        """Ask the workers for figures taken after this call began; one question at a time.

        Requests that arrive while the workers are being asked wait for the
        next question rather than take an answer that may predate them, so
        a scrape right after a connection ended counts it. Requests arriving
        together share that next question.
        """
        began = self._asked  # questions begun before this call
        while True:
            if self._pulling is None:
                await self._pull_once()
                return
            waited = self._asked
            await asyncio.shield(self._pulling)
            if waited > began:
                return  # a question begun after this call was answered

    async def _pull_once(self) -> None:
        self._asked += 1
        self._pulling = asyncio.get_running_loop().create_future()
        try:
            answers = await self._pull()
            for pid, figures in answers.items():
                if pid not in self._gone:
                    self._latest[pid] = figures
            self._merged = merge([self._retired, *self._latest.values()])
            self._guard.stats = self._merged.guard
        finally:
            done, self._pulling = self._pulling, None
            done.set_result(None)

    def worker_gone(self, pid: int) -> None:
        """The worker ``pid`` exited: keep its last counters, forget its open connections."""
        self._gone.add(pid)
        last = self._latest.pop(pid, None)
        if last is not None:
            self._retired = merge([self._retired, retired(last)])
            self._merged = merge([self._retired, *self._latest.values()])

    @property
    def workers_reporting(self) -> int:
        """How many workers answered the last time they were asked."""
        return len(self._latest)

    # -- EngineView -----------------------------------------------------------

    @property
    def routes(self) -> tuple[Route, ...]:
        return self._routes

    @property
    def config_source(self) -> str | None:
        return self._source

    @property
    def tcp_stats(self) -> TcpStats:
        if self._merged.tcp is None:
            raise RefractiumError("no worker serves TCP")
        return self._merged.tcp

    @property
    def udp_stats(self) -> UdpStats:
        if self._merged.udp is None:
            raise RefractiumError("no worker serves UDP")
        return self._merged.udp

    @property
    def open_connections(self) -> int:
        return self._merged.open_connections

    @property
    def open_flows(self) -> int:
        return self._merged.open_flows

    @property
    def hook_stats(self) -> HookStats:
        return self._merged.hooks

    @property
    def endpoint_hooks(self) -> tuple[object, ...]:
        rows = self._merged.remotes
        return () if rows is None else (MergedRemotes(rows),)

    def live_load(self) -> Mapping[tuple[str, str], RouteLoad]:
        return self._merged.load

    def backends(self) -> Sequence[BackendState]:
        return self._merged.backends

    @property
    def guard(self) -> Guard:
        return self._guard

    def reload_routes(self) -> None:
        self._routes = self._reload()

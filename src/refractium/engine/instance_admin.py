"""The admin API of a supervisor: one listener for the whole instance.

The :class:`~refractium.admin.server.AdminServer` runs here unchanged, over
an :class:`~refractium.admin.instance.InstanceView` that merges what every
worker reports. The figures are asked for before each request (unless a
few milliseconds old) and once a second, so the dashboard's history has a
sample each second. Besides the workers' series, ``/metrics`` has the
supervisor's own (workers running, restarts), and ``/status`` lists the
workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from refractium.admin.history import SAMPLE_INTERVAL_S
from refractium.admin.instance import InstanceView
from refractium.admin.metrics import PREFIX
from refractium.admin.server import AdminServer

if TYPE_CHECKING:
    from refractium.engine.supervisor import Supervisor

log = logging.getLogger(__name__)

__all__ = ["InstanceAdmin"]


class WorkersCollector(Collector):
    """The supervisor's own series: workers running and how often one was restarted."""

    def __init__(self, supervisor: Supervisor) -> None:
        self._supervisor = supervisor

    def collect(self) -> Iterator[Metric]:
        supervisor = self._supervisor
        yield GaugeMetricFamily(
            PREFIX + "workers", "Worker processes running now.", value=len(supervisor.pids)
        )
        yield CounterMetricFamily(
            PREFIX + "worker_restarts_total",
            "Worker processes started again after one died.",
            value=supervisor.restarts,
        )


class InstanceAdmin:
    """The admin listener of a supervisor, and the once-a-second pull that feeds it."""

    def __init__(self, supervisor: Supervisor) -> None:
        config = supervisor.config
        bind = config.admin.bind
        assert bind is not None
        self._supervisor = supervisor
        self.view = InstanceView(
            supervisor.routes,
            config.source,
            supervisor.figures,
            supervisor.reload_checked,
            supervisor.guard,
        )
        self.server = AdminServer(
            self.view,
            bind.host,
            bind.port,
            config.admin.token,
            before=self.view.refresh,
            collectors=(WorkersCollector(supervisor),),
            extra_status=self._workers,
        )
        self._pulling: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Read the workers once, then listen (RefractiumError: the address is taken)."""
        await self.view.refresh()
        await self.server.start()
        self._pulling = asyncio.get_running_loop().create_task(self._pull(), name="admin-pull")

    async def close(self) -> None:
        task, self._pulling = self._pulling, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.server.close()

    def _workers(self) -> dict[str, Any]:
        supervisor = self._supervisor
        return {"workers": supervisor.workers_status(), "worker_restarts": supervisor.restarts}

    async def _pull(self) -> None:
        """Ask the workers every sample interval, so the history never reads old figures."""
        while True:
            await asyncio.sleep(SAMPLE_INTERVAL_S)
            try:
                await self.view.refresh()
            except Exception:  # a bug of ours: say it, keep the admin API going
                log.error("reading the workers' figures failed", exc_info=True)

"""An engine's abuse control: its guard, the deny file it watches, its part in the fleet.

One :class:`Defences` per :class:`~refractium.engine.Refractium`: it builds
the :class:`~refractium.abuse.guard.Guard` the relay asks, follows
``deny_file`` once the engine runs, and with ``[state] backend = "redis"``
keeps the bans, allows and rates in step with the other instances
(:mod:`refractium.fleet`). In a supervisor's worker the supervisor keeps
the bans and allows; the worker only exchanges the rate tokens it takes.
"""

from __future__ import annotations

from refractium.abuse.guard import Guard
from refractium.abuse.guard import use as guard_in_use
from refractium.config import Config
from refractium.config.model import OnError, StateBackend
from refractium.engine.denylist import DenyFileWatch
from refractium.engine.share import WorkerShare
from refractium.fleet.link import RedisLink
from refractium.fleet.rates import RateExchange
from refractium.fleet.sync import FleetSync
from refractium.shared import allows

__all__ = ["Defences"]


class Defences:
    """The guard of one engine, and what keeps it fed once the engine runs."""

    def __init__(self, config: Config, worker: WorkerShare | None) -> None:
        self._worker = worker
        self.guard = Guard(config.limits, worker.stores if worker is not None else None)
        if worker is not None and config.state.backend is StateBackend.REDIS:
            self.guard.follow_state(worker.state_up, config.state.on_error is OnError.CLOSED)
        self._deny_file = DenyFileWatch(self.guard)
        self._fleet: FleetSync | None = None
        self._rates: RateExchange | None = None

    def configure(self, config: Config) -> None:
        """A reload: the new lists and rates (the fleet keeps the [state] it started with)."""
        self.guard.configure(config.limits)

    def running(self, config: Config) -> None:
        """The engine listens (or reloaded): follow the deny file, join the fleet (once)."""
        self._deny_file.follow(config.limits.deny_file)
        guard_in_use(self.guard)  # refractium.state.ban reaches this engine
        self._start_fleet(config)

    def _start_fleet(self, config: Config) -> None:
        state = config.state
        if self._rates is not None or state.backend is not StateBackend.REDIS:
            return
        worker = self._worker
        if worker is not None:
            if worker.instance_id:
                link = RedisLink(state.url, state.prefix)
                self._rates = RateExchange(
                    link, self.guard, worker.instance_id, drain=worker.drains_rates, keep_link=True
                )
                self._rates.start()
            return
        link = RedisLink(state.url, state.prefix)
        self._fleet = FleetSync(link, self.guard.stores.bans, allows.current())
        self.guard.follow_state(lambda: link.up, state.on_error is OnError.CLOSED)
        self._fleet.start()
        self._rates = RateExchange(link, self.guard, self._fleet.origin, drain=True)
        self._rates.start()

    async def close(self) -> None:
        """Stop watching the deny file and leave the fleet."""
        self._deny_file.stop()
        if self._rates is not None:
            await self._rates.close()
            self._rates = None
        if self._fleet is not None:
            await self._fleet.close()
            self._fleet = None

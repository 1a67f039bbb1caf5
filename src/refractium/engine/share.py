"""What a supervisor's worker shares with the other workers of its instance.

Given to :class:`~refractium.engine.Refractium` by the ``refractium``
command in each worker (never by a program that embeds the engine, which
is one process): the tables the caps and ``[limits]`` count in, and whether
the fleet's Redis answers (the supervisor keeps it in step and says so in a
table of its own). The admin API and Redis are the supervisor's; the
worker serves neither.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from refractium.abuse.guard import Stores
from refractium.relay.limits import Limits

__all__ = ["WorkerShare"]


@dataclass(frozen=True, slots=True)
class WorkerShare:
    """The shared-memory tables of one worker, and the supervisor's word on Redis."""

    limits: Limits  # open connections, per client and in total
    stores: Stores  # [limits]: buckets, offence counts, bans
    state_up: Callable[[], bool]  # [state] backend = "redis": whether it answers

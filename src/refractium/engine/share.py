"""What a supervisor's worker shares with the other workers of its instance.

Given to :class:`~refractium.engine.Refractium` by the ``refractium``
command in each worker (never by a program that embeds the engine, which
is one process): the tables the caps and ``[limits]`` count in, and whether
the fleet's Redis answers (the supervisor keeps it in step and says so in a
table of its own). The admin API and the fleet's bans and allows are the
supervisor's; the worker serves neither, but sends the tokens it takes to
the fleet itself (:mod:`refractium.fleet.rates`), under the instance's name.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass

from refractium.abuse.guard import Stores
from refractium.relay.limits import Limits
from refractium.shared.memory import SharedMemory

__all__ = ["STATUS_BYTES", "WorkerShare", "new_instance_id", "read_instance_id"]

#: The supervisor's status table: a word, 1 while Redis answers; a word unused;
#: then the instance's name in the fleet, 8 random bytes.
STATUS_BYTES = 16
_ID_AT = 8


def new_instance_id(status: SharedMemory) -> str:
    """Draw the instance's name (16 hex digits) and write it to the status table."""
    name = secrets.token_bytes(STATUS_BYTES - _ID_AT)
    status.mm[_ID_AT:STATUS_BYTES] = name
    return name.hex()


def read_instance_id(status: SharedMemory) -> str:
    """The instance's name as the supervisor wrote it ("" if it wrote none)."""
    name = status.mm[_ID_AT:STATUS_BYTES] if status.size >= STATUS_BYTES else b""
    return name.hex() if any(name) else ""


@dataclass(frozen=True, slots=True)
class WorkerShare:
    """The shared-memory tables of one worker, and the supervisor's word on Redis."""

    limits: Limits  # open connections, per client and in total
    stores: Stores  # [limits]: buckets, offence counts, bans
    state_up: Callable[[], bool]  # [state] backend = "redis": whether it answers
    # [state] backend = "redis": the instance's name in the fleet's rate counts (the
    # supervisor's, the same for every worker; "": none), and whether this worker is
    # the one that drains the shared buckets of what other instances took (worker 1).
    instance_id: str = ""
    drains_rates: bool = False

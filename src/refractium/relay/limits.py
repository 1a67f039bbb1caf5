"""Connection admission: the global and per-IP caps.

Counting happens at accept time, before any byte is read, so a flood of
idle connections from one address is refused before it costs a peek buffer.
The caps come with each call (from the snapshot the connection took), so a
reload that changes them needs no update here.

One process counts in a dict (:class:`ConnectionLimits`). The workers of one
instance count in the shared-memory table of :mod:`refractium.shared.counts`
(:class:`SharedLimits`), so the caps hold for the instance whichever worker
accepts: about 6 µs per connection, and no process waits on another.
"""

from __future__ import annotations

from enum import Enum, auto
from typing import Protocol

from refractium.shared.counts import SharedCounts


class Refusal(Enum):
    """Why a connection was not admitted."""

    GLOBAL_LIMIT = auto()
    PER_IP_LIMIT = auto()
    SHUTTING_DOWN = auto()
    TABLE_FULL = auto()  # the workers' shared table has no room for one more address


class Limits(Protocol):
    """What admission needs of a counter of open connections."""

    def admit(self, ip: str, max_total: int, max_per_ip: int) -> Refusal | None: ...

    def rekey(self, old: str, new: str, max_per_ip: int) -> Refusal | None: ...

    def release(self, ip: str) -> None: ...


class ConnectionLimits:
    """Open connections, in total and per client IP. ``max_per_ip = 0``: no per-IP cap."""

    __slots__ = ("by_ip", "total")

    def __init__(self) -> None:
        self.total = 0
        self.by_ip: dict[str, int] = {}

    def admit(self, ip: str, max_total: int, max_per_ip: int) -> Refusal | None:
        """Count a new connection from ``ip``, or say why it is refused.

        ``ip = ""`` counts toward the global cap only: a trusted proxy's
        connection, until its PROXY header names the real client.
        """
        if self.total >= max_total:
            return Refusal.GLOBAL_LIMIT
        if ip and max_per_ip and self.by_ip.get(ip, 0) >= max_per_ip:
            return Refusal.PER_IP_LIMIT
        self.total += 1
        if ip:
            self.by_ip[ip] = self.by_ip.get(ip, 0) + 1
        return None

    def rekey(self, old: str, new: str, max_per_ip: int) -> Refusal | None:
        """Count a connection under ``new`` instead of ``old``, or refuse it (unchanged)."""
        if new and max_per_ip and self.by_ip.get(new, 0) >= max_per_ip:
            return Refusal.PER_IP_LIMIT
        self._forget(old)
        if new:
            self.by_ip[new] = self.by_ip.get(new, 0) + 1
        return None

    def release(self, ip: str) -> None:
        """Forget one connection counted under ``ip``."""
        self.total -= 1
        self._forget(ip)

    def _forget(self, ip: str) -> None:
        if not ip:
            return
        held = self.by_ip[ip] - 1
        if held:
            self.by_ip[ip] = held
        else:
            del self.by_ip[ip]


_SHARED_REFUSALS = {
    "global": Refusal.GLOBAL_LIMIT,
    "per_ip": Refusal.PER_IP_LIMIT,
    "full": Refusal.TABLE_FULL,
}


class SharedLimits:
    """The caps counted for every worker of the instance, in shared memory.

    Without a per-IP cap a connection is counted in the total only: no slot
    of the address table is taken (a third of the cost). Which connections
    were counted so is remembered here, since a reload may set the cap
    before they end.
    """

    __slots__ = ("counts", "total_only")

    def __init__(self, counts: SharedCounts) -> None:
        self.counts = counts
        # Address -> its connections counted in the total only, in this worker.
        self.total_only: dict[str, int] = {}

    def admit(self, ip: str, max_total: int, max_per_ip: int) -> Refusal | None:
        if max_per_ip or not ip:
            why = self.counts.admit(ip, max_total, max_per_ip)
        else:
            why = self.counts.admit("", max_total, 0)
            if why is None:
                self.total_only[ip] = self.total_only.get(ip, 0) + 1
        return None if why is None else _SHARED_REFUSALS[why]

    def rekey(self, old: str, new: str, max_per_ip: int) -> Refusal | None:
        if not max_per_ip:
            # Both counted in the total only: nothing moves but the name.
            self._forget_total_only(old)
            if new:
                self.total_only[new] = self.total_only.get(new, 0) + 1
            return None
        why = self.counts.rekey("" if old in self.total_only else old, new, max_per_ip)
        if why is None:
            self._forget_total_only(old)
        return None if why is None else _SHARED_REFUSALS[why]

    def release(self, ip: str) -> None:
        if ip and ip in self.total_only:
            self._forget_total_only(ip)
            ip = ""
        self.counts.release(ip)

    def _forget_total_only(self, ip: str) -> None:
        held = self.total_only.get(ip)
        if held is None:
            return
        if held > 1:
            self.total_only[ip] = held - 1
        else:
            del self.total_only[ip]

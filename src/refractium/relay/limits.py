"""Connection admission: the global and per-IP caps.

Counting happens at accept time, before any byte is read, so a flood of
idle connections from one address is refused before it costs a peek buffer.
The caps come with each call (from the snapshot the connection took), so a
reload that changes them needs no update here.
"""

from __future__ import annotations

from enum import Enum, auto


class Refusal(Enum):
    """Why a connection was not admitted."""

    GLOBAL_LIMIT = auto()
    PER_IP_LIMIT = auto()
    SHUTTING_DOWN = auto()


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

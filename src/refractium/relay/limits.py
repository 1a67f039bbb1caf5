"""Connection admission: the global and per-IP caps.

Counting happens at accept time, before any byte is read, so a flood of
idle connections from one address is refused before it costs a peek buffer.
"""

from __future__ import annotations

from enum import Enum, auto


class Refusal(Enum):
    """Why a connection was not admitted."""

    GLOBAL_LIMIT = auto()
    PER_IP_LIMIT = auto()
    SHUTTING_DOWN = auto()


class ConnectionLimits:
    """Open connections, in total and per client IP, against their caps.

    ``max_per_ip = 0`` means no per-IP cap.
    """

    __slots__ = ("by_ip", "max_per_ip", "max_total", "total")

    def __init__(self, max_total: int, max_per_ip: int) -> None:
        self.max_total = max_total
        self.max_per_ip = max_per_ip
        self.total = 0
        self.by_ip: dict[str, int] = {}

    def admit(self, ip: str) -> Refusal | None:
        """Count a new connection from ``ip``, or say why it is refused.

        ``ip = ""`` counts toward the global cap only: a trusted proxy's
        connection, until its PROXY header names the real client.
        """
        if self.total >= self.max_total:
            return Refusal.GLOBAL_LIMIT
        if ip and self._over(ip):
            return Refusal.PER_IP_LIMIT
        self.total += 1
        if ip:
            self.by_ip[ip] = self.by_ip.get(ip, 0) + 1
        return None

    def rekey(self, old: str, new: str) -> Refusal | None:
        """Count a connection under ``new`` instead of ``old``, or refuse it (unchanged)."""
        if new and self._over(new):
            return Refusal.PER_IP_LIMIT
        self._forget(old)
        if new:
            self.by_ip[new] = self.by_ip.get(new, 0) + 1
        return None

    def release(self, ip: str) -> None:
        """Forget one connection counted under ``ip``."""
        self.total -= 1
        self._forget(ip)

    def _over(self, ip: str) -> bool:
        return bool(self.max_per_ip) and self.by_ip.get(ip, 0) >= self.max_per_ip

    def _forget(self, ip: str) -> None:
        if not ip:
            return
        held = self.by_ip[ip] - 1
        if held:
            self.by_ip[ip] = held
        else:
            del self.by_ip[ip]

    def resize(self, max_total: int, max_per_ip: int) -> None:
        """Apply new caps; connections already open are kept."""
        self.max_total = max_total
        self.max_per_ip = max_per_ip

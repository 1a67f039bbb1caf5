"""Backend pools and the order in which their members are tried.

Pure: a pool never dials. The relay asks for the candidates of one
connection, in the order to try them (the balancer's pick first, then the
rest of the pool as failover).
"""

from __future__ import annotations

from collections.abc import Sequence

from refractium.addr import Address
from refractium.config import Balance


class Pool:
    """The backends of one route and its balancing policy."""

    __slots__ = ("_next", "balance", "members")

    def __init__(self, members: Sequence[Address], balance: Balance = Balance.ROUND_ROBIN) -> None:
        if not members:
            raise ValueError("empty pool")
        self.members = tuple(members)
        self.balance = balance
        self._next = 0

    def candidates(self) -> tuple[Address, ...]:
        """Every member once, starting with the balancer's choice."""
        members = self.members
        if len(members) == 1:
            return members
        start = self._next
        self._next = (start + 1) % len(members)
        return members[start:] + members[:start]

    def __repr__(self) -> str:
        return f"Pool({', '.join(map(str, self.members))}; {self.balance})"

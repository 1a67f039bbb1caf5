"""What abuse control keeps per client group, whatever keeps it.

Three kinds of state, each behind a small protocol so a decision reads the
same whether it is kept in this process (``refractium.abuse.local``), in
memory the workers of one instance share (``refractium.shared.buckets``,
``offences``, ``bans``), or synchronised with other instances:

* :class:`Buckets`: token buckets, one per key (a client group, or a route
  and a client group), for connection rates;
* :class:`Offences`: how many offences a key committed in a window;
* :class:`Bans`: networks refused at accept until a deadline.

Keys are 16 bytes: a client group's masked address (IPv4 mapped into
``::ffff:0:0/96``), or a hash of a route id and that address. Times are
``time.time()`` seconds. Every method is synchronous and never waits on
another process longer than a lock held for microseconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network
from typing import Protocol

__all__ = ["Ban", "Bans", "Buckets", "Offences"]

Network = IPv4Network | IPv6Network


@dataclass(frozen=True, slots=True)
class Ban:
    """One banned network: an address (/32, /128), a client group or a CIDR."""

    network: Network
    reason: str  # "unidentified", "limited"... (the offence that tipped it) or the API's text
    since: float
    expires: float

    @property
    def address(self) -> str:
        """As the admin API writes it: a bare address for a single host, else a CIDR."""
        net = self.network
        return str(net.network_address) if net.prefixlen == net.max_prefixlen else str(net)


class Buckets(Protocol):
    """Token buckets by key."""

    def take(self, key: bytes, per_s: float, burst: float, now: float) -> float:
        """Take one token from ``key``'s bucket (full when new or forgotten).

        Returns 0.0 when a token was taken, else the seconds until one will
        be there (the client's ``Retry-After``); nothing is taken then.
        """
        ...

    def drain(self, key: bytes, n: int, per_s: float, burst: float, now: float) -> None:
        """Remove ``n`` tokens that other instances of the fleet took for ``key``.

        The bucket may go below zero (a debt its refill pays first), never
        below ``-burst``; a new or forgotten bucket starts full, then drained.
        """
        ...

    @property
    def evictions(self) -> int:
        """Buckets forgotten to make room while still holding less than a full burst."""
        ...


class Offences(Protocol):
    """Offence counts by key, over a sliding window."""

    def add(self, key: bytes, window_s: float, now: float) -> int:
        """Count one offence of ``key``; how many it has in the window, this one included."""
        ...

    def clear(self, key: bytes) -> None:
        """Forget ``key``'s offences (it was just banned)."""
        ...

    @property
    def evictions(self) -> int: ...


class Bans(Protocol):
    """Banned networks, each until its deadline."""

    def ban(self, network: Network, until: float, reason: str, now: float) -> Ban:
        """Ban ``network`` until ``until`` (replacing a ban of the same network)."""
        ...

    def unban(self, network: Network) -> bool:
        """Lift the ban of exactly ``network``; False if there was none."""
        ...

    def banned(self, ip: str, now: float) -> Ban | None:
        """The ban covering ``ip`` now, if any (the most specific one)."""
        ...

    def all(self, now: float) -> list[Ban]:
        """Every ban still in force, soonest to expire first."""
        ...

"""Backend pools and the order in which their members are tried.

Pure: a pool never dials, reads the clock or logs. For each connection the
relay asks :meth:`Pool.candidates` for the healthy members in the order to try
them: the balancing policy's choice first, then every other healthy member
once, as failover. An empty answer means no member is up, and the caller falls
back to the fallback route.

Policies (:class:`~refractium.config.Balance`):

``round_robin``
    The starting point moves one member further on each call. A member that
    is down is skipped, and the rotation resumes after the member actually
    chosen, so the others keep sharing the load evenly.
``least_connections``
    The healthy member with the fewest open connections (``active``) first;
    ties go to the member the rotation reaches first, so equal loads spread
    like round robin. Failover in increasing load.
``random``
    A uniform choice among the healthy members, then the others in pool
    order from the chosen one on (wrapping round), so failover spreads too.
``source_hash``
    Rendezvous (highest random weight) hashing: each member gets the weight
    ``blake2b("{client_ip}|{host}|{port}")`` and members are tried by
    decreasing weight. Unlike ``hash(ip) % len(members)``, removing a member
    or marking it down moves only the clients whose first choice it was; the
    others keep their backend (and their failover order), and restoring the
    member restores the original mapping. The weight depends on the client
    address and on that member alone, not on the pool's order or size; it is
    a fixed, unseeded hash (never Python's per-process randomised ``hash()``),
    so a client keeps its backend across processes, restarts and machines.

A pool of one member answers with its ``members`` tuple itself, with no
allocation: ``candidates`` runs once per connection.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Mapping, Sequence
from itertools import compress

from refractium.addr import Address
from refractium.config import Balance

# The generator for ``random`` pools not given one (seeded by the OS once).
_DEFAULT_RNG = random.Random()

# Enum attribute access costs a descriptor call in 3.11: look the members up once.
_SOURCE_HASH = Balance.SOURCE_HASH
_RANDOM = Balance.RANDOM
_LEAST_CONNECTIONS = Balance.LEAST_CONNECTIONS

# The source_hash weight is blake2b-64 of "{client_ip}|{host}|{port}"; each
# call copies this empty state rather than parse blake2b's keyword arguments.
_EMPTY_HASH = hashlib.blake2b(digest_size=8)


def source_key(address: Address) -> bytes:
    """The part of a member's rendezvous hash input that follows the client IP.

    The full input is ``f"{client_ip}|{host}|{port}"``; neither an IP address
    nor a host name can contain ``|``, so the input is unambiguous.
    """
    return f"|{address.host}|{address.port}".encode()


class Pool:
    """The backends of one route and its balancing policy."""

    __slots__ = ("_keys", "_next", "_ring", "_rng", "balance", "members")

    members: tuple[Address, ...]
    balance: Balance

    def __init__(
        self,
        members: Sequence[Address],
        balance: Balance = Balance.ROUND_ROBIN,
        *,
        rng: random.Random | None = None,
    ) -> None:
        if not members:
            raise ValueError("empty pool")
        self.members = tuple(members)
        self.balance = Balance(balance)
        # Position of the next round-robin / least-connections start.
        self._next = 0
        # members twice, so a rotation is one slice.
        self._ring = self.members + self.members
        self._keys = tuple(source_key(m) for m in self.members)
        self._rng = rng if rng is not None else _DEFAULT_RNG

    def candidates(
        self,
        client_ip: str = "",
        *,
        is_up: Callable[[Address], bool] | None = None,
        active: Mapping[Address, int] | None = None,
    ) -> tuple[Address, ...]:
        """The healthy members in the order to try them.

        The policy's choice first, then the other healthy members as
        failover, each once. Empty when none is up (the caller then uses the
        fallback). ``client_ip`` feeds ``source_hash``; ``is_up`` (default:
        every member is up) is called once per member; ``active`` maps a
        backend to its open connections for ``least_connections`` (missing
        means 0).
        """
        members = self.members
        # Not `len(members) == 1`: that narrows members to a 1-tuple, which
        # compiled code unpacks and builds anew instead of returning it.
        count = len(members)
        if count == 1:
            return members if is_up is None or is_up(members[0]) else ()
        balance = self.balance
        if balance is _SOURCE_HASH:
            return self._source_hash(client_ip, is_up)
        if balance is _RANDOM:
            return self._random(is_up)
        if balance is _LEAST_CONNECTIONS and active:
            return self._least_connections(is_up, active)
        return self._round_robin(is_up)

    # -- policies -----------------------------------------------------------

    def _round_robin(self, is_up: Callable[[Address], bool] | None) -> tuple[Address, ...]:
        n = len(self.members)
        start = self._next
        ring = self._ring[start : start + n]
        if is_up is None:
            self._next = start + 1 if start + 1 < n else 0
            return ring
        flags = [is_up(m) for m in ring]
        try:
            first = flags.index(True)
        except ValueError:
            return ()
        # Resume after the member chosen: a down member is skipped once, not
        # handed to its successor on every pass.
        self._next = (start + first + 1) % n
        return tuple(compress(ring, flags))

    def _least_connections(
        self, is_up: Callable[[Address], bool] | None, active: Mapping[Address, int]
    ) -> tuple[Address, ...]:
        n = len(self.members)
        start = self._next
        ring = self._ring[start : start + n]
        # Positions in the rotation of the members that are up.
        offsets: Sequence[int] = (
            range(n) if is_up is None else [k for k, m in enumerate(ring) if is_up(m)]
        )
        if not offsets:
            return ()
        get = active.get
        loads = [get(ring[k], 0) for k in offsets]
        # Stable sort: equal loads stay in rotation order, so ties rotate.
        order = sorted(range(len(offsets)), key=loads.__getitem__)
        self._next = (start + offsets[order[0]] + 1) % n
        return tuple([ring[offsets[i]] for i in order])

    def _random(self, is_up: Callable[[Address], bool] | None) -> tuple[Address, ...]:
        n = len(self.members)
        # random() * n: uniform to within n / 2**53, and about half the cost
        # of randrange() on 3.11.
        if is_up is None:
            start = int(self._rng.random() * n)
            return self._ring[start : start + n]
        up = [m for m in self.members if is_up(m)]
        if not up:
            return ()
        chosen = int(self._rng.random() * len(up))
        return tuple(up[chosen:] + up[:chosen])

    def _source_hash(
        self, client_ip: str, is_up: Callable[[Address], bool] | None
    ) -> tuple[Address, ...]:
        members = self.members
        ip = client_ip.encode()
        fresh = _EMPTY_HASH.copy  # cheaper than blake2b(..., digest_size=8)
        ranked: list[tuple[bytes, bytes, int]] = []
        for i, key in enumerate(self._keys):
            if is_up is None or is_up(members[i]):
                h = fresh()
                h.update(ip + key)
                ranked.append((h.digest(), key, i))
        # Equal-length big-endian digests order like the integers they spell.
        # Ties (2**-64) go to the larger key, never to the pool position, so
        # they too survive a change of the pool; the index only separates a
        # member listed twice (the same address, so the order is moot).
        ranked.sort(reverse=True)
        return tuple([members[i] for _, _, i in ranked])

    def __repr__(self) -> str:
        return f"Pool({', '.join(map(str, self.members))}; {self.balance})"

"""The stores of abuse control kept in this process: buckets, offences, bans.

They implement the protocols of :mod:`refractium.shared.stores` for one
process (``[server] workers = 1``, or a program embedding the engine); the
workers of one instance share the tables of :mod:`refractium.shared`
instead, which keep the same state the same way. Keys are 16 bytes
(:mod:`~refractium.abuse.groups`), times ``time.time()`` seconds, passed in
so that a decision and its tests read no clock.

Every store is bounded. Buckets and offence counts are kept for at most
``capacity`` keys, least recently used first out; what goes without losing
anything (a bucket full again, offences all out of their window) is dropped
for free, lazily, when a new key needs the room, and what goes while it
still mattered is counted in ``evictions`` (a client forgotten while
limited, which starts again with a full bucket). Bans are kept for at most
``capacity`` networks, the one that expires first going to make room.

Not thread-safe: each worker runs one event loop thread.
"""

from __future__ import annotations

import heapq
import itertools
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Final, TypeVar

from refractium.abuse.prefixes import Network, PrefixMap
from refractium.shared.stores import Ban

V = TypeVar("V")

__all__ = ["KEPT_OFFENCES", "LocalBans", "LocalBuckets", "LocalOffences"]

# How many buckets or offence records are examined for a free drop each time
# a new key comes: more than one, so that idle ones go faster than keys come.
_DROPS_PER_NEW = 2

# Offence times kept per key: a count up to this is exact (see LocalOffences).
KEPT_OFFENCES: Final = 64
_BINS = 8  # the bins of older offences each span at most window_s / _BINS


def _check_capacity(capacity: int) -> None:
    if capacity < 1:
        raise ValueError(f"capacity must be at least 1, not {capacity}")


def make_room(
    table: OrderedDict[bytes, V], capacity: int, now: float, matters_until: Callable[[V], float]
) -> bool:
    """Before a new key goes into ``table`` (least recently used first): make room for it.

    Up to :data:`_DROPS_PER_NEW` entries at the old end that no longer matter
    (``matters_until(entry) <= now``) are dropped for free; then, at
    ``capacity``, the least recently used goes. True when that one still
    mattered: an eviction to count.
    """
    for _ in range(_DROPS_PER_NEW):
        if not table:
            return False
        oldest = next(iter(table))
        if matters_until(table[oldest]) > now:
            break
        del table[oldest]
    if len(table) < capacity:
        return False
    _, entry = table.popitem(last=False)
    return matters_until(entry) > now


class LocalBuckets:
    """Token buckets by key, for at most ``capacity`` keys (the protocol ``Buckets``).

    A bucket is ``(tokens, stamp, full_at)``: the tokens it held at
    ``stamp``, and when it will be full again, which is what tells whether
    forgetting it loses anything (rates differ between keys: the instance's
    and each route's).
    """

    __slots__ = ("_buckets", "_capacity", "_evictions")

    def __init__(self, capacity: int) -> None:
        _check_capacity(capacity)
        self._capacity = capacity
        self._buckets: OrderedDict[bytes, tuple[float, float, float]] = OrderedDict()
        self._evictions = 0

    def take(self, key: bytes, per_s: float, burst: float, now: float) -> float:
        """Take one token from ``key``'s bucket (full when new or forgotten).

        Returns 0.0 when a token was taken, else the seconds until one will
        be there; nothing is taken then.
        """
        tokens, now = self._refilled(key, per_s, burst, now)
        if tokens >= 1.0:
            tokens -= 1.0
            wait = 0.0
        else:
            wait = (1.0 - tokens) / per_s
        self._buckets[key] = (tokens, now, now + (burst - tokens) / per_s)
        return wait

    def drain(self, key: bytes, n: int, per_s: float, burst: float, now: float) -> None:
        """Remove ``n`` tokens from ``key``'s bucket (taken elsewhere in the fleet).

        The bucket may go below zero, a debt its refill pays first, but no
        lower than ``-burst``: a client is never held back longer than two
        bursts' refill. A new or forgotten bucket starts full, then drained.
        """
        tokens, now = self._refilled(key, per_s, burst, now)
        tokens = max(-burst, tokens - n)
        self._buckets[key] = (tokens, now, now + (burst - tokens) / per_s)

    def _refilled(self, key: bytes, per_s: float, burst: float, now: float) -> tuple[float, float]:
        """``key``'s tokens refilled up to ``now`` (a full burst when new or forgotten), and
        the time they are counted at."""
        buckets = self._buckets
        bucket = buckets.get(key)
        if bucket is None:
            self._make_room(now)
            return float(burst), now
        buckets.move_to_end(key)
        tokens, stamp, _ = bucket
        if now > stamp:
            return min(burst, tokens + (now - stamp) * per_s), now
        return tokens, stamp  # a clock stepped back: no refill, and none counted twice later

    @property
    def evictions(self) -> int:
        """Buckets forgotten to make room while still holding less than a full burst."""
        return self._evictions

    def __len__(self) -> int:
        return len(self._buckets)

    def _make_room(self, now: float) -> None:
        """Before a new key: drop buckets full again, then the least recently used if full."""
        if make_room(self._buckets, self._capacity, now, lambda bucket: bucket[2]):
            self._evictions += 1


class _Record:
    """One key's offences: the last times, and bins counting older ones (see LocalOffences)."""

    __slots__ = ("bins", "expires", "times")

    def __init__(self) -> None:
        self.times: deque[float] = deque()
        # Offences that no longer fit in ``times``: [first, last, count] per bin, oldest first.
        self.bins: deque[list[float]] | None = None
        self.expires = 0.0  # when the last offence leaves its window


class LocalOffences:
    """Offence counts by key over a sliding window, for at most ``capacity`` keys.

    An offence at ``t`` counts while ``now - window_s < t``: one exactly
    ``window_s`` old has left the window. The times of the last
    :data:`KEPT_OFFENCES` (64) offences of a key are kept, so a count up to
    64 is exact (any practical ``ban_after``: a key is cleared when banned,
    so it seldom holds more than ``ban_after``). Older offences are counted
    in bins each spanning at most an eighth of the window, a bin counting
    while its last offence is in the window: beyond 64, the count is never
    below the exact one, and above it by at most the offences of the
    window's oldest eighth. A larger ``ban_after`` bans at its count, or
    a little before when offences are spread over the whole window.
    """

    __slots__ = ("_capacity", "_evictions", "_records")

    def __init__(self, capacity: int) -> None:
        _check_capacity(capacity)
        self._capacity = capacity
        self._records: OrderedDict[bytes, _Record] = OrderedDict()
        self._evictions = 0

    def add(self, key: bytes, window_s: float, now: float) -> int:
        """Count one offence of ``key``; how many it has in the window, this one included."""
        records = self._records
        record = records.get(key)
        if record is None:
            self._make_room(now)
            record = records[key] = _Record()
        else:
            records.move_to_end(key)
        times = record.times
        start = now - window_s
        while times and times[0] <= start:
            times.popleft()
        count = 0
        bins = record.bins
        if bins is not None:
            while bins and bins[0][1] <= start:
                bins.popleft()
            if len(times) >= KEPT_OFFENCES:
                oldest = times.popleft()
                if bins and oldest - bins[-1][0] < window_s / _BINS:
                    last = bins[-1]
                    last[1] = oldest
                    last[2] += 1
                else:
                    bins.append([oldest, oldest, 1])
            for one in bins:
                count += int(one[2])
        elif len(times) >= KEPT_OFFENCES:
            oldest = times.popleft()
            record.bins = deque([[oldest, oldest, 1]])
            count = 1
        times.append(now)
        record.expires = now + window_s
        return count + len(times)

    def clear(self, key: bytes) -> None:
        """Forget ``key``'s offences (it was just banned)."""
        self._records.pop(key, None)

    @property
    def evictions(self) -> int:
        """Keys forgotten to make room while they still had offences in their window."""
        return self._evictions

    def __len__(self) -> int:
        return len(self._records)

    def _make_room(self, now: float) -> None:
        if make_room(self._records, self._capacity, now, lambda record: record.expires):
            self._evictions += 1


class LocalBans:
    """Banned networks until their deadlines, at most ``capacity`` of them.

    :meth:`banned` finds the most specific ban covering an address with a
    dict probe per prefix length banned (a /32 and a /24: two), whatever the
    number of bans (:class:`~refractium.abuse.prefixes.PrefixMap`). A ban
    past its deadline is dropped when a lookup meets it or when a ban is
    made. Full, :meth:`ban` drops the ban that expires first.
    """

    __slots__ = ("_bans", "_capacity", "_evictions", "_heap", "_seq")

    def __init__(self, capacity: int = 4096) -> None:
        _check_capacity(capacity)
        self._capacity = capacity
        self._bans: PrefixMap[Ban] = PrefixMap()
        # Every ban made, soonest to expire first; an entry whose ban was
        # replaced or lifted stays until it comes up (it is skipped then).
        self._heap: list[tuple[float, int, Ban]] = []
        self._seq = itertools.count()  # ties of the heap: never compare two Bans
        self._evictions = 0

    def ban(self, network: Network, until: float, reason: str, now: float) -> Ban:
        """Ban ``network`` until ``until`` (replacing a ban of the same network)."""
        self._expire(now)
        bans = self._bans
        if len(bans) >= self._capacity and bans.get(network) is None:
            self._drop_soonest()
            self._evictions += 1
        ban = Ban(network, reason, now, until)
        bans.put(network, ban)
        heapq.heappush(self._heap, (until, next(self._seq), ban))
        if len(self._heap) > 2 * len(bans) + 64:
            self._compact()
        return ban

    def unban(self, network: Network) -> bool:
        """Lift the ban of exactly ``network``; False if there was none."""
        return self._bans.pop(network) is not None

    def banned(self, ip: str, now: float) -> Ban | None:
        """The ban covering ``ip`` now, if any (the most specific one); never raises."""
        bans = self._bans
        while True:
            ban = bans.lookup(ip)
            if ban is None or ban.expires > now:
                return ban
            # Over: drop it, then a less specific ban may still cover ``ip``.
            bans.pop(ban.network)

    def all(self, now: float) -> list[Ban]:
        """Every ban still in force, soonest to expire first."""
        self._expire(now)
        return sorted(self._bans.values(), key=lambda ban: ban.expires)

    @property
    def evictions(self) -> int:
        """Bans dropped before their deadline to make room for another."""
        return self._evictions

    def __len__(self) -> int:
        """Bans kept, including any past their deadline not yet dropped."""
        return len(self._bans)

    def _expire(self, now: float) -> None:
        heap, bans = self._heap, self._bans
        while heap and heap[0][0] <= now:
            _, _, ban = heapq.heappop(heap)
            if bans.get(ban.network) is ban:
                bans.pop(ban.network)

    def _drop_soonest(self) -> None:
        heap, bans = self._heap, self._bans
        while heap:
            _, _, ban = heapq.heappop(heap)
            if bans.get(ban.network) is ban:
                bans.pop(ban.network)
                return

    def _compact(self) -> None:
        """Rebuild the heap from the bans kept, when stale entries outnumber them."""
        bans = self._bans
        self._heap = [entry for entry in self._heap if bans.get(entry[2].network) is entry[2]]
        heapq.heapify(self._heap)

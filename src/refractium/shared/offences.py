"""Offence counts over a sliding window by 16-byte key, shared by every worker.

A client group's offences add up whichever worker sees them, so ``ban_after``
holds for the instance. This implements
:class:`refractium.shared.stores.Offences` in a
:class:`~refractium.shared.slots.SlotTable`.

A slot is 104 bytes: the key, then floats::

    expires  when the last offence leaves its window: from then on the slot
             is free (and the least recently offending slot is evicted first)
    start    the first offence counted in ``count``
    count    offences since ``start``
    ring     the times of the last :data:`RING` offences (-inf: none)

Counts up to :data:`RING` are exact: the ring holds the most recent
offences, so when fewer than :data:`RING` of them are in the window, those
are all the window holds. Above it, the count is ``count``, every offence
since ``start`` while ``start`` is still in the window; once ``start``
leaves it, counting starts again from the ring's offences in the window. So
above :data:`RING` the count may fall short of the true one, never exceed
it: a ``ban_after`` up to 8 bans on the exact offence, a higher one bans a
client offending ``ban_after`` times a window within about a window of
doing so, never earlier than it should.
"""

from __future__ import annotations

import fcntl
from array import array
from typing import cast

from refractium.shared.slots import MASK, SlotTable

__all__ = ["RING", "SharedOffences"]

RING = 8  # offence times kept per key: counts up to this are exact
_NONE = array("d", [float("-inf")] * RING)  # a ring with no offence

_EX = fcntl.LOCK_EX
_UN = fcntl.LOCK_UN
_lockf = fcntl.lockf


class SharedOffences(SlotTable):
    """Offence counts by key (a client group) for every worker of one instance."""

    MAGIC = 0x4F4F4652  # b"RFOO", little-endian
    NAME = "offences"
    SLOT_BYTES = 16 + 8 * (3 + RING)  # key, expires, start, count, ring
    FREE = 2  # expires
    AGE = 2  # expires: evict the one whose offences leave their window first
    MIN_CAPACITY = 1024

    __slots__ = ()

    def add(self, key: bytes, window_s: float, now: float) -> int:
        """Count one offence of ``key``.

        Returns:
            How many offences ``key`` has in the ``window_s`` seconds up to
            ``now``, this one included (exact up to :data:`RING`).

        Raises:
            ValueError: ``key`` is not 16 bytes or is all zero, or
                ``window_s`` is not positive.
        """
        h, stripe = self._place(key)
        if not window_s > 0:
            raise ValueError(f"not a window: {window_s} s")
        fd = self._fd
        cut = now - window_s  # an offence at ``cut`` or before is out of the window
        _lockf(fd, _EX, 1, stripe)
        try:
            at = self._slots + stripe * self._stripe_bytes + (h & MASK) * self.SLOT_BYTES
            if self._mm[at : at + 16] != key:
                at = self._claim(stripe, h & MASK, key, now)[0]
            f = at >> 3
            floats = self._floats
            first = f + 5  # the ring
            if floats[f + 2] <= now:  # new, or every offence it had is out of the window
                floats[first : first + RING] = _NONE
                floats[f + 3] = float("-inf")
            ring = cast("list[float]", floats[first : first + RING].tolist())  # a 'd' view
            # The new offence replaces the oldest: the ring keeps the last RING.
            i = ring.index(min(ring))
            ring[i] = now
            floats[first + i] = now
            held = sum(t > cut for t in ring)
            if floats[f + 3] > cut:
                count = floats[f + 4] + 1.0
            else:
                floats[f + 3] = min(t for t in ring if t > cut)
                count = float(held)
            floats[f + 4] = count
            if now + window_s > floats[f + 2]:
                floats[f + 2] = now + window_s
        finally:
            _lockf(fd, _UN, 1, stripe)
        return held if held < RING else max(RING, int(count))

    def clear(self, key: bytes) -> None:
        """Forget ``key``'s offences (it was just banned)."""
        h, stripe = self._place(key)
        self._lock(stripe)
        try:
            at = self._find(stripe, h & MASK, key)
            if at >= 0:
                self._floats[(at >> 3) + 2] = 0.0  # free: the next offence starts afresh
        finally:
            self._unlock(stripe)

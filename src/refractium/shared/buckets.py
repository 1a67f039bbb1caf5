"""Token buckets by 16-byte key, shared by every worker of one instance.

A connection rate holds for the instance, not for each worker: whichever
worker accepts a client's connection takes its token from the same bucket.
This implements :class:`refractium.shared.stores.Buckets` in a
:class:`~refractium.shared.slots.SlotTable`.

A slot is 40 bytes: the key, then three floats::

    tokens   the tokens left at ``stamp``
    stamp    when the bucket was last taken from (or refused): its refill
             starts there, and the least recently used slot is the one
             evicted when a window is full
    full_at  when the bucket will be full again: from then on it holds
             nothing a new bucket would not, so its slot is free

``full_at`` is there because a slot is shared by callers with different
rates (a key is a client group, or a route and a group) and the table must
tell a free slot without knowing its rate. A bucket forgotten while full
loses nothing; one forgotten while not full is an eviction, counted in the
header (:attr:`SharedBuckets.evictions`): size the table at about twice the
client groups seen within a burst's refill time and evictions stay rare.

Times are ``time.time()`` seconds. The refill is computed from ``now -
stamp``, an exact difference of two nearby floats, so a burst taken within
one instant counts whole tokens exactly.
"""

from __future__ import annotations

import fcntl

from refractium.shared.slots import MASK, SlotTable

__all__ = ["SharedBuckets"]

_EX = fcntl.LOCK_EX
_UN = fcntl.LOCK_UN
_lockf = fcntl.lockf


def _check_bucket(per_s: float, burst: float) -> None:
    if not (per_s > 0 and burst >= 1):
        raise ValueError(f"not a token bucket: {per_s}/s, burst {burst}")


class SharedBuckets(SlotTable):
    """Token buckets by key (a client group, a route and a group) for every worker."""

    MAGIC = 0x42424652  # b"RFBB", little-endian
    NAME = "buckets"
    SLOT_BYTES = 40  # key, tokens, stamp, full_at
    FREE = 4  # full_at
    AGE = 3  # stamp: evict the least recently used
    MIN_CAPACITY = 1024

    __slots__ = ()

    def take(self, key: bytes, per_s: float, burst: float, now: float) -> float:
        """Take one token from ``key``'s bucket (full when new or forgotten).

        The bucket refills at ``per_s`` tokens a second up to ``burst``.

        Returns:
            0.0 when a token was taken, else the seconds until one will be
            there; nothing is taken then.

        Raises:
            ValueError: ``key`` is not 16 bytes or is all zero; ``per_s`` is
                not positive or ``burst`` is below 1.
        """
        h, stripe = self._place(key)
        _check_bucket(per_s, burst)
        fd = self._fd
        _lockf(fd, _EX, 1, stripe)
        try:
            # The first probe inline: most keys are there.
            at = self._slots + stripe * self._stripe_bytes + (h & MASK) * 40
            floats = self._floats
            if self._mm[at : at + 16] != key:
                at, new = self._claim(stripe, h & MASK, key, now)
                if new:  # not the stamp of the key that had the slot
                    floats[(at >> 3) + 3] = now
            f = at >> 3
            stamp = floats[f + 3]
            if floats[f + 4] <= now:  # new, or refilled by now
                tokens = burst
            else:
                tokens = floats[f + 2]
                if now > stamp:
                    tokens += (now - stamp) * per_s
                    if tokens > burst:
                        tokens = burst
            if now > stamp:
                floats[f + 3] = now
            if tokens >= 1.0:
                tokens -= 1.0
                floats[f + 2] = tokens
                floats[f + 4] = now + (burst - tokens) / per_s
                return 0.0
            # Refused: the refill so far is kept, full_at stays as it was.
            floats[f + 2] = tokens
        finally:
            _lockf(fd, _UN, 1, stripe)
        return (1.0 - tokens) / per_s

    def drain(self, key: bytes, n: int, per_s: float, burst: float, now: float) -> None:
        """Remove ``n`` tokens from ``key``'s bucket (taken elsewhere in the fleet).

        The bucket may go below zero, down to ``-burst`` (a debt its refill
        pays first); a new or forgotten bucket starts full, then drained.

        Raises:
            ValueError: as :meth:`take`.
        """
        h, stripe = self._place(key)
        _check_bucket(per_s, burst)
        fd = self._fd
        _lockf(fd, _EX, 1, stripe)
        try:
            at, new = self._claim(stripe, h & MASK, key, now)
            f = at >> 3
            floats = self._floats
            if new:
                floats[f + 3] = now
            stamp = floats[f + 3]
            if floats[f + 4] <= now:  # new, or refilled by now
                tokens = burst
            else:
                tokens = floats[f + 2]
                if now > stamp:
                    tokens = min(burst, tokens + (now - stamp) * per_s)
            if now > stamp:
                floats[f + 3] = stamp = now
            tokens = max(-burst, tokens - n)
            floats[f + 2] = tokens
            floats[f + 4] = stamp + (burst - tokens) / per_s
        finally:
            _lockf(fd, _UN, 1, stripe)

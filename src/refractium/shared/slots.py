"""Striped tables of fixed-size slots, each key within a short probe window.

The base of the abuse-control tables the workers of one instance share
(:mod:`~refractium.shared.buckets`, :mod:`~refractium.shared.offences`,
:mod:`~refractium.shared.bans`). Like :mod:`refractium.shared.deadlines`,
a table is a header and then slots in stripes of 256, lock ``s`` guarding
stripe ``s``; a key is found by linear probing from the slot its hash names,
wrapping inside its stripe. Unlike it, a key lives within :data:`WINDOW`
slots of that first one, and a table never refuses a key: these tables keep
what is recent and may forget the rest (a client flooding new addresses
must not fill them, nor make every lookup walk 256 slots under a lock).

Every slot has a float that says until when it matters (the *free* float):
a slot whose free float is not ahead of ``now`` holds nothing worth keeping
and is reused without loss. A new key takes, in its window, the first
never-used slot, else the first free one, else the slot whose *age* float is
the smallest (the least recently used, or the soonest to expire), which is
then an eviction, counted in the header.

Bytes::

    magic, stripes, slots per stripe, slot bytes (4-byte words)
    hash multiplier (16 bytes)
    evictions of stripe 0 ... stripes - 1 (8-byte unsigned each)
    the table's own header (``EXTRA_BYTES``)
    stripe 0: slot 0 ... slot 255; stripe 1: ...

Each stripe counts its own evictions, under the stripe lock it already
holds: no second lock for the count, and :attr:`SlotTable.evictions` sums
them. Lock ``stripes`` (one past the last stripe) is free for a table's own
header; it is always taken after a stripe's lock, never before.
"""

from __future__ import annotations

import fcntl
from collections.abc import Callable
from typing import ClassVar, Self

from refractium.shared.keys import (
    EMPTY,
    MASK128,
    new_multiplier,
    read_multiplier,
    write_multiplier,
)
from refractium.shared.memory import SharedMemory

SLOTS = 256  # per stripe, a power of two
MASK = SLOTS - 1
WINDOW = 16  # slots a key may lie past the one its hash names
META_BYTES = 32  # magic, stripes, slots per stripe, slot bytes, multiplier (16 bytes)

_EX = fcntl.LOCK_EX
_UN = fcntl.LOCK_UN
_lockf = fcntl.lockf


class SlotTable:
    """One process's view of a striped table of slots; subclasses give the layout."""

    MAGIC: ClassVar[int]
    NAME: ClassVar[str]  # "buckets": in errors and in /proc/PID/fd
    SLOT_BYTES: ClassVar[int]  # a multiple of 8
    KEY_BYTES: ClassVar[int] = 16  # the slot's first bytes; all zero: never used
    FREE: ClassVar[int]  # the free float, as an index of 8-byte words in the slot
    AGE: ClassVar[int]  # the float that orders evictions, smallest first
    EXTRA_BYTES: ClassVar[int] = 0  # the table's own header, a multiple of 8
    MIN_CAPACITY: ClassVar[int] = 1024

    __slots__ = (
        "_empty",
        "_extra",
        "_fd",
        "_floats",
        "_mem",
        "_mm",
        "_mult",
        "_shift",
        "_slots",
        "_stripe_bytes",
        "_u64",
        "capacity",
        "stripes",
    )

    def __init__(self, mem: SharedMemory) -> None:
        words, name = mem.words, self.NAME
        if len(words) < META_BYTES // 4 or words[0] != self.MAGIC:
            mem.close()
            raise ValueError(f"not a table of {name}")
        stripes = words[1]
        if (
            not stripes
            or stripes & (stripes - 1)
            or words[2] != SLOTS
            or words[3] != self.SLOT_BYTES
            or mem.size < self._size(stripes)
        ):
            mem.close()
            raise ValueError(f"a table of {name} with a broken header")
        self._mem = mem
        self._mm = mem.mm
        self._fd = mem.fd
        # The same bytes as 8-byte floats and as 8-byte counters: the slots
        # and the header are 8-aligned, so field n of a slot at byte ``at``
        # is item (at >> 3) + n.
        self._floats = memoryview(mem.mm).cast("d")
        self._u64 = memoryview(mem.mm).cast("Q")
        self.stripes = stripes
        self.capacity = stripes * SLOTS
        self._mult = read_multiplier(words, 4)
        self._shift = 32 - (stripes.bit_length() - 1)  # the hash's top bits pick the stripe
        self._extra = META_BYTES + 8 * stripes
        self._slots = self._extra + self.EXTRA_BYTES
        self._stripe_bytes = SLOTS * self.SLOT_BYTES
        self._empty = bytes(self.KEY_BYTES)

    @classmethod
    def _size(cls, stripes: int) -> int:
        return META_BYTES + 8 * stripes + cls.EXTRA_BYTES + stripes * SLOTS * cls.SLOT_BYTES

    @classmethod
    def create(cls, capacity: int) -> Self:
        """A table of ``capacity`` slots (a power of two, at least ``MIN_CAPACITY``)."""
        capacity = max(cls.MIN_CAPACITY, 1 << max(0, capacity - 1).bit_length())
        stripes = capacity // SLOTS
        mem = SharedMemory.create(cls._size(stripes), f"refractium-{cls.NAME}")
        words = mem.words
        words[0] = cls.MAGIC
        words[1] = stripes
        words[2] = SLOTS
        words[3] = cls.SLOT_BYTES
        write_multiplier(words, 4, new_multiplier())
        return cls(mem)

    @classmethod
    def attach(cls, fd: int) -> Self:
        """A worker's view of the table behind ``fd``; :meth:`close` closes ``fd``."""
        return cls(SharedMemory.attach(fd))

    @property
    def fd(self) -> int:
        """The table's descriptor, for the workers to inherit."""
        return self._fd

    @property
    def evictions(self) -> int:
        """Keys forgotten, by every process, to make room for new ones while they still mattered.

        Read without a lock: each stripe's counter is one aligned 8-byte
        word, and a count read a moment early is still a count.
        """
        first = META_BYTES >> 3
        return sum(self._u64[first : first + self.stripes])

    def _claim(
        self,
        stripe: int,
        start: int,
        key: bytes,
        now: float,
        vacate: Callable[[int], None] | None = None,
    ) -> tuple[int, bool]:
        """The first byte of ``key``'s slot, and whether it was claimed just now.

        ``start`` is the slot the hash names. A claimed slot holds ``key`` and
        a free float of 0.0 (free), the rest as it was: the caller fills it.
        ``vacate(at)`` is called before a slot holding another key is
        emptied or taken. Called with the stripe's lock held.
        """
        mm, floats, kb, sb = self._mm, self._floats, self.KEY_BYTES, self.SLOT_BYTES
        free, empty = self.FREE, self._empty
        base = self._slots + stripe * self._stripe_bytes
        reuse = -1  # the first free slot of the window
        for i in range(WINDOW):
            at = base + ((start + i) & MASK) * sb
            k = mm[at : at + kb]
            if k == key:
                return at, False
            if k == empty:
                # The key is not in the table. Free slots just before this
                # never-used one end no live chain (a live key has no
                # never-used slot between its first probe and itself), so
                # they become never-used again: chains stay short.
                j = i - 1
                while j >= 0:
                    stale = base + ((start + j) & MASK) * sb
                    if floats[(stale >> 3) + free] > now:
                        break
                    if vacate is not None:
                        vacate(stale)
                    mm[stale : stale + kb] = empty
                    j -= 1
                if reuse < 0:  # (a free slot found before stays first, emptied or not)
                    reuse = at
                break
            if reuse < 0 and floats[(at >> 3) + free] <= now:
                reuse = at
        else:
            if reuse < 0:
                # Every slot of the window matters: forget the one that matters least.
                age, oldest = self.AGE, float("inf")
                for i in range(WINDOW):
                    at = base + ((start + i) & MASK) * sb
                    t = floats[(at >> 3) + age]
                    if t < oldest:
                        oldest, reuse = t, at
                self._u64[(META_BYTES >> 3) + stripe] += 1
        if vacate is not None and mm[reuse : reuse + kb] != empty:
            vacate(reuse)
        mm[reuse : reuse + kb] = key
        floats[(reuse >> 3) + free] = 0.0
        return reuse, True

    def _place(self, key: bytes) -> tuple[int, int]:
        """``key``'s hash and its stripe, for a table of 16-byte keys.

        Raises:
            ValueError: ``key`` is not 16 bytes or is all zero.
        """
        if len(key) != 16 or key == EMPTY:
            raise ValueError(f"not a table key: {key!r}")
        h = ((int.from_bytes(key) * self._mult) & MASK128) >> 96
        return h, h >> self._shift

    def _find(self, stripe: int, start: int, key: bytes) -> int:
        """The first byte of ``key``'s slot, or -1; called with the stripe's lock held."""
        mm, kb, sb, empty = self._mm, self.KEY_BYTES, self.SLOT_BYTES, self._empty
        base = self._slots + stripe * self._stripe_bytes
        for i in range(WINDOW):
            at = base + ((start + i) & MASK) * sb
            k = mm[at : at + kb]
            if k == key:
                return at
            if k == empty:
                return -1
        return -1

    def _lock(self, n: int) -> None:
        _lockf(self._fd, _EX, 1, n)

    def _unlock(self, n: int) -> None:
        _lockf(self._fd, _UN, 1, n)

    def close(self) -> None:
        """Unmap the table and close its descriptor (idempotent)."""
        self._floats.release()
        self._u64.release()
        self._mem.close()

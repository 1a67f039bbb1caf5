"""Client address -> a deadline, shared by every worker: allow lists that expire.

A hook that lets an address in for a while (the pre-auth example opens SSH
for N seconds to an address that said a token) writes the deadline here, and
whichever worker accepts that address's next connection reads it. Deadlines
are wall-clock seconds (``time.time()``), which every process reads alike.

The table lives in shared memory (:mod:`refractium.shared.memory`): a header
of 8 words (magic, stripes, slots per stripe, unused, hash multiplier), then
slots of 24 bytes, a 16-byte key and an 8-byte float deadline, in stripes of
256 with one lock each (lock ``s`` guards stripe ``s``). Reads take the lock
too: a deadline read while another worker writes it could be torn, and a
torn float must never read as "allowed". An expired or cleared deadline
frees its slot for the next new address, as a stale count does in
:mod:`refractium.shared.counts`.
"""

from __future__ import annotations

import fcntl
import time

from refractium.shared.keys import (
    EMPTY,
    MASK128,
    address_key,
    new_multiplier,
    read_multiplier,
    write_multiplier,
)
from refractium.shared.memory import SharedMemory

MAGIC = 0x44444652  # b"RFDD", little-endian
SLOTS = 256  # per stripe, a power of two
MIN_CAPACITY = 1024
META_BYTES = 32  # magic, stripes, slots per stripe, unused, multiplier (4 words)
SLOT_BYTES = 24  # key (16 bytes), deadline (a float, 8 bytes)

_EX = fcntl.LOCK_EX
_UN = fcntl.LOCK_UN
_lockf = fcntl.lockf


class SharedDeadlines:
    """Client address -> until when (``time.time()``), for every worker of one instance."""

    __slots__ = ("_fd", "_floats", "_mem", "_mm", "_mult", "_shift", "capacity")

    def __init__(self, mem: SharedMemory) -> None:
        words = mem.words
        if len(words) < META_BYTES // 4 or words[0] != MAGIC:
            mem.close()
            raise ValueError("not a table of deadlines")
        stripes = words[1]
        if (
            not stripes
            or stripes & (stripes - 1)
            or words[2] != SLOTS
            or mem.size < META_BYTES + stripes * SLOTS * SLOT_BYTES
        ):
            mem.close()
            raise ValueError("a table of deadlines with a broken header")
        self._mem = mem
        self._mm = mem.mm
        self._fd = mem.fd
        # The same bytes as 8-byte floats: a slot's deadline is float (at + 16) // 8.
        self._floats = memoryview(mem.mm).cast("d")
        self.capacity = stripes * SLOTS
        self._mult = read_multiplier(words, 4)
        self._shift = 32 - (stripes.bit_length() - 1)  # the hash's top bits pick the stripe

    @classmethod
    def create(cls, capacity: int) -> SharedDeadlines:
        """A table for ``capacity`` addresses (a power of two, at least 1024)."""
        capacity = max(MIN_CAPACITY, 1 << max(0, capacity - 1).bit_length())
        mem = SharedMemory.create(META_BYTES + capacity * SLOT_BYTES, "refractium-deadlines")
        words = mem.words
        words[0] = MAGIC
        words[1] = capacity // SLOTS
        words[2] = SLOTS
        write_multiplier(words, 4, new_multiplier())
        return cls(mem)

    @classmethod
    def attach(cls, fd: int) -> SharedDeadlines:
        """A worker's view of the table behind ``fd``; :meth:`close` closes ``fd``."""
        return cls(SharedMemory.attach(fd))

    @property
    def fd(self) -> int:
        """The table's descriptor, for the workers to inherit."""
        return self._fd

    def set(self, ip: str, until: float) -> bool:
        """Let ``ip`` in until ``until``, replacing its deadline if it has one.

        Returns False when the table is full: every slot of the address's
        stripe holds a deadline still ahead.

        Raises:
            ValueError: ``ip`` is not an IP address.
        """
        return self.set_key(address_key(ip), until)

    def clear(self, ip: str) -> None:
        """Forget ``ip``'s deadline, if it has one."""
        self.clear_key(address_key(ip))

    def get(self, ip: str, now: float | None = None) -> float | None:
        """``ip``'s deadline if it is still ahead of ``now`` (default: the time now), else None.

        Raises:
            ValueError: ``ip`` is not an IP address.
        """
        return self.get_key(address_key(ip), now)

    def set_key(self, key: bytes, until: float) -> bool:
        """:meth:`set` for a 16-byte key (an address's, or any other but ``EMPTY``)."""
        if len(key) != 16 or key == EMPTY:
            raise ValueError(f"not a table key: {key!r}")
        h = ((int.from_bytes(key) * self._mult) & MASK128) >> 96
        stripe = h >> self._shift
        now = time.time()
        _lockf(self._fd, _EX, 1, stripe)
        try:
            at = self._slot(META_BYTES + stripe * SLOTS * SLOT_BYTES, h, key, now)
            if at < 0:
                return False
            self._floats[(at + 16) >> 3] = until
        finally:
            _lockf(self._fd, _UN, 1, stripe)
        return True

    def clear_key(self, key: bytes) -> None:
        """:meth:`clear` for a 16-byte key."""
        h = ((int.from_bytes(key) * self._mult) & MASK128) >> 96
        stripe = h >> self._shift
        _lockf(self._fd, _EX, 1, stripe)
        try:
            at = self._find(META_BYTES + stripe * SLOTS * SLOT_BYTES, h, key)
            if at >= 0:
                self._floats[(at + 16) >> 3] = 0.0  # expired: the slot is free
        finally:
            _lockf(self._fd, _UN, 1, stripe)

    def get_key(self, key: bytes, now: float | None = None) -> float | None:
        """:meth:`get` for a 16-byte key."""
        h = ((int.from_bytes(key) * self._mult) & MASK128) >> 96
        stripe = h >> self._shift
        base = META_BYTES + stripe * SLOTS * SLOT_BYTES
        fd = self._fd
        _lockf(fd, _EX, 1, stripe)
        try:
            # The first probe inline: most lookups end there.
            at = base + (h & (SLOTS - 1)) * SLOT_BYTES
            k = self._mm[at : at + 16]
            if k != key:
                if k == EMPTY:
                    return None
                at = self._find(base, h, key)
                if at < 0:
                    return None
            until: float = self._floats[(at + 16) >> 3]
        finally:
            _lockf(fd, _UN, 1, stripe)
        if now is None:
            now = time.time()
        return until if until > now else None

    def live(self, now: float | None = None) -> int:
        """How many deadlines are still ahead of ``now`` (default: the time now)."""
        if now is None:
            now = time.time()
        floats, fd = self._floats, self._fd
        per_stripe = SLOTS * SLOT_BYTES // 8
        count = 0
        for stripe in range(self.capacity // SLOTS):
            first = (META_BYTES + 16) // 8 + stripe * per_stripe
            _lockf(fd, _EX, 1, stripe)
            try:
                count += sum(1 for until in floats[first : first + per_stripe : 3] if until > now)
            finally:
                _lockf(fd, _UN, 1, stripe)
        return count

    def items(self, now: float | None = None) -> dict[bytes, float]:
        """Every key whose deadline is ahead of ``now`` (default: the time now), with it.

        A stripe at a time, under its lock: what other instances are told of
        (:mod:`refractium.fleet`), about a millisecond for 16384 slots.
        """
        if now is None:
            now = time.time()
        floats, mm, fd = self._floats, self._mm, self._fd
        per_stripe = SLOTS * SLOT_BYTES // 8
        found: dict[bytes, float] = {}
        for stripe in range(self.capacity // SLOTS):
            first = (META_BYTES + 16) // 8 + stripe * per_stripe
            _lockf(fd, _EX, 1, stripe)
            try:
                for i, until in enumerate(floats[first : first + per_stripe : 3].tolist()):
                    if until > now:
                        at = META_BYTES + (stripe * SLOTS + i) * SLOT_BYTES
                        key = mm[at : at + 16]
                        if key != EMPTY:
                            found[key] = until
            finally:
                _lockf(fd, _UN, 1, stripe)
        return found

    def _find(self, base: int, start: int, key: bytes) -> int:
        """The first byte of ``key``'s slot, or -1; called with the stripe's lock held."""
        mm, mask = self._mm, SLOTS - 1
        for i in range(SLOTS):
            at = base + ((start + i) & mask) * SLOT_BYTES
            k = mm[at : at + 16]
            if k == key:
                return at
            if k == EMPTY:
                return -1
        return -1

    def _slot(self, base: int, start: int, key: bytes, now: float) -> int:
        """The first byte of ``key``'s slot, claimed if new; -1 if the stripe is full.

        Probing and the clean-up of free slots are those of
        :meth:`refractium.shared.counts.SharedCounts._slot`; a slot is free
        when its deadline is not ahead of ``now``. Called with the lock held.
        """
        mm, floats, mask = self._mm, self._floats, SLOTS - 1
        reuse = -1  # the first free slot of the chain
        for i in range(SLOTS):
            at = base + ((start + i) & mask) * SLOT_BYTES
            k = mm[at : at + 16]
            if k == key:
                return at
            if k == EMPTY:
                j = i - 1
                while j >= 0:
                    free = base + ((start + j) & mask) * SLOT_BYTES
                    if floats[(free + 16) >> 3] > now:
                        break
                    mm[free : free + 16] = EMPTY
                    floats[(free + 16) >> 3] = 0.0
                    j -= 1
                if reuse < 0:
                    reuse = at
                mm[reuse : reuse + 16] = key
                return reuse
            if reuse < 0 and floats[(at + 16) >> 3] <= now:
                reuse = at
        if reuse >= 0:
            mm[reuse : reuse + 16] = key
        return reuse

    def close(self) -> None:
        """Unmap the table and close its descriptor (idempotent)."""
        self._floats.release()
        self._mem.close()

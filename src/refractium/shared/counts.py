"""Open connections in total and per client address, counted for every worker.

One table in shared memory (:mod:`refractium.shared.memory`) holds, for each
worker, its count of open connections (the header) and, for each client
address with open connections, the address and one count per worker (a
slot). Slots are grouped in stripes of 256 with one lock each; an address's
whole probe chain stays inside its stripe (open addressing, linear probing),
so one lock guards everything an admission reads and writes.

Words, 32 bits each::

    magic, workers, stripes, slots per stripe, hash multiplier (4 words)
    total[0] ... total[workers - 1]
    stripe 0: slot 0: key (4 words), count[0] ... count[workers - 1]
              slot 1: ...

Lock 0 guards the global check; lock 1 + s guards stripe s. The global check
and the increment happen under lock 0, so ``max_total`` is exact. A worker
writes only its own column, so :meth:`SharedCounts.release` takes no lock:
the decrement cannot race another writer, and a reader that misses it sees
one connection too many, never too few. When a worker dies, the kernel drops
its locks and the supervisor zeroes its column (:meth:`SharedCounts.zero_column`)
before starting its replacement.

A slot whose counts are all zero is stale: its address has no open
connection, and the slot is reused by the next new address whose chain
passes it. A full stripe (256 addresses holding connections at once) refuses
new addresses: size the table at about twice the most addresses that can
hold connections at once and no stripe comes near full.
"""

from __future__ import annotations

import array
import fcntl

from refractium.shared.keys import (
    EMPTY,
    MASK128,
    address_key,
    new_multiplier,
    read_multiplier,
    write_multiplier,
)
from refractium.shared.memory import SharedMemory

MAGIC = 0x43434652  # b"RFCC", little-endian
SLOTS = 256  # per stripe, a power of two
MIN_CAPACITY = 4096
KEY_WORDS = 4  # a 16-byte key
META_WORDS = 8  # magic, workers, stripes, slots per stripe, multiplier
GLOBAL_LOCK = 0  # lock 1 + s guards stripe s

_EX = fcntl.LOCK_EX
_UN = fcntl.LOCK_UN
_lockf = fcntl.lockf


def _round_capacity(capacity: int, least: int) -> int:
    """``capacity`` rounded up to a power of two, at least ``least``."""
    return max(least, 1 << max(0, capacity - 1).bit_length())


class SharedCounts:
    """Open connections in total and per client address, for every worker of one instance."""

    __slots__ = (
        "_column",
        "_counts",
        "_fd",
        "_local",
        "_mem",
        "_mm",
        "_mult",
        "_shift",
        "_slot_bytes",
        "_slot_words",
        "_slots",
        "_stripe_bytes",
        "_totals",
        "_words",
        "_zeros",
        "capacity",
        "workers",
    )

    def __init__(self, mem: SharedMemory, column: int) -> None:
        words = mem.words
        if len(words) < META_WORDS or words[0] != MAGIC:
            mem.close()
            raise ValueError("not a table of connection counts")
        workers, stripes = words[1], words[2]
        if (
            not workers
            or stripes & (stripes - 1)
            or words[3] != SLOTS
            or mem.size < 4 * (META_WORDS + workers + stripes * SLOTS * (KEY_WORDS + workers))
        ):
            mem.close()
            raise ValueError("a table of connection counts with a broken header")
        self._mem = mem
        self._mm = mem.mm
        self._words = words
        self._fd = mem.fd
        self.workers = workers
        self.capacity = stripes * SLOTS
        self._mult = read_multiplier(words, 4)
        self._shift = 32 - (stripes.bit_length() - 1)  # the hash's top bits pick the stripe
        self._totals = META_WORDS  # total[0] is here
        self._slots = META_WORDS + workers  # stripe 0, slot 0
        self._slot_words = KEY_WORDS + workers
        self._slot_bytes = 4 * (KEY_WORDS + workers)
        self._stripe_bytes = SLOTS * self._slot_bytes
        self._zeros = bytes(4 * workers)  # the counts of a stale slot
        self._counts = -1  # this worker's total; -1: the supervisor's view (no column)
        self._column = column
        if column >= 0:
            if column >= workers:
                mem.close()
                raise ValueError(f"column {column} of a table for {workers} workers")
            self._counts = META_WORDS + column
        # ip -> [word of this worker's count in the ip's slot, the slot's lock,
        # how many connections this worker holds there]. Release reads the slot
        # from here: probing without the lock could read a key half written.
        self._local: dict[str, list[int]] = {}

    @classmethod
    def create(cls, workers: int, capacity: int) -> SharedCounts:
        """The supervisor's table for ``workers`` workers and ``capacity`` addresses.

        ``capacity`` is rounded up to a power of two, at least 4096. The
        supervisor's view only reads and zeroes; each worker attaches its own.
        """
        if workers < 1:
            raise ValueError(f"workers must be at least 1, not {workers}")
        capacity = _round_capacity(capacity, MIN_CAPACITY)
        stripes = capacity // SLOTS
        size = 4 * (META_WORDS + workers + capacity * (KEY_WORDS + workers))
        mem = SharedMemory.create(size, "refractium-counts")
        words = mem.words
        words[0] = MAGIC
        words[1] = workers
        words[2] = stripes
        words[3] = SLOTS
        write_multiplier(words, 4, new_multiplier())
        return cls(mem, -1)

    @classmethod
    def attach(cls, fd: int, column: int) -> SharedCounts:
        """A worker's view: ``column`` is its index from 0; :meth:`close` closes ``fd``."""
        if column < 0:
            raise ValueError(f"column must be at least 0, not {column}")
        return cls(SharedMemory.attach(fd), column)

    @property
    def fd(self) -> int:
        """The table's descriptor, for the workers to inherit."""
        return self._fd

    @property
    def column(self) -> int | None:
        """This worker's column, or None in the supervisor's view."""
        return self._column if self._column >= 0 else None

    def admit(self, ip: str, max_total: int, max_per_ip: int) -> str | None:
        """Count a new connection from ``ip``, or say why it is refused.

        Returns None when counted, else ``"per_ip"`` (``ip`` holds
        ``max_per_ip`` connections already; 0: no per-address cap),
        ``"global"`` (the instance holds ``max_total``) or ``"full"`` (no slot
        left for a new address in its stripe: the table is too small). When
        both caps apply, ``"per_ip"`` wins: a flood from one address then
        costs one lock, not two. ``ip = ""`` counts toward the total only (a
        trusted proxy's connection before its PROXY header names the client).

        Raises:
            ValueError: ``ip`` is not an IP address.
        """
        mine = self._counts
        if mine < 0:
            raise RuntimeError("the supervisor's view of the counts admits nothing")
        words, fd, workers = self._words, self._fd, self.workers
        totals = self._totals
        if not ip:
            _lockf(fd, _EX, 1, GLOBAL_LOCK)
            try:
                if sum(words[totals : totals + workers]) >= max_total:
                    return "global"
                words[mine] += 1
            finally:
                _lockf(fd, _UN, 1, GLOBAL_LOCK)
            return None
        entry = self._local.get(ip)
        if entry is not None:
            # This worker holds connections from ip: its slot cannot have
            # been reused (its count here is not zero), so no probe.
            cell, lock = entry[0], entry[1]
            _lockf(fd, _EX, 1, lock)
        else:
            key = address_key(ip)
            h = ((int.from_bytes(key) * self._mult) & MASK128) >> 96
            lock = 1 + (h >> self._shift)
            _lockf(fd, _EX, 1, lock)
        try:
            if entry is None:
                # The first probe inline: most addresses end there.
                mm = self._mm
                off = 4 * self._slots + (lock - 1) * self._stripe_bytes
                at = off + (h & (SLOTS - 1)) * self._slot_bytes
                k = mm[at : at + 16]
                if k == key:
                    slot = at >> 2
                elif k == EMPTY:
                    mm[at : at + 16] = key
                    slot = at >> 2
                else:
                    slot = self._slot(off, h & (SLOTS - 1), key)
                    if slot < 0:
                        return "full"
                cell = slot + KEY_WORDS + self._column
            if max_per_ip:
                first = cell - self._column
                if sum(words[first : first + workers]) >= max_per_ip:
                    return "per_ip"
            _lockf(fd, _EX, 1, GLOBAL_LOCK)
            try:
                if sum(words[totals : totals + workers]) >= max_total:
                    return "global"
                words[mine] += 1
            finally:
                _lockf(fd, _UN, 1, GLOBAL_LOCK)
            words[cell] += 1
        finally:
            _lockf(fd, _UN, 1, lock)
        if entry is None:
            self._local[ip] = [cell, lock, 1]
        else:
            entry[2] += 1
        return None

    def rekey(self, old: str, new: str, max_per_ip: int) -> str | None:
        """Count a connection under ``new`` instead of ``old``.

        Returns None when moved, ``"per_ip"`` or ``"full"`` when ``new`` is
        refused (the connection stays counted under ``old``). The total does
        not change.
        """
        if self._counts < 0:
            raise RuntimeError("the supervisor's view of the counts admits nothing")
        if new:
            words = self._words
            entry = self._local.get(new)
            if entry is not None:
                cell, lock = entry[0], entry[1]
            else:
                key = address_key(new)
                h = ((int.from_bytes(key) * self._mult) & MASK128) >> 96
                lock = 1 + (h >> self._shift)
            self._lock(lock)
            try:
                if entry is None:
                    off = 4 * self._slots + (lock - 1) * self._stripe_bytes
                    slot = self._slot(off, h & (SLOTS - 1), key)
                    if slot < 0:
                        return "full"
                    cell = slot + KEY_WORDS + self._column
                first = cell - self._column
                if max_per_ip and sum(words[first : first + self.workers]) >= max_per_ip:
                    return "per_ip"
                words[cell] += 1
            finally:
                self._unlock(lock)
            if entry is None:
                self._local[new] = [cell, lock, 1]
            else:
                entry[2] += 1
        if old:
            self._forget(old)
        return None

    def release(self, ip: str) -> None:
        """Forget one connection counted under ``ip`` by this worker (no lock)."""
        words = self._words
        if ip:
            entry = self._local[ip]
            words[entry[0]] -= 1
            held = entry[2] - 1
            if held:
                entry[2] = held
            else:
                del self._local[ip]
        words[self._counts] -= 1

    def _forget(self, ip: str) -> None:
        """Forget one connection counted under ``ip``, leaving the total alone."""
        entry = self._local[ip]
        self._words[entry[0]] -= 1
        held = entry[2] - 1
        if held:
            entry[2] = held
        else:
            del self._local[ip]

    def _slot(self, base: int, start: int, key: bytes) -> int:
        """The word where ``key``'s slot starts, claimed if new; -1 if the stripe is full.

        ``base`` is the stripe's first byte, ``start`` the slot the hash names.
        Called with the stripe's lock held.
        """
        mm, sb, zeros = self._mm, self._slot_bytes, self._zeros
        mask = SLOTS - 1
        reuse = -1  # the first stale slot of the chain (its first byte)
        for i in range(SLOTS):
            at = base + ((start + i) & mask) * sb
            k = mm[at : at + 16]
            if k == key:
                return at >> 2
            if k == EMPTY:
                # The key is not in the table. Stale slots just before this
                # never-used one end no live chain (a live key's chain has no
                # never-used slot before its own), so they become never-used
                # again: chains stay short under a stream of new addresses.
                j = i - 1
                while j >= 0:
                    stale = base + ((start + j) & mask) * sb
                    if mm[stale + 16 : stale + sb] != zeros:
                        break
                    mm[stale : stale + 16] = EMPTY
                    j -= 1
                if reuse < 0:
                    reuse = at
                mm[reuse : reuse + 16] = key
                return reuse >> 2
            if reuse < 0 and mm[at + 16 : at + sb] == zeros:
                reuse = at
        if reuse < 0:
            return -1
        mm[reuse : reuse + 16] = key
        return reuse >> 2

    def _lock(self, n: int) -> None:
        _lockf(self._fd, _EX, 1, n)

    def _unlock(self, n: int) -> None:
        _lockf(self._fd, _UN, 1, n)

    def zero_column(self, column: int) -> None:
        """Forget every connection of a dead worker's column, all at once.

        The supervisor calls this after the worker has died and before its
        replacement attaches: the column must have no living writer.
        """
        if not 0 <= column < self.workers:
            raise ValueError(f"no column {column} in a table for {self.workers} workers")
        sw, first = self._slot_words, self._slots + KEY_WORDS + column
        self._words[first::sw] = array.array("I", bytes(4 * self.capacity))
        self._words[self._totals + column] = 0

    def total(self) -> int:
        """Open connections of the instance, every worker's.

        Read under the global lock: the columns change only downwards
        meanwhile, so the sum never exceeds what the instance held.
        """
        self._lock(GLOBAL_LOCK)
        try:
            return sum(self._words[self._totals : self._totals + self.workers])
        finally:
            self._unlock(GLOBAL_LOCK)

    def held(self, ip: str) -> int:
        """Open connections from ``ip``, every worker's (0 for ``""``).

        Read under the stripe's lock, for the same reason as :meth:`total`.
        """
        if not ip:
            return 0
        key = address_key(ip)
        h = ((int.from_bytes(key) * self._mult) & MASK128) >> 96
        stripe = h >> self._shift
        mm, sb = self._mm, self._slot_bytes
        base = 4 * self._slots + stripe * self._stripe_bytes
        self._lock(1 + stripe)
        try:
            for i in range(SLOTS):
                at = base + ((h + i) & (SLOTS - 1)) * sb
                k = mm[at : at + 16]
                if k == key:
                    first = (at >> 2) + KEY_WORDS
                    return sum(self._words[first : first + self.workers])
                if k == EMPTY:
                    break
            return 0
        finally:
            self._unlock(1 + stripe)

    def close(self) -> None:
        """Unmap the table and close its descriptor (idempotent)."""
        self._local.clear()
        self._mem.close()

"""Banned networks, each until its deadline, shared by every worker of one instance.

A ban made in one worker (by offences or through the admin API) is enforced
by every worker from its next lookup. This implements
:class:`refractium.shared.stores.Bans` in a
:class:`~refractium.shared.slots.SlotTable`.

A network is a 16-byte key (its address, IPv4 mapped into ``::ffff:0:0/96``)
and a prefix length (an IPv4 /n is /96+n), so ``192.0.2.0/24`` and
``::ffff:192.0.2.0/120`` are one network, reported as the first. An IPv6
network shorter than /96 never covers an IPv4 client, as in
:mod:`ipaddress`. A slot is 72 bytes::

    key (16 bytes), tag (prefix length + 1; 0 with an all-zero key: never
    used), reason length, since, until (floats), reason (32 bytes of UTF-8,
    cut at a character boundary)

A slot is placed by the hash of its key and prefix length. The header
counts the slots holding each prefix length, IPv4 and IPv6 apart, and keeps
a bitmap of those with a count (and a generation number bumped when the
bitmap changes), so :meth:`SharedBans.banned` probes one stripe per prefix
length in use in the client's family, from the longest: usually one or two,
none without bans. Each process reads the bitmap again when the generation
moves. The counts and the bitmap change under the header lock (lock
``stripes``), taken while the stripe's lock is held.

The table is small (4096 bans by default); when a ban's probe window is
full of bans in force, the one that expires first is forgotten
(:attr:`SharedBans.evictions`). Untrusted input: ``ip`` comes from a peer's
address or a PROXY header.
"""

from __future__ import annotations

import fcntl
import struct
import time
from ipaddress import IPv4Network, IPv6Network
from typing import Self

from refractium.shared.keys import MAPPED, MASK128, address_key
from refractium.shared.memory import SharedMemory
from refractium.shared.slots import MASK, SLOTS, SlotTable
from refractium.shared.stores import Ban, Network

__all__ = ["DEFAULT_CAPACITY", "REASON_BYTES", "SharedBans"]

DEFAULT_CAPACITY = 4096
REASON_BYTES = 32
LENGTHS = 129  # prefix lengths 0 ... 128
# A kind of network: its prefix length, plus LENGTHS for IPv4 (mapped, /96
# and longer), so an IPv6 client probes no IPv4 ban's length and the reverse.
KINDS = 2 * LENGTHS
BITMAP_WORDS = -(-KINDS // 32)  # a bit per kind
# The table's own header, in 4-byte words from its start: the generation,
# the bitmap, the count of slots holding each kind.
GENERATION = 0
BITMAP = 1
COUNTS = BITMAP + BITMAP_WORDS
EXTRA_WORDS = COUNTS + KINDS

_MASKS = [((1 << p) - 1) << (128 - p) for p in range(LENGTHS)]
_TAGS = [(p + 1).to_bytes(4, "little") for p in range(LENGTHS)]
_SLOT = struct.Struct("<16sII2d32s")  # key, tag, reason length, since, until, reason

_EX = fcntl.LOCK_EX
_UN = fcntl.LOCK_UN
_lockf = fcntl.lockf


def _network_key(network: Network) -> tuple[int, int]:
    """(address as a 128-bit number, prefix length), IPv4 mapped."""
    if isinstance(network, IPv4Network):
        return (0xFFFF << 32) | int(network.network_address), 96 + network.prefixlen
    return int(network.network_address), network.prefixlen


def _kind(key: bytes, prefix: int) -> int:
    """The kind of the network of ``key`` and ``prefix``: IPv4 ones count from LENGTHS."""
    return prefix + LENGTHS if prefix >= 96 and key[:12] == MAPPED else prefix


def _network(key: bytes, prefix: int) -> Network:
    """The network of a slot's key and prefix length (IPv4 when mapped and /96 or longer)."""
    if prefix >= 96 and key[:12] == MAPPED:
        return IPv4Network((int.from_bytes(key[12:]), prefix - 96))
    return IPv6Network((int.from_bytes(key), prefix))


def _reason(text: str) -> bytes:
    """``text`` in UTF-8, cut to :data:`REASON_BYTES` at a character boundary."""
    raw = text.encode()
    if len(raw) > REASON_BYTES:
        raw = raw[:REASON_BYTES].decode(errors="ignore").encode()
    return raw


class SharedBans(SlotTable):
    """Banned networks for every worker of one instance."""

    MAGIC = 0x4E424652  # b"RFBN", little-endian
    NAME = "bans"
    SLOT_BYTES = 72
    KEY_BYTES = 20  # the key and the tag
    FREE = 4  # until
    AGE = 4  # until: evict the ban that expires first
    EXTRA_BYTES = -(-4 * EXTRA_WORDS // 8) * 8
    MIN_CAPACITY = SLOTS

    __slots__ = ("_any", "_generation", "_lengths_v4", "_lengths_v6", "_words")

    def __init__(self, mem: SharedMemory) -> None:
        super().__init__(mem)
        self._words = self._mem.words
        self._generation = -1  # this process's prefix lengths are from no generation yet
        self._any = False  # whether any kind is in use
        self._lengths_v4: list[int] = []  # IPv4 ones in use, longest first (as /96+n)
        self._lengths_v6: list[int] = []  # IPv6 ones in use, longest first

    @classmethod
    def create(cls, capacity: int = DEFAULT_CAPACITY) -> Self:
        """A table for ``capacity`` bans (a power of two, at least 256)."""
        return super().create(capacity)

    def ban(self, network: Network, until: float, reason: str, now: float) -> Ban:
        """Ban ``network`` until ``until``, replacing a ban of the same network.

        ``reason`` is kept to its first 32 bytes of UTF-8. ``network`` is
        returned as :meth:`all` will report it (IPv4 if it is mapped IPv4).
        """
        number, prefix = _network_key(network)
        raw = _reason(reason)
        key = number.to_bytes(16)
        h = (((number + prefix) * self._mult) & MASK128) >> 96
        stripe = h >> self._shift
        gone: list[int] = []  # the kinds of the slots emptied or taken

        def vacate(at: int) -> None:
            gone.append(self._slot_kind(at))

        self._lock(stripe)
        try:
            at, new = self._claim(stripe, h & MASK, key + _TAGS[prefix], now, vacate)
            self._mm[at : at + 72] = _SLOT.pack(key, prefix + 1, len(raw), now, until, raw)
            if new or gone:
                self._count(_kind(key, prefix) if new else -1, gone)
        finally:
            self._unlock(stripe)
        return Ban(_network(key, prefix), raw.decode(), now, until)

    def unban(self, network: Network) -> bool:
        """Lift the ban of exactly ``network``; False if there was none."""
        number, prefix = _network_key(network)
        h = (((number + prefix) * self._mult) & MASK128) >> 96
        stripe = h >> self._shift
        floats = self._floats
        self._lock(stripe)
        try:
            at = self._find(stripe, h & MASK, number.to_bytes(16) + _TAGS[prefix])
            if at < 0:
                return False
            # 0.0: lifted already. A ban past its deadline but still kept
            # counts as there, as in the one-process store.
            lifted: bool = floats[(at >> 3) + 4] != 0.0
            floats[(at >> 3) + 4] = 0.0
            # Emptied at once if it ends its chain, so its prefix length
            # stops costing every lookup a probe.
            gone = self._shorten(stripe, ((at - self._slots) // 72 + 1) & MASK)
            if gone:
                self._count(-1, gone)
        finally:
            self._unlock(stripe)
        return lifted

    def banned(self, ip: str, now: float) -> Ban | None:
        """The ban in force covering ``ip`` at ``now``, the most specific one, or None.

        Never raises: an ``ip`` that is not an address is covered by no ban.
        """
        if self._words[self._extra >> 2] != self._generation:
            self._load_lengths()
        if not self._any:
            return None
        try:
            key = address_key(ip)
        except ValueError:
            return None  # no address, no ban covers it
        lengths = self._lengths_v4 if key[:12] == MAPPED else self._lengths_v6
        number, mult, shift = int.from_bytes(key), self._mult, self._shift
        mm, floats, fd = self._mm, self._floats, self._fd
        slots, stripe_bytes, empty = self._slots, self._stripe_bytes, self._empty
        for prefix in lengths:
            masked = number & _MASKS[prefix]
            h = (((masked + prefix) * mult) & MASK128) >> 96
            stripe = h >> shift
            want = masked.to_bytes(16) + _TAGS[prefix]
            base = slots + stripe * stripe_bytes
            _lockf(fd, _EX, 1, stripe)
            try:
                at = base + (h & MASK) * 72
                k = mm[at : at + 20]
                if k != want:
                    if k == empty:
                        continue
                    at = self._find(stripe, h & MASK, want)
                    if at < 0:
                        continue
                if floats[(at >> 3) + 4] <= now:
                    continue  # expired: a shorter prefix may still cover ip
                slot = mm[at : at + 72]
            finally:
                _lockf(fd, _UN, 1, stripe)
            return self._ban(slot)
        return None

    def all(self, now: float) -> list[Ban]:
        """Every ban in force at ``now``, soonest to expire first.

        Each stripe is copied under its lock and read after it; expired bans
        that end their chains are emptied on the way.
        """
        floats, sb = self._floats, self._stripe_bytes
        found: list[bytes] = []
        for stripe in range(self.stripes):
            base = self._slots + stripe * sb
            self._lock(stripe)
            try:
                data = self._mm[base : base + sb]
                gone: list[int] = []
                for i in range(SLOTS):
                    at = i * 72
                    if data[at : at + 20] == self._empty:
                        before = base + ((i - 1) & MASK) * 72
                        if (
                            floats[(before >> 3) + 4] <= now
                            and self._mm[before : before + 20] != self._empty
                        ):
                            gone += self._shorten(stripe, i, now)
                if gone:
                    self._count(-1, gone)
            finally:
                self._unlock(stripe)
            for i in range(SLOTS):
                slot = data[i * 72 : i * 72 + 72]
                if slot[:20] != self._empty and _SLOT.unpack_from(slot)[4] > now:
                    found.append(slot)
        bans = [self._ban(slot) for slot in found]
        bans.sort(key=lambda ban: ban.expires)
        return bans

    @staticmethod
    def _ban(slot: bytes) -> Ban:
        key, tag, size, since, until, reason = _SLOT.unpack(slot)
        return Ban(_network(key, tag - 1), reason[:size].decode(), since, until)

    def _shorten(self, stripe: int, end: int, now: float | None = None) -> list[int]:
        """Empty the free slots just before slot ``end`` if it was never used.

        Returns their kinds. Called with the stripe's lock held.
        """
        mm, floats, empty = self._mm, self._floats, self._empty
        if now is None:
            now = time.time()
        base = self._slots + stripe * self._stripe_bytes
        at = base + end * 72
        if mm[at : at + 20] != empty:
            return []
        gone = []
        for j in range(1, SLOTS):
            at = base + ((end - j) & MASK) * 72
            if mm[at : at + 20] == empty or floats[(at >> 3) + 4] > now:
                break
            gone.append(self._slot_kind(at))
            mm[at : at + 20] = empty
        return gone

    def _slot_kind(self, at: int) -> int:
        """The kind of the network in the slot at ``at``."""
        mm = self._mm
        return _kind(mm[at : at + 16], int.from_bytes(mm[at + 16 : at + 20], "little") - 1)

    def _count(self, added: int, gone: list[int]) -> None:
        """Count a slot taken by kind ``added`` (-1: none) and the ``gone`` ones emptied.

        Bit k of the bitmap is set while some slot holds a network of kind k.
        Takes the header lock; called with a stripe's lock held.
        """
        words, first = self._words, self._extra >> 2
        counts, bitmap = first + COUNTS, first + BITMAP
        header = self.stripes
        self._lock(header)
        try:
            changed = False
            if added >= 0:
                words[counts + added] += 1
                if words[counts + added] == 1:
                    words[bitmap + (added >> 5)] |= 1 << (added & 31)
                    changed = True
            for kind in gone:
                if words[counts + kind]:
                    words[counts + kind] -= 1
                if not words[counts + kind]:
                    words[bitmap + (kind >> 5)] &= ~(1 << (kind & 31)) & 0xFFFFFFFF
                    changed = True
            if changed:
                words[first + GENERATION] = (words[first + GENERATION] + 1) & 0xFFFFFFFF
        finally:
            self._unlock(header)

    def _load_lengths(self) -> None:
        """Read the kinds in use, and the generation they belong to."""
        words, first = self._words, self._extra >> 2
        self._lock(self.stripes)
        try:
            generation = words[first + GENERATION]
            bits = words[first + BITMAP : first + BITMAP + BITMAP_WORDS].tolist()
        finally:
            self._unlock(self.stripes)
        kinds = [k for k in range(KINDS - 1, -1, -1) if bits[k >> 5] >> (k & 31) & 1]
        self._lengths_v4 = [k - LENGTHS for k in kinds if k >= LENGTHS]
        self._lengths_v6 = [k for k in kinds if k < LENGTHS]
        self._any = bool(kinds)
        self._generation = generation

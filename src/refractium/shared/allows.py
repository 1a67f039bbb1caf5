"""The allow list behind :mod:`refractium.state`: keys allowed until a deadline.

One process keeps it in a dict (:class:`LocalAllows`). The workers of one
instance keep it in the supervisor's shared-memory table
(:class:`~refractium.shared.deadlines.SharedDeadlines`), installed with
:func:`use` when a worker starts, so a key allowed by a hook in one worker
is allowed in all of them.

A key is a string: a client address as the relay reports it
(``"203.0.113.7"``; IPv4 and its ``::ffff:`` form are one key) or any name
a hook chooses, which is hashed to the table's 16 bytes. The ``*_key``
methods and :meth:`AllowStore.entries` work on those 16 bytes: what
:mod:`refractium.fleet` sends to other instances, since a hashed name cannot
be turned back into its text.
"""

from __future__ import annotations

import hashlib
import time
from typing import Protocol

from refractium.shared.deadlines import SharedDeadlines
from refractium.shared.keys import EMPTY, address_key

__all__ = ["AllowStore", "LocalAllows", "SharedAllows", "current", "table_key", "use"]

#: Keys the one-process list holds before it drops expired ones.
LOCAL_PRUNE_AT = 16384


def table_key(key: str) -> bytes:
    """The 16 bytes that stand for ``key``: an address's own, else a hash of the text."""
    try:
        return address_key(key)
    except ValueError:
        digest = hashlib.blake2b(key.encode(), digest_size=16, person=b"refractium-key").digest()
        return digest if digest != EMPTY else b"\x01" + digest[1:]


class AllowStore(Protocol):
    """Where the allow list is kept."""

    def put(self, key: str, until: float) -> bool:
        """Allow ``key`` until ``until`` (``time.time()``); False when there is no room."""

    def drop(self, key: str) -> None: ...

    def until(self, key: str, now: float) -> float | None:
        """The deadline of ``key`` if it is still ahead of ``now``."""

    def put_key(self, key: bytes, until: float) -> bool:
        """:meth:`put` for a key's 16 bytes (:func:`table_key`)."""

    def drop_key(self, key: bytes) -> None:
        """:meth:`drop` for a key's 16 bytes."""

    def entries(self, now: float) -> dict[bytes, float]:
        """Every key (its 16 bytes) whose deadline is ahead of ``now``, with the deadline."""


class LocalAllows:
    """The allow list of one process."""

    def __init__(self) -> None:
        self._until: dict[bytes, float] = {}

    def put(self, key: str, until: float) -> bool:
        return self.put_key(table_key(key), until)

    def drop(self, key: str) -> None:
        self._until.pop(table_key(key), None)

    def put_key(self, key: bytes, until: float) -> bool:
        if len(self._until) >= LOCAL_PRUNE_AT:
            now = time.time()
            self._until = {k: t for k, t in self._until.items() if t > now}
        self._until[key] = until
        return True

    def drop_key(self, key: bytes) -> None:
        self._until.pop(key, None)

    def entries(self, now: float) -> dict[bytes, float]:
        return {k: t for k, t in self._until.items() if t > now}

    def until(self, key: str, now: float) -> float | None:
        deadline = self._until.get(table_key(key))
        return deadline if deadline is not None and deadline > now else None


class SharedAllows:
    """The allow list of every worker of the instance, in shared memory."""

    def __init__(self, table: SharedDeadlines) -> None:
        self._table = table

    def put(self, key: str, until: float) -> bool:
        return self._table.set_key(table_key(key), until)

    def drop(self, key: str) -> None:
        self._table.clear_key(table_key(key))

    def until(self, key: str, now: float) -> float | None:
        return self._table.get_key(table_key(key), now)

    def put_key(self, key: bytes, until: float) -> bool:
        return self._table.set_key(key, until)

    def drop_key(self, key: bytes) -> None:
        self._table.clear_key(key)

    def entries(self, now: float) -> dict[bytes, float]:
        return self._table.items(now)


_store: AllowStore = LocalAllows()


def use(store: AllowStore) -> None:
    """Keep this process's allow list in ``store`` (a worker: the table it shares)."""
    global _store
    _store = store


def current() -> AllowStore:
    """The allow list of this process."""
    return _store

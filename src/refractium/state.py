"""State hooks share: an allow list that every worker of the instance sees, and bans.

::

    from refractium import state

    await state.allow("203.0.113.7", ttl_s=60)   # in one hook, one worker
    state.allowed("203.0.113.7")                 # True, in every worker, for 60 s
    await state.revoke("203.0.113.7")

A key is a string: a client address as ``conn.client_addr[0]`` gives it
(IPv4 and its ``::ffff:`` form are one key), or any name a hook chooses.
With ``workers = 1`` the list lives in the process; with ``workers > 1`` in
memory the supervisor shares with its workers, so a key allowed where one
connection was handled is allowed wherever the next one lands.

:func:`allowed` reads local memory and never waits: call it on the data
path (``after_handshake``). :func:`allow` and :func:`revoke` are
coroutines, so hook code stays the same whichever store keeps the list.

:func:`ban` bans an address or a network as ``POST /bans`` does: it is
refused at accept by every worker of the instance until the ban ends
(``[limits]`` need not be set for a ban to hold).
"""

from __future__ import annotations

import time
from ipaddress import ip_network

from refractium.abuse import guard
from refractium.errors import RefractiumError
from refractium.shared.allows import current

__all__ = ["allow", "allowed", "ban", "remaining", "revoke"]


async def allow(key: str, ttl_s: float) -> None:
    """Allow ``key`` for ``ttl_s`` seconds from now (a later call replaces the deadline).

    Raises:
        ValueError: ``ttl_s`` is not positive.
        RefractiumError: the shared list is full of live entries.
    """
    if not ttl_s > 0:
        raise ValueError("ttl_s must be positive")
    if not current().put(key, time.time() + ttl_s):
        raise RefractiumError(f"the allow list is full: cannot allow {key!r}")


async def revoke(key: str) -> None:
    """Allow ``key`` no longer."""
    current().drop(key)


def allowed(key: str) -> bool:
    """Whether ``key`` is allowed now. Local memory only: never waits."""
    return current().until(key, time.time()) is not None


def remaining(key: str) -> float:
    """Seconds ``key`` stays allowed (0 when it is not)."""
    now = time.time()
    deadline = current().until(key, now)
    return 0.0 if deadline is None else deadline - now


async def ban(address: str, for_s: float, reason: str = "hook") -> None:
    """Ban ``address`` (an address or a CIDR) for ``for_s`` seconds, with ``reason``.

    Raises:
        ValueError: not an address or a network, or ``for_s`` not positive.
        RefractiumError: no engine has started in this process.
    """
    network = ip_network(address.strip(), strict=True)
    if not for_s > 0:
        raise ValueError("for_s must be positive")
    running = guard.current()
    if running is None:
        raise RefractiumError("no engine has started in this process: nothing to ban with")
    running.ban(network, for_s, reason)

"""What instances tell each other through Redis: bans and allows as JSON, and their key names.

Every message is one JSON object with an ``op`` and the ``origin`` of the
instance that sent it (an instance ignores its own)::

    {"op": "ban", "address": "198.51.100.7", "reason": "manual",
     "since": 1767225600.5, "expires": 1767226200.5, "origin": "9f2c..."}
    {"op": "lift", "address": "192.0.2.0/24", "origin": "9f2c..."}
    {"op": "allow", "key": "<32 hex digits>", "until": 1767225660.0, "origin": "9f2c..."}
    {"op": "revoke", "key": "<32 hex digits>", "origin": "9f2c..."}

A ban's ``address`` is written as ``GET /bans`` writes it (a bare address
for one host); an allow's ``key`` is the 16 bytes of
:func:`refractium.shared.allows.table_key` in hex, so any string a hook
allows crosses as it is kept. Times are ``time.time()`` seconds: the
instances' clocks are assumed in step (NTP), as deadlines are absolute.

The same ``ban`` and ``allow`` objects are the values of the keys
``{prefix}ban:{network}`` and ``{prefix}allow:{hex}``, each expiring with
what it stands for, which is how an instance (re)connecting learns what is
in force. Untrusted input in the sense that another version or a stray
writer may put anything there: :func:`parse` returns None for whatever is
not one of the four shapes above.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network, ip_network
from math import isfinite

from refractium.shared.keys import EMPTY
from refractium.shared.stores import Ban

__all__ = [
    "Allow",
    "Lift",
    "Remote",
    "Revoke",
    "allow_message",
    "ban_message",
    "glob_escape",
    "lift_message",
    "parse",
    "revoke_message",
]

Network = IPv4Network | IPv6Network

#: A reason longer than this is cut (the shared table keeps 32 bytes of it anyway).
REASON_CHARS = 200


@dataclass(frozen=True, slots=True)
class Lift:
    """A ban lifted before its deadline."""

    network: Network
    origin: str


@dataclass(frozen=True, slots=True)
class Allow:
    """A key allowed until a deadline."""

    key: bytes
    until: float
    origin: str


@dataclass(frozen=True, slots=True)
class Revoke:
    """A key allowed no longer."""

    key: bytes
    origin: str


@dataclass(frozen=True, slots=True)
class Remote:
    """A ban as another instance made it."""

    ban: Ban
    origin: str


def _dump(obj: dict[str, object]) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def ban_message(ban: Ban, origin: str) -> bytes:
    """``ban`` as a message (and as the value of its key)."""
    return _dump(
        {
            "op": "ban",
            "address": ban.address,
            "reason": ban.reason,
            "since": ban.since,
            "expires": ban.expires,
            "origin": origin,
        }
    )


def lift_message(network: Network, origin: str) -> bytes:
    """The ban of ``network`` lifted."""
    return _dump({"op": "lift", "address": _address(network), "origin": origin})


def allow_message(key: bytes, until: float, origin: str) -> bytes:
    """``key`` (16 bytes) allowed until ``until``."""
    return _dump({"op": "allow", "key": key.hex(), "until": until, "origin": origin})


def revoke_message(key: bytes, origin: str) -> bytes:
    """``key`` (16 bytes) no longer allowed."""
    return _dump({"op": "revoke", "key": key.hex(), "origin": origin})


def _address(network: Network) -> str:
    return Ban(network, "", 0.0, 0.0).address


def _time(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return value if isfinite(value) else None


def _key(value: object) -> bytes | None:
    if not isinstance(value, str) or len(value) != 32:
        return None
    try:
        key = bytes.fromhex(value)
    except ValueError:
        return None
    return key if key != EMPTY else None


def parse(data: bytes) -> Remote | Lift | Allow | Revoke | None:
    """The message in ``data``, or None if it is not one."""
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(obj, dict):
        return None
    op, origin = obj.get("op"), obj.get("origin")
    if not isinstance(origin, str):
        return None
    if op in ("ban", "lift"):
        address = obj.get("address")
        if not isinstance(address, str):
            return None
        try:
            network = ip_network(address, strict=True)
        except ValueError:
            return None
        if op == "lift":
            return Lift(network, origin)
        reason, since, expires = (
            obj.get("reason"),
            _time(obj.get("since")),
            _time(obj.get("expires")),
        )
        if not isinstance(reason, str) or since is None or expires is None:
            return None
        return Remote(Ban(network, reason[:REASON_CHARS], since, expires), origin)
    if op in ("allow", "revoke"):
        key = _key(obj.get("key"))
        if key is None:
            return None
        if op == "revoke":
            return Revoke(key, origin)
        until = _time(obj.get("until"))
        return None if until is None else Allow(key, until, origin)
    return None


def glob_escape(raw: bytes) -> bytes:
    """``raw`` with the characters special to Redis's ``SCAN MATCH`` escaped."""
    out = bytearray()
    for byte in raw:
        if byte in b"*?[]\\":
            out.append(0x5C)
        out.append(byte)
    return bytes(out)

"""``/bans``: list, add and lift bans (``[limits]``), as JSON.

``GET /bans`` lists every ban in force; ``POST /bans`` with
``{"address": "198.51.100.7", "for_s": 600, "reason": "manual"}`` bans an
address or a CIDR; ``DELETE /bans/ADDRESS`` lifts one (a CIDR's ``/``
written ``%2F``). The bans live where the guard keeps them: this process,
or the table every worker of the instance reads at accept, so a ban made
here is enforced by the next connection whichever worker takes it.
"""

from __future__ import annotations

import json
import math
from ipaddress import IPv4Network, IPv6Network, ip_network
from typing import Any
from urllib.parse import unquote

from refractium.abuse.guard import Guard
from refractium.shared.stores import Ban

__all__ = ["BanRequestError", "ban_json", "lift", "listing", "post"]

#: The longest ban the API takes: a year.
MAX_FOR_S = 366 * 86400.0
#: The longest reason kept (the shared table keeps 32 bytes).
MAX_REASON = 32


class BanRequestError(ValueError):
    """A request the API cannot take: the message says why (a 400 answer)."""


def ban_json(ban: Ban) -> dict[str, Any]:
    """One ban as ``GET /bans`` lists it."""
    return {
        "address": ban.address,
        "reason": ban.reason,
        "since": round(ban.since, 3),
        "expires": round(ban.expires, 3),
    }


def listing(guard: Guard) -> dict[str, Any]:
    """``GET /bans``."""
    return {"bans": [ban_json(ban) for ban in guard.bans()]}


def post(guard: Guard, body: bytes, default_for_s: float) -> dict[str, Any]:
    """``POST /bans``: the ban made (BanRequestError when the body is wrong)."""
    try:
        request = json.loads(body or b"null")
    except ValueError as exc:
        raise BanRequestError(f"body: not JSON: {exc}") from None
    if not isinstance(request, dict):
        raise BanRequestError('body: expected {"address": ..., "for_s": ..., "reason": ...}')
    unknown = sorted(set(request) - {"address", "for_s", "reason"})
    if unknown:
        raise BanRequestError(f"body: unknown key {unknown[0]!r}")
    address = request.get("address")
    if not isinstance(address, str):
        raise BanRequestError("address: expected an address or a CIDR, as a string")
    network = _network(address)
    for_s = request.get("for_s", default_for_s)
    if isinstance(for_s, bool) or not isinstance(for_s, int | float):
        raise BanRequestError("for_s: expected a number of seconds")
    if not (math.isfinite(for_s) and 0 < for_s <= MAX_FOR_S):
        raise BanRequestError(f"for_s: expected more than 0 and at most {MAX_FOR_S:g}, got {for_s}")
    reason = request.get("reason", "manual")
    if not isinstance(reason, str) or not reason.strip():
        raise BanRequestError("reason: expected a non-empty string")
    ban = guard.ban(network, float(for_s), reason.strip()[:MAX_REASON])
    return {"banned": ban_json(ban)}


def lift(guard: Guard, quoted: str) -> bool:
    """``DELETE /bans/ADDRESS``: whether there was such a ban (BanRequestError: not an address)."""
    return guard.unban(_network(unquote(quoted)))


def _network(text: str) -> IPv4Network | IPv6Network:
    try:
        return ip_network(text.strip(), strict=True)
    except ValueError as exc:
        raise BanRequestError(f"address: {exc}") from None

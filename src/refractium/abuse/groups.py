"""Client groups: the network a client is counted by, and its 16-byte key.

Rates and offences are kept per client group, an address masked to
``[limits] group_v4`` bits (IPv4) or ``group_v6`` bits (IPv6): with /64 a
host that rotates through its IPv6 /64 is still one client. The key is the
masked address in 16 bytes, IPv4 mapped into ``::ffff:0:0/96`` (as
:func:`refractium.shared.keys.address_key` writes a whole address), so an
address reported as ``::ffff:203.0.113.7`` by a dual-stack listener is the
same client as ``203.0.113.7``; the one exception is the group ``::/n``
(``::1`` counted per /64), keyed ``::1`` because 16 zero bytes mark an
empty slot in the shared tables. A route's rate keeps its buckets under
:func:`route_key`: a hash of the route and the group, the same 16 bytes wide.

:func:`group_key` runs for every accepted connection when a rate is set;
it takes about a microsecond (``benchmarks/abuse.py``). Untrusted input:
the address may come from a PROXY header (its parser has checked it is one).
"""

from __future__ import annotations

import socket
from hashlib import blake2b
from ipaddress import IPv4Network, IPv6Network

__all__ = ["group_key", "group_network", "route_key"]

_MAPPED = bytes(10) + b"\xff\xff"  # ::ffff:0:0/96, where IPv4 groups go
_AF_INET = socket.AF_INET
_AF_INET6 = socket.AF_INET6
_inet_pton = socket.inet_pton
_from_bytes = int.from_bytes
# The mask of each prefix length, by length.
_MASK4 = tuple(((1 << 32) - 1) ^ ((1 << (32 - n)) - 1) for n in range(33))
_MASK6 = tuple(((1 << 128) - 1) ^ ((1 << (128 - n)) - 1) for n in range(129))
_ZEROS = tuple(bytes(n) for n in range(17))
_EMPTY = bytes(16)
_ZERO_GROUP = bytes(15) + b"\x01"


def _packed(ip: str) -> bytes:
    """``ip`` in 4 bytes (IPv4, mapped or not) or 16 (IPv6); a zone is dropped."""
    try:
        if ":" not in ip:
            return _inet_pton(_AF_INET, ip)
        if "%" in ip:
            ip = ip.partition("%")[0]
        packed = _inet_pton(_AF_INET6, ip)
    except (OSError, ValueError):
        raise ValueError(f"not an IP address: {ip!r}") from None
    return packed[12:] if packed[:12] == _MAPPED else packed


def group_key(ip: str, v4: int, v6: int) -> bytes:
    """The 16-byte key of ``ip``'s group: the address masked to /``v4`` or /``v6``.

    Args:
        ip: an IPv4 or IPv6 address, as ``getpeername`` or a PROXY header gives it.
        v4: the group's prefix length for IPv4 addresses (1..32).
        v6: the group's prefix length for IPv6 addresses (1..128).

    Raises:
        ValueError: ``ip`` is not an IP address, or is ``::``.
    """
    # _packed inlined: this runs per connection, and the call is a tenth of its cost.
    try:
        if ":" not in ip:
            packed = _inet_pton(_AF_INET, ip)
        else:
            if "%" in ip:
                ip = ip.partition("%")[0]
            packed = _inet_pton(_AF_INET6, ip)
            if packed[:12] == _MAPPED:
                if v4 == 32:
                    return packed
                packed = packed[12:]
    except (OSError, ValueError):
        raise ValueError(f"not an IP address: {ip!r}") from None
    if len(packed) == 4:
        if v4 & 7 == 0:  # whole bytes (/32, /24...): slicing beats int arithmetic
            return _MAPPED + packed[: v4 >> 3] + _ZEROS[4 - (v4 >> 3)]
        return _MAPPED + (_from_bytes(packed) & _MASK4[v4]).to_bytes(4)
    if v6 & 7 == 0:
        key = packed[: v6 >> 3] + _ZEROS[16 - (v6 >> 3)]
    else:
        key = (_from_bytes(packed) & _MASK6[v6]).to_bytes(16)
    if key == _EMPTY:
        return _zero_group(packed)
    return key


def _zero_group(packed: bytes) -> bytes:
    """The key of the group ``::/v6`` (``::1`` with /64): ``::1``, not all zeros.

    The shared tables mark a slot never used with 16 zero bytes, so no key
    may be that. Its last bit is a host bit of every group narrower than
    /128, always zero otherwise, so no other group of the same width has it.
    """
    if packed == _EMPTY:
        raise ValueError("'::' is no client's address")
    return _ZERO_GROUP


def group_network(ip: str, v4: int, v6: int) -> IPv4Network | IPv6Network:
    """``ip``'s group as a network: ``203.0.113.7/32``, ``2001:db8:1:2::/64`` (what is banned).

    Raises:
        ValueError: ``ip`` is not an IP address.
    """
    packed = _packed(ip)
    if len(packed) == 4:
        return IPv4Network((_from_bytes(packed) & _MASK4[v4], v4))
    return IPv6Network((_from_bytes(packed) & _MASK6[v6], v6))


def route_key(route_id: str, group: bytes) -> bytes:
    """The 16-byte key of ``group``'s bucket on the route ``route_id``.

    A hash, so that a route's buckets and the instance's share one table
    without a wider key; BLAKE2b, so that no client can pick addresses whose
    route keys collide with another client's. ``group`` (16 bytes) comes
    first: its fixed length keeps the pair unambiguous.
    """
    return blake2b(group + route_id.encode(), digest_size=16).digest()

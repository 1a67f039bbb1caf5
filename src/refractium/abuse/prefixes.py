"""Networks to values, looked up by address: the most specific network wins.

The structure behind :class:`~refractium.abuse.cidrs.CidrSet` and
:class:`~refractium.abuse.local.LocalBans`. Each family keeps one dict per
prefix length present, from the network's address shifted right by its host
bits to the value; a lookup turns the address into an int once, then probes
one dict per prefix length, longest first. Its cost depends on how many
prefix lengths are present (a deny list of /24s and /32s: two probes), never
on how many networks.

Addresses come as the relay has them. An IPv4 address mapped into IPv6
(``::ffff:203.0.113.7``, what a dual-stack listener reports) is looked up as
IPv4, and an IPv6 network inside ``::ffff:0:0/96`` is kept as the IPv4
network it stands for, so either spelling matches either. Other IPv6
networks match IPv6 addresses only: ``::/0`` does not cover IPv4 clients. A
zone (``fe80::1%eth0``) is dropped. Untrusted input: the address may come
from a PROXY header; one that does not parse matches nothing.
"""

from __future__ import annotations

import socket
from ipaddress import IPv4Network, IPv6Network
from typing import Generic, TypeVar

__all__ = ["Network", "PrefixMap"]

Network = IPv4Network | IPv6Network
V = TypeVar("V")

_MAPPED = bytes(10) + b"\xff\xff"  # ::ffff:0:0/96
_MAPPED_INT = 0xFFFF << 32
_AF_INET = socket.AF_INET
_AF_INET6 = socket.AF_INET6
_inet_pton = socket.inet_pton
_from_bytes = int.from_bytes

# (shift, table) for each prefix length present, longest prefix first.
_Probes = tuple[tuple[int, dict[int, V]], ...]


def _place(network: Network) -> tuple[bool, int, int]:
    """Where ``network`` goes: (IPv4?, prefix length, key in that length's table)."""
    first = int(network.network_address)
    plen = network.prefixlen
    if network.version == 6 and plen >= 96 and first >> 32 == _MAPPED_INT >> 32:
        # An IPv4 network written in IPv6: kept as that IPv4 network.
        plen -= 96
        first &= 0xFFFFFFFF
        return True, plen, first >> (32 - plen)
    bits = 32 if network.version == 4 else 128
    return network.version == 4, plen, first >> (bits - plen)


class PrefixMap(Generic[V]):
    """Networks (IPv4 and IPv6) to values; :meth:`lookup` finds the most specific.

    Not thread-safe; cheap to change (one dict operation, and a rebuild of a
    tuple of at most 33 or 129 entries when a prefix length appears or goes).
    """

    __slots__ = ("_by4", "_by6", "_count", "_probes4", "_probes6")

    def __init__(self) -> None:
        self._by4: dict[int, dict[int, V]] = {}  # prefix length -> table
        self._by6: dict[int, dict[int, V]] = {}
        self._probes4: _Probes[V] = ()
        self._probes6: _Probes[V] = ()
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def put(self, network: Network, value: V) -> V | None:
        """Map ``network`` to ``value``; the value it replaces, if any."""
        v4, plen, key = _place(network)
        by = self._by4 if v4 else self._by6
        table = by.get(plen)
        if table is None:
            table = by[plen] = {}
            self._reprobe(v4)
        old = table.get(key)
        table[key] = value
        if old is None:
            self._count += 1
        return old

    def get(self, network: Network) -> V | None:
        """The value of exactly ``network`` (not of a network covering it)."""
        v4, plen, key = _place(network)
        table = (self._by4 if v4 else self._by6).get(plen)
        return None if table is None else table.get(key)

    def pop(self, network: Network) -> V | None:
        """Remove exactly ``network``; its value, or None if it was not there."""
        v4, plen, key = _place(network)
        by = self._by4 if v4 else self._by6
        table = by.get(plen)
        if table is None:
            return None
        value = table.pop(key, None)
        if value is not None:
            self._count -= 1
            if not table:
                # A prefix length with no network left costs a probe per lookup.
                del by[plen]
                self._reprobe(v4)
        return value

    def values(self) -> list[V]:
        """Every value, IPv4 networks first, then the most specific first."""
        return [v for _, table in self._probes4 + self._probes6 for v in table.values()]

    def lookup(self, ip: str) -> V | None:
        """The value of the most specific network containing ``ip``, if any.

        Never raises: an ``ip`` that is not an address matches nothing.
        """
        if not self._count:
            return None
        try:
            if ":" not in ip:
                n = _from_bytes(_inet_pton(_AF_INET, ip))
                probes = self._probes4
            else:
                if "%" in ip:
                    ip = ip.partition("%")[0]
                packed = _inet_pton(_AF_INET6, ip)
                if packed[:12] == _MAPPED:
                    n = _from_bytes(packed[12:])
                    probes = self._probes4
                else:
                    n = _from_bytes(packed)
                    probes = self._probes6
        except (OSError, ValueError):  # ValueError: an embedded NUL, a non-ASCII text
            return None
        for shift, table in probes:
            value = table.get(n >> shift)
            if value is not None:
                return value
        return None

    def _reprobe(self, v4: bool) -> None:
        if v4:
            by, bits = self._by4, 32
        else:
            by, bits = self._by6, 128
        probes = tuple((bits - plen, by[plen]) for plen in sorted(by, reverse=True))
        if v4:
            self._probes4 = probes
        else:
            self._probes6 = probes

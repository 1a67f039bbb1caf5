"""A set of networks that answers "which one contains this address?" cheaply.

:class:`CidrSet` holds ``[limits] allow`` and ``deny`` and a deny file's
networks; the relay asks it about every connection it accepts, so a lookup
costs an address parse and a dict probe per prefix length present (see
:mod:`~refractium.abuse.prefixes`), whether the set holds ten networks or
ten thousand. Addresses are taken as the relay has them, IPv4 mapped into
IPv6 matching IPv4 networks; one that does not parse matches nothing.
"""

from __future__ import annotations

from collections.abc import Iterable

from refractium.abuse.prefixes import Network, PrefixMap

__all__ = ["CidrSet"]


class CidrSet:
    """An immutable set of IPv4 and IPv6 networks.

    Args:
        networks: the networks; one given twice (or once as IPv4 and once
            mapped into IPv6) is kept once, as first given.
    """

    __slots__ = ("_map", "networks")

    networks: tuple[Network, ...]

    def __init__(self, networks: Iterable[Network] = ()) -> None:
        self._map: PrefixMap[Network] = PrefixMap()
        kept: list[Network] = []
        for network in networks:
            if self._map.get(network) is None:
                self._map.put(network, network)
                kept.append(network)
        self.networks = tuple(kept)

    def match(self, ip: str) -> Network | None:
        """The most specific network containing ``ip``; None if none (or ``ip`` is no address)."""
        return self._map.lookup(ip)

    def __contains__(self, ip: object) -> bool:
        return isinstance(ip, str) and self._map.lookup(ip) is not None

    def __len__(self) -> int:
        return len(self.networks)

    def __bool__(self) -> bool:
        return bool(self.networks)

    def __repr__(self) -> str:
        return f"CidrSet({len(self.networks)} networks)"

"""The route table and the routing decision: pure, no I/O.

Built from a configuration by :mod:`refractium.routing.build`.

A :class:`RouteTable` is built once from a validated configuration and never
changes; a reload builds a new one and swaps a single reference, so a
connection that is being identified keeps a consistent view.

Routing rule (DESIGN section 2): among the routes whose probe matched and
whose filters accept the match, the most specific wins (an exact SNI before a
wildcard, a longer wildcard before a shorter one, SNI before ALPN, an ALPN or
JA4 filter (each counting alike) before none); ties go to the earlier route
in the file. While a probe that
could still produce a better route needs more data, the decision waits.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, TypeVar, cast

from refractium.backends.balancing import Pool
from refractium.config import RouteConfig
from refractium.hooks.api import ProtocolHook, is_async_hook
from refractium.protocols.base import Match, Probe, ProbeResult, Transport, Verdict, first_bytes

# Score weights: an exact SNI outranks any wildcard (whose score grows with
# the suffix length, at most 253), SNI outranks ALPN and JA4 together, which
# weigh alike; any filter outranks none.
_EXACT_SNI = 8000
_WILDCARD_SNI = 4000
_ALPN = 1000
_JA4 = _ALPN
# A route's key is score * _INDEX_SPAN - index: higher wins, earlier breaks ties.
_INDEX_SPAN = 1 << 20
_NO_KEY = -(1 << 62)


@dataclass(frozen=True, slots=True, eq=False)
class Route:
    """One resolved ``[[protocols]]`` entry: its probe, filters and pool."""

    name: str
    index: int
    probe: Probe | None
    transport: Transport
    pool: Pool
    config: RouteConfig | None = None
    sni_exact: frozenset[str] = frozenset()
    sni_suffixes: tuple[str, ...] = ()
    alpn: frozenset[str] = frozenset()
    # JA4 fingerprints: whole ones, and the prefixes of those ending in "*".
    ja4_exact: frozenset[str] = frozenset()
    ja4_prefixes: tuple[str, ...] = ()
    # Packet hooks on this route's connections; block: overflow = "block".
    hooks: tuple[ProtocolHook, ...] = ()
    block_hooks: bool = False
    # Close a relayed TCP connection idle both ways this long (0: never):
    # the route's own value, else the server's.
    idle_timeout_s: float = 0.0
    # Whether every hook is a plain function (called at once, no hook task).
    plain_hooks: bool = field(default=True, init=False)
    # The best key this route can ever reach, for "is it worth waiting for?".
    best_key: int = field(default=0, init=False)
    # Labels the route's metrics and access lines (see config.route_ids); the
    # name when not given.
    id: str = ""

    def __post_init__(self) -> None:
        if not self.id:
            object.__setattr__(self, "id", self.name)
        top = 0
        if self.sni_exact:
            top = _EXACT_SNI
        elif self.sni_suffixes:
            top = _WILDCARD_SNI + max(len(s) for s in self.sni_suffixes)
        if self.alpn:
            top += _ALPN
        if self.ja4_exact or self.ja4_prefixes:
            top += _JA4
        object.__setattr__(self, "best_key", top * _INDEX_SPAN - self.index)
        object.__setattr__(self, "plain_hooks", not any(map(is_async_hook, self.hooks)))

    def key(self, match: Match) -> int:
        """This route's rank for ``match``, or ``_NO_KEY`` if a filter rejects it."""
        score = 0
        if self.sni_exact or self.sni_suffixes:
            sni = match.sni
            if sni is None:
                return _NO_KEY
            if sni in self.sni_exact:
                score = _EXACT_SNI
            else:
                # Suffixes are sorted longest first: the first hit is the best.
                for suffix in self.sni_suffixes:
                    if sni.endswith(suffix):
                        score = _WILDCARD_SNI + len(suffix)
                        break
                else:
                    return _NO_KEY
        if self.alpn:
            if not self.alpn.intersection(match.alpn):
                return _NO_KEY
            score += _ALPN
        if self.ja4_exact or self.ja4_prefixes:
            ja4 = match.ja4
            if ja4 is None or not (ja4 in self.ja4_exact or ja4.startswith(self.ja4_prefixes)):
                return _NO_KEY
            score += _JA4
        return score * _INDEX_SPAN - self.index

    def describe_filters(self) -> str:
        parts = []
        if self.sni_exact or self.sni_suffixes:
            names = sorted(self.sni_exact) + ["*" + s for s in self.sni_suffixes]
            parts.append("sni=" + ",".join(names))
        if self.alpn:
            parts.append("alpn=" + ",".join(sorted(self.alpn)))
        if self.ja4_exact or self.ja4_prefixes:
            names = sorted(self.ja4_exact) + [p + "*" for p in self.ja4_prefixes]
            parts.append("ja4=" + ",".join(names))
        return " ".join(parts)


#: What :meth:`RouteTable.decide` returns once it can: the route (None when
#: nothing matched) and the match that chose it. A tuple, not a dataclass:
#: this is built once per connection on the hot path.
Decision = tuple[Route | None, Match | None]

NEED_MORE: Final = Verdict.NEED_MORE
_NO: Final = Verdict.NO

_Seen = TypeVar("_Seen")
# A probe's reader (what it takes: bytes, or a flow's datagrams), the routes
# that use the probe, and the best key any of them can reach.
_Group = tuple[Callable[[_Seen], ProbeResult], tuple[Route, ...], int]
# How a probe reads the datagrams of a UDP flow so far.
DatagramProber = Callable[[Sequence[bytes]], ProbeResult]


def datagram_prober(probe: Probe) -> DatagramProber:
    """``probe``'s way of reading a flow's first datagrams.

    ``probe_datagrams(all so far)`` when it has one (QUIC reassembles a
    ClientHello across Initial packets), else ``probe_datagram(first)``
    (protocols framed differently on UDP, as DNS), else ``probe(first)``.
    """
    many = getattr(probe, "probe_datagrams", None)
    if callable(many):
        return cast(DatagramProber, many)
    one = getattr(probe, "probe_datagram", None)
    single: Callable[[bytes], ProbeResult] = one if callable(one) else probe.probe
    return lambda datagrams: single(datagrams[0])


class RouteTable:
    """The routes of one transport, grouped by probe so each probe runs once.

    Probes are also indexed by the first byte they can start with, so for a
    given first byte only the probes that could match are called; and they
    are called best-possible-route first, so that once a match is better
    than anything a remaining probe could give, the rest are not called.
    """

    __slots__ = (
        "_datagram_groups",
        "_stream_groups",
        "fallback",
        "on_timeout",
        "routes",
        "transport",
    )

    def __init__(
        self,
        routes: Sequence[Route],
        transport: Transport,
        *,
        fallback: Route | None = None,
        on_timeout: Route | None = None,
    ) -> None:
        self.transport = transport
        self.routes = tuple(r for r in routes if r.transport.covers(transport))
        self.fallback = fallback
        self.on_timeout = on_timeout
        groups: dict[int, tuple[Probe, list[Route]]] = {}
        for route in self.routes:
            if route.probe is not None:
                groups.setdefault(id(route.probe), (route.probe, []))[1].append(route)
        grouped = [(probe, tuple(rs), max(r.best_key for r in rs)) for probe, rs in groups.values()]
        grouped.sort(key=lambda group: group[2], reverse=True)
        starts = [self._starts(probe) for probe, _, _ in grouped]
        # Per first byte, the groups whose probe can start with it, best first.
        by_first_byte = [
            [g for g, start in zip(grouped, starts, strict=True) if start is None or b in start]
            for b in range(256)
        ]
        self._stream_groups: tuple[tuple[_Group[bytes], ...], ...] = tuple(
            tuple((probe.probe, routes, top) for probe, routes, top in byte_groups)
            for byte_groups in by_first_byte
        )
        self._datagram_groups: tuple[tuple[_Group[Sequence[bytes]], ...], ...] = tuple(
            tuple((datagram_prober(probe), routes, top) for probe, routes, top in byte_groups)
            for byte_groups in by_first_byte
        )

    def _starts(self, probe: Probe) -> frozenset[int] | None:
        # A protocol framed differently on UDP declares its TCP first bytes.
        if self.transport is Transport.UDP and (
            hasattr(probe, "probe_datagram") or hasattr(probe, "probe_datagrams")
        ):
            return None
        return first_bytes(probe)

    def decide(self, data: bytes, final: bool) -> Decision | Verdict:
        """Route ``data`` (the client's bytes so far).

        Args:
            data: everything the client sent so far, never empty.
            final: no more data will come (buffer full, timeout or EOF):
                probes that still need more count as "no".

        Returns:
            ``Verdict.NEED_MORE`` to wait for more bytes, else ``(route,
            match)``, route None when no route matched.
        """
        return _choose(self._stream_groups[data[0]], data, final)

    def decide_datagrams(self, datagrams: Sequence[bytes], final: bool) -> Decision | Verdict:
        """Route a UDP flow from its first datagrams, as :meth:`decide` does a stream.

        ``NEED_MORE`` asks for the flow's next datagram. An empty first
        datagram identifies nothing: ``(None, None)``.
        """
        first = datagrams[0]
        if not first:
            return None, None
        return _choose(self._datagram_groups[first[0]], datagrams, final)


def _choose(groups: tuple[_Group[_Seen], ...], seen: _Seen, final: bool) -> Decision | Verdict:
    """The best route for what the client sent so far, or NEED_MORE.

    ``groups`` are the probe groups that can start with its first byte, best
    possible route first; each reads ``seen`` (bytes, or a flow's datagrams).
    """
    best: Route | None = None
    best_match: Match | None = None
    best_key = _NO_KEY
    waiting_key = _NO_KEY
    for read, routes, top in groups:
        if top < best_key:
            break  # neither this probe nor any after it can do better
        result = read(seen)
        if result is NEED_MORE:
            for route in routes:
                if route.best_key > waiting_key:
                    waiting_key = route.best_key
        elif result is not _NO:
            for route in routes:
                key = route.key(result)
                if key > best_key:
                    best_key, best, best_match = key, route, result
    if waiting_key > best_key and not final:
        return NEED_MORE
    return best, best_match


@dataclass(frozen=True, slots=True)
class Tables:
    """Everything a listener needs to route: one table per transport (and listen port).

    ``tcp`` and ``udp`` hold the routes served on every port. When routes
    name ``ports``, each named port gets tables of its own in ``by_port``
    (its routes: those without ``ports`` plus those naming it); a port not
    in ``by_port`` uses ``tcp``/``udp``.
    """

    tcp: RouteTable
    udp: RouteTable
    routes: tuple[Route, ...]
    by_port: Mapping[int, tuple[RouteTable, RouteTable]] = field(default_factory=dict)

    def tcp_at(self, port: int) -> RouteTable:
        """The TCP table of the listener on ``port``."""
        tables = self.by_port.get(port)
        return self.tcp if tables is None else tables[0]

    def udp_at(self, port: int) -> RouteTable:
        """The UDP table of the listener on ``port``."""
        tables = self.by_port.get(port)
        return self.udp if tables is None else tables[1]

    def serves(self, transport: Transport, port: int) -> bool:
        """Whether a listener of ``transport`` on ``port`` has anything to do."""
        table = self.tcp_at(port) if transport is Transport.TCP else self.udp_at(port)
        return bool(table.routes) or table.fallback is not None

r"""Warnings about a valid configuration that probably does not do what was meant.

``refractium check`` prints them (``--strict`` fails on them) and ``run``
logs them at start. Each is one line naming the key at fault:

* a filter the protocol never carries (``sni`` on ``http``): the route
  never matches; what a protocol carries is declared by its probe
  (:func:`refractium.protocols.base.metadata`);
* a route whose transport its protocol never runs on (``quic`` over TCP);
* a route shadowed by an earlier one: same protocol, same or wider filters,
  served on the same ports and transports, so the routing rule (most
  specific first, then file order) never picks it;
* ``anyprot`` before routes it takes every client of;
* a regex not anchored with ``^`` or ``\A`` (it never rules a client out);
* a route or fallback forwarding to the proxy's own listener (a loop);
* ``accept_proxy_protocol`` with no ``trusted_proxies`` (no effect);
* ``overflow`` on a route without packet hooks (no effect);
* abuse control that cannot do what it says: bans with no offence that
  counts, a denied network inside an allowed one (allow wins), a route's
  ``connection_rate`` on a route serving UDP only, ``[state]`` keys the
  ``memory`` backend does not use.

Pure: reads a validated :class:`~refractium.config.Config` and the
built-in probes, opens nothing, resolves no name.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from ipaddress import IPv4Network, IPv6Network

from refractium.addr import Address
from refractium.config import Config, LimitsConfig, Offence, RouteConfig, StateBackend, StateConfig
from refractium.protocols.anyprot import AnyProbe
from refractium.protocols.base import Probe, Transport, metadata
from refractium.protocols.custom import CustomProbe
from refractium.routing.build import probe_for, split_sni

__all__ = ["lint"]

_WILDCARDS = frozenset({"0.0.0.0", "::"})
_SINGLE = (Transport.TCP, Transport.UDP)


class _Route:
    """What the checks need of one route: its probe, transport and filters."""

    __slots__ = ("config", "label", "never", "probe", "sni_exact", "sni_suffixes", "transport")

    def __init__(self, config: RouteConfig) -> None:
        self.config = config
        self.label = f"{config.key} ({config.name})"
        self.probe: Probe = probe_for(config, {})
        self.transport = config.transport or self.probe.transport
        self.sni_exact, self.sni_suffixes = split_sni(config.sni)
        # Why it can never match, if it cannot.
        self.never: str | None = None

    def transports(self) -> tuple[Transport, ...]:
        return _SINGLE if self.transport is Transport.BOTH else (self.transport,)

    def served_on(self, port: int) -> bool:
        return not self.config.ports or port in self.config.ports


def lint(config: Config) -> list[str]:
    """Every warning about ``config``, one line each, in file order.

    Args:
        config: a configuration that validated (its protocols are known).
    """
    routes = [_Route(route) for route in config.protocols]
    warnings: list[str] = []
    for index, route in enumerate(routes):
        route.never = _never_matches(route)
        if route.never is not None:
            warnings.append(f"{route.label}: {route.never}")
        warnings += _anyprot_takes(route, routes[index + 1 :])
        shadow = _shadowed_by(route, routes[:index])
        if shadow is not None:
            warnings.append(
                f"{route.label}: never matches: {shadow.label} comes first with the same "
                "protocol and the same or wider filters"
            )
        regex = route.config.regex
        if regex is not None and not regex.startswith(("^", "\\A")):
            warnings.append(
                f"{route.label}: regex {regex!r} is not anchored: it never rules a client "
                "out, so other clients may wait for more bytes until peek_timeout_ms; "
                "start it with ^"
            )
        warnings += _loops(config, route.label, route.config.forward_to, route.transports(), routes)
        if route.config.overflow_set and not route.config.hooks:
            warnings.append(f"{route.label}: overflow is set but the route has no hooks")
        if route.config.connection_rate is not None and route.transport is Transport.UDP:
            warnings.append(f"{route.label}: connection_rate applies to TCP only")
        if route.config.transparent and config.server.user is not None:
            warnings.append(
                f"{route.label}: transparent needs CAP_NET_ADMIN, which dropping to "
                f"server.user {config.server.user!r} gives up: its dials will fail"
            )
    server = config.server
    for key, fallback, transport in (
        ("server.fallback_tcp", server.fallback_tcp, Transport.TCP),
        ("server.fallback_udp", server.fallback_udp, Transport.UDP),
    ):
        if fallback is not None:
            warnings += _loops(config, key, (fallback,), (transport,), routes)
    if server.accept_proxy_protocol and not server.trusted_proxies:
        warnings.append(
            "server.accept_proxy_protocol: set, but server.trusted_proxies is empty: "
            "no upstream may send a PROXY header, so it has no effect"
        )
    warnings += _limits(config)
    warnings += _state(config.state)
    return warnings


def _limits(config: Config) -> Iterator[str]:
    """Abuse control set to do something it cannot do."""
    limits = config.limits
    if limits.ban_after and not limits.offences:
        yield "limits.ban_after: set, but limits.offences is empty: nothing is ever banned"
    elif limits.ban_after and limits.offences == {Offence.LIMITED} and not _any_rate(config):
        yield (
            "limits.offences: only 'limited' counts, but no connection_rate is set: "
            "nothing is ever banned"
        )
    yield from _denied_but_allowed(limits)


def _any_rate(config: Config) -> bool:
    return config.limits.connection_rate is not None or any(
        route.connection_rate is not None for route in config.protocols
    )


def _denied_but_allowed(limits: LimitsConfig) -> Iterator[str]:
    """A warning per ``deny`` entry that an ``allow`` entry holds whole: it refuses nobody.

    The other way round (an allowed network inside a denied one) is the way
    to write "all of these but those", so it is not warned about.
    """
    # The allowed networks by family and prefix length, keyed by their
    # leading bits: a denied network is held by an allowed one when its own
    # leading bits, at that length, are a key. Lists run to thousands of
    # entries, so this is a lookup per length, not a comparison per pair.
    allowed: dict[tuple[int, int], dict[int, IPv4Network | IPv6Network]] = {}
    for network in limits.allow:
        top = int(network.network_address) >> (network.max_prefixlen - network.prefixlen)
        allowed.setdefault((network.version, network.prefixlen), {}).setdefault(top, network)
    lengths = sorted(allowed)  # the widest first
    for denied in limits.deny:
        address = int(denied.network_address)
        for version, length in lengths:
            if version != denied.version or length > denied.prefixlen:
                continue
            holder = allowed[version, length].get(address >> (denied.max_prefixlen - length))
            if holder is not None:
                yield (
                    f"limits.deny: {_net(denied)} is within limits.allow's {_net(holder)}: "
                    "allow wins, so it is never refused"
                )
                break


def _net(network: IPv4Network | IPv6Network) -> str:
    """A single host as a bare address, else the CIDR."""
    if network.prefixlen == network.max_prefixlen:
        return str(network.network_address)
    return str(network)


def _state(state: StateConfig) -> Iterator[str]:
    """``[state]`` keys set for a redis store while the backend is memory."""
    if state.backend is not StateBackend.MEMORY:
        return
    defaults = StateConfig()
    for name in ("url", "prefix", "on_error"):
        if getattr(state, name) != getattr(defaults, name):
            yield f"state.{name}: set, but state.backend is memory: only redis uses it"


def _never_matches(route: _Route) -> str | None:
    """Why ``route`` can never match, or None."""
    probe = route.probe
    own = probe.transport
    if not any(own.covers(t) for t in route.transports()):
        return (
            f"never matches: transport is {route.transport}, but {route.config.name} "
            f"runs over {own} only"
        )
    carried = metadata(probe)
    for name, values in (
        ("sni", route.config.sni),
        ("alpn", route.config.alpn),
        ("ja4", route.config.ja4),
    ):
        if values and name not in carried:
            return f"{name} never matches: {route.config.name} carries no {name.upper()}"
    return None


def _takes_all(probe: Probe) -> bool:
    return isinstance(probe, AnyProbe)


def _same_protocol(earlier: Probe, later: Probe) -> bool:
    """Whether ``earlier`` matches every client ``later`` matches, with the same metadata."""
    if isinstance(earlier, CustomProbe) or isinstance(later, CustomProbe):
        return (
            isinstance(earlier, CustomProbe)
            and isinstance(later, CustomProbe)
            and (earlier.patterns, earlier.regex) == (later.patterns, later.regex)
        )
    # The same probe class answers the same for the same bytes ("tls" and
    # "https" are one TlsProbe under two names).
    return type(earlier) is type(later)


def _covers(earlier: _Route, later: _Route) -> bool:
    """Whether ``earlier`` is served wherever ``later`` is: every port and transport."""
    if not all(earlier.transport.covers(t) for t in later.transports()):
        return False
    if not earlier.config.ports:
        return True
    return bool(later.config.ports) and set(later.config.ports) <= set(earlier.config.ports)


def _wider_filters(earlier: _Route, later: _Route) -> bool:
    """Whether ``earlier`` accepts every match ``later`` does, ranking as high or higher.

    The rank adds an exact SNI (above any wildcard), the wildcard's length,
    and an ALPN and a JA4 filter (together less than the gap between exact
    and wildcard), so ranking as high for every name means having each of
    ``later``'s exact names and suffixes, and an ALPN or JA4 filter whenever
    it has one.
    """
    has_sni = bool(later.sni_exact or later.sni_suffixes)
    if has_sni != bool(earlier.sni_exact or earlier.sni_suffixes):
        return False
    if not (
        later.sni_exact <= earlier.sni_exact
        and set(later.sni_suffixes) <= set(earlier.sni_suffixes)
    ):
        return False
    later_alpn, earlier_alpn = set(later.config.alpn), set(earlier.config.alpn)
    if bool(later_alpn) != bool(earlier_alpn) or not later_alpn <= earlier_alpn:
        return False
    # JA4 weighs like ALPN: the earlier route needs a filter when the later
    # has one, taking every fingerprint the later takes.
    later_ja4, earlier_ja4 = later.config.ja4, earlier.config.ja4
    if bool(later_ja4) != bool(earlier_ja4):
        return False
    return all(_ja4_taken(j, earlier_ja4) for j in later_ja4)


def _ja4_taken(ja4: str, filters: tuple[str, ...]) -> bool:
    """Whether the ``filters`` take every fingerprint the filter ``ja4`` takes."""
    if ja4 in filters:
        return True
    stem = ja4[:-1] if ja4.endswith("*") else ja4
    return any(f.endswith("*") and stem.startswith(f[:-1]) for f in filters)


def _shadowed_by(route: _Route, earlier: list[_Route]) -> _Route | None:
    """The first earlier route that always wins over ``route`` (not anyprot's: said apart)."""
    if route.never is not None:
        return None
    for other in earlier:
        if other.never is not None or (_takes_all(other.probe) and not _takes_all(route.probe)):
            continue
        if (
            _same_protocol(other.probe, route.probe)
            and _covers(other, route)
            and _wider_filters(other, route)
        ):
            return other
    return None


def _anyprot_takes(route: _Route, later: list[_Route]) -> Iterator[str]:
    """The routes after an unfiltered ``anyprot`` route that it takes every client of."""
    if not _takes_all(route.probe) or route.never is not None:
        return
    taken = [
        other.label
        for other in later
        if not _takes_all(other.probe)
        and other.never is None
        and _covers(route, other)
        and _wider_filters(route, other)
    ]
    if taken:
        yield (
            f"{route.label}: matches every client, so the routes after it never match: "
            + ", ".join(taken)
            + "; put anyprot last"
        )


def _loops(
    config: Config,
    key: str,
    targets: tuple[Address, ...],
    transports: tuple[Transport, ...],
    routes: list[_Route],
) -> Iterator[str]:
    """A warning for each of ``targets`` that is one of the proxy's own listeners."""
    server = config.server
    for target in targets:
        if target.port not in server.port:
            continue
        bind = next((b for b in server.bind if _reaches(target.host, b)), None)
        if bind is None:
            continue
        if not any(_listens(config, routes, t, target.port) for t in transports):
            continue
        listener = Address(bind, target.port)
        yield (
            f"{key}: forwards to {target}, the proxy's own listener {listener}: "
            "connections would loop"
        )


def _listens(config: Config, routes: list[_Route], transport: Transport, port: int) -> bool:
    """Whether ``run`` opens a ``transport`` listener on ``port``."""
    server = config.server
    fallback = server.fallback_tcp if transport is Transport.TCP else server.fallback_udp
    return fallback is not None or any(
        r.transport.covers(transport) and r.served_on(port) for r in routes
    )


def _reaches(host: str, bind: str) -> bool:
    """Whether a connection to ``host`` lands on a listener bound to ``bind``.

    A wildcard bind listens on every local address; without looking names
    up, the local ones known for sure are loopback, ``localhost`` and the
    wildcard itself.
    """
    if host == bind:
        return True
    if host == "localhost":
        return bind in _WILDCARDS or _is_loopback(bind)
    return bind in _WILDCARDS and (_is_loopback(host) or host in _WILDCARDS)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False

"""Building the route tables from a validated configuration.

Resolves each ``[[protocols]]`` entry to its probe (patterns and regex, a
probe given in code, or a built-in), its pool and its packet hooks, and the
fallbacks and ``on_timeout`` route of each transport. Pure but for
importing the packet hooks a route names.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from refractium.addr import Address
from refractium.backends.balancing import Pool
from refractium.config import Config, Overflow, RouteConfig
from refractium.errors import ConfigError
from refractium.hooks.api import ProtocolHook
from refractium.hooks.loader import HookCache
from refractium.protocols import registry
from refractium.protocols.base import Probe, Transport
from refractium.protocols.custom import CustomProbe
from refractium.routing.table import Route, RouteTable, Tables


def split_sni(names: Iterable[str]) -> tuple[frozenset[str], tuple[str, ...]]:
    """Exact names and wildcard suffixes (``*.example.org`` -> ``.example.org``).

    A wildcard matches any name ending in its suffix, at any depth, but not
    the bare parent domain (as nginx's ``server_name *.example.org``).
    """
    exact: set[str] = set()
    suffixes: list[str] = []
    for name in names:
        name = name.lower().rstrip(".")
        if name.startswith("*."):
            suffixes.append(name[1:])
        else:
            exact.add(name)
    return frozenset(exact), tuple(sorted(set(suffixes), key=len, reverse=True))


def probe_for(route: RouteConfig, probes: Mapping[str, Probe]) -> Probe:
    """The probe a route uses: patterns/regex, then a code-given probe, then a built-in."""
    if route.patterns or route.regex:
        return CustomProbe(route.name, route.patterns, route.regex)
    probe = probes.get(route.name) or registry.get(route.name)
    if probe is None:
        raise ConfigError(None, f"{route.key}.name", f"unknown protocol {route.name!r}")
    return probe


def build_tables(
    config: Config,
    probes: Mapping[str, Probe] | None = None,
    hooks: HookCache | None = None,
) -> Tables:
    """Resolve a validated config into route tables (raises ConfigError).

    Args:
        config: the validated configuration.
        probes: protocol objects given in code (the builder API), by name;
            they take precedence over the built-in probes of the same name.
        hooks: where hook instances are kept across reloads (a new cache
            when None).
    """
    probes = probes or {}
    hooks = hooks if hooks is not None else HookCache()
    shared: dict[str, Probe] = {}
    routes: list[Route] = []
    for rc in config.protocols:
        probe = probe_for(rc, probes)
        # One probe object per protocol name, so the table runs it once.
        if not isinstance(probe, CustomProbe):
            probe = shared.setdefault(probe.name, probe)
        exact, suffixes = split_sni(rc.sni)
        ja4_prefixes = tuple(sorted(j[:-1] for j in rc.ja4 if j.endswith("*")))
        routes.append(
            Route(
                name=rc.name,
                id=rc.id or rc.name,
                index=rc.index,
                probe=probe,
                transport=rc.transport or probe.transport,
                pool=Pool(rc.forward_to, rc.balance),
                config=rc,
                sni_exact=exact,
                sni_suffixes=suffixes,
                alpn=frozenset(rc.alpn),
                ja4_exact=frozenset(j for j in rc.ja4 if not j.endswith("*")),
                ja4_prefixes=ja4_prefixes,
                hooks=(*getattr(probe, "hooks", ()), *_route_hooks(rc, hooks, config.source)),
                block_hooks=rc.overflow is Overflow.BLOCK,
                idle_timeout_s=(
                    rc.idle_timeout_s
                    if rc.idle_timeout_s is not None
                    else config.server.idle_timeout_s
                ),
            )
        )
    server = config.server
    fallback_tcp = _fallback(server.fallback_tcp, Transport.TCP, server.idle_timeout_s)
    fallback_udp = _fallback(server.fallback_udp, Transport.UDP)

    def tables_for(served: list[Route]) -> tuple[RouteTable, RouteTable]:
        on_timeout = _named_route(served, config.timeout_route, Transport.TCP)
        return (
            RouteTable(served, Transport.TCP, fallback=fallback_tcp, on_timeout=on_timeout),
            RouteTable(served, Transport.UDP, fallback=fallback_udp),
        )

    everywhere = [route for route in routes if route.config is None or not route.config.ports]
    tcp, udp = tables_for(everywhere)
    named = sorted({port for route in routes if route.config for port in route.config.ports})
    by_port = {
        port: tables_for(
            [r for r in routes if r.config is None or not r.config.ports or port in r.config.ports]
        )
        for port in named
    }
    return Tables(tcp=tcp, udp=udp, routes=tuple(routes), by_port=by_port)


def _route_hooks(
    route: RouteConfig, hooks: HookCache, source: str | None
) -> tuple[ProtocolHook, ...]:
    """The packet hooks ``route`` names (none when ``hooks`` only checks them)."""
    built = (hooks.get(spec, source) for spec in route.hooks)
    return tuple(hook for hook in built if hook is not None)


def _fallback(
    address: Address | None, transport: Transport, idle_timeout_s: float = 0.0
) -> Route | None:
    if address is None:
        return None
    return Route(
        name="fallback",
        index=-1,
        probe=None,
        transport=transport,
        pool=Pool((address,)),
        idle_timeout_s=idle_timeout_s,
    )


def _named_route(routes: Sequence[Route], name: str | None, transport: Transport) -> Route | None:
    """The first route called ``name`` that serves ``transport``."""
    return next((r for r in routes if r.name == name and r.transport.covers(transport)), None)

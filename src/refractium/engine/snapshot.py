"""Resolving a configuration into what the data path reads, and what health watches.

:func:`build_snapshot` turns a validated :class:`~refractium.config.Config`
into one frozen :class:`~refractium.relay.snapshot.Snapshot` (route tables,
endpoint chain, settings); a reload builds a new one and swaps it whole.
:func:`validate` resolves the same without building any hook, for
``refractium check``. :func:`health_checks` says which backends each
transport's health checker knows, and with which active check.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from refractium.addr import Address
from refractium.config import Config, HealthCheck
from refractium.endpoint.chain import EndpointChain
from refractium.endpoint.loader import check_endpoint_hook, load_endpoint_hook
from refractium.hooks.loader import HookCache
from refractium.protocols.base import Probe, Transport
from refractium.relay.snapshot import Settings, Snapshot
from refractium.routing import Tables, build_tables


class Hooks:
    """The hook instances of one engine, kept across reloads that keep their entries."""

    def __init__(self, code_endpoint_hooks: Sequence[object] = ()) -> None:
        self.packet = HookCache()
        self.endpoint = HookCache(load_endpoint_hook, check_endpoint_hook)
        # Endpoint hooks given in code run after the file's, in this order.
        self.code_endpoint_hooks = tuple(code_endpoint_hooks)

    def endpoint_chain(self, config: Config, extra: Sequence[object] = ()) -> EndpointChain:
        from_file = [self.endpoint.get(spec, config.source) for spec in config.endpoint.hooks]
        return EndpointChain([*from_file, *self.code_endpoint_hooks, *extra])

    async def aclose(self) -> None:
        await self.packet.aclose()
        await self.endpoint.aclose()


def build_snapshot(
    config: Config,
    probes: Mapping[str, Probe],
    hooks: Hooks,
    chain: EndpointChain,
) -> Snapshot:
    """Everything connections read, resolved from ``config`` (raises ConfigError)."""
    tables = build_tables(config, probes, hooks.packet)
    access = (config.log.format or "text") if config.log.access else None
    return Snapshot(tables, chain or None, Settings.from_server(config.server, access))


def validate(config: Config, probes: Mapping[str, Probe] | None = None) -> Tables:
    """Resolve ``config`` as a run would, building nothing: no hook is made.

    Every hook is imported and checked (its arguments bound against its
    class), so every error a run would give comes out, but no file is
    opened, no connection made, no thread started.

    Raises:
        ConfigError: naming the file and the key at fault.
    """
    packet = HookCache(check_only=True)
    endpoint = HookCache(load_endpoint_hook, check_endpoint_hook, check_only=True)
    for spec in config.endpoint.hooks:
        endpoint.get(spec, config.source)
    return build_tables(config, probes or {}, packet)


def health_checks(tables: Tables, transport: Transport) -> dict[Address, HealthCheck | None]:
    """What one transport's health checker should know: its backends, and their checks.

    Every backend of the routes that serve ``transport`` (on any port),
    then its fallback, in file order. When an address is in several routes,
    the first route that checks it decides its check; None means passive
    marking only. UDP gets no active checks at all: they connect over TCP.
    """
    active = transport is Transport.TCP
    checks: dict[Address, HealthCheck | None] = {}
    for route in tables.routes:
        if not route.transport.covers(transport):
            continue
        check = route.config.health_check if active and route.config is not None else None
        for address in route.pool.members:
            if checks.get(address) is None:
                checks[address] = check
    fallback = (tables.tcp if active else tables.udp).fallback
    if fallback is not None:
        for address in fallback.pool.members:
            checks.setdefault(address, None)
    return checks

"""Describing an engine in code: the fluent builder, validated like a file."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, Generic, Protocol, Self, TypeVar

from refractium.config import Config, parse_config
from refractium.protocols.base import Probe

E = TypeVar("E", covariant=True)


class EngineFactory(Protocol[E]):
    """What builds the engine from a validated description (the engine class)."""

    def __call__(
        self, config: Config, probes: Mapping[str, Probe], endpoint_hooks: Sequence[object]
    ) -> E: ...


class RefractiumBuilder(Generic[E]):
    """Fluent description of an engine; :meth:`build` validates it like a file.

    Made by :meth:`Refractium.builder() <refractium.engine.proxy.Refractium.builder>`.
    """

    def __init__(self, factory: EngineFactory[E]) -> None:
        self._factory = factory
        self._server: dict[str, Any] = {}
        self._routes: list[dict[str, Any]] = []
        self._probes: dict[str, Probe] = {}
        self._endpoint_hooks: list[object] = []
        self._base: Config | None = None

    def config(self, config: Config) -> Self:
        """Start from a loaded configuration; later calls add to it."""
        self._base = config
        return self

    def bind(self, *addresses: str) -> Self:
        """Listen on these addresses (default 0.0.0.0)."""
        self._server["bind"] = list(addresses)
        return self

    def port(self, port: int) -> Self:
        """Listen on this port (0: any free port; see ``tcp_addresses``)."""
        self._server["port"] = port
        return self

    def option(self, **server: Any) -> Self:
        """Set any ``[server]`` key, e.g. ``option(peek_timeout_ms=500)``."""
        self._server.update(server)
        return self

    def fallback_tcp(self, address: str) -> Self:
        """Where unidentified TCP connections go."""
        self._server["fallback_tcp"] = address
        return self

    def hooks(self, *hooks: object) -> Self:
        """Add endpoint hooks (may repeat); they run in the order added.

        Hooks named in the file's ``[endpoint] hooks`` run first.
        """
        self._endpoint_hooks.extend(hooks)
        return self

    def route(
        self,
        protocol: str | Probe,
        forward_to: str | Sequence[str],
        **options: Any,
    ) -> Self:
        """Add a route, as a ``[[protocols]]`` table would.

        Args:
            protocol: a protocol name, or a probe object (its ``name`` is used).
            forward_to: one ``host:port`` or a pool of them.
            options: any other route key: ``sni``, ``alpn``, ``patterns``,
                ``regex``, ``transport``, ``balance``...
        """
        if isinstance(protocol, str):
            name = protocol
        else:
            # Route names are case-insensitive (lower-cased by the config).
            name = protocol.name.lower()
            self._probes[name] = protocol
        pool = forward_to if isinstance(forward_to, str) else list(forward_to)
        self._routes.append({"name": name, "forward_to": pool, **options})
        return self

    def build(self) -> E:
        """Validate and return the engine.

        Raises:
            ConfigError: naming the key at fault, as for a file.
        """
        data: dict[str, Any] = {"server": dict(self._server), "protocols": list(self._routes)}
        config = parse_config(data, source="builder", extra_protocols=self._probes.keys())
        if self._base is not None:
            config = _merge(self._base, config, self._server)
        return self._factory(config, self._probes, self._endpoint_hooks)


def _merge(base: Config, extra: Config, server_keys: Mapping[str, Any]) -> Config:
    """``base`` with the builder's routes appended and its server keys applied."""
    server = dataclasses.replace(base.server, **{k: getattr(extra.server, k) for k in server_keys})
    offset = len(base.protocols)
    routes = base.protocols + tuple(
        dataclasses.replace(r, index=r.index + offset) for r in extra.protocols
    )
    return dataclasses.replace(base, server=server, protocols=routes)

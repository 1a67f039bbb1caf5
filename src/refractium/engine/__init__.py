"""The embeddable proxy: build it, run it in any asyncio program, reload, stop.

```python
engine = (
    Refractium.builder()
    .bind("127.0.0.1").port(8443)
    .route("http", "127.0.0.1:8080")
    .route("tls", ["10.0.0.1:443", "10.0.0.2:443"], sni=["example.com"])
    .build()
)
await engine.run_tcp()          # until engine.shutdown()
```

The engine validates everything when it is built, so a bad route fails
before anything listens. It holds no global state: several engines can run
in one process.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any, Self

from refractium.admin.server import AdminServer
from refractium.backends.health import HealthChecker, checks_for
from refractium.config import Config, load_file, parse_config
from refractium.endpoint.chain import EndpointChain
from refractium.endpoint.loader import load_endpoint_hook
from refractium.endpoint.remotes import RemoteMap
from refractium.errors import RefractiumError
from refractium.hooks.dispatch import HookStats
from refractium.hooks.loader import HookCache
from refractium.protocols.base import Probe
from refractium.relay.stats import TcpStats, UdpStats
from refractium.relay.tcp import TcpService
from refractium.relay.udp import UdpService
from refractium.routing import Tables, build_tables

log = logging.getLogger(__name__)


class Refractium:
    """One proxy instance: its configuration, route tables and listeners."""

    def __init__(
        self,
        config: Config,
        probes: Mapping[str, Probe] | None = None,
        endpoint_hooks: Sequence[object] = (),
    ) -> None:
        """Validate ``config`` and resolve its routes; nothing listens yet.

        Args:
            config: the configuration.
            probes: protocol probes given in code, by route name.
            endpoint_hooks: endpoint hooks given in code; they run after the
                ones ``[endpoint] hooks`` names, in this order.

        Raises:
            ConfigError: a route or a hook cannot be resolved.
        """
        self._probes = dict(probes or {})
        self._config = config
        self._hooks = HookCache()  # hook instances outlive reloads that keep them
        self._tables: Tables = build_tables(config, self._probes, self._hooks)
        self._code_endpoint_hooks = tuple(endpoint_hooks)
        self._endpoint_hooks = HookCache(load_endpoint_hook)
        self._endpoint = self._endpoint_chain(config)
        self._tcp: TcpService | None = None
        self._udp: UdpService | None = None
        self._hook_stats = HookStats()
        self._admin: AdminServer | None = None
        self._health = HealthChecker()
        self._stopped = asyncio.Event()

    @staticmethod
    def builder() -> RefractiumBuilder:
        """Start describing an engine in code."""
        return RefractiumBuilder()

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> Refractium:
        """An engine configured by a TOML file (raises ConfigError)."""
        return cls(load_file(path))

    @property
    def config(self) -> Config:
        """The configuration in force."""
        return self._config

    @property
    def tables(self) -> Tables:
        """The route tables in force (replaced whole on reload)."""
        return self._tables

    @property
    def tcp_addresses(self) -> list[tuple[str, int]]:
        """Where the TCP listeners are (after ``start_tcp``), e.g. to learn port 0's port."""
        return self._tcp.addresses if self._tcp else []

    @property
    def health(self) -> dict[str, bool]:
        """Backend ``host:port`` -> up, as the health checker sees it now."""
        return {str(address): up for address, up in self._health.snapshot().items()}

    @property
    def hook_stats(self) -> HookStats:
        """Packets, bytes, drops and errors per packet hook (by name), TCP and UDP."""
        return self._hook_stats

    @property
    def tcp_stats(self) -> TcpStats:
        """Counters of the TCP side."""
        if self._tcp is None:
            raise RefractiumError("the TCP listener is not running")
        return self._tcp.stats

    @property
    def endpoint_hooks(self) -> tuple[object, ...]:
        """The endpoint hooks in force, in the order they run."""
        return self._endpoint.hooks

    @property
    def remote_map(self) -> RemoteMap | None:
        """The first :class:`~refractium.remotes.RemoteMap` among the endpoint hooks."""
        for hook in self._endpoint.hooks:
            if isinstance(hook, RemoteMap):
                return hook
        return None

    def _endpoint_chain(self, config: Config) -> EndpointChain:
        source = config.source
        from_file = [self._endpoint_hooks.get(spec, source) for spec in config.endpoint.hooks]
        return EndpointChain([*from_file, *self._code_endpoint_hooks])

    @property
    def open_connections(self) -> int:
        """TCP connections open now (being identified, dialled or relayed)."""
        return len(self._tcp.connections) if self._tcp is not None else 0

    @property
    def active_by_backend(self) -> dict[str, int]:
        """Backend ``host:port`` -> connections relaying to it now."""
        if self._tcp is None:
            return {}
        return {str(address): n for address, n in self._tcp.active.items()}

    # -- running ----------------------------------------------------------

    async def start_tcp(self) -> list[tuple[str, int]]:
        """Open the TCP listeners and return their addresses; returns at once.

        Raises:
            RefractiumError: a listener cannot be opened (port in use...).
        """
        if self._tcp is not None:
            raise RefractiumError("the TCP listener is already running")
        server = self._config.server
        service = TcpService(server, self._tables, self._health)
        service.hook_stats = self._hook_stats
        service.endpoint = self._endpoint or None
        await service.listen(server.bind, server.port)
        try:
            await self._start_admin()
        except RefractiumError:
            await service.stop_listening()
            raise
        self._health.configure(checks_for(self._config))
        self._tcp = service
        return service.addresses

    async def start_udp(self, port: int | None = None) -> list[tuple[str, int]]:
        """Open the UDP listeners and return their addresses; returns at once.

        Args:
            port: the port to bind (default ``server.port``; with port 0 and
                TCP already listening, the TCP listeners' port).

        Raises:
            RefractiumError: a listener cannot be opened (port in use...).
        """
        if self._udp is not None:
            raise RefractiumError("the UDP listener is already running")
        server = self._config.server
        if port is None:
            port = server.port
            if port == 0 and self._tcp is not None and self._tcp.addresses:
                port = self._tcp.addresses[0][1]
        service = UdpService(server, self._tables, self._health, self._hook_stats)
        service.endpoint = self._endpoint or None
        await service.listen(server.bind, port)
        try:
            await self._start_admin()
        except RefractiumError:
            service.close_listeners()
            raise
        self._health.configure(checks_for(self._config))
        self._udp = service
        return service.addresses

    async def _start_admin(self) -> None:
        admin = self._config.admin
        if admin.bind is None or self._admin is not None:
            return
        server = AdminServer(self, admin.bind.host, admin.bind.port, admin.token)
        await server.start()
        self._admin = server

    @property
    def admin_address(self) -> tuple[str, int] | None:
        """Where the admin API listens, when ``[admin] bind`` is set and serving started."""
        return self._admin.address if self._admin is not None else None

    @property
    def udp_addresses(self) -> list[tuple[str, int]]:
        """Where the UDP listeners are (after ``start_udp``)."""
        return self._udp.addresses if self._udp else []

    @property
    def udp_stats(self) -> UdpStats:
        """Counters of the UDP side."""
        if self._udp is None:
            raise RefractiumError("the UDP listener is not running")
        return self._udp.stats

    @property
    def open_flows(self) -> int:
        """UDP flows alive now."""
        return len(self._udp.flows) if self._udp is not None else 0

    async def run_tcp(self) -> None:
        """Listen on TCP and serve until :meth:`shutdown`."""
        await self.start_tcp()
        await self.wait_stopped()

    async def run_udp(self) -> None:
        """Listen on UDP and serve until :meth:`shutdown`."""
        await self.start_udp()
        await self.wait_stopped()

    async def run_both(self) -> None:
        """Serve TCP and UDP until :meth:`shutdown`."""
        await self.start_both()
        await self.wait_stopped()

    async def start_both(self) -> None:
        """Open the TCP listeners, then the UDP ones on the same port."""
        await self.start_tcp()
        try:
            await self.start_udp()
        except RefractiumError:
            if self._tcp is not None:
                await self._tcp.stop_listening()
                self._tcp = None
            raise

    async def wait_stopped(self) -> None:
        """Return once :meth:`shutdown` has finished."""
        await self._stopped.wait()

    async def shutdown(self, grace_ms: int | None = None) -> None:
        """Stop accepting, let open connections finish, then close the rest.

        Args:
            grace_ms: how long open connections may take; default
                ``server.shutdown_grace_ms``.
        """
        grace = self._config.server.shutdown_grace_ms if grace_ms is None else grace_ms
        if self._udp is not None:
            await self._udp.shutdown()
        if self._tcp is not None:
            await self._tcp.shutdown(grace / 1000)
        if self._admin is not None:  # after the drain: it can be watched to the end
            await self._admin.close()
            self._admin = None
        await self._health.close()
        await self._hooks.aclose()
        await self._endpoint_hooks.aclose()
        self._stopped.set()

    def abort_connections(self) -> None:
        """Cut every open connection now (a second stop signal)."""
        if self._tcp is not None:
            self._tcp.abort_all()

    # -- reloading --------------------------------------------------------

    def reload_routes(
        self,
        config: Config | str | os.PathLike[str] | Sequence[Mapping[str, Any]] | None = None,
    ) -> None:
        """Swap the whole route table atomically; open connections keep their backend.

        Args:
            config: a whole new configuration; a path to read one from; a
                list of routes (``[[protocols]]`` tables as dicts) replacing
                the current routes only; or None to re-read the file the
                current configuration came from.

        Raises:
            ConfigError: the new configuration is invalid; the running table
                is kept.
        """
        new_config = self._resolve_reload(config)
        tables = build_tables(new_config, self._probes, self._hooks)
        endpoint = self._endpoint_chain(new_config)
        old, new = self._config.server, new_config.server
        if (old.bind, old.port) != (new.bind, new.port):
            log.warning(
                "reload: listener change (bind/port) needs a restart; still on %s port %d",
                ",".join(old.bind),
                old.port,
            )
            # Record what is really listening, not what the file asks for.
            new = dataclasses.replace(new, bind=old.bind, port=old.port)
            new_config = dataclasses.replace(new_config, server=new)
        self._config = new_config
        self._tables = tables
        self._endpoint = endpoint
        if self._tcp is not None and not self._stopped.is_set():
            self._tcp.tables = tables
            self._tcp.endpoint = endpoint or None
            self._tcp.apply(new)
        if self._udp is not None and not self._stopped.is_set():
            self._udp.tables = tables
            self._udp.endpoint = endpoint or None
            self._udp.apply(new)
            # Backends that stay keep their health; new ones start up.
            self._health.configure(checks_for(new_config))
        log.info("routes reloaded: %d route(s)", len(tables.routes))

    def _resolve_reload(
        self, config: Config | str | os.PathLike[str] | Sequence[Mapping[str, Any]] | None
    ) -> Config:
        if isinstance(config, Config):
            return config
        if config is None:
            if self._config.source is None or self._config.source == "builder":
                raise RefractiumError("reload: this engine has no config file to re-read")
            return load_file(self._config.source, extra_protocols=self._probes.keys())
        if isinstance(config, (str, os.PathLike)):
            return load_file(config, extra_protocols=self._probes.keys())
        routes = parse_config(
            {"protocols": list(config)}, source="reload_routes", extra_protocols=self._probes.keys()
        )
        return dataclasses.replace(self._config, protocols=routes.protocols)


class RefractiumBuilder:
    """Fluent description of an engine; :meth:`build` validates it like a file."""

    def __init__(self) -> None:
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

    def build(self) -> Refractium:
        """Validate and return the engine.

        Raises:
            ConfigError: naming the key at fault, as for a file.
        """
        data: dict[str, Any] = {"server": dict(self._server), "protocols": list(self._routes)}
        config = parse_config(data, source="builder", extra_protocols=self._probes.keys())
        if self._base is not None:
            config = _merge(self._base, config, self._server)
        return Refractium(config, self._probes, self._endpoint_hooks)


def _merge(base: Config, extra: Config, server_keys: Mapping[str, Any]) -> Config:
    """``base`` with the builder's routes appended and its server keys applied."""
    server = dataclasses.replace(base.server, **{k: getattr(extra.server, k) for k in server_keys})
    offset = len(base.protocols)
    routes = base.protocols + tuple(
        dataclasses.replace(r, index=r.index + offset) for r in extra.protocols
    )
    return dataclasses.replace(base, server=server, protocols=routes)

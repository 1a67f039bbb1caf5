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
in one process. A reload builds a new snapshot (route tables, endpoint
hooks, settings) and swaps it whole; health is configured from it once,
for every transport that is served.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import socket
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from refractium.abuse.guard import Guard
from refractium.admin.server import AdminServer
from refractium.admin.view import BackendState, RouteLoad
from refractium.backends.health import HealthChecker
from refractium.config import Config, load_file, parse_config
from refractium.endpoint.chain import EndpointChain
from refractium.engine.builder import RefractiumBuilder
from refractium.engine.defences import Defences
from refractium.engine.share import WorkerShare
from refractium.engine.snapshot import Hooks, build_snapshot, health_checks
from refractium.errors import RefractiumError
from refractium.hooks.dispatch import HookStats
from refractium.protocols.base import Probe, Transport
from refractium.relay.flow import Flow
from refractium.relay.listen import describe_socket, take_inherited
from refractium.relay.snapshot import Snapshot
from refractium.relay.stats import TcpStats, UdpStats
from refractium.relay.tcp import TcpService
from refractium.relay.udp import UdpService
from refractium.routing import Route, Tables

log = logging.getLogger(__name__)

ReloadSource = Config | str | os.PathLike[str] | Sequence[Mapping[str, Any]] | None


class Refractium:
    """One proxy instance: its configuration, route tables and listeners."""

    def __init__(
        self,
        config: Config,
        probes: Mapping[str, Probe] | None = None,
        endpoint_hooks: Sequence[object] = (),
        *,
        worker: WorkerShare | None = None,
    ) -> None:
        """Validate ``config`` and resolve its routes; nothing listens yet.

        Args:
            config: the configuration.
            probes: protocol probes given in code, by route name.
            endpoint_hooks: endpoint hooks given in code; they run after the
                ones ``[endpoint] hooks`` names, in this order.
            worker: set by the ``refractium`` command in a supervisor's
                worker: the tables it shares with the other workers. The
                supervisor serves ``[admin]`` and keeps the bans and allows
                of ``[state]`` in step with Redis for the instance; this
                engine does neither (its RemoteMap runs all the same, for the
                supervisor to read), but exchanges its rate takes itself.

        Raises:
            ConfigError: a route or a hook cannot be resolved.
        """
        self._probes = dict(probes or {})
        self._config = config
        self._hooks = Hooks(endpoint_hooks)  # instances outlive reloads that keep them
        admin = config.admin
        self._admin = (
            AdminServer(self, admin.bind.host, admin.bind.port, admin.token)
            if admin.bind is not None
            else None
        )
        self._chain = self._endpoint_chain(config)
        self._snapshot = build_snapshot(config, self._probes, self._hooks, self._chain)
        self._tcp: TcpService | None = None
        self._udp: UdpService | None = None
        self._hook_stats = HookStats()
        # Health is kept per transport: a backend that refuses TCP may well
        # answer UDP (a DNS resolver), and active checks connect over TCP.
        self._tcp_health = HealthChecker()
        self._udp_health = HealthChecker()
        self._admin_started = False
        self._worker = worker
        self._limits = worker.limits if worker is not None else None
        self._defences = Defences(config, worker)
        self._guard = self._defences.guard
        # Sockets passed by socket activation that no listener has taken yet.
        self._unclaimed: list[socket.socket] | None = None
        # Told before (False) and after (True) every reload, whoever asked for it.
        self._reload_observers: list[Callable[[bool], None]] = []
        self._stopped = asyncio.Event()

    @staticmethod
    def builder() -> RefractiumBuilder[Refractium]:
        """Start describing an engine in code."""
        return RefractiumBuilder(Refractium)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> Refractium:
        """An engine configured by a TOML file (raises ConfigError)."""
        return cls(load_file(path))

    def _endpoint_chain(self, config: Config) -> EndpointChain:
        chain = self._hooks.endpoint_chain(config)
        if self._admin is None:
            return chain
        extra = self._admin.endpoint_hooks(chain.hooks)
        return self._hooks.endpoint_chain(config, extra) if extra else chain

    # -- what it is serving ------------------------------------------------

    @property
    def config(self) -> Config:
        """The configuration in force."""
        return self._config

    @property
    def config_source(self) -> str | None:
        """The file the configuration came from ("builder" for the builder's)."""
        return self._config.source

    @property
    def snapshot(self) -> Snapshot:
        """What connections accepted now read (replaced whole on reload)."""
        return self._snapshot

    @property
    def tables(self) -> Tables:
        """The route tables in force (replaced whole on reload)."""
        return self._snapshot.tables

    @property
    def routes(self) -> tuple[Route, ...]:
        return self._snapshot.tables.routes

    @property
    def endpoint_hooks(self) -> tuple[object, ...]:
        """The endpoint hooks in force, in the order they run."""
        return self._chain.hooks

    @property
    def guard(self) -> Guard:
        """Abuse control (``[limits]``): its lists, rates and bans."""
        return self._guard

    @property
    def tcp_addresses(self) -> list[tuple[str, int]]:
        """Where the TCP listeners are (after ``start_tcp``), e.g. to learn port 0's port."""
        return self._tcp.addresses if self._tcp else []

    @property
    def udp_addresses(self) -> list[tuple[str, int]]:
        """Where the UDP listeners are (after ``start_udp``)."""
        return self._udp.addresses if self._udp else []

    # -- what it has done ----------------------------------------------------

    @property
    def health(self) -> dict[str, bool]:
        """Backend ``host:port`` -> up, on TCP (see :meth:`backends` for UDP)."""
        return {str(address): up for address, up in self._tcp_health.snapshot().items()}

    def backends(self) -> list[BackendState]:
        """Every backend each running transport knows: health and what relays to it."""
        out: list[BackendState] = []
        for transport, service, health in (
            ("tcp", self._tcp, self._tcp_health),
            ("udp", self._udp, self._udp_health),
        ):
            if service is None:
                continue
            active = service.ctx.active
            for address, up in health.snapshot().items():
                out.append(BackendState(transport, str(address), up, active.get(address, 0)))
        return out

    @property
    def hook_stats(self) -> HookStats:
        """Packets, bytes, drops and errors per packet hook (by name), TCP and UDP."""
        return self._hook_stats

    @property
    def tcp_stats(self) -> TcpStats:
        """Counters of the TCP side."""
        if self._tcp is None:
            raise RefractiumError("the TCP listener is not running")
        return self._tcp.ctx.stats

    @property
    def udp_stats(self) -> UdpStats:
        """Counters of the UDP side."""
        if self._udp is None:
            raise RefractiumError("the UDP listener is not running")
        return self._udp.ctx.stats

    @property
    def open_connections(self) -> int:
        """TCP connections open now (being identified, dialled or relayed)."""
        return len(self._tcp.ctx.connections) if self._tcp is not None else 0

    @property
    def open_flows(self) -> int:
        """UDP flows alive now."""
        return len(self._udp.ctx.flows) if self._udp is not None else 0

    def live_load(self) -> dict[tuple[str, str], RouteLoad]:
        """``(transport, route id)`` -> the route's open connections (UDP flows) and the
        bytes they have relayed so far (the admin dashboard reads it once a second)."""
        tcp = self._tcp.ctx.connections if self._tcp is not None else ()
        udp = self._udp.ctx.flows.values() if self._udp is not None else ()
        live = [("tcp", c) for c in tcp] + [("udp", f) for f in udp if isinstance(f, Flow)]
        rows: dict[tuple[str, str], list[int]] = {}
        for transport, conn in live:
            if conn.route is not None:
                row = rows.setdefault((transport, conn.route.id), [0, 0, 0])
                row[0] += 1
                row[1] += conn.bytes_in
                row[2] += conn.bytes_out
        return {key: RouteLoad(*row) for key, row in rows.items()}

    @property
    def active_by_backend(self) -> dict[str, int]:
        """Backend ``host:port`` -> TCP connections relaying to it now."""
        if self._tcp is None:
            return {}
        return {str(address): n for address, n in self._tcp.ctx.active.items()}

    # -- running ----------------------------------------------------------

    def ports_for(self, transport: Transport) -> tuple[int, ...]:
        """The listen ports where ``transport`` has a route (or a fallback) to serve."""
        tables = self._snapshot.tables
        return tuple(port for port in self._config.server.port if tables.serves(transport, port))

    async def start_tcp(
        self, inherited: Sequence[socket.socket] = (), reuse_port: bool = False
    ) -> list[tuple[str, int]]:
        """Open the TCP listeners and return their addresses; returns at once.

        Every bind address listens on each port where a route serves TCP
        (on every port if none does: TCP was asked for).

        Args:
            inherited: sockets passed by socket activation; one that is a
                configured listener is used instead of binding it.
            reuse_port: open the listeners with SO_REUSEPORT, so that other
                processes (workers) may listen on the same ports.

        Raises:
            RefractiumError: a listener cannot be opened (port in use...), or
                a passed socket is no configured listener.
        """
        ports = self.ports_for(Transport.TCP) or self._config.server.port
        self._check_passed(inherited, tcp=ports)
        await self._start_tcp(ports, inherited, reuse_port)
        return self.tcp_addresses

    async def _start_tcp(
        self, ports: tuple[int, ...], inherited: Sequence[socket.socket], reuse_port: bool = False
    ) -> None:
        if self._tcp is not None:
            raise RefractiumError("the TCP listener is already running")
        service = TcpService(
            self._snapshot, self._tcp_health, self._hook_stats, self._limits, self._guard
        )
        binds = self._config.server.bind
        await service.listen(binds, ports, self._passed(inherited), reuse_port=reuse_port)
        try:
            await self._start_admin()
        except RefractiumError:
            await service.stop_listening()
            raise
        self._tcp = service
        self._configure_health()

    async def start_udp(
        self,
        port: int | None = None,
        inherited: Sequence[socket.socket] = (),
        reuse_port: bool = False,
    ) -> list[tuple[str, int]]:
        """Open the UDP listeners and return their addresses; returns at once.

        Every bind address listens on each port where a route (or
        ``fallback_udp``) serves UDP (on every port if none does).

        Args:
            port: listen on this port only (with ``server.port = 0`` and TCP
                already listening, the default is the TCP listeners' port).
            inherited: sockets passed by socket activation.
            reuse_port: bind with SO_REUSEPORT (workers share the ports).

        Raises:
            RefractiumError: a listener cannot be opened (port in use...), or
                a passed socket is no configured listener.
        """
        ports = (port,) if port is not None else self.ports_for(Transport.UDP)
        ports = ports or self._config.server.port
        self._check_passed(inherited, udp=ports)
        await self._start_udp(ports, inherited, reuse_port)
        return self.udp_addresses

    async def _start_udp(
        self, ports: tuple[int, ...], inherited: Sequence[socket.socket], reuse_port: bool = False
    ) -> None:
        if self._udp is not None:
            raise RefractiumError("the UDP listener is already running")
        if ports == (0,) and self._tcp is not None and self._tcp.addresses:
            ports = (self._tcp.addresses[0][1],)  # any free port: the one TCP got
        service = UdpService(self._snapshot, self._udp_health, self._hook_stats, self._guard)
        binds = self._config.server.bind
        await service.listen(binds, ports, self._passed(inherited), reuse_port=reuse_port)
        try:
            await self._start_admin()
        except RefractiumError:
            service.close_listeners()
            raise
        self._udp = service
        self._configure_health()

    async def start_both(
        self, inherited: Sequence[socket.socket] = (), reuse_port: bool = False
    ) -> None:
        """Open the listeners each transport needs: TCP where TCP routes are, UDP where UDP are.

        A file with TCP routes only opens no UDP socket (and the other way
        round). With ``server.port = 0`` UDP takes the port TCP got.
        ``reuse_port``: as :meth:`start_tcp` says.
        """
        tcp, udp = self.ports_for(Transport.TCP), self.ports_for(Transport.UDP)
        if not tcp and not udp:
            tcp = self._config.server.port  # nothing routes anywhere: still answer TCP
        self._check_passed(inherited, tcp=tcp, udp=udp)
        if tcp:
            await self._start_tcp(tcp, inherited, reuse_port)
        if udp:
            try:
                await self._start_udp(udp, inherited, reuse_port)
            except RefractiumError:
                if self._tcp is not None:
                    await self._tcp.stop_listening()
                    self._tcp = None
                raise

    def _passed(self, inherited: Sequence[socket.socket]) -> list[socket.socket]:
        """The passed sockets no listener has taken yet (kept across both transports)."""
        if not inherited:
            return []
        if self._unclaimed is None:
            self._unclaimed = list(inherited)
        return self._unclaimed

    def _check_passed(
        self,
        inherited: Sequence[socket.socket],
        tcp: tuple[int, ...] = (),
        udp: tuple[int, ...] = (),
    ) -> None:
        """Every passed socket must be a listener about to be opened: checked before any is."""
        if not inherited:
            return
        left = list(self._unclaimed if self._unclaimed is not None else inherited)
        binds = self._config.server.bind
        for kind, ports in ((socket.SOCK_STREAM, tcp), (socket.SOCK_DGRAM, udp)):
            for port in ports:
                for host in binds:
                    take_inherited(left, host, port, kind)
        if left:
            names = ", ".join(describe_socket(sock) for sock in left)
            raise RefractiumError(f"passed socket matches no configured listener: {names}")

    async def _start_admin(self) -> None:
        if self._admin is None or self._admin_started or self._worker is not None:
            return
        await self._admin.start()
        self._admin_started = True

    def _configure_health(self) -> None:
        """Tell each running transport's checker its backends (once, for every kind of start)."""
        tables = self._snapshot.tables
        if self._tcp is not None:
            self._tcp_health.configure(health_checks(tables, Transport.TCP))
        if self._udp is not None:
            self._udp_health.configure(health_checks(tables, Transport.UDP))
        self._defences.running(self._config)  # once running, and each reload

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
        if self._admin is not None and self._admin_started:
            # After the drain: it can be watched to the end.
            await self._admin.close()
            self._admin_started = False
        await self._tcp_health.close()
        await self._udp_health.close()
        await self._defences.close()
        await self._hooks.aclose()
        self._stopped.set()

    def abort_connections(self) -> None:
        """Cut every open connection now (a second stop signal)."""
        if self._tcp is not None:
            self._tcp.abort_all()

    # -- reloading --------------------------------------------------------

    def on_reload(self, observer: Callable[[bool], None]) -> None:
        """Call ``observer(False)`` before every reload and ``observer(True)`` after it.

        Whatever asked for the reload (a signal, the file watcher, ``POST
        /reload``), and whether it succeeded or kept the running table.
        """
        self._reload_observers.append(observer)

    def reload_routes(self, config: ReloadSource = None) -> None:
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
        for observer in self._reload_observers:
            observer(False)
        try:
            self._reload(config)
        finally:
            for observer in self._reload_observers:
                observer(True)

    def _reload(self, config: ReloadSource) -> None:
        new_config = self._resolve_reload(config)
        chain = self._endpoint_chain(new_config)
        old, new = self._config.server, new_config.server
        if (old.bind, old.port) != (new.bind, new.port):
            log.warning(
                "reload: listener change (bind/port) needs a restart; still on %s port %s",
                ",".join(old.bind),
                ",".join(map(str, old.port)),
            )
            # Record what is really listening, not what the file asks for.
            new = dataclasses.replace(new, bind=old.bind, port=old.port)
            new_config = dataclasses.replace(new_config, server=new)
        # [log] is read once, at start (logging was configured from it): the
        # access log stays as it began.
        new_config = dataclasses.replace(new_config, log=self._config.log)
        snapshot = build_snapshot(new_config, self._probes, self._hooks, chain)
        self._config = new_config
        self._chain = chain
        self._snapshot = snapshot
        self._defences.configure(new_config)
        if not self._stopped.is_set():
            for service in (self._tcp, self._udp):
                if service is not None:
                    service.ctx.snapshot = snapshot  # the one swap connections see
            # Backends that stay keep their health; new ones start up.
            self._configure_health()
        log.info("routes reloaded: %d route(s)", len(snapshot.tables.routes))

    def _resolve_reload(self, config: ReloadSource) -> Config:
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

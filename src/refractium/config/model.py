"""The configuration model: frozen dataclasses that the rest of the program reads.

Everything here is already validated and resolved (addresses parsed, names
lower-cased, defaults applied) by :mod:`refractium.config.load`; nothing in
this module reads a file or checks a value. The defaults below are the only
defaults: the schema leaves every key it is not given as None.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from ipaddress import IPv4Network, IPv6Network
from types import MappingProxyType
from typing import Any

from refractium.addr import Address
from refractium.protocols import registry
from refractium.protocols.base import Transport
from refractium.protocols.custom import CustomProbe

__all__ = [
    "DEFAULT_ADMIN_BIND",
    "DEFAULT_TIMEOUT_ROUTE",
    "AdminConfig",
    "Balance",
    "Config",
    "EndpointConfig",
    "HealthCheck",
    "HookSpec",
    "LimitsConfig",
    "Offence",
    "OnError",
    "Overflow",
    "Rate",
    "RouteConfig",
    "ServerConfig",
    "StateBackend",
    "StateConfig",
    "route_transport",
]

DEFAULT_ADMIN_BIND = "127.0.0.1:9901"
# The route sslh-style multiplexers give to clients that send nothing.
DEFAULT_TIMEOUT_ROUTE = "ssh"


class Balance(StrEnum):
    """How a route picks one backend of its pool."""

    ROUND_ROBIN = "round_robin"
    LEAST_CONNECTIONS = "least_connections"
    RANDOM = "random"
    SOURCE_HASH = "source_hash"


class Overflow(StrEnum):
    """What a full packet-hook queue does: drop the packet or stall the relay."""

    DROP = "drop"
    BLOCK = "block"


class Offence(StrEnum):
    """What a client does that counts toward a ban (``[limits] offences``)."""

    LIMITED = "limited"  # over a connection rate
    UNIDENTIFIED = "unidentified"  # sent bytes no route recognised
    REJECTED = "rejected"  # an endpoint hook rejected it
    PEEK_TIMEOUT = "peek_timeout"  # sent too little in time, with no on_timeout route


@dataclass(frozen=True, slots=True)
class Rate:
    """``count`` new connections per ``period_s``: a token bucket holding ``burst``."""

    count: int
    period_s: float  # 1, 60 or 3600
    burst: int
    text: str  # as written: "20/s"

    @property
    def per_s(self) -> float:
        """Tokens added per second."""
        return self.count / self.period_s


@dataclass(frozen=True, slots=True)
class HookSpec:
    """A hook to load later: ``use`` is ``"module:attr"``, ``kwargs`` its arguments.

    ``key`` locates the entry in the file (``protocols[1].hooks[0]``) so
    that the import stage can report errors the same way.
    """

    use: str
    kwargs: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    key: str = ""


@dataclass(frozen=True, slots=True)
class HealthCheck:
    """Active backend checks: connect (and optionally send/expect) every interval."""

    interval_ms: int = 5000
    timeout_ms: int = 1000
    rise: int = 2
    fall: int = 3
    send: bytes | None = None
    expect: bytes | None = None


@dataclass(frozen=True, slots=True)
class RouteConfig:
    """One ``[[protocols]]`` entry: what to recognise and where to send it.

    ``transport`` None means the protocol's own; ``health_check`` None means
    the backends are not checked; ``index`` is the position in the file.
    """

    name: str
    forward_to: tuple[Address, ...]
    sni: tuple[str, ...] = ()
    alpn: tuple[str, ...] = ()
    # JA4 fingerprints, exact or prefixes ending in "*".
    ja4: tuple[str, ...] = ()
    patterns: tuple[bytes, ...] = ()
    regex: str | None = None
    transport: Transport | None = None
    balance: Balance = Balance.ROUND_ROBIN
    proxy_protocol: int = 0
    hooks: tuple[HookSpec, ...] = ()
    overflow: Overflow = Overflow.DROP
    # Whether the file set ``overflow`` (``check`` warns when there are no hooks).
    overflow_set: bool = False
    health_check: HealthCheck | None = None
    # Listen ports this route is served on (empty: every port).
    ports: tuple[int, ...] = ()
    # None: the server's idle_timeout_s; 0: never.
    idle_timeout_s: float | None = None
    # Dial the backend from the client's own address (IP_TRANSPARENT).
    transparent: bool = False
    # New connections per client group on this route, checked once identified.
    connection_rate: Rate | None = None
    index: int = 0
    # The id that labels this route's metrics and access lines: the file's
    # ``id``, else filled in by :func:`refractium.config.route_ids.assign_ids`.
    id: str = ""
    # Whether the file set ``id`` (a default id is derived again after overrides).
    id_set: bool = False

    @property
    def key(self) -> str:
        """This route's key path in error messages: ``protocols[<index>]``."""
        return f"protocols[{self.index}]"


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """The ``[server]`` table: listeners, limits and timeouts."""

    bind: tuple[str, ...] = ("0.0.0.0",)
    # Listen ports: every bind address listens on each (0: any free port, alone).
    port: tuple[int, ...] = (8080,)
    peek_buffer_size: int = 16384
    peek_timeout_ms: int = 3000
    connect_timeout_ms: int = 3000
    shutdown_grace_ms: int = 10000
    max_connections: int = 10000
    max_connections_per_ip: int = 50
    hot_reload: bool = True
    fallback_tcp: Address | None = None
    fallback_udp: Address | None = None
    on_timeout: str | None = None
    udp_session_timeout_s: float = 30.0
    udp_max_sessions: int = 65536
    accept_proxy_protocol: bool = False
    trusted_proxies: tuple[IPv4Network | IPv6Network, ...] = ()
    health_check: HealthCheck = HealthCheck()
    # Close a relayed TCP connection idle both ways this long (0: never).
    idle_timeout_s: float = 0.0
    # Drop to this user and group once every listener is bound (None: stay).
    user: str | None = None
    group: str | None = None
    # Worker processes serving the listeners (1: this process alone).
    workers: int = 1


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    """The ``[limits]`` table: who is let in, how fast, and who is banned.

    Everything is off by default: no rate, no list, and no ban unless
    ``ban_after`` is set.
    """

    connection_rate: Rate | None = None  # per client group, for the instance, at accept
    # Clients are counted per group: an IPv4 /group_v4, an IPv6 /group_v6.
    group_v4: int = 32
    group_v6: int = 64
    allow: tuple[IPv4Network | IPv6Network, ...] = ()  # never limited, never banned
    deny: tuple[IPv4Network | IPv6Network, ...] = ()  # refused at accept
    deny_file: str | None = None  # resolved against the config file's directory
    ban_after: int = 0  # offences within ban_window_s that ban a group; 0: never
    ban_window_s: float = 60.0
    ban_for_s: float = 600.0
    offences: frozenset[Offence] = frozenset(Offence)
    # Client groups whose buckets and offence counts are kept at once; beyond
    # it the least recently seen are forgotten (and counted).
    max_clients: int = 100_000

    @property
    def active(self) -> bool:
        """Whether anything is checked at accept (a rate, a list, bans)."""
        return bool(
            self.connection_rate or self.allow or self.deny or self.deny_file or self.ban_after
        )


class StateBackend(StrEnum):
    """Where the state shared by instances is kept."""

    MEMORY = "memory"  # this instance (its workers share it)
    REDIS = "redis"  # every instance with the same url and prefix


class OnError(StrEnum):
    """What needs shared state does while its store is away."""

    OPEN = "open"  # go on with local state
    CLOSED = "closed"  # refuse it


@dataclass(frozen=True, slots=True)
class StateConfig:
    """The ``[state]`` table."""

    backend: StateBackend = StateBackend.MEMORY
    url: str = "redis://127.0.0.1:6379/0"
    prefix: str = "refractium:"
    on_error: OnError = OnError.OPEN


@dataclass(frozen=True, slots=True)
class AdminConfig:
    """The ``[admin]`` table; ``bind`` None means no admin listener."""

    bind: Address | None = None
    token: str | None = None


@dataclass(frozen=True, slots=True)
class EndpointConfig:
    """The ``[endpoint]`` table: hooks that see every connection."""

    hooks: tuple[HookSpec, ...] = ()


@dataclass(frozen=True, slots=True)
class LogConfig:
    """The ``[log]`` table; None: not set (the command line or the default decides)."""

    level: str | None = None  # debug, info, warning, error
    format: str | None = None  # text, json
    # Write logs to a file, or to syslog ("unix:/dev/log", "udp:HOST:PORT"),
    # instead of stderr; both may be set.
    file: str | None = None
    syslog: str | None = None
    # One access line per finished TCP connection and UDP flow.
    access: bool = False


@dataclass(frozen=True, slots=True)
class Config:
    """A whole, validated configuration; ``source`` is the file as named, if any."""

    server: ServerConfig = ServerConfig()
    protocols: tuple[RouteConfig, ...] = ()
    admin: AdminConfig = AdminConfig()
    endpoint: EndpointConfig = EndpointConfig()
    log: LogConfig = LogConfig()
    limits: LimitsConfig = LimitsConfig()
    state: StateConfig = StateConfig()
    source: str | None = None

    @property
    def timeout_route(self) -> str | None:
        """The route name for clients that send nothing, defaults applied.

        ``server.on_timeout`` if set, else ``"ssh"`` when a route has that
        name, else None.
        """
        if self.server.on_timeout is not None:
            return self.server.on_timeout
        if any(route.name == DEFAULT_TIMEOUT_ROUTE for route in self.protocols):
            return DEFAULT_TIMEOUT_ROUTE
        return None


def route_transport(route: RouteConfig, in_code: Collection[str] = ()) -> Transport | None:
    """The transport a route serves, as the router will pick it.

    The route's own ``transport`` if set, else its protocol's: both for
    patterns and regex, the built-in probe's otherwise.

    Args:
        route: the route.
        in_code: names of protocols given in code; their probes (which may
            replace a built-in one) are not known here.

    Returns:
        The transport, or None when the protocol is given in code or unknown.
    """
    if route.transport is not None:
        return route.transport
    if route.patterns or route.regex is not None:
        return CustomProbe(route.name, route.patterns, route.regex).transport
    if route.name in in_code:
        return None
    probe = registry.get(route.name)
    return None if probe is None else probe.transport

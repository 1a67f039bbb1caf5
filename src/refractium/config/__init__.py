"""The configuration: its frozen model, the TOML loader and command-line overrides.

A file goes through three stages, each failing fast with a one-line
:class:`~refractium.errors.ConfigError` (``<file>: <key>: <what is wrong>``):

1. TOML parsing (:mod:`tomllib`);
2. shape checking against :mod:`refractium.config.schema` (known keys,
   TOML types);
3. value checking and resolution into the dataclasses below, which are all
   the rest of the program reads.

Files written for the original Rust crate load unchanged: top-level
``fallback_tcp``/``fallback_udp``, ``sni`` as a single string, protocol names
in any case.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from importlib import resources
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

import msgspec

from refractium.addr import Address, AddressError, format_host, parse_address, parse_bind
from refractium.config import schema
from refractium.errors import ConfigError
from refractium.protocols import registry
from refractium.protocols.base import Transport
from refractium.protocols.custom import CustomProbe

__all__ = [
    "AdminConfig",
    "Balance",
    "Config",
    "EndpointConfig",
    "HealthCheck",
    "HookSpec",
    "Overflow",
    "Overrides",
    "RouteConfig",
    "ServerConfig",
    "apply_overrides",
    "describe",
    "load_file",
    "parse_config",
    "starter_text",
]

DEFAULT_ADMIN_BIND = "127.0.0.1:9901"
# The route sslh-style multiplexers give to clients that send nothing.
DEFAULT_TIMEOUT_ROUTE = "ssh"

_T = TypeVar("_T")


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
    patterns: tuple[bytes, ...] = ()
    regex: str | None = None
    transport: Transport | None = None
    balance: Balance = Balance.ROUND_ROBIN
    proxy_protocol: int = 0
    hooks: tuple[HookSpec, ...] = ()
    overflow: Overflow = Overflow.DROP
    health_check: HealthCheck | None = None
    index: int = 0

    @property
    def key(self) -> str:
        """This route's key path in error messages: ``protocols[<index>]``."""
        return f"protocols[{self.index}]"


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """The ``[server]`` table: listeners, limits and timeouts."""

    bind: tuple[str, ...] = ("0.0.0.0",)
    port: int = 8080
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
class Config:
    """A whole, validated configuration; ``source`` is the file as named, if any."""

    server: ServerConfig = ServerConfig()
    protocols: tuple[RouteConfig, ...] = ()
    admin: AdminConfig = AdminConfig()
    endpoint: EndpointConfig = EndpointConfig()
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


# --- loading -----------------------------------------------------------------


def load_file(path: str | os.PathLike[str], *, extra_protocols: Collection[str] = ()) -> Config:
    """Read, parse and validate a TOML configuration file.

    ``extra_protocols`` are protocol names known besides the built-ins
    (probes given in code). Raises :class:`ConfigError`.
    """
    source = os.fspath(path)
    try:
        raw = Path(source).read_bytes()
    except OSError as error:
        raise ConfigError(source, None, f"cannot read: {error.strerror or error}") from None
    try:
        # "-sig": tolerate the byte-order mark some Windows editors write.
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ConfigError(source, None, f"not UTF-8 text (byte {error.start})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(source, None, f"invalid TOML: {error}") from None
    return parse_config(data, source, extra_protocols=extra_protocols)


def parse_config(
    data: Mapping[str, Any], source: str | None, *, extra_protocols: Collection[str] = ()
) -> Config:
    """Validate parsed TOML (or an equivalent dict) and resolve it into a :class:`Config`.

    ``source`` names the file in error messages. Raises :class:`ConfigError`.
    """
    try:
        raw = schema.decode(data)
    except msgspec.ValidationError as error:
        key, message = schema.shape_error(error)
        raise ConfigError(source, key, message) from None
    try:
        return _resolve(raw, source, frozenset(extra_protocols))
    except ConfigError as error:
        # The checks below raise without the file name; add it once here.
        raise ConfigError(source, error.key, error.message) from None


def starter_text() -> str:
    """The commented starter configuration that ``refractium init`` writes."""
    return resources.files("refractium.config").joinpath("starter.toml").read_text(encoding="utf-8")


def _resolve(raw: schema.ConfigFile, source: str | None, extra: frozenset[str]) -> Config:
    server = _server(raw)
    routes = tuple(
        _route(table, index, server.health_check, extra)
        for index, table in enumerate(raw.protocols or ())
    )
    if server.on_timeout is not None and server.on_timeout not in {r.name for r in routes}:
        raise ConfigError(None, "server.on_timeout", f"no route named {server.on_timeout!r}")
    endpoint = raw.endpoint or schema.EndpointTable()
    return Config(
        server=server,
        protocols=routes,
        admin=_admin(raw.admin),
        endpoint=EndpointConfig(hooks=_hooks("endpoint.hooks", endpoint.hooks)),
        source=source,
    )


# --- [server] ----------------------------------------------------------------

# Lowest accepted value of each integer setting of [server].
_SERVER_MINIMUMS = {
    "peek_buffer_size": 64,
    "peek_timeout_ms": 1,
    "connect_timeout_ms": 1,
    "shutdown_grace_ms": 0,
    "max_connections": 1,
    "max_connections_per_ip": 0,  # 0: unlimited
    "udp_max_sessions": 1,
}


def _server(raw: schema.ConfigFile) -> ServerConfig:
    table = raw.server or schema.ServerTable()
    given: dict[str, Any] = {}
    if table.bind is not None:
        given["bind"] = schema.binds("server.bind", table.bind)
    if table.port is not None:
        given["port"] = schema.listen_port("server.port", table.port)
    for name, minimum in _SERVER_MINIMUMS.items():
        value = getattr(table, name)
        if value is not None:
            given[name] = schema.at_least(f"server.{name}", value, minimum)
    for name in ("hot_reload", "accept_proxy_protocol"):
        if getattr(table, name) is not None:
            given[name] = getattr(table, name)
    for name in ("fallback_tcp", "fallback_udp"):
        given[name] = _fallback(name, getattr(raw, name), getattr(table, name))
    if table.on_timeout is not None:
        given["on_timeout"] = table.on_timeout.lower()
    if table.udp_session_timeout_s is not None:
        key = "server.udp_session_timeout_s"
        given["udp_session_timeout_s"] = schema.seconds(key, table.udp_session_timeout_s)
    if table.trusted_proxies is not None:
        entries = schema.items("server.trusted_proxies", table.trusted_proxies)
        given["trusted_proxies"] = tuple(schema.network(key, text) for key, text in entries)
    if table.health_check is not None:
        key = "server.health_check"
        given["health_check"] = _health_check(key, table.health_check, HealthCheck())
    return ServerConfig(**given)


def _fallback(name: str, top_level: str | None, in_server: str | None) -> Address | None:
    if top_level is not None and in_server is not None:
        raise ConfigError(None, name, "also set in [server]; keep one")
    if top_level is not None:
        return schema.checked(name, parse_address, top_level)
    if in_server is not None:
        return schema.checked(f"server.{name}", parse_address, in_server)
    return None


def _health_check(key: str, table: schema.HealthCheckTable, base: HealthCheck) -> HealthCheck:
    """``base`` with the values ``table`` gives, checked."""
    given: dict[str, Any] = {}
    for name in ("interval_ms", "timeout_ms", "rise", "fall"):
        value = getattr(table, name)
        if value is not None:
            given[name] = schema.at_least(f"{key}.{name}", value, 1)
    for name in ("send", "expect"):
        text = getattr(table, name)
        if text is not None:
            given[name] = schema.pattern(f"{key}.{name}", text)
    return replace(base, **given)


# --- [[protocols]], hooks, [admin] ------------------------------------------------


def _route(
    table: schema.ProtocolTable, index: int, health_base: HealthCheck, extra: frozenset[str]
) -> RouteConfig:
    key = f"protocols[{index}]"
    name = schema.route_name(f"{key}.name", table.name)
    entries = schema.items(f"{key}.patterns", table.patterns)
    patterns = tuple(schema.pattern(item_key, text) for item_key, text in entries)
    regex = None if table.regex is None else schema.regex(f"{key}.regex", table.regex)
    if not patterns and regex is None:
        schema.check_known(f"{key}.name", name, extra)
    sni = schema.items(f"{key}.sni", table.sni)
    alpn = schema.items(f"{key}.alpn", table.alpn)
    return RouteConfig(
        name=name,
        forward_to=schema.pool(f"{key}.forward_to", table.forward_to),
        sni=tuple(schema.server_name(item_key, text) for item_key, text in sni),
        alpn=tuple(schema.alpn_id(item_key, text) for item_key, text in alpn),
        patterns=patterns,
        regex=regex,
        transport=schema.choice(f"{key}.transport", table.transport, Transport),
        balance=schema.choice(f"{key}.balance", table.balance, Balance) or Balance.ROUND_ROBIN,
        proxy_protocol=schema.proxy_version(f"{key}.proxy_protocol", table.proxy_protocol),
        hooks=_hooks(f"{key}.hooks", table.hooks),
        overflow=schema.choice(f"{key}.overflow", table.overflow, Overflow) or Overflow.DROP,
        health_check=_route_health(f"{key}.health_check", table.health_check, health_base),
        index=index,
    )


def _route_health(
    key: str, value: schema.HealthCheckTable | bool | None, base: HealthCheck
) -> HealthCheck | None:
    """None (unchecked) unless the route asks: ``true``, or a table over ``base``."""
    if value is None or value is False:
        return None
    if value is True:
        return base
    return _health_check(key, value, base)


def _hooks(key: str, value: schema.HookList | None) -> tuple[HookSpec, ...]:
    entries: list[tuple[str, schema.HookEntry]] = schema.items(key, value)
    return tuple(_hook(item_key, entry) for item_key, entry in entries)


def _hook(key: str, entry: schema.HookEntry) -> HookSpec:
    if isinstance(entry, str):
        return HookSpec(use=schema.hook_target(key, entry), key=key)
    use, kwargs = schema.hook_table(key, entry)
    return HookSpec(use=use, kwargs=MappingProxyType(kwargs), key=key)


def _admin(table: schema.AdminTable | None) -> AdminConfig:
    if table is None:
        return AdminConfig()
    if table.token == "":
        raise ConfigError(None, "admin.token", "empty (leave it out to disable authentication)")
    bind = DEFAULT_ADMIN_BIND if table.bind is None else table.bind
    return AdminConfig(bind=schema.checked("admin.bind", parse_address, bind), token=table.token)


# --- command-line overrides --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Overrides:
    """Command-line values that take precedence over the file (``-b``, ``-p``, ``-f``)."""

    bind: str | None = None
    port: int | None = None
    forwards: tuple[str, ...] = ()

    def apply(self, config: Config) -> Config:
        """``config`` with these overrides applied; see :func:`apply_overrides`."""
        return apply_overrides(config, bind=self.bind, port=self.port, forwards=self.forwards)


def apply_overrides(
    config: Config,
    *,
    bind: str | None,
    port: int | None,
    forwards: Sequence[str],
    extra_protocols: Collection[str] = (),
) -> Config:
    """Return ``config`` with command-line values applied.

    ``bind`` replaces the listen addresses (comma-separated for several);
    ``port`` the listen port. Each ``NAME=HOST:PORT`` in ``forwards`` adds a
    backend for NAME: the same name twice makes a pool; a name that already
    has routes in the file replaces their ``forward_to``, otherwise a route is
    appended. Errors are keyed by the option (``-f: 'x': ...``), without file.
    """
    server = config.server
    if bind is not None:
        server = replace(server, bind=_cli_binds(bind))
    if port is not None:
        server = replace(server, port=schema.listen_port("-p", port))
    routes = _apply_forwards(config.protocols, forwards, frozenset(extra_protocols))
    return replace(config, server=server, protocols=routes)


def _cli_binds(text: str) -> tuple[str, ...]:
    return tuple(_cli(part, "-b", parse_bind) for part in text.split(","))


def _apply_forwards(
    routes: tuple[RouteConfig, ...], forwards: Sequence[str], extra: frozenset[str]
) -> tuple[RouteConfig, ...]:
    in_file = {route.name for route in routes}
    pools: dict[str, list[Address]] = {}
    for item in forwards:
        name, address = _cli(item, "-f", lambda text: _forward(text, in_file, extra))
        pools.setdefault(name, []).append(address)
    replaced = tuple(
        replace(route, forward_to=tuple(pools[route.name])) if route.name in pools else route
        for route in routes
    )
    new_names = [name for name in pools if name not in in_file]
    added = tuple(
        RouteConfig(name=name, forward_to=tuple(pools[name]), index=len(routes) + offset)
        for offset, name in enumerate(new_names)
    )
    return replaced + added


def _forward(item: str, in_file: set[str], extra: frozenset[str]) -> tuple[str, Address]:
    name_text, sep, target = item.partition("=")
    if not sep:
        raise ConfigError(None, "-f", "expected NAME=HOST:PORT")
    name = schema.route_name("-f", name_text)
    if name not in in_file:
        schema.check_known("-f", name, extra, hint=False)
    try:
        return name, parse_address(target)
    except AddressError as error:
        # The whole argument is already quoted in front: give the reason only.
        raise ConfigError(None, "-f", error.reason) from None


def _cli(item: str, option: str, parse: Callable[[str], _T]) -> _T:
    """``parse(item)`` with errors worded ``<option>: '<item>': <reason>``."""
    try:
        return parse(item)
    except AddressError as error:
        raise ConfigError(None, option, f"{item!r}: {error.reason}") from None
    except ConfigError as error:
        raise ConfigError(None, option, f"{item!r}: {error.message}") from None


# --- `refractium check` ------------------------------------------------------------


def describe(config: Config) -> str:
    """The configuration as `refractium check` prints it: listeners, routes, the rest."""
    server = config.server
    any_port = " (any free port)" if server.port == 0 else ""
    listen = ", ".join(f"{format_host(host)}:{server.port}" for host in server.bind)
    lines = [f"config:       {config.source or '(none)'}", f"listen:       {listen}{any_port}", ""]
    if config.protocols:
        header = ("#", "name", "transport", "balance", "match", "options", "forward to")
        lines += _table([header, *(_route_row(route) for route in config.protocols)])
    else:
        lines.append("routes:       none")
    timeout_route = config.timeout_route
    if timeout_route is not None and server.on_timeout is None:
        timeout_route += " (default)"
    admin = config.admin
    lines += [
        "",
        f"fallback tcp: {server.fallback_tcp or 'none'}",
        f"fallback udp: {server.fallback_udp or 'none'}",
        f"on timeout:   {timeout_route or 'none'}",
        f"admin:        {admin.bind or 'off'}{' (token required)' if admin.token else ''}",
        f"endpoint:     {', '.join(h.use for h in config.endpoint.hooks) or 'no hooks'}",
    ]
    return "\n".join(lines)


def _route_row(route: RouteConfig) -> tuple[str, ...]:
    match = [f"sni={','.join(route.sni)}"] if route.sni else []
    match += [f"alpn={','.join(route.alpn)}"] if route.alpn else []
    match += [f"patterns={len(route.patterns)}"] if route.patterns else []
    match += [f"regex={route.regex!r}"] if route.regex is not None else []
    options = [f"proxy_protocol=v{route.proxy_protocol}"] if route.proxy_protocol else []
    options += [f"hooks={len(route.hooks)}"] if route.hooks else []
    options += ["health_check"] if route.health_check else []
    return (
        str(route.index),
        route.name,
        _transport(route),
        route.balance.value,
        " ".join(match) or "-",
        " ".join(options) or "-",
        ", ".join(str(address) for address in route.forward_to),
    )


def _transport(route: RouteConfig) -> str:
    """The route's transport, or its protocol's own as the router will pick it."""
    if route.transport is not None:
        return route.transport.value
    if route.patterns or route.regex is not None:
        return CustomProbe(route.name, route.patterns, route.regex).transport.value
    probe = registry.get(route.name)
    return "?" if probe is None else probe.transport.value


def _table(rows: Sequence[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]

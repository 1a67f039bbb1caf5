"""Loading a configuration: TOML file to a validated :class:`~refractium.config.model.Config`.

A file goes through three stages, each failing fast with a one-line
:class:`~refractium.errors.ConfigError` (``<file>: <key>: <what is wrong>``):

1. reading and TOML parsing (:mod:`tomllib`);
2. shape checking against :mod:`refractium.config.schema` (known keys,
   TOML types);
3. value checking and resolution into the frozen dataclasses of
   :mod:`refractium.config.model`, which are all the rest of the program reads.

Files written for Refractium's Rust implementation load unchanged: top-level
``fallback_tcp``/``fallback_udp``, ``sni`` as a single string, protocol names
in any case.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Collection, Mapping
from dataclasses import replace
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

import msgspec

from refractium.addr import Address, parse_address
from refractium.config import limits, schema
from refractium.config.model import (
    DEFAULT_ADMIN_BIND,
    AdminConfig,
    Balance,
    Config,
    EndpointConfig,
    HealthCheck,
    HookSpec,
    LogConfig,
    Overflow,
    RouteConfig,
    ServerConfig,
    route_transport,
)
from refractium.config.route_ids import assign_ids
from refractium.errors import ConfigError
from refractium.protocols.base import Transport

__all__ = ["load_file", "parse_config", "starter_text"]


def load_file(path: str | os.PathLike[str], *, extra_protocols: Collection[str] = ()) -> Config:
    """Read, parse and validate a TOML configuration file.

    Args:
        path: the file, named as the user gave it (error messages repeat it).
        extra_protocols: protocol names known besides the built-ins (probes
            given in code).

    Raises:
        ConfigError: the file cannot be read, or is not a valid configuration.
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

    Args:
        data: the parsed document.
        source: names the file in error messages (None: no file).
        extra_protocols: protocol names known besides the built-ins.

    Raises:
        ConfigError: the first problem found.
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
    routes = assign_ids(
        [
            _route(table, index, server.health_check, extra)
            for index, table in enumerate(raw.protocols or ())
        ]
    )
    if server.on_timeout is not None:
        _check_on_timeout(server.on_timeout, routes, extra)
    endpoint = raw.endpoint or schema.EndpointTable()
    config = Config(
        server=server,
        protocols=routes,
        admin=_admin(raw.admin),
        endpoint=EndpointConfig(hooks=_hooks("endpoint.hooks", endpoint.hooks)),
        log=_log(raw.log),
        limits=limits.limits(raw.limits, source),
        state=limits.state(raw.state),
        source=source,
    )
    check_route_ports(config)
    return config


_LOG_LEVELS = ("debug", "info", "warning", "error")
_LOG_FORMATS = ("text", "json")


def _log(table: schema.LogTable | None) -> LogConfig:
    """The ``[log]`` table, checked; what it does not set stays None."""
    if table is None:
        return LogConfig()
    level = table.level.lower() if table.level is not None else None
    if level is not None and level not in _LOG_LEVELS:
        raise ConfigError(
            None, "log.level", f"unknown value {table.level!r} (expected: {', '.join(_LOG_LEVELS)})"
        )
    fmt = table.format.lower() if table.format is not None else None
    if fmt is not None and fmt not in _LOG_FORMATS:
        raise ConfigError(
            None, "log.format", f"unknown value {table.format!r} (expected: text, json)"
        )
    file = table.file or None
    syslog = table.syslog or None
    if syslog is not None:
        _check_syslog("log.syslog", syslog)
    access = bool(table.access)
    return LogConfig(level=level, format=fmt, file=file, syslog=syslog, access=access)


def _check_syslog(key: str, target: str) -> None:
    """``unix:/path`` or ``udp:HOST:PORT``."""
    scheme, _, rest = target.partition(":")
    if scheme == "unix" and rest.startswith("/"):
        return
    if scheme == "udp" and rest:
        schema.checked(key, parse_address, rest)
        return
    raise ConfigError(None, key, f"expected 'unix:/dev/log' or 'udp:HOST:PORT', got {target!r}")


def _check_on_timeout(name: str, routes: tuple[RouteConfig, ...], extra: frozenset[str]) -> None:
    """``on_timeout`` must name a route that serves TCP.

    Only TCP clients can connect and stay silent; a UDP-only route named
    here would leave them closed while the setting looks in force.
    """
    named = [route for route in routes if route.name == name]
    if not named:
        raise ConfigError(None, "server.on_timeout", f"no route named {name!r}")
    transports = [route_transport(route, extra) for route in named]
    # None: a protocol given in code, whose transport only its probe knows.
    if not any(t is None or t.covers(Transport.TCP) for t in transports):
        raise ConfigError(
            None,
            "server.on_timeout",
            f"route {name!r} serves UDP only; on_timeout is for TCP clients that send nothing",
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
        given["port"] = schema.listen_ports("server.port", table.port)
    if table.idle_timeout_s is not None:
        given["idle_timeout_s"] = schema.idle_seconds("server.idle_timeout_s", table.idle_timeout_s)
    for name in ("user", "group"):
        value = getattr(table, name)
        if value is not None:
            if not value:
                raise ConfigError(None, f"server.{name}", "empty name")
            given[name] = value
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
    if table.workers is not None:
        given["workers"] = schema.workers("server.workers", table.workers, usable_cpus())
    return ServerConfig(**given)


def usable_cpus() -> int:
    """How many CPUs this process may run on (its affinity mask, not the machine's count)."""
    return len(os.sched_getaffinity(0))


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
    ja4 = schema.items(f"{key}.ja4", table.ja4)
    return RouteConfig(
        name=name,
        id="" if table.id is None else schema.route_id(f"{key}.id", table.id),
        id_set=table.id is not None,
        forward_to=schema.pool(f"{key}.forward_to", table.forward_to),
        sni=tuple(schema.server_name(item_key, text) for item_key, text in sni),
        alpn=tuple(schema.alpn_id(item_key, text) for item_key, text in alpn),
        ja4=tuple(schema.ja4_filter(item_key, text) for item_key, text in ja4),
        patterns=patterns,
        regex=regex,
        transport=schema.choice(f"{key}.transport", table.transport, Transport),
        balance=schema.choice(f"{key}.balance", table.balance, Balance) or Balance.ROUND_ROBIN,
        proxy_protocol=schema.proxy_version(f"{key}.proxy_protocol", table.proxy_protocol),
        hooks=_hooks(f"{key}.hooks", table.hooks),
        overflow=schema.choice(f"{key}.overflow", table.overflow, Overflow) or Overflow.DROP,
        overflow_set=table.overflow is not None,
        health_check=_route_health(f"{key}.health_check", table.health_check, health_base),
        ports=_route_ports(f"{key}.ports", table.ports),
        idle_timeout_s=(
            None
            if table.idle_timeout_s is None
            else schema.idle_seconds(f"{key}.idle_timeout_s", table.idle_timeout_s)
        ),
        transparent=_transparent(f"{key}.transparent", table.transparent),
        connection_rate=limits.connection_rate(f"{key}.connection_rate", table.connection_rate),
        index=index,
    )


def _transparent(key: str, value: bool | None) -> bool:
    # Whether the kernel allows it (CAP_NET_ADMIN, policy routing) is for
    # `refractium doctor` and the dial to say: the file itself can be checked
    # anywhere.
    del key
    return bool(value)


def _route_ports(key: str, value: int | list[int] | None) -> tuple[int, ...]:
    if value is None:
        return ()
    ports = schema.listen_ports(key, value)
    if 0 in ports:
        raise ConfigError(None, key, "0 is not a listen port a route can name")
    return ports


def check_route_ports(config: Config) -> None:
    """Every port a route names must be one the server listens on.

    Run again after command-line overrides (``-p``) change the ports.
    """
    listening = config.server.port
    for route in config.protocols:
        for position, port in enumerate(route.ports):
            if port not in listening:
                key = f"{route.key}.ports" + (f"[{position}]" if len(route.ports) > 1 else "")
                ports = ", ".join(map(str, listening))
                raise ConfigError(None, key, f"{port} is not a listen port (server.port: {ports})")


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

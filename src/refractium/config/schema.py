"""The configuration file's format: its shape and the rules for each value.

The msgspec Structs check that each key is known and each value has the right
TOML type. Every field defaults to None meaning "not given" (TOML has no
null), so the defaults in :mod:`refractium.config.model` apply in one place
only. :func:`shape_error` turns msgspec's messages ("Expected `int`, got `str`
- at `$.server.port`") into the user's words and keys ("server.port",
"expected an integer, got a string").

The value checks below (ports, server names, hook targets...) turn one
value into its resolved form or raise a :class:`ConfigError` naming the key
but not the file, which :func:`refractium.config.load.parse_config` adds.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable
from enum import StrEnum
from ipaddress import IPv4Network, IPv6Network, ip_network
from keyword import iskeyword
from typing import Any, TypeVar

import msgspec

from refractium.addr import Address, parse_address, parse_bind
from refractium.errors import ConfigError
from refractium.protocols import registry
from refractium.protocols.custom import compile_regex, decode_pattern

StrOrList = str | list[str]
# A hook is "module:attr" or a table {use = "module:attr", <kwargs>...}.
HookEntry = str | dict[str, Any]
HookList = str | list[HookEntry]


class _Table(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A TOML table: unknown keys are errors, so typos cannot go unnoticed."""


class HealthCheckTable(_Table):
    """[server.health_check], or a route's health_check."""

    interval_ms: int | None = None
    timeout_ms: int | None = None
    rise: int | None = None
    fall: int | None = None
    send: str | None = None
    expect: str | None = None


class ServerTable(_Table):
    """[server]."""

    bind: StrOrList | None = None
    port: int | list[int] | None = None
    peek_buffer_size: int | None = None
    peek_timeout_ms: int | None = None
    connect_timeout_ms: int | None = None
    shutdown_grace_ms: int | None = None
    max_connections: int | None = None
    max_connections_per_ip: int | None = None
    hot_reload: bool | None = None
    fallback_tcp: str | None = None
    fallback_udp: str | None = None
    on_timeout: str | None = None
    udp_session_timeout_s: float | None = None
    udp_max_sessions: int | None = None
    accept_proxy_protocol: bool | None = None
    trusted_proxies: StrOrList | None = None
    health_check: HealthCheckTable | None = None
    idle_timeout_s: float | None = None
    user: str | None = None
    group: str | None = None
    workers: int | str | None = None


class AdminTable(_Table):
    """[admin]."""

    bind: str | None = None
    token: str | None = None


class EndpointTable(_Table):
    """[endpoint]."""

    hooks: HookList | None = None


class ProtocolTable(_Table):
    """One [[protocols]] entry; name and forward_to are required."""

    name: str
    forward_to: StrOrList
    id: str | None = None
    sni: StrOrList | None = None
    alpn: StrOrList | None = None
    ja4: StrOrList | None = None
    patterns: StrOrList | None = None
    regex: str | None = None
    transport: str | None = None
    balance: str | None = None
    proxy_protocol: int | None = None
    hooks: HookList | None = None
    overflow: str | None = None
    # true: check with the [server.health_check] values; a table overrides some.
    health_check: HealthCheckTable | bool | None = None
    ports: int | list[int] | None = None
    idle_timeout_s: float | None = None
    transparent: bool | None = None
    connection_rate: str | None = None


class LimitsTable(_Table):
    """[limits]: abuse control (resolved by :mod:`refractium.config.limits`)."""

    connection_rate: str | None = None
    connection_burst: int | None = None
    group_v4: int | None = None
    group_v6: int | None = None
    allow: StrOrList | None = None
    deny: StrOrList | None = None
    deny_file: str | None = None
    ban_after: int | None = None
    ban_window_s: float | None = None
    ban_for_s: float | None = None
    offences: StrOrList | None = None
    max_clients: int | None = None


class StateTable(_Table):
    """[state]: where the state instances share is kept."""

    backend: str | None = None
    url: str | None = None
    prefix: str | None = None
    on_error: str | None = None


class LogTable(_Table):
    """[log]."""

    level: str | None = None
    format: str | None = None
    file: str | None = None
    syslog: str | None = None
    access: bool | None = None


class ConfigFile(_Table):
    """The whole file."""

    server: ServerTable | None = None
    admin: AdminTable | None = None
    endpoint: EndpointTable | None = None
    log: LogTable | None = None
    limits: LimitsTable | None = None
    state: StateTable | None = None
    protocols: list[ProtocolTable] | None = None
    # Refractium's Rust implementation reads the fallbacks at the top level.
    fallback_tcp: str | None = None
    fallback_udp: str | None = None


# Which table lives at a key path (list indices removed), for "did you mean".
_TABLES: dict[str, type[_Table]] = {
    "": ConfigFile,
    "server": ServerTable,
    "server.health_check": HealthCheckTable,
    "admin": AdminTable,
    "endpoint": EndpointTable,
    "log": LogTable,
    "limits": LimitsTable,
    "state": StateTable,
    "protocols": ProtocolTable,
    "protocols.health_check": HealthCheckTable,
}

_TYPE_WORDS = {
    "int": "an integer",
    "float": "a number",
    "str": "a string",
    "bool": "true/false",
    "array": "a list",
    "object": "a table",
    "date": "a date",
    "time": "a time",
    "datetime": "a date-time",
}

_EXPECTED = re.compile(r"Expected `(?P<want>[^`]+)`, got `(?P<got>[^`]+)`\Z")
_UNKNOWN = re.compile(r"Object contains unknown field `(?P<field>[^`]*)`\Z")
_MISSING = re.compile(r"Object missing required field `(?P<field>[^`]*)`\Z")
_INDEX = re.compile(r"\[\d+\]")


def decode(data: object) -> ConfigFile:
    """Check the shape of parsed TOML; raises ``msgspec.ValidationError``."""
    return msgspec.convert(data, ConfigFile)


def shape_error(error: msgspec.ValidationError) -> tuple[str | None, str]:
    """The key path and plain message for a msgspec validation error."""
    what, at, where = str(error).rpartition(" - at `$")
    if not at:  # a problem with the whole document has no location
        what, where = where, ""
    path = where.removesuffix("`").removeprefix(".")
    if m := _UNKNOWN.match(what):
        return _join(path, m["field"]), _unknown_key(path, m["field"])
    if m := _MISSING.match(what):
        return _join(path, m["field"]), "required key missing"
    if m := _EXPECTED.match(what):
        message = f"expected {_alternatives(m['want'])}, got {_word(m['got'])}"
        if path == "protocols" and m["got"] == "object":
            message += " (write [[protocols]], not [protocols])"
        return path or None, message
    # Not a message we know: keep msgspec's words rather than lose them.
    return path or None, what[:1].lower() + what[1:]


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _unknown_key(path: str, key: str) -> str:
    table = _TABLES.get(_INDEX.sub("", path))
    known = msgspec.structs.fields(table) if table is not None else ()
    close = difflib.get_close_matches(key, [f.name for f in known], n=1)
    return f"unknown key (did you mean {close[0]!r}?)" if close else "unknown key"


def _alternatives(want: str) -> str:
    # "null" is how msgspec spells "may be absent"; TOML cannot write it.
    words = [_word(w) for w in want.split(" | ") if w != "null"]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def _word(type_name: str) -> str:
    return _TYPE_WORDS.get(type_name, type_name)


# --- value checks ------------------------------------------------------------

_T = TypeVar("_T")
_E = TypeVar("_E", bound=StrEnum)
_ROUTE_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]*\Z")
_SNI_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?\Z")


def items(key: str, value: _T | list[_T] | None) -> list[tuple[str, _T]]:
    """The entries of a "value or list of values" key, each with its own key path."""
    if value is None:
        return []
    if isinstance(value, list):
        return [(f"{key}[{i}]", item) for i, item in enumerate(value)]
    return [(key, value)]


def checked(key: str, parse: Callable[[str], _T], text: str) -> _T:
    """``parse(text)``, its ValueError turned into a ConfigError about ``key``."""
    try:
        return parse(text)
    except ValueError as error:
        raise ConfigError(None, key, str(error)) from None


def at_least(key: str, value: int, minimum: int) -> int:
    if value < minimum:
        raise ConfigError(None, key, f"must be at least {minimum}, got {value}")
    return value


def workers(key: str, value: int | str, cpus: int) -> int:
    """A worker count: an integer >= 1, or ``"auto"`` (``cpus``, one per usable CPU)."""
    if isinstance(value, str):
        if value.strip().lower() == "auto":
            return cpus
        raise ConfigError(None, key, f'expected an integer >= 1 or "auto", got {value!r}')
    return at_least(key, value, 1)


def listen_port(key: str, value: int) -> int:
    if not 0 <= value <= 65535:
        raise ConfigError(None, key, f"must be 0..65535 (0: any free port), got {value}")
    return value


def listen_ports(key: str, value: int | list[int]) -> tuple[int, ...]:
    """One port or a list of them, each 0..65535, no repeats; 0 only alone."""
    entries = items(key, value)
    if not entries:
        raise ConfigError(None, key, "no listen port")
    ports = tuple(listen_port(item_key, port) for item_key, port in entries)
    if len(set(ports)) != len(ports):
        raise ConfigError(None, key, f"a port is listed twice: {list(ports)}")
    if 0 in ports and len(ports) > 1:
        raise ConfigError(None, key, "0 (any free port) cannot be listed with other ports")
    return ports


def idle_seconds(key: str, value: float) -> float:
    """An idle timeout: 0 means never."""
    if not 0 <= value < math.inf:
        raise ConfigError(
            None, key, f"must be 0 (never) or a positive number of seconds, got {value}"
        )
    return value


def seconds(key: str, value: float) -> float:
    if not 0 < value < math.inf:
        raise ConfigError(None, key, f"must be a positive number of seconds, got {value}")
    return value


def binds(key: str, value: str | list[str]) -> tuple[str, ...]:
    entries = items(key, value)
    if not entries:
        raise ConfigError(None, key, "no listen address")
    return tuple(checked(item_key, parse_bind, text) for item_key, text in entries)


def pool(key: str, value: str | list[str]) -> tuple[Address, ...]:
    entries = items(key, value)
    if not entries:
        raise ConfigError(None, key, "empty pool")
    return tuple(checked(item_key, parse_address, text) for item_key, text in entries)


def network(key: str, text: str) -> IPv4Network | IPv6Network:
    try:
        return ip_network(text, strict=False)
    except ValueError:
        raise ConfigError(None, key, f"not a CIDR network: {text!r}") from None


def route_name(key: str, text: str) -> str:
    """A route name, lower-cased (as Refractium's Rust implementation does).

    It shows in logs and metrics.
    """
    name = text.lower()
    if not _ROUTE_NAME.match(name):
        raise ConfigError(
            None, key, f"not a valid name: {text!r} (use letters, digits, '_', '-', '.')"
        )
    return name


_ROUTE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:#/-]{0,63}\Z")


def route_id(key: str, text: str) -> str:
    """A route's own id: it labels metrics and access lines, so it is kept plain."""
    if not _ROUTE_ID.match(text):
        raise ConfigError(
            None,
            key,
            f"not a valid id: {text!r} (up to 64 letters, digits and '_', '.', ':', '#', '/', '-')",
        )
    return text


def check_known(key: str, name: str, extra: frozenset[str], *, hint: bool = True) -> None:
    """A route without patterns/regex needs a protocol Refractium can identify."""
    known = registry.names() | extra
    if name not in known:
        listed = ", ".join(sorted(known))
        # ``hint``: only a file can say how to recognise a protocol of one's own.
        more = "; or give patterns/regex" if hint else ""
        raise ConfigError(None, key, f"unknown protocol {name!r} (known: {listed}{more})")


def server_name(key: str, text: str) -> str:
    """An SNI name, lower-cased, without a trailing dot; ``*.`` only as the leftmost label."""
    name = text.lower().removesuffix(".")
    if not name.isascii():
        raise ConfigError(None, key, f"not ASCII (write IDN names as 'xn--' punycode): {text!r}")
    labels = name.split(".")
    if "*" in name and (labels[0] != "*" or len(labels) < 2 or "*" in ".".join(labels[1:])):
        raise ConfigError(
            None, key, f"wildcards must be a whole leftmost label, as in '*.example.com': {text!r}"
        )
    start = 1 if labels[0] == "*" else 0
    if len(name) > 253 or not all(_SNI_LABEL.match(label) for label in labels[start:]):
        raise ConfigError(None, key, f"not a server name: {text!r}")
    return name


def alpn_id(key: str, text: str) -> str:
    # ALPN ids are byte strings compared exactly (RFC 7301): no case folding.
    if not 1 <= len(text.encode()) <= 255:
        raise ConfigError(None, key, f"ALPN ids are 1 to 255 bytes long: {text!r}")
    return text


# A JA4 fingerprint: a_b_c, a being 10 characters (t13d1516h2), b and c 12
# hex digits each. A filter is one of them, or a prefix of one ending in "*".
_JA4 = re.compile(r"[tqd][0-9a-z]{2}[di][0-9]{4}[0-9A-Za-z]{2}_[0-9a-f]{12}_[0-9a-f]{12}\Z")
_JA4_PREFIX = re.compile(r"[0-9A-Za-z_]{0,35}\*\Z")


def ja4_filter(key: str, text: str) -> str:
    """A ``ja4`` route filter: a whole fingerprint, or a prefix ending in ``*``."""
    if not (_JA4.match(text) or _JA4_PREFIX.match(text)):
        raise ConfigError(
            None,
            key,
            f"not a JA4 fingerprint nor a prefix ending in '*': {text!r}"
            " (e.g. 't13d1516h2_8daaf6152771_b186095e22b6' or 't13d*')",
        )
    return text


def choice(key: str, text: str | None, kind: type[_E]) -> _E | None:
    """``text`` as a member of ``kind`` (case-insensitive), None when not given."""
    if text is None:
        return None
    try:
        return kind(text.lower())
    except ValueError:
        allowed = ", ".join(member.value for member in kind)
        raise ConfigError(None, key, f"unknown value {text!r} (expected: {allowed})") from None


def proxy_version(key: str, value: int | None) -> int:
    if value is None:
        return 0
    if value not in (0, 1, 2):
        raise ConfigError(None, key, f"must be 0, 1 or 2, got {value}")
    return value


def pattern(key: str, text: str) -> bytes:
    return checked(key, decode_pattern, text)


def regex(key: str, text: str) -> str:
    checked(key, compile_regex, text)
    return text


def hook_target(key: str, text: str) -> str:
    """``module:attr``: one colon between two non-empty dotted identifiers."""
    parts = text.split(":")
    if len(parts) != 2 or not all(_dotted_identifier(part) for part in parts):
        raise ConfigError(None, key, f"not 'module:attribute': {text!r}")
    return text


def hook_table(key: str, entry: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The target and keyword arguments of a ``{use = "module:attr", ...}`` hook."""
    use = entry.get("use")
    if use is None:
        raise ConfigError(None, f"{key}.use", "required key missing")
    if not isinstance(use, str):
        raise ConfigError(None, f"{key}.use", f"expected a string, got {_value_word(use)}")
    kwargs = {name: value for name, value in entry.items() if name != "use"}
    for name in kwargs:
        if not name.isidentifier() or iskeyword(name):
            raise ConfigError(None, f"{key}.{name}", "not usable as a Python argument name")
    return hook_target(f"{key}.use", use), kwargs


def _dotted_identifier(text: str) -> bool:
    return all(word.isidentifier() for word in text.split("."))


def _value_word(value: object) -> str:
    """The TOML type of a parsed value, in the words of :func:`shape_error`."""
    name = {bool: "bool", int: "int", float: "float", str: "str", list: "array", dict: "object"}
    return _word(name.get(type(value), type(value).__name__))

"""The ``[limits]`` and ``[state]`` tables and a route's ``connection_rate``, checked and resolved.

Turns the shapes of :mod:`refractium.config.schema` into
:class:`~refractium.config.model.LimitsConfig`,
:class:`~refractium.config.model.StateConfig` and
:class:`~refractium.config.model.Rate`, or raises a
:class:`~refractium.errors.ConfigError` naming the key (the file is added by
:func:`refractium.config.load.parse_config`). What the limits do at accept
is the relay's business; this module only reads the file's values.
"""

from __future__ import annotations

import os
import re
from ipaddress import IPv4Network, IPv6Network, ip_network
from typing import Any

from refractium.config import schema
from refractium.config.model import (
    LimitsConfig,
    Offence,
    OnError,
    Rate,
    StateBackend,
    StateConfig,
)
from refractium.errors import ConfigError

__all__ = ["connection_rate", "limits", "state"]

# "20/s", "3 / minute": a count and a period, the period in one of the
# spellings below (case-insensitive).
_RATE = re.compile(r"\s*(?P<count>[0-9]+)\s*/\s*(?P<unit>[a-z]+)\s*\Z", re.IGNORECASE)
_PERIODS = {
    "s": 1.0,
    "sec": 1.0,
    "second": 1.0,
    "m": 60.0,
    "min": 60.0,
    "minute": 60.0,
    "h": 3600.0,
    "hour": 3600.0,
}
_URL_SCHEMES = ("redis://", "rediss://", "unix://")


def connection_rate(key: str, text: str | None, burst: int | None = None) -> Rate | None:
    """A rate such as ``"20/s"`` (``s``, ``m`` or ``h``, or ``second``, ``minute``, ``hour``).

    Args:
        key: the key in error messages.
        text: the value as written; None or ``""`` means no rate.
        burst: the bucket's size; None: the rate's count.

    Raises:
        ConfigError: not ``N/s``, ``N/m`` or ``N/h`` with N at least 1.
    """
    if not text:
        return None
    m = _RATE.match(text)
    period = _PERIODS.get(m["unit"].lower()) if m else None
    if m is None or period is None:
        raise ConfigError(None, key, f'expected N/s, N/m or N/h (e.g. "20/s"), got {text!r}')
    count = int(m["count"])
    if count < 1:
        raise ConfigError(None, key, f"the count must be at least 1, got {text!r}")
    return Rate(count=count, period_s=period, burst=count if burst is None else burst, text=text)


def network(key: str, text: str) -> IPv4Network | IPv6Network:
    """An address (one host) or a CIDR network whose host bits are all zero.

    Unlike ``server.trusted_proxies``, host bits are refused: on a list that
    refuses or exempts clients, ``10.0.0.1/8`` is more likely a typo for
    ``10.0.0.1/32`` than a way to write ``10.0.0.0/8``.
    """
    try:
        return ip_network(text.strip())
    except ValueError:
        pass
    try:
        loose = ip_network(text.strip(), strict=False)
    except ValueError:
        raise ConfigError(None, key, f"not an address or CIDR network: {text!r}") from None
    host = text.strip().partition("/")[0]
    raise ConfigError(
        None,
        key,
        f"host bits set in {text!r}: write {str(loose)!r} for the network, "
        f"or {host!r} for one host",
    )


def limits(table: schema.LimitsTable | None, source: str | None) -> LimitsConfig:
    """The ``[limits]`` table, checked; keys it does not set keep the model's defaults.

    Args:
        table: the table, or None when the file has none.
        source: the configuration file as named (``deny_file`` is relative
            to its directory), or None.
    """
    if table is None:
        return LimitsConfig()
    given: dict[str, Any] = {}
    burst = None
    if table.connection_burst is not None:
        burst = schema.at_least("limits.connection_burst", table.connection_burst, 1)
        if not table.connection_rate:
            raise ConfigError(
                None, "limits.connection_burst", "set, but limits.connection_rate is not"
            )
    given["connection_rate"] = connection_rate(
        "limits.connection_rate", table.connection_rate, burst
    )
    for name, bits in (("group_v4", 32), ("group_v6", 128)):
        value = getattr(table, name)
        if value is not None:
            if not 1 <= value <= bits:
                raise ConfigError(None, f"limits.{name}", f"must be 1..{bits}, got {value}")
            given[name] = value
    for name in ("allow", "deny"):
        entries = schema.items(f"limits.{name}", getattr(table, name))
        given[name] = tuple(network(key, text) for key, text in entries)
    if table.deny_file:
        given["deny_file"] = _beside(source, table.deny_file)
    if table.ban_after is not None:
        given["ban_after"] = schema.at_least("limits.ban_after", table.ban_after, 0)
    for name in ("ban_window_s", "ban_for_s"):
        value = getattr(table, name)
        if value is not None:
            given[name] = schema.seconds(f"limits.{name}", value)
    if table.offences is not None:
        given["offences"] = _offences(table.offences)
    if table.max_clients is not None:
        given["max_clients"] = schema.at_least("limits.max_clients", table.max_clients, 1)
    return LimitsConfig(**given)


def _beside(source: str | None, path: str) -> str:
    """``path`` taken from the directory of the file ``source`` (else the current one).

    Made absolute, so that the file watched is the one named, whatever the
    process's directory later.
    """
    base = os.path.dirname(source) if source is not None else ""
    return os.path.abspath(os.path.join(base, os.path.expanduser(path)))


def _offences(value: str | list[str]) -> frozenset[Offence]:
    seen: set[Offence] = set()
    for key, text in schema.items("limits.offences", value):
        offence = schema.choice(key, text, Offence)
        assert offence is not None  # text is a string, never None
        if offence in seen:
            raise ConfigError(None, key, f"{offence.value!r} is listed twice")
        seen.add(offence)
    return frozenset(seen)


def state(table: schema.StateTable | None) -> StateConfig:
    """The ``[state]`` table, checked; keys it does not set keep the model's defaults."""
    if table is None:
        return StateConfig()
    given: dict[str, Any] = {}
    if table.backend is not None:
        given["backend"] = schema.choice("state.backend", table.backend, StateBackend)
    if table.url is not None:
        if not table.url.startswith(_URL_SCHEMES) or table.url in _URL_SCHEMES:
            raise ConfigError(
                None,
                "state.url",
                f"expected redis://HOST:PORT/DB, rediss://... or unix://PATH, got {table.url!r}",
            )
        given["url"] = table.url
    if table.prefix is not None:
        if not table.prefix:
            raise ConfigError(None, "state.prefix", "must not be empty")
        given["prefix"] = table.prefix
    if table.on_error is not None:
        given["on_error"] = schema.choice("state.on_error", table.on_error, OnError)
    return StateConfig(**given)

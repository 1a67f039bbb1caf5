"""Command-line overrides: ``-b``, ``-p`` and ``-f`` applied over a loaded config.

Values given on the command line take precedence over the file (DESIGN
section 1). Errors are keyed by the option and quote the argument
(``-f: 'x': expected NAME=HOST:PORT``), without a file name.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import replace
from typing import TypeVar

from refractium.addr import Address, AddressError, parse_address, parse_bind
from refractium.config import schema
from refractium.config.load import check_route_ports
from refractium.config.model import Config, RouteConfig
from refractium.config.route_ids import assign_ids
from refractium.errors import ConfigError

__all__ = ["apply_overrides"]

_T = TypeVar("_T")


def apply_overrides(
    config: Config,
    *,
    bind: str | None,
    port: int | Sequence[int] | None,
    forwards: Sequence[str],
    extra_protocols: Collection[str] = (),
) -> Config:
    """Return ``config`` with command-line values applied.

    Args:
        config: the configuration loaded from the file (or an empty one).
        bind: replaces the listen addresses (comma-separated for several).
        port: replaces the listen ports (``-p`` may repeat).
        forwards: each ``NAME=HOST:PORT`` adds a backend for NAME: the same
            name twice makes a pool; a name that already has routes in the
            file replaces their ``forward_to``, otherwise a route is appended.
        extra_protocols: protocol names known besides the built-ins.

    Raises:
        ConfigError: keyed by the option (``-f``, ``-b``, ``-p``), no file.
    """
    server = config.server
    if bind is not None:
        server = replace(server, bind=_cli_binds(bind))
    if port is not None and port != []:
        server = replace(server, port=_cli_ports([port] if isinstance(port, int) else port))
    routes = assign_ids(_apply_forwards(config.protocols, forwards, frozenset(extra_protocols)))
    result = replace(config, server=server, protocols=routes)
    if server.port != config.server.port:
        check_route_ports(result)
    return result


def _cli_ports(ports: Sequence[int]) -> tuple[int, ...]:
    """``-p`` values, each checked and named ``-p`` in errors."""
    checked = tuple(schema.listen_port("-p", port) for port in ports)
    if len(set(checked)) != len(checked):
        raise ConfigError(None, "-p", f"a port is given twice: {list(checked)}")
    if 0 in checked and len(checked) > 1:
        raise ConfigError(None, "-p", "0 (any free port) cannot be given with other ports")
    return checked


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

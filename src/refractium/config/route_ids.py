"""Route ids: the name every metric, access line and ``/status`` entry knows a route by.

A route may set ``id``; otherwise its id is its name when no other route has
that name, else ``NAME#K``, K counting the routes of that name from 1 in file
order (so three ``https`` routes are ``https#1``, ``https#2``, ``https#3``,
whether or not one of them sets its own id). Ids are unique: two routes that
would share one are a configuration error naming the second.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import replace

from refractium.config.model import RouteConfig
from refractium.errors import ConfigError

__all__ = ["assign_ids", "default_id"]


def default_id(name: str, ordinal: int, same_name: int) -> str:
    """The id of the ``ordinal``-th (from 1) of ``same_name`` routes called ``name``."""
    return name if same_name == 1 else f"{name}#{ordinal}"


def assign_ids(routes: Sequence[RouteConfig]) -> tuple[RouteConfig, ...]:
    """``routes`` with every id filled in (defaults derived anew), checked unique.

    Raises:
        ConfigError: keyed ``protocols[K].id`` for the later of two routes
            with the same id (no file: the caller adds it).
    """
    totals = Counter(route.name for route in routes)
    seen: Counter[str] = Counter()
    owners: dict[str, RouteConfig] = {}
    result = []
    for route in routes:
        seen[route.name] += 1
        ident = (
            route.id
            if route.id_set
            else default_id(route.name, seen[route.name], totals[route.name])
        )
        earlier = owners.get(ident)
        if earlier is not None:
            raise ConfigError(
                None,
                f"{route.key}.id",
                f"{ident!r} is already the id of {earlier.key} (set a distinct id)",
            )
        owners[ident] = route
        result.append(route if route.id == ident else replace(route, id=ident))
    return tuple(result)

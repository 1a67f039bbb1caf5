"""What the admin API reads of an engine: a narrow view, not the engine itself.

:class:`~refractium.engine.Refractium` satisfies :class:`EngineView`
structurally; the admin server and the metrics collector see nothing else
of it, so they can be tested against any object with these members.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from refractium.abuse.guard import Guard
from refractium.errors import RefractiumError
from refractium.hooks.dispatch import HookStats
from refractium.relay.stats import TcpStats, UdpStats
from refractium.routing import Route


@dataclass(frozen=True, slots=True)
class BackendState:
    """One backend as one transport sees it: health and what relays to it now."""

    transport: str  # "tcp" or "udp": health is kept per transport
    address: str  # host:port
    up: bool
    active: int  # TCP connections, or UDP flows, relaying to it now


@dataclass(frozen=True, slots=True)
class RouteLoad:
    """The open connections (or flows) of one route and what they have relayed so far.

    Bytes of connections still open: added to the ended connections' totals
    (``TcpStats.route_bytes_in``...), they make a long transfer visible while
    it runs. When a connection ends its bytes move from here to those totals
    in the same callback, so the sum never goes back.
    """

    active: int
    bytes_in: int  # client -> backend
    bytes_out: int  # backend -> client


class EngineView(Protocol):
    """The engine, as far as the admin API and the metrics need it."""

    @property
    def routes(self) -> tuple[Route, ...]:
        """The routes in force, in file order."""

    @property
    def config_source(self) -> str | None:
        """The file the configuration came from (or "builder", or None)."""

    @property
    def tcp_stats(self) -> TcpStats:
        """The TCP side's counters; raises RefractiumError when TCP is not served."""

    @property
    def udp_stats(self) -> UdpStats:
        """The UDP side's counters; raises RefractiumError when UDP is not served."""

    @property
    def open_connections(self) -> int: ...

    @property
    def open_flows(self) -> int: ...

    @property
    def hook_stats(self) -> HookStats: ...

    @property
    def endpoint_hooks(self) -> tuple[object, ...]:
        """The endpoint hooks in force, in the order they run."""

    def live_load(self) -> Mapping[tuple[str, str], RouteLoad]:
        """``(transport, route id)`` -> its open connections (flows) and their bytes.

        Walks every open connection and flow: read it once per sample, not per request.
        """

    def backends(self) -> Sequence[BackendState]:
        """Every backend each running transport knows, with its health and load."""

    @property
    def guard(self) -> Guard:
        """Abuse control: its bans (``/bans``), its counters, its stores."""

    def reload_routes(self) -> None:
        """Re-read the configuration file (ConfigError, RefractiumError)."""


def served_stats(engine: EngineView) -> tuple[TcpStats | None, UdpStats | None]:
    """The counters of each transport the engine serves now (None for one it does not)."""
    tcp: TcpStats | None = None
    udp: UdpStats | None = None
    with contextlib.suppress(RefractiumError):
        tcp = engine.tcp_stats
    with contextlib.suppress(RefractiumError):
        udp = engine.udp_stats
    return tcp, udp

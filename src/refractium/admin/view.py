"""What the admin API reads of an engine: a narrow view, not the engine itself.

:class:`~refractium.engine.Refractium` satisfies :class:`EngineView`
structurally; the admin server and the metrics collector see nothing else
of it, so they can be tested against any object with these members.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

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

    def backends(self) -> Sequence[BackendState]:
        """Every backend each running transport knows, with its health and load."""

    def reload_routes(self) -> None:
        """Re-read the configuration file (ConfigError, RefractiumError)."""

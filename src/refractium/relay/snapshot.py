"""What connections read of the configuration: one frozen snapshot, swapped whole.

A reload builds a new :class:`Snapshot` and swaps one reference per
service. A connection takes the snapshot in force when it is accepted (a
UDP flow when its first datagram arrives) and keeps it to its end, so
identification, the endpoint hooks and the dial all see one configuration,
whatever reloads happen meanwhile.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from refractium.config import ServerConfig
from refractium.endpoint.chain import EndpointChain
from refractium.routing import Tables

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class Settings:
    """The ``[server]`` values the data path reads, in the units it uses."""

    peek_buffer_size: int
    peek_timeout_s: float
    connect_timeout_s: float
    max_connections: int
    max_connections_per_ip: int  # 0: no per-IP cap
    accept_proxy_protocol: bool
    trusted_proxies: tuple[IPNetwork, ...]
    udp_idle_timeout_s: float
    udp_max_sessions: int
    # The access log's format ("text" or "json"); None: no access log.
    access_log: str | None = None

    @classmethod
    def from_server(cls, server: ServerConfig, access_log: str | None = None) -> Settings:
        return cls(
            peek_buffer_size=server.peek_buffer_size,
            peek_timeout_s=server.peek_timeout_ms / 1000,
            connect_timeout_s=server.connect_timeout_ms / 1000,
            max_connections=server.max_connections,
            max_connections_per_ip=server.max_connections_per_ip,
            accept_proxy_protocol=server.accept_proxy_protocol,
            trusted_proxies=tuple(server.trusted_proxies),
            udp_idle_timeout_s=server.udp_session_timeout_s,
            udp_max_sessions=server.udp_max_sessions,
            access_log=access_log,
        )

    def trusted(self, ip: str) -> bool:
        """Whether ``ip`` is one of ``trusted_proxies`` (may send a PROXY header)."""
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(address in network for network in self.trusted_proxies)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Route tables, endpoint hooks and settings: everything a connection reads."""

    tables: Tables
    # None when there are no endpoint hooks: nothing is spent on them.
    endpoint: EndpointChain | None = None
    settings: Settings = field(default_factory=lambda: Settings.from_server(ServerConfig()))

"""Routing: the route tables and the decision (pure), and building them from a config."""

from refractium.routing.build import build_tables, probe_for, split_sni
from refractium.routing.table import (
    NEED_MORE,
    DatagramProber,
    Decision,
    Route,
    RouteTable,
    Tables,
    datagram_prober,
)

__all__ = [
    "NEED_MORE",
    "DatagramProber",
    "Decision",
    "Route",
    "RouteTable",
    "Tables",
    "build_tables",
    "datagram_prober",
    "probe_for",
    "split_sni",
]

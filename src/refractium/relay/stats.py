"""Process-wide counters of what the proxy did, refused and dropped.

Plain integers bumped on the data path (an attribute increment costs tens of
nanoseconds); the admin API reads them when it is scraped.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import NamedTuple

from refractium.endpoint.api import FAILED, REFUSED, REJECTED, RELAYED, UNIDENTIFIED

__all__ = [
    "FAILED",
    "IDENTIFY_BUCKETS",
    "RECENT_REFUSALS",
    "REFUSED",
    "REJECTED",
    "RELAYED",
    "UNIDENTIFIED",
    "Histogram",
    "Refused",
    "TcpStats",
    "UdpStats",
]

#: Upper bounds (seconds) of the identification-time histogram's buckets:
#: from one read (tens of microseconds) to a client trickling its first bytes.
IDENTIFY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.05,
    0.1,
    0.5,
    1.0,
    5.0,
)


class Histogram:
    """Fixed buckets, Prometheus style: ``counts[i]`` observations <= ``bounds[i]``.

    Not cumulative here (one increment per observation); the exporter sums.
    The last count is for observations above every bound (``+Inf``).
    """

    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1


#: How many refusals :attr:`TcpStats.recent` keeps (the dashboard's list).
RECENT_REFUSALS = 50


class Refused(NamedTuple):
    """One refused or rejected client, kept for the dashboard's recent list."""

    at: float  # wall-clock time (time.time())
    transport: str  # "tcp" or "udp"
    client: str  # host:port
    route: str | None  # route id, None before identification
    code: int  # the Reject's error code; 0 for a refusal by a limit
    reason: str


def _recent() -> deque[Refused]:
    return deque(maxlen=RECENT_REFUSALS)


@dataclass(slots=True)
class TcpStats:
    """Counters for the TCP listeners."""

    accepted: int = 0
    refused: Counter[str] = field(default_factory=Counter)  # by reason
    routed: Counter[str] = field(default_factory=Counter)  # by route id
    unidentified_closed: int = 0
    peek_timeouts: int = 0
    dial_failures: int = 0
    bytes_in: int = 0  # client -> backend
    bytes_out: int = 0  # backend -> client
    # Ended connections by (route id, outcome); route "" when none was chosen.
    closed: Counter[tuple[str, str]] = field(default_factory=Counter)
    # Bytes of ended connections by route id: client -> backend, and back.
    route_bytes_in: Counter[str] = field(default_factory=Counter)
    route_bytes_out: Counter[str] = field(default_factory=Counter)
    # Endpoint-hook rejections by error code; on_incoming Ignore counted apart.
    rejected: Counter[int] = field(default_factory=Counter)
    ignored: int = 0
    # The last refusals and rejections, newest last.
    recent: deque[Refused] = field(default_factory=_recent)
    # From a connection's first byte to its route decision.
    identify_seconds: Histogram = field(default_factory=lambda: Histogram(IDENTIFY_BUCKETS))


@dataclass(slots=True)
class UdpStats:
    """Counters for the UDP listeners."""

    flows: int = 0  # flows created
    refused: int = 0  # new flows refused: udp_max_sessions reached
    # Datagrams that would have started a flow, refused by [limits], by reason.
    blocked: Counter[str] = field(default_factory=Counter)
    unidentified: int = 0  # flows no route (nor fallback_udp) took
    failed: int = 0  # flows whose route had no backend socket
    expired: int = 0  # flows ended by udp_session_timeout_s
    dropped: int = 0  # datagrams dropped: held too many, send backlog, closed flow
    routed: Counter[str] = field(default_factory=Counter)
    bytes_in: int = 0  # client -> backend, of ended flows
    bytes_out: int = 0
    closed: Counter[tuple[str, str]] = field(default_factory=Counter)
    route_bytes_in: Counter[str] = field(default_factory=Counter)
    route_bytes_out: Counter[str] = field(default_factory=Counter)
    rejected: Counter[int] = field(default_factory=Counter)
    ignored: int = 0
    recent: deque[Refused] = field(default_factory=_recent)
    identify_seconds: Histogram = field(default_factory=lambda: Histogram(IDENTIFY_BUCKETS))

"""Process-wide counters of what the proxy did, refused and dropped.

Plain integers bumped on the data path (an attribute increment costs tens of
nanoseconds); the admin API exposes them later.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass(slots=True)
class TcpStats:
    """Counters for the TCP listeners."""

    accepted: int = 0
    refused: Counter[str] = field(default_factory=Counter)  # by reason
    routed: Counter[str] = field(default_factory=Counter)  # by route name
    unidentified_closed: int = 0
    peek_timeouts: int = 0
    dial_failures: int = 0
    bytes_in: int = 0  # client -> backend
    bytes_out: int = 0  # backend -> client

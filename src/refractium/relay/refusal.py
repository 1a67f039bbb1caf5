"""Counting and logging an endpoint hook's refusal, for TCP connections and UDP flows alike.

How the client is told is each transport's: a TCP client gets a reply in
its protocol's terms (:mod:`refractium.wire.rejection`); UDP has no way to
say no, so a refused flow's datagrams are dropped until it idles out.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, deque
from typing import Protocol

from refractium.addr import host_port
from refractium.endpoint.api import IGNORED, REJECTED, Reject, Verdict
from refractium.relay.stats import Refused
from refractium.util.logs import RateLimitedLog

log = logging.getLogger(__name__)
events = RateLimitedLog(log)


class RefusalCounters(Protocol):
    """The counters a transport keeps of refusals (TcpStats, UdpStats)."""

    rejected: Counter[int]  # by error code
    ignored: int
    recent: deque[Refused]


def ending(verdict: Verdict, where: str) -> tuple[str, str]:
    """The outcome and the reason (the access log's) of a connection ``verdict`` turned away."""
    if isinstance(verdict, Reject):
        return REJECTED, verdict.reason.decode("utf-8", "replace") or f"rejected by {where}"
    return IGNORED, f"ignored by {where}"


def count_refusal(
    stats: RefusalCounters,
    verdict: Verdict,
    where: str,
    client_addr: tuple[str, int],
    route: str | None,
    *,
    transport: str = "tcp",
) -> None:
    """Count ``verdict`` (a Reject by its code, Ignore apart); log a Reject, rate-limited."""
    if not isinstance(verdict, Reject):
        stats.ignored += 1  # Ignore: closed with no byte, and nothing logged
        return
    stats.rejected[verdict.error_code] += 1
    reason = verdict.reason.decode("utf-8", "replace")
    stats.recent.append(
        Refused(time.time(), transport, host_port(client_addr), route, verdict.error_code, reason)
    )
    prefix = "" if transport == "tcp" else f"{transport} "
    events.log(
        logging.INFO,
        f"{prefix}reject:{verdict.error_code}",
        "rejected %s%s:%d (%s, %s): %d %s",
        prefix,
        *client_addr,
        route or "not identified",
        where,
        verdict.error_code,
        reason,
    )

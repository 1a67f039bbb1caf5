"""The dial plan, shared by TCP connections and UDP flows.

Once identification has chosen a route, the incoming ``after_handshake``
decides first (:meth:`~refractium.relay.gate.Gate.identified`). Then the
route's pool is tried in the balancer's order, healthy members only,
then the fallback's; ``before_connect`` runs for each backend tried; each
failure is reported to the health checker, counted and logged, and the next
candidate is tried. How a backend is reached (a TCP connect with its
timeout, a connected UDP socket) is the caller's ``connect``; what to do
with the result is the caller's too.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from time import perf_counter
from typing import Protocol, TypeVar

from refractium.addr import Address
from refractium.protocols.base import Match
from refractium.relay.context import Context
from refractium.relay.gate import Gate, Gated
from refractium.routing import Route
from refractium.util.logs import RateLimitedLog

log = logging.getLogger(__name__)
events = RateLimitedLog(log)

B = TypeVar("B", bound=asyncio.BaseTransport)


class Dialling(Gated, Protocol):
    """A connection being dialled: the dial plan records what it tries."""

    client_addr: tuple[str, int]
    match: Match | None
    route: Route | None
    backend_addr: Address | None
    dial_started: float


def targets(route: Route, fallback: Route | None) -> tuple[Route, ...]:
    """The routes whose pools are tried, in order: the route's, then the fallback's."""
    return (route,) if fallback is None or fallback is route else (route, fallback)


async def dial(
    conn: Dialling,
    route: Route,
    fallback: Route | None,
    ctx: Context,
    gate: Gate | None,
    connect: Callable[[Address], Awaitable[B]],
    *,
    confirmed: bool = True,
    on_failure: Callable[[], None] | None = None,
) -> B | None:
    """Reach a backend for ``conn``: its transport, or None (refused, gone or none left).

    Args:
        conn: the connection; its ``route`` and ``backend_addr`` follow the
            candidate being tried.
        route: the route identification chose.
        fallback: the transport's fallback route, tried after the route's pool.
        ctx: where health, the balancer's figures and tasks are.
        gate: the connection's endpoint gate (None: no endpoint hooks); its
            incoming after_handshake decides before anything is dialled.
        connect: opens a connection to one backend; raises OSError or
            TimeoutError when it cannot.
        confirmed: whether a successful ``connect`` proves the backend up
            (TCP); a UDP socket proves nothing until the backend answers.
        on_failure: counts a failed attempt (the transport's own counter).
    """
    if gate is not None and not await gate.identified(
        conn, conn.client_addr, route.name, conn.match
    ):
        return None
    health = ctx.health
    client_ip = conn.client_addr[0]
    for target in targets(route, fallback):
        for address in target.pool.candidates(client_ip, is_up=health.is_up, active=ctx.active):
            conn.route = target
            conn.backend_addr = address
            remote = (address.host, address.port)
            if gate is not None and not await gate.before_connect(conn, remote):
                return None
            conn.dial_started = perf_counter()
            try:
                backend = await connect(address)
            except TimeoutError:  # first: TimeoutError is an OSError
                failure = "timed out"
            except OSError as exc:
                # "connection refused", as the health checks word it.
                failure = exc.strerror.lower() if exc.strerror else str(exc)
            else:
                if confirmed:
                    health.report_success(address)
                if gate is not None and gate.checks_backend:
                    # Outside any dial timer: the hooks' time is not the dial's.
                    connect_s = perf_counter() - conn.dial_started
                    if not await gate.backend_ready(conn, remote, connect_s):
                        backend.close()
                        return None
                return backend
            if on_failure is not None:
                on_failure()
            health.report_failure(address, failure)
            events.log(
                logging.WARNING,
                f"dial:{address}",
                "route %s: cannot connect to %s: %s",
                target.id,
                address,
                failure,
            )
            if conn.closed:
                return None
    return None

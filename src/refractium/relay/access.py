"""The access log: one line per finished TCP connection and per ended UDP flow.

Written once, when the connection ends, on logger ``refractium.access`` at
INFO, from figures the relay keeps anyway (counters, a few timestamps): no
work per chunk. ``[log] access = true`` turns it on; ``[log] format`` says
whether a line is ``key=value`` text or a JSON object.

The fields, in order: ``session`` (16 hex digits), ``transport``,
``client`` (as a trusted PROXY header gave it), ``listener``, ``protocol``,
``route`` (the route id), ``sni``, ``alpn`` (the client's offer, comma
separated), ``ja4``, ``backend``, ``outcome``, ``reason``, ``bytes_in``
(client to backend), ``bytes_out``, ``identify_ms`` (first byte to route
decision), ``connect_ms`` (route decision to backend up, hooks and retries
included) and ``duration_ms`` (accept, or a flow's first datagram, to end).
A value that is missing is ``-`` in text and ``null`` in JSON.
"""

from __future__ import annotations

import logging
from json.encoder import encode_basestring
from time import perf_counter
from typing import Any, Final, Protocol

from refractium.addr import Address, host_port
from refractium.endpoint.api import UNIDENTIFIED
from refractium.protocols.base import Match
from refractium.routing import Route
from refractium.util import accesslog

__all__ = ["FIELDS", "LOGGER", "Ended", "TcpEnded", "log_ended", "log_tcp_ended"]

LOGGER: Final = accesslog.LOGGER
log = logging.getLogger(LOGGER)

FIELDS: Final = (
    "session",
    "transport",
    "client",
    "listener",
    "protocol",
    "route",
    "sni",
    "alpn",
    "ja4",
    "backend",
    "outcome",
    "reason",
    "bytes_in",
    "bytes_out",
    "identify_ms",
    "connect_ms",
    "duration_ms",
)

# One %-format builds a line: the cheapest way CPython has. In JSON, the
# object's members after "time", "level" and "logger"; values arrive encoded.
_TEXT: Final = " ".join(f"{name}=%s" for name in FIELDS)
_JSON: Final = ", ".join(
    f'"{name}": "%s"' if name in ("session", "transport", "client", "outcome") else f'"{name}": %s'
    for name in FIELDS
)
_INFO: Final = logging.INFO
_NONE: Final = "-"
_NULL: Final = "null"
# A JSON string literal of any str, escapes included (the json module's C encoder).
_escape: Final = encode_basestring
# Characters that would make a text value ambiguous: it is quoted then.
_NEEDS_QUOTES: Final = frozenset(' "=\\\t\r\n')


class Ended(Protocol):
    """What a finished connection or flow tells the access log."""

    session_id: int
    client_addr: tuple[str, int]
    route: Route | None
    match: Match | None
    backend_addr: Address | None
    bytes_in: int
    bytes_out: int
    reason: str | None
    identify_s: float | None
    connect_s: float | None

    def final_outcome(self) -> str: ...


class TcpEnded(Ended, Protocol):
    """A finished TCP connection: where it came in, and since when (perf_counter)."""

    sockname: tuple[str, int] | None
    accepted_at: float


def log_tcp_ended(conn: TcpEnded, peeking: bool, fmt: str) -> None:
    """``conn``'s access line; ``peeking``: it ended while being identified."""
    outcome = conn.final_outcome()
    if peeking and outcome == UNIDENTIFIED and conn.reason is None:
        conn.reason = "closed while being identified"
    log_ended(conn, "tcp", conn.sockname, outcome, perf_counter() - conn.accepted_at, fmt)


def log_ended(
    conn: Ended,
    transport: str,
    listener: tuple[str, int] | None,
    outcome: str,
    duration_s: float,
    fmt: str,
) -> None:
    """Write ``conn``'s access line (``fmt``: ``text`` or ``json``)."""
    values = _values(conn, transport, listener, outcome, duration_s)
    sink = accesslog.sink
    if sink is not None:  # the program's own handlers: straight in, batched
        if fmt == "json":
            sink.write_json(_JSON % _json(values))
        else:
            sink.write_text(_TEXT % _text(values))
        return
    if not log.isEnabledFor(_INFO):
        return
    if fmt == "json":
        record = log.makeRecord(LOGGER, _INFO, "", 0, "access", (), None)
        record.access = dict(zip(FIELDS, values, strict=True))
    else:
        record = log.makeRecord(LOGGER, _INFO, "", 0, _TEXT, _text(values), None)
    log.handle(record)


def _values(
    conn: Ended,
    transport: str,
    listener: tuple[str, int] | None,
    outcome: str,
    duration_s: float,
) -> tuple[Any, ...]:
    """The fields' values in :data:`FIELDS` order, None where missing (as in JSON)."""
    match = conn.match
    route = conn.route
    backend = conn.backend_addr
    identify = conn.identify_s
    connect = conn.connect_s
    return (
        f"{conn.session_id:016x}",
        transport,
        host_port(conn.client_addr),
        None if listener is None else host_port(listener),
        None if match is None else match.protocol,
        None if route is None else route.id,
        None if match is None else match.sni,
        None if match is None or not match.alpn else ",".join(match.alpn),
        None if match is None else match.ja4,
        None if backend is None else str(backend),
        outcome,
        conn.reason,
        conn.bytes_in,
        conn.bytes_out,
        None if identify is None else round(identify * 1000, 3),
        None if connect is None else round(connect * 1000, 3),
        round(duration_s * 1000, 3),
    )


def _text(v: tuple[Any, ...]) -> tuple[Any, ...]:
    """The values as written after ``key=``: ``-`` where missing, quoted where needed.

    Only the SNI, the ALPN names and the reason can hold spaces or quotes:
    the rest are addresses, ids, names and numbers.
    """
    return (
        v[0],
        v[1],
        v[2],
        v[3] or _NONE,
        v[4] or _NONE,
        v[5] or _NONE,
        _NONE if v[6] is None else _quoted(v[6]),
        _NONE if v[7] is None else _quoted(v[7]),
        v[8] or _NONE,
        v[9] or _NONE,
        v[10],
        _NONE if v[11] is None else _quoted(v[11]),
        v[12],
        v[13],
        _NONE if v[14] is None else v[14],
        _NONE if v[15] is None else v[15],
        v[16],
    )


def _json(v: tuple[Any, ...]) -> tuple[Any, ...]:
    """The values as JSON: strings that may need escaping are escaped, missing ones null."""
    return (
        v[0],
        v[1],
        v[2],
        _NULL if v[3] is None else f'"{v[3]}"',
        _NULL if v[4] is None else f'"{v[4]}"',
        _NULL if v[5] is None else f'"{v[5]}"',
        _NULL if v[6] is None else _escape(v[6]),
        _NULL if v[7] is None else _escape(v[7]),
        _NULL if v[8] is None else f'"{v[8]}"',
        _NULL if v[9] is None else f'"{v[9]}"',
        v[10],
        _NULL if v[11] is None else _escape(v[11]),
        v[12],
        v[13],
        _NULL if v[14] is None else v[14],
        _NULL if v[15] is None else v[15],
        v[16],
    )


def _quoted(value: str) -> str:
    """``value``, in JSON string quotes when it is empty or has spaces, quotes or controls."""
    if not value or not _NEEDS_QUOTES.isdisjoint(value) or not value.isprintable():
        return _escape(value)
    return value

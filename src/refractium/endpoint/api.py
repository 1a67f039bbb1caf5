"""The endpoint-hook contract: verdicts, sides, events and final figures.

What a hook returns (:data:`Accept`, :class:`Reject`, :data:`Ignore`), which
end of a connection it is told about (:class:`Side`), what can happen to a
connection (:class:`EventKind`) and the final figures ``on_close`` gets
(:class:`ConnectionStats`). Pure data: nothing here touches a connection.
The base class users subclass is in :mod:`refractium.endpoint.base`.
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass
from enum import Enum
from typing import Final

# How a connection ended: ConnectionStats.outcome, and the ``outcome`` label
# of connections_total{route, outcome}.
RELAYED: Final = "relayed"  # reached a backend and relayed until one side closed
REJECTED: Final = "rejected"  # an endpoint hook rejected it
IGNORED: Final = "ignored"  # an endpoint hook ignored it (closed with no reply)
UNIDENTIFIED: Final = "unidentified"  # no route, or closed before it could be identified
FAILED: Final = "failed"  # no backend of its route (nor the fallback) could be dialled
REFUSED: Final = "refused"  # a limit or a bad PROXY header refused it
IDLE: Final = "idle"  # relayed, then closed by idle_timeout_s: no byte either way for that long
LIMITED: Final = "limited"  # over a connection rate of [limits] or of its route
BANNED: Final = "banned"  # its client group is banned


class Side(Enum):
    """Which end of a proxied connection we are."""

    SERVER = "server"  # the client's connection to us (incoming)
    CLIENT = "client"  # our connection to the backend (outgoing)


class Outcome:
    """The type of :data:`Accept` and :data:`Ignore` (compare with ``is``)."""

    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name


#: Let the connection go on.
Accept: Final = Outcome("Accept")
#: ``on_incoming`` only: close at once, send nothing, log nothing.
Ignore: Final = Outcome("Ignore")


@dataclass(frozen=True, slots=True)
class Reject:
    """Refuse the connection; the client is told in its protocol's terms.

    HTTP/1.x clients get ``error_code`` as the response status (403 when it
    is not an HTTP status) and ``reason`` as the body; TLS clients a fatal
    ``access_denied`` alert; others are closed.
    """

    error_code: int = 403
    reason: bytes = b""


Verdict = Outcome | Reject
HookResult = Verdict | None | Awaitable[Verdict | None]


class EventKind(Enum):
    """What can happen to a connection, in this order."""

    IDENTIFIED = "identified"  # the route is chosen (protocol, SNI, ALPN known)
    BACKEND_CONNECTED = "backend_connected"  # relaying to a backend
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class ConnectionEvent:
    kind: EventKind
    at: float  # time.time()


@dataclass(frozen=True, slots=True)
class ConnectionStats:
    """A connection's final figures, given to ``on_close``.

    ``bytes_in``/``packets_in``: what the client sent that was relayed to the
    backend (reads of it); ``bytes_out``/``packets_out``: the backend's to
    the client. ``outcome``: relayed, rejected, ignored, unidentified, failed, refused or idle.
    """

    bytes_in: int
    bytes_out: int
    packets_in: int
    packets_out: int
    duration_s: float
    connect_s: float | None  # dialling the backend that answered
    outcome: str
    route: str | None
    error_code: int | None = None
    reason: bytes | None = None

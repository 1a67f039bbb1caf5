"""The states of a relayed connection and the reasons a side's reading is paused.

Enums for what they mean, bound to module constants so that the relay
compares plain ints on the hot path: an ``IntEnum`` member compares as fast
as the int it is, and pause reasons are stored as the ints of the flags so
that ``|=`` and ``&= ~`` stay int operations (``IntFlag``'s own operators
run Python code).
"""

from __future__ import annotations

from enum import IntEnum, IntFlag
from typing import Final


class State(IntEnum):
    """Where a TCP connection (or a UDP flow) is in its life, in order."""

    PEEKING = 0  # reading the first bytes (a UDP flow: its first datagrams)
    CONNECTING = 1  # the route is chosen; dialling a backend
    RELAYING = 2  # bytes flow both ways
    CLOSED = 3


PEEKING: Final = State.PEEKING
CONNECTING: Final = State.CONNECTING
RELAYING: Final = State.RELAYING
CLOSED: Final = State.CLOSED


class Pause(IntFlag):
    """Why a side's reading is paused; it resumes once no reason is left."""

    FLOW = 1  # the other side's send buffer is full
    DIAL = 2  # the backend is being dialled
    HOOKS = 4  # the packet hooks are behind (overflow = "block")


PAUSE_FLOW: Final = int(Pause.FLOW)
PAUSE_DIAL: Final = int(Pause.DIAL)
PAUSE_HOOKS: Final = int(Pause.HOOKS)


class Upstream(IntEnum):
    """What ``accept_proxy_protocol`` expects first on a connection."""

    NO_HEADER = 0  # nothing (or the header has been read)
    HEADER_REQUIRED = 1  # a trusted proxy: its PROXY header must come first
    HEADER_FORBIDDEN = 2  # anyone else: a PROXY header is refused


NO_HEADER: Final = Upstream.NO_HEADER
HEADER_REQUIRED: Final = Upstream.HEADER_REQUIRED
HEADER_FORBIDDEN: Final = Upstream.HEADER_FORBIDDEN

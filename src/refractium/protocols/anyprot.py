"""anyprot: a catch-all that matches any data at all, like sslh's ``anyprot``.

The probe matches as soon as the client has sent one byte, whatever it is,
over TCP or UDP. It has no ``first_bytes``: it is tried on every input.

Because it matches everything at once, the routing rule makes it win every
tie it is part of: give the ``anyprot`` route last in the file, after every
route it should not take traffic from. Placed before another route without
filters, it takes that route's traffic too. (A client that sends nothing is
not matched: that is ``on_timeout``'s case.)

For unidentified traffic, ``fallback_tcp`` is usually the simpler choice; an
``anyprot`` route is for when the catch-all needs route options (balancing,
several backends, a health check, hooks) or must cover UDP as well.
"""

from __future__ import annotations

from typing import Final

from refractium.protocols.base import Match, ProbeResult, Transport, Verdict

_NEED_MORE: Final = Verdict.NEED_MORE

__all__ = ["AnyProbe"]


class AnyProbe:
    """Matches any non-empty data."""

    __slots__ = ("_match", "name", "transport")

    name: str
    transport: Transport

    def __init__(self, name: str = "anyprot") -> None:
        self.name = name
        self.transport = Transport.BOTH
        # Match is read-only, so one instance can be shared by every connection.
        self._match = Match(name)

    def __repr__(self) -> str:
        return f"AnyProbe({self.name!r})"

    def probe(self, data: bytes) -> ProbeResult:
        """Match any non-empty ``data``; the empty input needs more. Never raises."""
        return self._match if data else _NEED_MORE

"""tinc probe: the ID request a tinc daemon opens a meta connection with.

A tinc node that connects to another sends, first, one line (tinc manual,
"The meta-protocol"; tinc ``protocol_auth.c``)::

    0 <name> <protocol version>\\n

where 0 is the ID request, ``<name>`` the node name (letters, digits and
``_``) and the version ``17`` (tinc 1.0) or ``17.7`` (tinc 1.1). tinc 1.1
also sends ``0 ?<key> 17.1`` to use an invitation and ``0 ^<cookie> 0`` on a
control connection.

sslh matches the two bytes ``0 ``. This probe is stricter and matches once
the name and the first digit of the version are there: ``0``, a space, an
optional ``?`` or ``^``, 1 to ``MAX_NAME`` bytes of ``[A-Za-z0-9_-]`` (``-``
appears in invitation keys), a space and a digit. It needs more while the
data is a prefix of that, and says no otherwise. The daemon sends the line in
one write, so waiting for the name costs nothing.

The input is untrusted peer data; the probe reads at most ``MAX_NAME + 5``
bytes of it.
"""

from __future__ import annotations

from typing import Final

from refractium.protocols.base import Match, ProbeResult, Transport, Verdict

# Enum members bound once: attribute lookups on an Enum class cost ~0.1 us
# in CPython 3.11, more than the rest of a probe's early exits.
_NO: Final = Verdict.NO
_NEED_MORE: Final = Verdict.NEED_MORE

__all__ = ["MAX_NAME", "TincProbe"]

_PREFIX: Final = b"0 "
_MARKS: Final = frozenset(b"?^")
_NAME_BYTES: Final = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_DIGITS: Final = frozenset(b"0123456789")
_SPACE: Final = 0x20
#: The longest node name (or invitation key, control cookie) accepted.
MAX_NAME: Final = 255


class TincProbe:
    """Matches a tinc ID request: ``0 <name> <version>``."""

    __slots__ = ("_match", "name", "transport")

    #: The ID request's number (see ``base.first_bytes``).
    first_bytes: Final = frozenset(_PREFIX[:1])

    name: str
    transport: Transport

    def __init__(self, name: str = "tinc") -> None:
        self.name = name
        self.transport = Transport.TCP
        # Match is read-only, so one instance can be shared by every connection.
        self._match = Match(name)

    def __repr__(self) -> str:
        return f"TincProbe({self.name!r})"

    def probe(self, data: bytes) -> ProbeResult:
        """Identify ``data`` as (a prefix of) a tinc ID request. Never raises."""
        if not data.startswith(_PREFIX):
            return _NEED_MORE if _PREFIX.startswith(data) else _NO
        end = len(data)
        start = 3 if end > 2 and data[2] in _MARKS else 2
        # Scan the name, one byte past the longest one at most.
        stop = min(end, start + MAX_NAME + 1)
        pos = start
        while pos < stop and data[pos] in _NAME_BYTES:
            pos += 1
        if pos - start > MAX_NAME:
            return _NO
        if pos == end:
            return _NEED_MORE
        if pos == start or data[pos] != _SPACE:
            return _NO
        if pos + 1 == end:
            return _NEED_MORE
        return self._match if data[pos + 1] in _DIGITS else _NO

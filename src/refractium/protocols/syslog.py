"""Syslog probe: a message's ``<PRI>`` and the version or timestamp after it.

A syslog message starts with its priority in angle brackets, ``<PRI>``, PRI
being facility * 8 + severity, 0 to 191, in 1 to 3 digits without leading
zeros. What follows tells the two formats apart:

* RFC 5424: the version, ``1`` today (1 to 3 digits, no leading zero), and a
  space: ``<34>1 2003-10-11T22:14:15.003Z host app - - - msg``;
* RFC 3164 (BSD): the timestamp's month abbreviation and a space,
  ``<34>Oct 11 22:14:15 host app: msg``;
* an ISO 8601 timestamp in place of the BSD one, as several senders write
  (``<34>2003-10-11T22:14:15Z ...``): four digits and a hyphen.

sslh matches ``<`` and any number; this probe checks the range of PRI and
requires one of the three openings above. Messages with nothing recognisable
after ``<PRI>`` (``<14>hello``, as Python's ``SysLogHandler`` sends) are not
matched.

The protocol's own transport is both. Over UDP (RFC 5426),
:meth:`SyslogProbe.probe_datagram`, a datagram is one whole message: it
matches or it does not. Over TCP (RFC 6587), :meth:`SyslogProbe.probe`, a
message starts the stream as is (non-transparent framing: ``<34>1 ...``,
messages ending in a newline) or preceded by its length in decimal and a
space (octet counting: ``97 <34>1 ...``); the probe needs more while the data
is a valid prefix.

The input is untrusted peer data; the probe reads at most a few dozen bytes.
"""

from __future__ import annotations

from typing import Final

from refractium.protocols.base import Match, ProbeResult, Transport, Verdict

# Enum members bound once: attribute lookups on an Enum class cost ~0.1 us
# in CPython 3.11, more than the rest of a probe's early exits.
_NO: Final = Verdict.NO
_NEED_MORE: Final = Verdict.NEED_MORE

__all__ = ["SyslogProbe"]

_OPEN: Final = 0x3C  # <
_CLOSE: Final = 0x3E  # >
_SPACE: Final = 0x20
_HYPHEN: Final = 0x2D
_ZERO: Final = 0x30
_DIGITS: Final = frozenset(b"0123456789")
_MAX_PRI: Final = 191
# Octet counting: the length has no leading zero, and 7 digits is ample.
_MAX_LENGTH_DIGITS: Final = 7
_MONTHS: Final = tuple(m + b" " for m in b"Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split())
_MONTH_PREFIXES: Final = frozenset(m[:i] for m in _MONTHS for i in range(len(m) + 1))
_MONTH_SET: Final = frozenset(_MONTHS)

# The scanners' answers.
_MATCHED: Final = 1
_SHORT: Final = 0
_BAD: Final = -1


def _digits(data: bytes, pos: int, limit: int) -> int:
    """The offset of the first non-digit at or after ``pos``, looking at most ``limit`` bytes."""
    stop = min(len(data), pos + limit)
    while pos < stop and data[pos] in _DIGITS:
        pos += 1
    return pos


def _message(data: bytes, pos: int) -> int:
    """Check the message starting at ``pos``: _MATCHED, _SHORT or _BAD."""
    end = len(data)
    if pos >= end:
        return _SHORT
    if data[pos] != _OPEN:
        return _BAD
    start = pos + 1
    stop = _digits(data, start, 4)
    count = stop - start
    if count > 3 or (count > 1 and data[start] == _ZERO):
        return _BAD
    if count == 3 and int(data[start:stop]) > _MAX_PRI:
        return _BAD
    if stop == end:
        return _SHORT
    if count == 0 or data[stop] != _CLOSE:
        return _BAD
    return _after_pri(data, stop + 1)


def _after_pri(data: bytes, pos: int) -> int:
    """Check what follows ``<PRI>``: a version, a BSD month or an ISO date."""
    end = len(data)
    if pos >= end:
        return _SHORT
    if data[pos] not in _DIGITS:
        word = data[pos : pos + 4]
        if len(word) == 4:
            return _MATCHED if word in _MONTH_SET else _BAD
        return _SHORT if word in _MONTH_PREFIXES else _BAD
    stop = _digits(data, pos, 5)
    count = stop - pos
    if stop == end:
        return _SHORT if count < 5 else _BAD
    if data[stop] == _SPACE and count <= 3 and data[pos] != _ZERO:
        return _MATCHED  # RFC 5424 version
    if data[stop] == _HYPHEN and count == 4:
        return _MATCHED  # the year of an ISO 8601 date
    return _BAD


class SyslogProbe:
    """Matches a syslog message (RFC 5424 or 3164), octet-counted or not on TCP."""

    __slots__ = ("_match", "name", "transport")

    #: ``<``, or the first digit of an octet count (see ``base.first_bytes``);
    #: over UDP the route table calls ``probe_datagram`` whatever the first byte.
    first_bytes: Final = frozenset(b"<123456789")

    name: str
    transport: Transport

    def __init__(self, name: str = "syslog") -> None:
        self.name = name
        # RFC 5426 carries syslog over UDP and RFC 6587 over TCP: a route
        # without `transport` serves both.
        self.transport = Transport.BOTH
        # Match is read-only, so one instance can be shared by every connection.
        self._match = Match(name)

    def __repr__(self) -> str:
        return f"SyslogProbe({self.name!r})"

    def probe(self, data: bytes) -> ProbeResult:
        """Identify ``data``, a TCP stream, as (a prefix of) syslog. Never raises."""
        pos = 0
        if data and data[0] != _OPEN:
            # Octet counting: MSG-LEN SP SYSLOG-MSG.
            stop = _digits(data, 0, _MAX_LENGTH_DIGITS + 1)
            if stop == 0 or data[0] == _ZERO or stop > _MAX_LENGTH_DIGITS:
                return _NO
            if stop == len(data):
                return _NEED_MORE
            if data[stop] != _SPACE:
                return _NO
            pos = stop + 1
        result = _message(data, pos)
        if result == _MATCHED:
            return self._match
        return _NEED_MORE if result == _SHORT else _NO

    def probe_datagram(self, data: bytes) -> ProbeResult:
        """Identify ``data``, one UDP datagram, as a syslog message. Never raises."""
        return self._match if _message(data, 0) == _MATCHED else _NO

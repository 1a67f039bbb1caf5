"""DNS probe: a query message, in a UDP datagram or after a TCP length prefix.

A DNS message opens with a 12-byte header (RFC 1035 section 4.1.1): ID,
flags (QR, opcode, AA, TC, RD, RA, Z, AD, CD, RCODE), then the QDCOUNT,
ANCOUNT, NSCOUNT and ARCOUNT section counts. Over UDP a datagram holds exactly
one message; over TCP each message is preceded by its length in two bytes
(RFC 1035 section 4.2.2, RFC 7766 section 8).

The probe matches what a client sends first: a request, never a response.

* the header: QR = 0, TC = 0, Z = 0, RCODE = 0, and an opcode a client
  starts with: QUERY (0), NOTIFY (4, RFC 1996) or UPDATE (5, RFC 2136);
* exactly one question (RFC 9619: a QUERY carries at most one; a
  question-less cookie-only query is not recognised), no answer or
  authority records (but for the SOA an IXFR query carries in its authority
  section, RFC 1995, the SOA a NOTIFY may carry as its answer, and the
  prerequisite and update sections of an UPDATE), at most two additional
  records (an EDNS OPT record, RFC 6891, and a TSIG or SIG(0) signature);
* the question: a well-formed name (labels of 1 to 63 bytes, 255 bytes at
  most in all, no compression pointer: nothing precedes it to point to),
  then a non-zero QTYPE and a QCLASS of IN, CH, HS, NONE or ANY; an UPDATE's
  zone entry must be of type SOA.

Over UDP (:meth:`DnsProbe.probe_datagram`) the whole datagram is checked: the
records after the question are walked and must end exactly at the end of
the datagram. Over TCP (:meth:`DnsProbe.probe`) the probe decides on the
length prefix, the header and the question only, so that its answer does not
depend on how the rest of the message is segmented: the message must be long
enough for the question and its other records (exactly as long as the
question when it has none); it needs more while the header or the question is
incomplete. Trailing bytes (a pipelined second query) are ignored.

The input is untrusted peer data; every count and length is checked before it
is used.
"""

from __future__ import annotations

from typing import Final

from refractium.protocols.base import Match, ProbeResult, Transport, Verdict

# Enum members bound once: attribute lookups on an Enum class cost ~0.1 us
# in CPython 3.11, more than the rest of a probe's early exits.
_NO: Final = Verdict.NO
_NEED_MORE: Final = Verdict.NEED_MORE

__all__ = ["DnsProbe"]

_HEADER: Final = 12
# The smallest message: a header and a question for the root name.
_MIN_MESSAGE: Final = _HEADER + 1 + 4
# The smallest resource record: root name, type, class, TTL, RDLENGTH.
_MIN_RR: Final = 1 + 2 + 2 + 4 + 2
_MAX_NAME: Final = 255
_MAX_LABEL: Final = 63

_QR: Final = 0x80
_TC: Final = 0x02
# The second flags byte: RA, Z, AD, CD, then RCODE. Z and RCODE must be 0.
_Z_RCODE: Final = 0x4F

_QUERY: Final = 0
_NOTIFY: Final = 4
_UPDATE: Final = 5
_TYPE_SOA: Final = 6
_TYPE_IXFR: Final = 251
# IN, CH, HS, NONE, ANY.
_CLASSES: Final = frozenset({1, 3, 4, 254, 255})
_MAX_ADDITIONAL: Final = 2

# Per opcode, the largest ANCOUNT and NSCOUNT allowed (QDCOUNT is always 1,
# ARCOUNT at most _MAX_ADDITIONAL). A QUERY's NSCOUNT of 1 is for IXFR only,
# checked once the QTYPE is known.
_MAX_COUNTS: Final[dict[int, tuple[int, int]]] = {
    _QUERY: (0, 1),
    _NOTIFY: (1, 0),
    _UPDATE: (0xFFFF, 0xFFFF),
}

# Per value of the first flags byte: 1 if QR, TC and the opcode allow a request.
_FLAGS_OK: Final = bytes(
    int(not flags & (_QR | _TC) and (flags >> 3) & 0x0F in _MAX_COUNTS) for flags in range(256)
)

# Answers of the internal scanners besides an offset.
_SHORT: Final = -1  # the data ends first: more could make it valid
_BAD: Final = -2  # malformed whatever follows


def _header(data: bytes, base: int, end: int) -> int:
    """Check the header bytes present in ``data[base:end]``.

    Returns the opcode (or 0 when it is not there yet), or _BAD.
    """
    have = end - base
    if have <= 2:
        return _QUERY
    flags = data[base + 2]
    opcode = (flags >> 3) & 0x0F
    if flags & (_QR | _TC) or opcode not in _MAX_COUNTS:
        return _BAD
    if have > 3 and data[base + 3] & _Z_RCODE:
        return _BAD
    max_an, max_ns = _MAX_COUNTS[opcode]
    for offset, low, high in ((4, 1, 1), (6, 0, max_an), (8, 0, max_ns), (10, 0, _MAX_ADDITIONAL)):
        if have >= offset + 2:
            value = (data[base + offset] << 8) | data[base + offset + 1]
            if not low <= value <= high:
                return _BAD
        elif have > offset:
            # Only the high byte is there: the value is at least 256 times it.
            if data[base + offset] << 8 > high:
                return _BAD
            break
        else:
            break
    return opcode


def _name(data: bytes, pos: int, end: int, *, pointers: bool) -> int:
    """The offset just past the name at ``pos``, _SHORT or _BAD.

    ``pointers``: whether the name may end in a compression pointer (to an
    earlier offset of the message starting at 0, which is not followed).
    """
    start = pos
    while pos < end:
        length = data[pos]
        if length == 0:
            return pos + 1  # the loop keeps the name within _MAX_NAME bytes
        if length > _MAX_LABEL:
            if not pointers or length < 0xC0:
                return _BAD  # 0x40 and 0x80: obsolete extended label types
            if pos + 1 >= end:
                return _SHORT
            target = ((length & 0x3F) << 8) | data[pos + 1]
            return pos + 2 if _HEADER <= target < start else _BAD
        pos += 1 + length
        if pos - start >= _MAX_NAME:
            return _BAD  # no room left for the root label
    return _SHORT


def _question(data: bytes, base: int, end: int, opcode: int) -> int:
    """The offset just past the question of the message at ``base``, _SHORT or _BAD."""
    pos = _name(data, base + _HEADER, end, pointers=False)
    if pos < 0:
        return pos
    fields = data[pos : min(pos + 4, end)]
    if len(fields) >= 2:
        qtype = (fields[0] << 8) | fields[1]
        if qtype == 0:
            return _BAD
        if opcode == _UPDATE and qtype != _TYPE_SOA:
            return _BAD  # an UPDATE's zone entry is the zone's SOA
        if opcode == _QUERY and data[base + 9] and qtype != _TYPE_IXFR:
            return _BAD  # an authority record in a QUERY: IXFR's SOA only
    elif opcode == _UPDATE and fields not in (b"", b"\x00"):
        return _BAD
    if len(fields) >= 3 and fields[2]:
        return _BAD  # every class allowed is below 256
    if len(fields) < 4:
        return _SHORT
    if fields[3] not in _CLASSES:
        return _BAD
    return pos + 4


def _records(data: bytes, pos: int, count: int) -> int:
    """The offset just past ``count`` resource records at ``pos``, or _BAD."""
    end = len(data)
    for _ in range(count):
        pos = _name(data, pos, end, pointers=True)
        if pos < 0 or pos + 10 > end:
            return _BAD
        pos += 10 + ((data[pos + 8] << 8) | data[pos + 9])
        if pos > end:
            return _BAD
    return pos


def _counted(data: bytes, base: int) -> int:
    """The number of records after the question of the message at ``base``."""
    return (
        (data[base + 6] << 8 | data[base + 7])
        + (data[base + 8] << 8 | data[base + 9])
        + (data[base + 10] << 8 | data[base + 11])
    )


class DnsProbe:
    """Matches a DNS query (or NOTIFY, UPDATE): over UDP as is, over TCP length-prefixed."""

    __slots__ = ("_match", "name", "transport")

    # No ``first_bytes``: a datagram starts with the random query ID, a TCP
    # stream with the high byte of the length; neither is constrained.

    name: str
    transport: Transport

    def __init__(self, name: str = "dns") -> None:
        self.name = name
        self.transport = Transport.BOTH
        # Match is read-only, so one instance can be shared by every connection.
        self._match = Match(name)

    def __repr__(self) -> str:
        return f"DnsProbe({self.name!r})"

    def probe(self, data: bytes) -> ProbeResult:
        """Identify ``data``, a TCP stream, as (a prefix of) a DNS request. Never raises."""
        if len(data) < 6:
            if len(data) < 2:
                return _NEED_MORE
        # Most other traffic fails on the flags: the quick way out first.
        elif not _FLAGS_OK[data[4]] or data[5] & _Z_RCODE:
            return _NO
        length = (data[0] << 8) | data[1]
        if length < _MIN_MESSAGE:
            return _NO
        end = min(len(data), 2 + length)
        opcode = _header(data, 2, end)
        if opcode < 0:
            return _NO
        if end < 2 + _HEADER:
            return _NEED_MORE
        pos = _question(data, 2, end, opcode)
        if pos == _SHORT:
            # Out of data or out of message? Only the former can still grow.
            return _NEED_MORE if end < 2 + length else _NO
        if pos < 0:
            return _NO
        others = _counted(data, 2)
        rest = 2 + length - pos
        if rest < others * _MIN_RR or (others == 0 and rest != 0):
            return _NO
        return self._match

    def probe_datagram(self, data: bytes) -> ProbeResult:
        """Identify ``data``, one UDP datagram, as a DNS request. Never raises."""
        if len(data) < _MIN_MESSAGE or not _FLAGS_OK[data[2]] or data[3] & _Z_RCODE:
            return _NO
        opcode = _header(data, 0, _HEADER)
        if opcode < 0:
            return _NO
        pos = _question(data, 0, len(data), opcode)
        if pos < 0:
            return _NO
        if _records(data, pos, _counted(data, 0)) != len(data):
            return _NO
        return self._match

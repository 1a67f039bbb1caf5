"""QUIC probe: identify a client's first flight and learn its SNI, ALPN and JA4.

A QUIC connection opens with client Initial packets (RFC 9000 section 17.2.2)
carrying the TLS ClientHello in CRYPTO frames (RFC 9001 section 4). Initial
packets are encrypted, but with keys derived from public values only: the
version's salt and the Destination Connection ID in the clear header (RFC
9001 section 5.2). Anyone on the path can compute them, by design; this probe
does what every QUIC server does with an Initial:

1. parse the long header (version, connection IDs, token, length);
2. remove the packet protection with keys derived from the Destination
   Connection ID (:mod:`refractium.protocols.quic_initial`), so a match can
   only come from bytes encrypted with those keys;
3. read the frames (only PADDING, PING, ACK, CRYPTO and CONNECTION_CLOSE are
   allowed in an Initial, RFC 9000 section 12.4), collect the CRYPTO data by
   offset across every Initial packet of every datagram given, and parse the
   contiguous stream from offset 0 with
   :func:`~refractium.protocols.clienthello.scan_handshake`; the hello's JA4
   fingerprint (``q`` prefix) is computed when the Match's ``ja4`` is first
   read.

QUIC version 1 (RFC 9001) and version 2 (RFC 9369: another salt, "quicv2"
labels, other long packet type bits) are decrypted. A client's first
datagram in another version (a draft, or a greased version that asks the
server for Version Negotiation) matches without SNI or ALPN when its header
obeys the version-independent invariants (RFC 8999) plus what every known
version requires of a client's first packet (fixed bit, an 8 to 20 byte
Destination Connection ID) and the datagram is padded to 1200 bytes: such a
datagram is almost certainly QUIC, and the backend can answer it with a
Version Negotiation packet. Anything else that is not a decryptable client
Initial is refused. (Version 1 and 2 packets need not have the fixed bit set:
RFC 9287 lets a client clear it, and the AEAD tag authenticates the header.)

How the datagrams of a flow are read:

* The first datagram decides. If its first packet is not a well-formed client
  Initial (nor a 0-RTT packet that overtook it) that decrypts, the answer is
  NO.
* In later datagrams, and after the first packet of any datagram, a packet
  that cannot be read or authenticated is dropped with the rest of its
  datagram, as a server drops it (RFC 9000 sections 12.2 and 14.1): a stray or
  spoofed datagram cannot turn a QUIC flow into a refusal.
* A packet with a Destination Connection ID or version other than the
  first packet's is dropped the same way.
* Once a packet is authenticated its content is trusted to be what the client
  sent: a forbidden or malformed frame, or a malformed ClientHello, is a NO.

Limits, so one call does bounded work whatever it is given: the first
:data:`MAX_DATAGRAMS` datagrams and :data:`MAX_PACKETS` long-header packets
are read, at most :data:`MAX_CRYPTO_FRAMES` CRYPTO frames are kept, and no
CRYPTO data may lie beyond :data:`MAX_CRYPTO` bytes (the largest ClientHello
the TLS parser accepts). A hello still incomplete when a limit is reached is
refused rather than waited for.

The input is untrusted peer data: every length and offset read from it is
checked against the bytes present before it is used, and the cryptographic
errors are caught.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import islice
from operator import itemgetter
from struct import Struct
from typing import Final

from refractium.protocols.base import Match, ProbeResult, Transport, Verdict
from refractium.protocols.clienthello import (
    MAX_HANDSHAKE,
    HelloFields,
    Incomplete,
    Malformed,
    scan_handshake,
)
from refractium.protocols.ja4 import hello_fingerprint
from refractium.protocols.quic_initial import (
    QUIC_V1,
    QUIC_V2,
    VERSIONS,
    Drop,
    InitialProtection,
    Version,
    initial_keys,
)

__all__ = [
    "MAX_CRYPTO",
    "MAX_CRYPTO_FRAMES",
    "MAX_DATAGRAMS",
    "MAX_PACKETS",
    "MIN_INITIAL_DATAGRAM",
    "QUIC_V1",
    "QUIC_V2",
    "QuicProbe",
    "initial_keys",
    "scan_datagrams",
]

# Enum members bound once (see tls.py).
_NO: Final = Verdict.NO
_NEED_MORE: Final = Verdict.NEED_MORE
_deferred: Final = Match.deferred

MIN_INITIAL_DATAGRAM: Final = 1200
"""RFC 9000 14.1: a client pads every datagram carrying an Initial packet to at
least this size, and a server discards an Initial in a smaller one."""
MAX_DATAGRAMS: Final = 32
"""Datagrams read per call. Real first flights take 1 to 3."""
MAX_PACKETS: Final = 64
"""Long-header packets read per call, coalesced ones included."""
MAX_CRYPTO: Final = MAX_HANDSHAKE + 4
"""End of the CRYPTO data accepted: the largest ClientHello, header included."""
MAX_CRYPTO_FRAMES: Final = 256
"""CRYPTO frames kept per call. Clients that scatter the hello (Chrome) use
about ten."""

_MAX_CID: Final = 20  # RFC 9000 17.2: connection IDs of versions 1 and 2.
_MIN_CLIENT_DCID: Final = 8  # RFC 9000 7.2: a client's first DCID.
_FORM_LONG: Final = 0x80
_FIXED_BIT: Final = 0x40
_FRAME_PADDING: Final = 0x00
_FRAME_PING: Final = 0x01
_FRAME_ACK: Final = 0x02
_FRAME_ACK_ECN: Final = 0x03
_FRAME_CRYPTO: Final = 0x06
_FRAME_CONNECTION_CLOSE: Final = 0x1C

_unpack_version: Final = Struct(">I").unpack_from
_offset_of: Final = itemgetter(0)


class _Flow:
    """What one call has learnt so far: the connection and its CRYPTO data."""

    __slots__ = ("dcid", "limited", "packets", "pieces", "protection", "version")

    def __init__(self) -> None:
        self.version: Version | None = None
        self.dcid = b""
        self.protection: InitialProtection | None = None
        self.packets = 0
        self.limited = False
        self.pieces: list[tuple[int, bytes]] = []

    def bind(self, version: Version, dcid: bytes) -> None:
        """Adopt the first packet's connection: derive its keys, once."""
        self.version = version
        self.dcid = dcid
        self.protection = InitialProtection(version, dcid)


def scan_datagrams(datagrams: Sequence[bytes]) -> HelloFields | None:
    """Read a flow's first datagrams as a QUIC client's first flight.

    Returns:
        ``(sni, alpn, source)`` from the ClientHello the Initial packets carry
        (``source`` for :func:`~refractium.protocols.ja4.hello_fingerprint`), or
        ``None`` for a well-formed first packet of a version that cannot be
        decrypted (see the module documentation).

    Raises:
        Incomplete: a valid beginning; the rest of the hello is to come.
        Malformed: not a QUIC client's first flight, or over a limit.
    """
    if not datagrams:
        raise Incomplete
    flow = _Flow()
    try:
        if _datagram(flow, datagrams[0], first=True):
            return None
    except Drop:
        raise Malformed("not a QUIC client Initial") from None
    for data in islice(datagrams, 1, MAX_DATAGRAMS):
        _datagram(flow, data, first=False)
    try:
        return scan_handshake(_stream(flow.pieces))
    except Incomplete:
        if flow.limited or len(datagrams) > MAX_DATAGRAMS:
            raise Malformed("no complete hello within the limits") from None
        raise


def _datagram(flow: _Flow, d: bytes, first: bool) -> bool:
    """Read the packets of one datagram into ``flow``.

    A packet that cannot be read is dropped with the rest of the datagram,
    as a server drops it, except the first packet of the first datagram
    (``first``): without it there is nothing QUIC to go on.

    Returns:
        True only for a first packet in a version that cannot be decrypted
        but looks like QUIC (the caller matches it without SNI).

    Raises:
        Drop: the first packet of the first datagram cannot be read.
        Malformed: an authenticated packet's content is invalid.
    """
    n = len(d)
    if first and n == 0:
        raise Drop
    pos = 0
    while pos < n:
        if flow.packets >= MAX_PACKETS:
            flow.limited = True
            return False
        try:
            end = _packet(flow, d, pos, n)
        except Drop:
            if first and pos == 0:
                raise
            return False
        if end < 0:
            # A version we cannot decrypt: only a first packet can match.
            return first and pos == 0
        if end == pos:
            return False  # a short header: the rest of the datagram
        flow.packets += 1
        pos = end
    return False


def _packet(flow: _Flow, d: bytes, pos: int, n: int) -> int:
    """Read the packet at ``d[pos]``; return where it ends.

    Returns ``pos`` for a short header packet (it fills the datagram; zero
    bytes padding a datagram after its last packet read as one), and -1 for
    a well-formed long header of a version that cannot be decrypted, in a
    datagram of at least 1200 bytes.

    Raises:
        Drop: the packet cannot be read as a client packet of this flow.
        Malformed: an authenticated packet's content is invalid.
    """
    head = d[pos]
    if not head & _FORM_LONG:
        # 1-RTT: no length field, and no keys to decrypt it with.
        if pos == 0:
            raise Drop
        return pos
    if n - pos < 7:
        raise Drop
    version_number = _unpack_version(d, pos + 1)[0]
    dcid_len = d[pos + 5]
    p = pos + 6 + dcid_len
    if p >= n:
        raise Drop
    scid_len = d[p]
    p += 1 + scid_len
    if p > n or dcid_len > _MAX_CID or scid_len > _MAX_CID:
        raise Drop
    version = VERSIONS.get(version_number)
    if version is None:
        if (
            version_number != 0  # Version Negotiation: sent by servers only
            and head & _FIXED_BIT
            and dcid_len >= _MIN_CLIENT_DCID
            and n >= MIN_INITIAL_DATAGRAM
        ):
            return -1
        raise Drop
    dcid = d[pos + 6 : pos + 6 + dcid_len]
    if flow.version is None:
        if dcid_len < _MIN_CLIENT_DCID:
            raise Drop
        flow.bind(version, dcid)
    elif version is not flow.version or dcid != flow.dcid:
        # RFC 9000 12.2: packets of another connection are ignored.
        raise Drop
    kind = head >> 4 & 3
    if kind == version.initial:
        token_len, p = _varint(d, p, n)
        length, p = _varint(d, p + token_len, n)
        end = p + length
        if end > n or n < MIN_INITIAL_DATAGRAM:
            raise Drop
        protection = flow.protection
        if protection is None:  # bind() sets it before any Initial
            raise Drop
        _frames(protection.open(d, pos, p, end), flow.pieces)
        return end
    if kind == version.zero_rtt:
        # 0-RTT data cannot be decrypted here. It is skipped: coalesced after
        # the Initial, or in a datagram that overtook the Initial's.
        length, p = _varint(d, p, n)
        end = p + length
        if end > n or end == pos:
            raise Drop
        return end
    # Handshake packets follow the server's reply; Retry is sent by servers.
    raise Drop


def _frames(payload: bytes, pieces: list[tuple[int, bytes]]) -> None:
    """Read the frames of an Initial payload; append its CRYPTO data.

    Raises:
        Malformed: no frames, a frame not allowed in an Initial (RFC 9000
            12.4, Table 3; frame types must be minimally encoded), a truncated
            frame, or CRYPTO data beyond the limits.
    """
    n = len(payload)
    if n == 0:
        raise Malformed("packet without frames")  # RFC 9000 12.4
    p = 0
    try:
        while p < n:
            kind = payload[p]
            p += 1
            if kind == _FRAME_PADDING:
                p = n - len(payload[p:].lstrip(b"\x00"))
            elif kind == _FRAME_CRYPTO:
                offset, p = _varint(payload, p, n)
                length, p = _varint(payload, p, n)
                q = p + length
                if q > n:
                    raise Malformed("truncated CRYPTO frame")
                if offset + length > MAX_CRYPTO:
                    raise Malformed("CRYPTO data beyond the largest hello")
                if length:
                    if len(pieces) >= MAX_CRYPTO_FRAMES:
                        raise Malformed("too many CRYPTO frames")
                    pieces.append((offset, payload[p:q]))
                p = q
            elif kind == _FRAME_PING:
                pass
            elif kind in (_FRAME_ACK, _FRAME_ACK_ECN):
                # Largest Acknowledged, ACK Delay, ACK Range Count, First ACK
                # Range, then (Gap, ACK Range Length) per range; each varint
                # takes a byte at least, so a huge count soon runs out.
                _, p = _varint(payload, p, n)
                _, p = _varint(payload, p, n)
                ranges, p = _varint(payload, p, n)
                _, p = _varint(payload, p, n)
                if ranges > (n - p) // 2:
                    raise Malformed("truncated ACK frame")
                for _ in range(ranges * 2):
                    _, p = _varint(payload, p, n)
                if kind == _FRAME_ACK_ECN:
                    for _ in range(3):  # ECT0, ECT1, ECN-CE counts
                        _, p = _varint(payload, p, n)
            elif kind == _FRAME_CONNECTION_CLOSE:
                # Error Code, Frame Type, Reason Phrase Length, Reason Phrase.
                _, p = _varint(payload, p, n)
                _, p = _varint(payload, p, n)
                reason_len, p = _varint(payload, p, n)
                p += reason_len
                if p > n:
                    raise Malformed("truncated CONNECTION_CLOSE frame")
            else:
                raise Malformed("frame not allowed in an Initial packet")
    except Drop:
        raise Malformed("truncated frame") from None


def _varint(b: bytes, p: int, end: int) -> tuple[int, int]:
    """Read the variable-length integer (RFC 9000 16) at ``p``; before ``end``.

    Returns the value and the position after it.

    Raises:
        Drop: it does not fit before ``end``.
    """
    if p >= end:
        raise Drop
    first = b[p]
    size = 1 << (first >> 6)
    if size == 1:
        return first, p + 1
    q = p + size
    if q > end:
        raise Drop
    return int.from_bytes(b[p:q], "big") & ((1 << (8 * size - 2)) - 1), q


def _stream(pieces: list[tuple[int, bytes]]) -> bytes:
    """The CRYPTO stream's contiguous bytes from offset 0.

    Pieces may come in any order and overlap (retransmissions carry the same
    bytes, RFC 9000 2.2); a byte is taken from the first piece in offset
    order that covers it.
    """
    if len(pieces) == 1:
        offset, data = pieces[0]
        return data if offset == 0 else b""
    pieces.sort(key=_offset_of)
    buf = bytearray()
    end = 0
    for offset, data in pieces:
        if offset > end:
            break  # a gap: the rest is still to come
        stop = offset + len(data)
        if stop > end:
            buf += data[end - offset :]
            end = stop
    return bytes(buf)


class QuicProbe:
    """Matches a QUIC client's first flight; the Match carries SNI, ALPN and JA4.

    UDP engines call :meth:`probe_datagrams` with every datagram of the flow
    received so far. :meth:`probe_datagram` and :meth:`probe` take a single
    datagram.
    """

    __slots__ = ("name", "transport")

    #: Long header packets (see ``base.first_bytes``). The fixed bit is not
    #: required: RFC 9287 lets a client clear it.
    first_bytes: Final = frozenset(range(_FORM_LONG, 0x100))
    #: What a Match carries (see ``base.metadata``).
    metadata: Final = frozenset({"sni", "alpn", "ja4"})

    name: str
    transport: Transport

    def __init__(self, name: str = "quic") -> None:
        self.name = name
        self.transport = Transport.UDP

    def __repr__(self) -> str:
        return f"QuicProbe({self.name!r})"

    def probe_datagrams(self, datagrams: Sequence[bytes]) -> ProbeResult:
        """Identify a flow from its datagrams so far, in order. Never raises."""
        # Most non-QUIC traffic is decided by its first byte (a short header,
        # or not QUIC at all), before any exception is raised.
        if datagrams and (not datagrams[0] or datagrams[0][0] < _FORM_LONG):
            return _NO
        try:
            fields = scan_datagrams(datagrams)
        except Incomplete:
            return _NEED_MORE
        except Malformed:
            return _NO
        if fields is None:
            return Match(self.name)
        return _deferred(self.name, fields[0], fields[1], hello_fingerprint, fields[2])

    def probe_datagram(self, data: bytes) -> ProbeResult:
        """Identify a flow from its first datagram alone. Never raises."""
        return self.probe_datagrams((data,))

    def probe(self, data: bytes) -> ProbeResult:
        """:meth:`probe_datagram`: ``data`` is one whole datagram. Never raises."""
        return self.probe_datagrams((data,))

"""A small, fast parser for the TLS ClientHello: just enough to route on it.

It extracts what a multiplexer routes on: the server name (``server_name``
extension, RFC 6066 section 3) and the ALPN protocol list
(``application_layer_protocol_negotiation``, RFC 7301 section 3.1). The rest of
the hello (RFC 8446 section 4.1.2) is checked up to the extensions, and the
extensions are walked until both are found; the rest of the block is not read
here. What the client's JA4 fingerprint is computed from is located, not
read: :func:`~refractium.protocols.ja4.hello_fingerprint` reads it, and walks
the rest of the extensions, only when the fingerprint is asked for.

Two entry points:

* :func:`parse_client_hello` reads the TLS record layer (RFC 8446 section
  5.1) as a TCP client sends it. The caller passes every byte received so far;
  a hello split over several TCP reads is just a shorter prefix, and a
  handshake message fragmented over several consecutive handshake records is
  reassembled.
* :func:`parse_handshake` reads a bare handshake message (type, 24-bit length,
  body) with no record layer, as carried in QUIC CRYPTO frames (RFC 9001
  section 4).

Both return a :class:`ClientHello`, its fingerprint computed, or raise
:class:`Incomplete` (a valid prefix: read on) or :class:`Malformed` (can never
become a valid hello). No other exception escapes, whatever the input.
:func:`scan_client_hello` and :func:`scan_handshake` are the same parsers
returning a plain ``(sni, alpn, source)`` tuple, ``source`` being what
``hello_fingerprint`` takes, for probes that build a Match whose fingerprint
is computed when first read (:meth:`Match.deferred
<refractium.protocols.base.Match.deferred>`). A hello read from TLS records
gets a ``t`` fingerprint, a bare handshake message (QUIC's CRYPTO stream) a
``q`` one.

The input is untrusted peer data: every length read from it is checked against
the bytes actually present before it is used. This is the hot path of every
TLS connection, so fields are read in place (byte indexing, or one
``struct.unpack_from`` per group of header fields) and the common case (the
whole hello in one record) copies nothing but the SNI and ALPN.
"""

from __future__ import annotations

from dataclasses import dataclass
from struct import Struct
from typing import Final, TypeAlias

from refractium.protocols.ja4 import HelloSource, hello_fingerprint, laid_out, layouts

__all__ = [
    "MAX_HANDSHAKE",
    "ClientHello",
    "ClientHelloError",
    "HelloFields",
    "HelloSource",
    "Incomplete",
    "Malformed",
    "parse_client_hello",
    "parse_handshake",
    "scan_client_hello",
    "scan_handshake",
]

MAX_HANDSHAKE: Final = 64 * 1024
"""Largest ClientHello body accepted. Real hellos are well under 2 KiB, even
with post-quantum key shares; anything larger is refused rather than buffered."""

_CONTENT_HANDSHAKE: Final = 0x16
_HANDSHAKE_CLIENT_HELLO: Final = 1
# RFC 8446 5.1: a TLSPlaintext fragment MUST NOT exceed 2^14 bytes.
_MAX_RECORD: Final = 1 << 14
# legacy_version(2) random(32) session_id len(1) cipher_suites len(2) + one
# suite(2) compression len(1) + one method(1): the smallest valid body.
_MIN_BODY: Final = 41
_EXT_SERVER_NAME: Final = 0
_EXT_ALPN: Final = 16
_NAME_TYPE_HOST: Final = 0
_MAX_HOST_NAME: Final = 255
# Bytes allowed in a host name we hand on: printable ASCII without space.
# Anything else (controls, NUL, 8-bit) would only serve to confuse logs or
# route matching, so such a name is treated as absent.
_HOST_NAME_BYTES: Final = bytes(range(0x21, 0x7F))
# Record header (type, version, length) and handshake header (type << 24 |
# length) in one C call.
_unpack_headers: Final = Struct(">BHHI").unpack_from
# One C call reads an extension header (type, length); cheaper in CPython
# than four byte indexings and the shifts to combine them.
_unpack_ext_header: Final = Struct(">HH").unpack_from
# server_name body: list length, first name type, first name length.
_unpack_sni_header: Final = Struct(">HBH").unpack_from


class ClientHelloError(Exception):
    """Base class of the two ways parsing can fail to produce a hello."""


class Incomplete(ClientHelloError):
    """The bytes so far are a valid prefix of a ClientHello; more are needed."""


class Malformed(ClientHelloError):
    """The bytes can never become a valid ClientHello, whatever follows."""


@dataclass(frozen=True, slots=True)
class ClientHello:
    """What a ClientHello tells a router.

    Attributes:
        sni: the ``host_name`` from the server_name extension, lower-cased and
            without one trailing dot; ``None`` when absent or unusable
            (empty, longer than 255 bytes, or not printable ASCII).
        alpn: the ALPN protocol names offered, in the client's order,
            decoded as Latin-1 so every byte string maps to a ``str``.
        ja4: the JA4 fingerprint (``t`` prefix from TLS records, ``q`` from
            a bare handshake message); ``None`` when built by hand, or when
            the extensions past SNI and ALPN are malformed (see
            :func:`~refractium.protocols.ja4.hello_fingerprint`).
    """

    sni: str | None = None
    alpn: tuple[str, ...] = ()
    ja4: str | None = None


HelloFields: TypeAlias = tuple[str | None, tuple[str, ...], HelloSource]
"""``(sni, alpn, source)``: as in :class:`ClientHello`, without building the
object, and where the fingerprint's inputs are instead of the fingerprint."""

_RECORDS: Final = "t"  # JA4 prefix: TLS over TCP
_BARE: Final = "q"  # JA4 prefix: QUIC


def parse_client_hello(data: bytes) -> ClientHello:
    """Parse a ClientHello at the start of a TLS byte stream.

    ``data`` is everything the client has sent so far, starting with the
    first record header. Bytes after the end of the hello are ignored.

    Raises:
        Incomplete: ``data`` is a valid prefix; call again with more bytes.
        Malformed: ``data`` is not, and will never be, a ClientHello.
    """
    sni, alpn, source = scan_client_hello(data)
    return ClientHello(sni, alpn, hello_fingerprint(source))


def parse_handshake(msg: bytes) -> ClientHello:
    """Parse a bare ClientHello handshake message (no record layer).

    ``msg`` starts with the 4-byte handshake header (msg_type, uint24
    length), as in a QUIC CRYPTO stream. Bytes after the message are ignored.

    Raises:
        Incomplete: ``msg`` is a valid prefix; call again with more bytes.
        Malformed: ``msg`` is not, and will never be, a ClientHello.
    """
    sni, alpn, source = scan_handshake(msg)
    return ClientHello(sni, alpn, hello_fingerprint(source))


def scan_client_hello(data: bytes) -> HelloFields:
    """:func:`parse_client_hello`, returning a plain ``(sni, alpn, source)`` tuple.

    For the probes' hot path: building the frozen dataclass costs as much as
    a tenth of the parse, a probe only copies the fields into a Match, and
    the fingerprint is computed from ``source`` only if it is read.
    """
    n = len(data)
    if n >= 9:
        content, version, rec_len, hs_header = _unpack_headers(data)
        hs_len = hs_header & 0xFFFFFF
        # Fast path: a valid record header, then a whole ClientHello in that
        # one record, as every mainstream client sends it. Anything else,
        # errors included, takes the general path, which says what is wrong.
        if (
            content == _CONTENT_HANDSHAKE
            and 0x0300 <= version <= 0x0304
            and hs_header >> 24 == _HANDSHAKE_CLIENT_HELLO
            and _MIN_BODY <= hs_len <= MAX_HANDSHAKE
            and hs_len + 4 <= rec_len <= _MAX_RECORD
        ):
            end = 9 + hs_len
            if end > n:
                raise Incomplete
            return _parse_body(data, 9, end, _RECORDS)
    return _reassemble(data)


def scan_handshake(msg: bytes) -> HelloFields:
    """:func:`parse_handshake`, returning a plain ``(sni, alpn, source)`` tuple."""
    total = _handshake_total(msg)
    if total < 0 or len(msg) < total:
        raise Incomplete
    return _parse_body(msg, 4, total, _BARE)


def _record_length(data: bytes, pos: int) -> int:
    """Check the full 5-byte record header at ``pos``; return its length."""
    if data[pos] != _CONTENT_HANDSHAKE:
        # RFC 8446 5.1: handshake messages MUST NOT be interleaved with other
        # record types, so anything but a handshake record here is fatal.
        raise Malformed("not a handshake record")
    # legacy_record_version: 0x0300 (SSL 3.0) up to 0x0304 are seen in the wild.
    if data[pos + 1] != 3 or data[pos + 2] > 4:
        raise Malformed("bad record version")
    rec_len = data[pos + 3] << 8 | data[pos + 4]
    # RFC 8446 5.1: zero-length handshake fragments MUST NOT be sent.
    if rec_len == 0 or rec_len > _MAX_RECORD:
        raise Malformed("bad record length")
    return rec_len


def _check_record_prefix(data: bytes, pos: int) -> None:
    """Check the partial record header ``data[pos:]`` (fewer than 5 bytes)."""
    avail = len(data) - pos
    if avail >= 1 and data[pos] != _CONTENT_HANDSHAKE:
        raise Malformed("not a handshake record")
    if avail >= 2 and data[pos + 1] != 3:
        raise Malformed("bad record version")
    if avail >= 3 and data[pos + 2] > 4:
        raise Malformed("bad record version")
    # A length byte above 0x40 already means more than 2^14.
    if avail >= 4 and data[pos + 3] > _MAX_RECORD >> 8:
        raise Malformed("bad record length")


def _handshake_total(buf: bytes) -> int:
    """Validate the handshake header in ``buf`` as far as it goes.

    Returns the full message size (header included), or -1 when fewer than
    4 bytes are available and what is there is still valid.
    """
    n = len(buf)
    if n == 0:
        return -1
    if buf[0] != _HANDSHAKE_CLIENT_HELLO:
        raise Malformed("not a ClientHello")
    if n < 4:
        # The top length byte alone can already exceed the cap.
        if n >= 2 and buf[1] > MAX_HANDSHAKE >> 16:
            raise Malformed("handshake length out of range")
        return -1
    hs_len = buf[1] << 16 | buf[2] << 8 | buf[3]
    if hs_len < _MIN_BODY or hs_len > MAX_HANDSHAKE:
        raise Malformed("handshake length out of range")
    return hs_len + 4


def _reassemble(data: bytes) -> HelloFields:
    """Slow path: concatenate handshake fragments from consecutive records."""
    n = len(data)
    buf = b""
    pos = 0
    while True:
        if n - pos < 5:
            _check_record_prefix(data, pos)
            _handshake_total(buf)
            raise Incomplete
        stop = pos + 5 + _record_length(data, pos)
        # Slicing clamps at the end of data, so a truncated record simply
        # contributes what has arrived.
        buf += data[pos + 5 : stop]
        total = _handshake_total(buf)
        if 0 <= total <= len(buf):
            return _parse_body(buf, 4, total, _RECORDS)
        if stop >= n:
            raise Incomplete
        pos = stop


def _parse_body(b: bytes, p: int, end: int, prefix: str) -> HelloFields:
    """Parse the ClientHello body ``b[p:end]`` (RFC 8446 4.1.2).

    The whole body is present, so any field overrunning ``end`` is Malformed.
    ``prefix`` is the JA4 transport letter.
    """
    # legacy_version(2) + random(32) + legacy_session_id length(1).
    if p + 35 > end:
        raise Malformed("short hello")
    if b[p] != 3:
        raise Malformed("bad legacy_version")
    legacy_version = 0x0300 | b[p + 1]
    p += 34
    sid_len = b[p]
    if sid_len > 32:
        raise Malformed("bad session id length")
    p += 1 + sid_len
    if p + 2 > end:
        raise Malformed("truncated cipher suites")
    cs_len = b[p] << 8 | b[p + 1]
    if cs_len < 2 or cs_len & 1:
        raise Malformed("bad cipher suites length")
    cs_start = p + 2
    p = cs_start + cs_len
    if p + 1 > end:
        raise Malformed("truncated compression methods")
    comp_len = b[p]
    if comp_len == 0:
        raise Malformed("no compression method")
    p += 1 + comp_len
    if p == end:
        # TLS 1.2 and earlier may omit the extensions block altogether.
        return (
            None,
            (),
            (b, end, end, prefix, legacy_version, cs_start, cs_start + cs_len, (), None),
        )
    if p + 2 > end:
        raise Malformed("truncated extensions")
    # Extensions are the last field: they must fill the body exactly.
    if p + 2 + (b[p] << 8 | b[p + 1]) != end:
        raise Malformed("bad extensions length")
    p += 2
    start = p
    cs_end = cs_start + cs_len
    sni: str | None = None
    alpn: tuple[str, ...] = ()
    if layouts:
        # Where fingerprints are read, a hello laid out like one seen before
        # is checked in one struct call instead of walked (see ja4.Layout).
        layout = laid_out(b, p)
        if layout is not None:
            sni_at, alpn_at = layout.names
            if sni_at is not None:
                sni = _parse_server_name(b, p + sni_at[0], p + sni_at[1])
            if alpn_at is not None:
                alpn = _parse_alpn(b, p + alpn_at[0], p + alpn_at[1])
            return sni, alpn, (b, p, end, prefix, legacy_version, cs_start, cs_end, alpn, layout)

    seen_sni = seen_alpn = False
    last_header = end - 4
    while p < end:
        if p > last_header:
            raise Malformed("truncated extension header")
        ext_type, size = _unpack_ext_header(b, p)
        p += 4
        q = p + size
        if q > end:
            raise Malformed("extension overruns the hello")
        if ext_type == _EXT_SERVER_NAME:
            # RFC 8446 4.2: no two extensions of the same type. A repeated
            # SNI is also a classic way to make a router and the server see
            # different names, so one seen before the walk stops is refused
            # (after it, the backend's TLS stack refuses it; see below).
            if seen_sni:
                raise Malformed("duplicate server_name")
            seen_sni = True
            sni = _parse_server_name(b, p, q)
        elif ext_type == _EXT_ALPN:
            if seen_alpn:
                raise Malformed("duplicate ALPN")
            seen_alpn = True
            alpn = _parse_alpn(b, p, q)
        p = q
        if seen_sni and seen_alpn:
            # All we route on is known: the rest is not read (about half the
            # walk). A duplicate further on cannot mislead a backend: RFC 8446
            # 4.2 makes its TLS stack abort a hello that repeats an extension.
            # The fingerprint, if asked for, walks it (and is None then).
            break
    return sni, alpn, (b, start, end, prefix, legacy_version, cs_start, cs_end, alpn, None)


def _parse_server_name(b: bytes, p: int, end: int) -> str | None:
    """Parse a server_name extension body (RFC 6066 section 3).

    Structural errors are Malformed; an unusable name is just ``None``.
    """
    size = end - p
    if size >= 5:
        # Fast path: the one host_name entry every client sends.
        list_len, name_type, name_len = _unpack_sni_header(b, p)
        if name_type == _NAME_TYPE_HOST and list_len == size - 2 and name_len == size - 5:
            return _host_name(b[p + 5 : end])
    if size < 2:
        raise Malformed("truncated server_name")
    list_end = p + 2 + (b[p] << 8 | b[p + 1])
    # ServerNameList server_name_list<1..2^16-1>, filling the extension.
    if list_end != end or list_end == p + 2:
        raise Malformed("bad server_name list length")
    p += 2
    raw: bytes | None = None
    while p < list_end:
        if p + 3 > list_end:
            raise Malformed("truncated server name entry")
        name_type = b[p]
        q = p + 3 + (b[p + 1] << 8 | b[p + 2])
        if q > list_end:
            raise Malformed("server name overruns the list")
        if name_type == _NAME_TYPE_HOST:
            # RFC 6066 3: at most one name of each type.
            if raw is not None:
                raise Malformed("duplicate host_name")
            raw = b[p + 3 : q]
        # Other name types were never defined; RFC 6066 gives them the same
        # 2-byte length prefix, so they are skipped.
        p = q
    return None if raw is None else _host_name(raw)


def _host_name(raw: bytes) -> str | None:
    """Normalise a host_name: strip one trailing dot, lower-case, or None."""
    if raw and raw[-1] == 0x2E:  # "."
        raw = raw[:-1]
    if not raw or len(raw) > _MAX_HOST_NAME:
        return None
    # translate() with a delete table leaves only the disallowed bytes.
    if raw.translate(None, _HOST_NAME_BYTES):
        return None
    return raw.lower().decode("ascii")


def _parse_alpn(b: bytes, p: int, end: int) -> tuple[str, ...]:
    """Parse an ALPN extension body (RFC 7301 section 3.1)."""
    if p + 2 > end:
        raise Malformed("truncated ALPN")
    list_end = p + 2 + (b[p] << 8 | b[p + 1])
    # ProtocolNameList protocol_name_list<2..2^16-1>, filling the extension.
    if list_end != end or list_end == p + 2:
        raise Malformed("bad ALPN list length")
    p += 2
    names: list[str] = []
    while p < list_end:
        q = p + 1 + b[p]
        # RFC 7301 3.1: empty strings MUST NOT be included.
        if q == p + 1 or q > list_end:
            raise Malformed("bad ALPN protocol name")
        names.append(b[p + 1 : q].decode("latin-1"))
        p = q
    return tuple(names)

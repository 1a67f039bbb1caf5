"""A small, fast parser for the TLS ClientHello: just enough to route on it.

It extracts what a multiplexer routes on: the server name (``server_name``
extension, RFC 6066 section 3), the ALPN protocol list
(``application_layer_protocol_negotiation``, RFC 7301 section 3.1) and the
client's JA4 fingerprint (:mod:`refractium.protocols.ja4`). The rest of the
hello (RFC 8446 section 4.1.2) is walked to find the extensions and to check
that it is well formed; on the way the parser keeps what JA4 is computed
from (the cipher suites, the extension types in order, supported_versions
and signature_algorithms).

Two entry points:

* :func:`parse_client_hello` reads the TLS record layer (RFC 8446 section
  5.1) as a TCP client sends it. The caller passes every byte received so far;
  a hello split over several TCP reads is just a shorter prefix, and a
  handshake message fragmented over several consecutive handshake records is
  reassembled.
* :func:`parse_handshake` reads a bare handshake message (type, 24-bit length,
  body) with no record layer, as carried in QUIC CRYPTO frames (RFC 9001
  section 4).

Both return a :class:`ClientHello` or raise :class:`Incomplete` (a valid
prefix: read on) or :class:`Malformed` (can never become a valid hello). No
other exception escapes, whatever the input. :func:`scan_client_hello` and
:func:`scan_handshake` are the same parsers returning a plain ``(sni, alpn,
ja4)`` tuple, for probes that only copy the fields into a Match. A hello read
from TLS records gets a ``t`` fingerprint, a bare handshake message (QUIC's
CRYPTO stream) a ``q`` one.

The input is untrusted peer data: every length read from it is checked against
the bytes actually present before it is used. This is the hot path of every
TLS connection, so fields are read in place (byte indexing, or one
``struct.unpack_from`` per group of header fields), the common case (the
whole hello in one record) copies nothing but the SNI, ALPN and JA4 inputs,
and a hello laid out like one seen before skips the extension walk (see
:class:`_Layout`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise
from struct import Struct
from struct import error as StructError
from typing import Final, TypeAlias

from refractium.protocols.ja4 import GREASE, fingerprint

__all__ = [
    "MAX_HANDSHAKE",
    "ClientHello",
    "ClientHelloError",
    "HelloFields",
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
_EXT_SIGNATURE_ALGORITHMS: Final = 13
_EXT_SUPPORTED_VERSIONS: Final = 43
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
            a bare handshake message); ``None`` only when built by hand.
    """

    sni: str | None = None
    alpn: tuple[str, ...] = ()
    ja4: str | None = None


HelloFields: TypeAlias = tuple[str | None, tuple[str, ...], str]
"""``(sni, alpn, ja4)``, as in :class:`ClientHello`, without building the object."""

_RECORDS: Final = "t"  # JA4 prefix: TLS over TCP
_BARE: Final = "q"  # JA4 prefix: QUIC

# Where an extension's body starts and ends, from the first extension header.
_Span: TypeAlias = tuple[int, int]
_Headers: TypeAlias = tuple[int, ...]


class _Layout:
    """Where the extensions of one kind of hello are.

    A client build sends the same extensions with the same lengths to a
    given server name every time (but for those that shuffle them). Once a
    hello has been walked, the next one with the same block length and first
    extension header is checked against its layout with one ``struct`` call
    reading every extension header at once: when all match, the walk (about
    0.1 us per extension) is skipped and its result reused.
    """

    __slots__ = ("headers", "last", "read", "types", "unpack")

    def __init__(self, types: tuple[int, ...], read: tuple[_Span | None, ...]) -> None:
        self.types = types
        #: server_name, ALPN, supported_versions, signature_algorithms.
        self.read = read
        self.unpack: Callable[[bytes, int], tuple[int, ...]] | None = None
        #: Every (type, length) pair in order, as ``unpack`` returns them.
        self.headers: _Headers = ()
        #: The last hello's other JA4 inputs and its fingerprint, replaced
        #: as one so a reader never pairs one hello's inputs with another's.
        self.last: tuple[tuple[object, ...], str] = ((), "")


# Layouts kept, by the bytes ahead of the first extension's body. Emptied
# when full: a stream of made-up hellos costs a walk each, as without it.
# Real hellos have about 10 to 25 extensions and under 512 bytes of cipher
# suites; larger ones are walked every time, so no entry holds much memory.
_LAYOUTS: Final = 1024
_LAID_OUT_EXTENSIONS: Final = 64
_KEPT_CIPHERS: Final = 512
_layouts: dict[bytes, _Layout] = {}


def parse_client_hello(data: bytes) -> ClientHello:
    """Parse a ClientHello at the start of a TLS byte stream.

    ``data`` is everything the client has sent so far, starting with the
    first record header. Bytes after the end of the hello are ignored.

    Raises:
        Incomplete: ``data`` is a valid prefix; call again with more bytes.
        Malformed: ``data`` is not, and will never be, a ClientHello.
    """
    sni, alpn, ja4 = scan_client_hello(data)
    return ClientHello(sni, alpn, ja4)


def parse_handshake(msg: bytes) -> ClientHello:
    """Parse a bare ClientHello handshake message (no record layer).

    ``msg`` starts with the 4-byte handshake header (msg_type, uint24
    length), as in a QUIC CRYPTO stream. Bytes after the message are ignored.

    Raises:
        Incomplete: ``msg`` is a valid prefix; call again with more bytes.
        Malformed: ``msg`` is not, and will never be, a ClientHello.
    """
    sni, alpn, ja4 = scan_handshake(msg)
    return ClientHello(sni, alpn, ja4)


def scan_client_hello(data: bytes) -> HelloFields:
    """:func:`parse_client_hello`, returning a plain ``(sni, alpn, ja4)`` tuple.

    For the probes' hot path: building the frozen dataclass costs as much as
    a tenth of the parse, and a probe only copies the fields into a Match.
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
    """:func:`parse_handshake`, returning a plain ``(sni, alpn, ja4)`` tuple."""
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
    p += 2
    ciphers = b[p : p + cs_len]
    p += cs_len
    if p + 1 > end:
        raise Malformed("truncated compression methods")
    comp_len = b[p]
    if comp_len == 0:
        raise Malformed("no compression method")
    p += 1 + comp_len
    if p == end:
        # TLS 1.2 and earlier may omit the extensions block altogether.
        return None, (), fingerprint(prefix, legacy_version, ciphers, (), None, b"", ())
    if p + 2 > end:
        raise Malformed("truncated extensions")
    # Extensions are the last field: they must fill the body exactly.
    if p + 2 + (b[p] << 8 | b[p + 1]) != end:
        raise Malformed("bad extensions length")
    # The block's length and first extension header: what tells one
    # client's hellos (to a given server name) from others.
    key = b[p : p + 6]
    p += 2
    layout = _layouts.get(key)
    if layout is None or layout.unpack is None or layout.unpack(b, p) != layout.headers:
        layout = _walk(b, p, end, key)
    sni_at, alpn_at, versions_at, sig_at = layout.read
    sni = None if sni_at is None else _parse_server_name(b, p + sni_at[0], p + sni_at[1])
    alpn = () if alpn_at is None else _parse_alpn(b, p + alpn_at[0], p + alpn_at[1])
    # supported_versions: a uint8 length, then 2-byte versions (RFC 8446
    # 4.2.1); signature_algorithms: a uint16 length, then 2-byte schemes
    # (4.2.3). JA4 reads what is there; the backend's TLS stack judges it.
    versions = None if versions_at is None else b[p + versions_at[0] + 1 : p + versions_at[1]]
    sig_algs = b"" if sig_at is None else b[p + sig_at[0] + 2 : p + sig_at[1]]
    # The fingerprint depends on nothing else: a client repeating itself
    # gets the one computed for its previous hello.
    fields = (prefix, legacy_version, ciphers, versions, sig_algs, alpn)
    last_fields, ja4 = layout.last
    if fields != last_fields:
        ja4 = fingerprint(prefix, legacy_version, ciphers, layout.types, versions, sig_algs, alpn)
        if len(ciphers) <= _KEPT_CIPHERS:
            layout.last = (fields, ja4)
    return sni, alpn, ja4


def _walk(b: bytes, p: int, end: int, key: bytes) -> _Layout:
    """Walk the extension entries ``b[p:end]``; keep their layout under ``key``.

    Every extension is visited, its type kept in order for JA4; the bodies of
    server_name, ALPN, supported_versions and signature_algorithms are only
    located here and read by the caller.
    """
    start = p
    types: list[int] = []
    starts: list[int] = []
    append_type = types.append
    append_start = starts.append
    # The loop only records: each extension costs two appends and one C
    # call. Overruns show as a final position past ``end``.
    try:
        while p < end:
            ext_type, size = _unpack_ext_header(b, p)
            append_type(ext_type)
            append_start(p)
            p += 4 + size
    except StructError:
        raise Malformed("truncated extension header") from None
    if p != end:
        raise Malformed("extension overruns the hello")
    starts.append(end)
    # RFC 8446 4.2: no two extensions of the same type. A repeated SNI is
    # also a classic way to make a router and the server see different
    # names, so one is refused (and a repeated ALPN list with it).
    count = types.count
    if count(_EXT_SERVER_NAME) > 1 or count(_EXT_ALPN) > 1:
        raise Malformed("duplicate extension")
    # Unrolled: these few lines run for every hello not laid out before.
    index = types.index
    sni_at = alpn_at = versions_at = sig_at = None
    if _EXT_SERVER_NAME in types:
        i = index(_EXT_SERVER_NAME)
        sni_at = (starts[i] + 4 - start, starts[i + 1] - start)
    if _EXT_ALPN in types:
        i = index(_EXT_ALPN)
        alpn_at = (starts[i] + 4 - start, starts[i + 1] - start)
    if _EXT_SUPPORTED_VERSIONS in types:
        i = index(_EXT_SUPPORTED_VERSIONS)
        versions_at = (starts[i] + 4 - start, starts[i + 1] - start)
    if _EXT_SIGNATURE_ALGORITHMS in types:
        i = index(_EXT_SIGNATURE_ALGORITHMS)
        sig_at = (starts[i] + 4 - start, starts[i + 1] - start)
    layout = _Layout(tuple(types), (sni_at, alpn_at, versions_at, sig_at))
    # A client that sends GREASE values (BoringSSL: Chrome and others) also
    # shuffles its extensions, so its layout never repeats: it is not kept.
    if len(types) <= _LAID_OUT_EXTENSIONS and GREASE.isdisjoint(types):
        layout.unpack, layout.headers = _shape(types, starts)
        if len(_layouts) >= _LAYOUTS:
            _layouts.clear()
        _layouts[key] = layout
    return layout


def _shape(
    types: list[int], starts: list[int]
) -> tuple[Callable[[bytes, int], _Headers], _Headers]:
    """One struct reading every extension header at once, and what it must read.

    ``starts`` holds where each extension starts, then the end of the block.
    """
    sizes = [q - p - 4 for p, q in pairwise(starts)]
    fmt = ">" + "".join(f"HH{size}x" for size in sizes)
    headers = tuple(value for pair in zip(types, sizes, strict=True) for value in pair)
    return Struct(fmt).unpack_from, headers


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

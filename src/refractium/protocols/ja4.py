"""JA4: the client fingerprint of a TLS ClientHello (FoxIO's JA4 specification).

A JA4 fingerprint such as ``t13d1516h2_8daaf6152771_e5627efa2ab1`` has three
parts, joined by ``_``:

* **a**: the transport (``t`` for TLS over TCP, ``q`` for QUIC), the TLS
  version (the highest ``supported_versions`` entry, else the hello's
  legacy_version: ``13``, ``12``, ``11``, ``10``, ``s3``, ``s2``, ``00`` when
  unknown), ``d`` when a server_name extension is present else ``i``, the
  number of cipher suites and of extensions (two digits each, at most 99),
  and the first and last characters of the first ALPN value (``00`` without
  one; the first and last hex digits of the value when either character is
  not an ASCII letter or digit);
* **b**: the first 12 hex digits of the SHA-256 of the cipher suites, as
  4-digit lower-case hex sorted and comma-separated (``000000000000`` when
  there are none);
* **c**: the same hash of the extension types sorted, without server_name
  (0x0000) and ALPN (0x0010), then ``_`` and the signature algorithms in the
  order sent (no ``_`` when there are none); ``000000000000`` when the
  sorted list is empty.

GREASE values (RFC 8701: 0x0A0A, 0x1A1A ... 0xFAFA) are left out everywhere:
cipher suites, extension types, supported versions, signature algorithms and
ALPN identifiers.

Two entry points. :func:`fingerprint` computes it from the fields, already
taken out of a hello. :func:`hello_fingerprint` computes it from a hello the
parser has identified (:mod:`refractium.protocols.clienthello`), when a
:class:`~refractium.protocols.base.Match`'s ``ja4`` is first read: the parser
only walks the extensions up to SNI and ALPN, so this walks the whole block
for the extension types, supported_versions and signature_algorithms, and
answers ``None`` when the part the parser did not need is malformed.

Neither is cheap (a client never seen costs about 20 us: two SHA-256 hashes,
and a layout's ``struct`` compiled; a Chrome hello about 5 us, its extensions
walked every time), so what repeats is kept, in small bounded tables. The two
hashes depend only on what a client build sends the same way every time (its
cipher suites; its extension types and signature algorithms): a client seen
before costs dictionary look-ups, an unknown one the full computation. GREASE
values are normalised out of the keys (BoringSSL clients pick new ones per
connection). A hello laid out like one seen before is checked against that
layout in one ``struct`` call instead of walked, and reuses the fingerprint of
the last such hello (:class:`Layout`); the parser checks a hello against them
too, before walking it for SNI and ALPN.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from hashlib import sha256
from itertools import filterfalse, pairwise
from struct import Struct
from struct import error as StructError
from typing import Final, TypeAlias, TypeVar

__all__ = [
    "GREASE",
    "HelloSource",
    "Layout",
    "fingerprint",
    "hello_fingerprint",
    "laid_out",
    "layouts",
]

_K = TypeVar("_K")
_V = TypeVar("_V")

GREASE: Final = frozenset(0x0A0A + 0x1010 * i for i in range(16))
"""The 16 reserved GREASE values (RFC 8701 section 2), as 16-bit integers."""

_is_grease: Final = GREASE.__contains__
_GREASE_HEX: Final = frozenset(f"{v:04x}" for v in GREASE)
# What a GREASE value at the head of a list is replaced with in table keys.
_ONE_GREASE: Final = b"\x0a\x0a"
# RFC 8701 section 3: the GREASE ALPN identifiers are these two-byte names.
_GREASE_ALPN: Final = frozenset(chr(v >> 8) * 2 for v in GREASE)
_VERSIONS: Final = {
    0x0304: "13",
    0x0303: "12",
    0x0302: "11",
    0x0301: "10",
    0x0300: "s3",
    0x0002: "s2",
    0xFEFF: "d1",
    0xFEFD: "d2",
    0xFEFC: "d3",
}
_ALNUM: Final = frozenset("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_EXT_SERVER_NAME: Final = 0x0000
_EXT_ALPN: Final = 0x0010
_EMPTY_HASH: Final = "000000000000"
# "00" .. "99": cheaper than formatting a count per hello.
_TWO_DIGITS: Final = tuple(f"{i:02d}" for i in range(100))
# Entries kept per table before it is emptied. A client build always yields
# the same keys, so a handful of entries serve a busy port; the bound keeps a
# stream of made-up hellos from growing the tables.
_TABLE_SIZE: Final = 1024
# Larger inputs (no real client's) are hashed every time rather than kept.
_KEPT_BYTES: Final = 512
_KEPT_EXTENSIONS: Final = 64

# cipher suite bytes -> "NN_hash" (the count and part b).
_ciphers_table: dict[bytes, str] = {}
# (sorted extension types, signature algorithm bytes) -> part c.
_extensions_table: dict[tuple[tuple[int, ...], bytes], str] = {}
# supported_versions content -> its highest version (-1: none but GREASE).
_versions_table: dict[bytes, int] = {}
# ALPN names offered -> the two ALPN characters.
_alpn_table: dict[tuple[str, ...], str] = {}
# Every input of fingerprint() (GREASE out of the types, a leading GREASE
# value normalised in the ciphers and versions) -> the fingerprint. The
# tables above serve a client seen before with, say, another ALPN list.
_fingerprints: dict[
    tuple[str, int, bytes, tuple[int, ...], bytes | None, bytes, tuple[str, ...]], str
] = {}


def fingerprint(
    prefix: str,
    legacy_version: int,
    ciphers: bytes,
    extensions: Sequence[int],
    versions: bytes | None,
    signature_algorithms: bytes,
    alpn: tuple[str, ...],
) -> str:
    """The JA4 fingerprint of one ClientHello, from the fields it carries.

    Args:
        prefix: ``"t"`` (TLS over TCP) or ``"q"`` (QUIC).
        legacy_version: the hello's legacy_version field.
        ciphers: the cipher_suites vector's content (2 bytes per suite).
        extensions: every extension type in the order sent (GREASE included).
        versions: the supported_versions extension's list content (2 bytes
            per version), or ``None`` when the extension is absent.
        signature_algorithms: the signature_algorithms extension's list
            content (2 bytes per scheme); empty when absent.
        alpn: the ALPN protocol names offered, Latin-1 decoded, in order.
    """
    if GREASE.isdisjoint(extensions):
        kept = sorted(extensions)
    else:
        # In C: no interpreted loop over the types (BoringSSL sends two
        # GREASE extensions, first and last, at random values).
        kept = sorted(filterfalse(_is_grease, extensions))
    key_b = _without_first_grease(ciphers)
    if versions:
        versions = _without_first_grease(versions)
    # Everything the result depends on, GREASE left out or normalised: a
    # client seen before costs this one look-up, whatever its GREASE.
    key = (prefix, legacy_version, key_b, tuple(kept), versions, signature_algorithms, alpn)
    ja4 = _fingerprints.get(key)
    if ja4 is None:
        ja4 = _compute(prefix, legacy_version, key_b, kept, versions, signature_algorithms, alpn)
        if (
            len(kept) <= _KEPT_EXTENSIONS
            and len(key_b) + len(signature_algorithms) + len(versions or b"") <= _KEPT_BYTES
            and len(alpn) <= _KEPT_EXTENSIONS
        ):
            _remember(_fingerprints, key, ja4)
    return ja4


def _compute(
    prefix: str,
    legacy_version: int,
    ciphers: bytes,
    kept: list[int],
    versions: bytes | None,
    signature_algorithms: bytes,
    alpn: tuple[str, ...],
) -> str:
    """:func:`fingerprint`, the extension types sorted and without GREASE."""
    count = len(kept)
    # Sorted, a server_name extension (type 0) can only be first.
    server_name = count > 0 and kept[0] == _EXT_SERVER_NAME
    part_b = _ciphers_table.get(ciphers)
    if part_b is None:
        part_b = _cipher_part(ciphers)
        if len(ciphers) <= _KEPT_BYTES:
            _remember(_ciphers_table, ciphers, part_b)
    key = (tuple(kept), signature_algorithms)
    part_c = _extensions_table.get(key)
    if part_c is None:
        part_c = _extension_part(kept, signature_algorithms)
        if count <= _KEPT_EXTENSIONS and len(signature_algorithms) <= _KEPT_BYTES:
            _remember(_extensions_table, key, part_c)
    if versions:
        highest = _versions_table.get(versions)
        if highest is None:
            highest = _highest(versions)
            if len(versions) <= _KEPT_BYTES:
                _remember(_versions_table, versions, highest)
        if highest >= 0:
            legacy_version = highest
    version = _VERSIONS.get(legacy_version, "00")
    chars = _alpn_table.get(alpn)
    if chars is None:
        chars = _alpn_chars(alpn)
        if len(alpn) <= _KEPT_EXTENSIONS:
            _remember(_alpn_table, alpn, chars)
    return (
        f"{prefix}{version}{'d' if server_name else 'i'}"
        f"{part_b[:2]}{_TWO_DIGITS[min(count, 99)]}{chars}_{part_b[3:]}_{part_c}"
    )


def _without_first_grease(values: bytes) -> bytes:
    """``values`` (2 bytes each) with a leading GREASE value made ``0x0A0A``.

    The key under which the values' part of the fingerprint is kept.
    BoringSSL (Chrome) puts a GREASE value first in its cipher suites and
    supported versions, a new one on every connection; GREASE is left out
    of the fingerprint, so any GREASE value there gives the same result, and
    one key serves them all. (GREASE elsewhere in the list stays in the key:
    still correct, only kept once per value.)
    """
    if len(values) >= 2:
        first = values[0]
        # 0x0A0A itself is left as it is: it already is the key's.
        if first == values[1] and first & 0x0F == 0x0A and first != 0x0A:
            return _ONE_GREASE + values[2:]
    return values


def _highest(versions: bytes) -> int:
    """The highest non-GREASE 2-byte value in ``versions``; -1 when none."""
    best = -1
    for i in range(0, len(versions) - 1, 2):
        v = versions[i] << 8 | versions[i + 1]
        if v > best and v not in GREASE:
            best = v
    return best


def _remember(table: dict[_K, _V], key: _K, value: _V) -> None:
    """Store ``value`` under ``key``, emptying a full table first."""
    if len(table) >= _TABLE_SIZE:
        table.clear()
    table[key] = value


def _hash12(text: str) -> str:
    return sha256(text.encode("ascii")).hexdigest()[:12]


def _hex_list(raw: bytes) -> list[str]:
    """2-byte values as 4-digit lower-case hex, in order, GREASE left out."""
    values = raw[: len(raw) & ~1].hex(",", 2).split(",") if len(raw) >= 2 else []
    if not _GREASE_HEX.isdisjoint(values):
        values = [v for v in values if v not in _GREASE_HEX]
    return values


def _cipher_part(ciphers: bytes) -> str:
    """``"NN_hash"``: the suite count (two digits) and part b."""
    suites = _hex_list(ciphers)
    if not suites:
        return f"00_{_EMPTY_HASH}"
    # Sorting the 4-digit lower-case hex strings sorts the values.
    suites.sort()
    return f"{_TWO_DIGITS[min(len(suites), 99)]}_{_hash12(','.join(suites))}"


def _extension_part(extensions: list[int], signature_algorithms: bytes) -> str:
    """Part c, from the sorted non-GREASE extension types."""
    kept = [f"{t:04x}" for t in extensions if t != _EXT_SERVER_NAME and t != _EXT_ALPN]
    if not kept:
        return _EMPTY_HASH
    text = ",".join(kept)
    schemes = _hex_list(signature_algorithms)
    if schemes:
        text += "_" + ",".join(schemes)
    return _hash12(text)


def _alpn_chars(alpn: tuple[str, ...]) -> str:
    """The first and last characters of the first (non-GREASE) ALPN value."""
    for name in alpn:
        if name not in _GREASE_ALPN:
            break
    else:
        return "00"
    if not name:
        return "00"
    first, last = name[0], name[-1]
    if first in _ALNUM and last in _ALNUM:
        return first + last
    digits = name.encode("latin-1").hex()
    return digits[0] + digits[-1]


# --- from a ClientHello the parser identified ---------------------------------

HelloSource: TypeAlias = tuple[
    bytes, int, int, str, int, int, int, tuple[str, ...], "Layout | None"
]
"""Where a parsed ClientHello's JA4 inputs are, for :func:`hello_fingerprint`.

``(buffer, start, end, prefix, legacy_version, ciphers_start, ciphers_end,
alpn, layout)``: the extension entries are ``buffer[start:end]`` (empty when
the hello has no extensions block), the cipher suites ``buffer[ciphers_start:
ciphers_end]``; ``prefix`` is ``"t"`` or ``"q"``, ``alpn`` the names the parser
read, ``layout`` the one the parser found the hello laid out as (see
:func:`laid_out`), if any. Everything before ``start`` has been checked by
the parser.
"""

_EXT_SIGNATURE_ALGORITHMS: Final = 13
_EXT_SUPPORTED_VERSIONS: Final = 43
# Where an extension's body starts and ends, from the first extension header.
_Span: TypeAlias = tuple[int, int]
_Headers: TypeAlias = tuple[int, ...]
# What a walk finds: every extension type in order, and where the bodies of
# supported_versions and signature_algorithms are.
_Walked: TypeAlias = tuple[tuple[int, ...], _Span | None, _Span | None]
# One C call reads an extension header (type, length).
_unpack_ext_header: Final = Struct(">HH").unpack_from


class Layout:
    """Where the extensions of one kind of hello are.

    A client build sends the same extensions with the same lengths to a
    given server name every time (but for those that shuffle them). Once a
    hello has been walked here, the next one with the same block length and
    first extension header is checked against its layout with one ``struct``
    call reading every extension header at once (:func:`laid_out`): when all
    match, no walk is needed, neither the parser's for SNI and ALPN nor this
    module's, and the fingerprint of the last such hello is reused.

    Attributes:
        names: where the server_name and ALPN bodies are (start and end,
            from the first extension header), each ``None`` when absent.
    """

    __slots__ = ("headers", "last", "names", "unpack", "walked")

    def __init__(
        self,
        walked: _Walked,
        names: tuple[_Span | None, _Span | None],
        unpack: Callable[[bytes, int], _Headers],
        headers: _Headers,
    ) -> None:
        self.walked = walked
        self.names = names
        self.unpack = unpack
        #: Every (type, length) pair in order, as ``unpack`` returns them.
        self.headers = headers
        #: The last hello's other JA4 inputs and its fingerprint, replaced
        #: as one so a reader never pairs one hello's inputs with another's.
        self.last: tuple[tuple[object, ...], str] = ((), "")


# Layouts kept, by the bytes ahead of the first extension's body. Emptied
# when full: a stream of made-up hellos costs a walk each, as without it.
# Real hellos have about 10 to 25 extensions and under 512 bytes of cipher
# suites; larger ones are walked every time, so no entry holds much memory.
_MAX_LAYOUTS: Final = 1024
_LAID_OUT_EXTENSIONS: Final = 64
layouts: Final[dict[bytes, Layout]] = {}
"""The layouts kept, by the block length and first extension header. Only a
fingerprint computation adds to it: empty where no fingerprint is read, so
the parser, which tests it before calling :func:`laid_out`, costs the same
as without JA4."""


def laid_out(b: bytes, p: int) -> Layout | None:
    """The layout of the extension entries from ``b[p]``, if one seen before.

    ``b[p - 2 : p]`` is the extensions block's length, and the block is
    present in full (the caller checked it). A layout returned has been
    checked against every extension header of the block.
    """
    layout = layouts.get(b[p - 2 : p + 4])
    if layout is not None and layout.unpack(b, p) == layout.headers:
        return layout
    return None


def hello_fingerprint(source: HelloSource) -> str | None:
    """The JA4 fingerprint of a hello the parser identified; never raises.

    ``None`` when its extensions block, past the SNI and ALPN the parser
    stopped at, is malformed or repeats server_name or ALPN (RFC 8446 4.2:
    the backend's TLS stack refuses such a hello).
    """
    b, p, end, prefix, legacy_version, cs_start, cs_end, alpn, layout = source
    ciphers = b[cs_start:cs_end]
    if p == end:
        # No extensions (TLS 1.2 and earlier may omit the block).
        return fingerprint(prefix, legacy_version, ciphers, (), None, b"", alpn)
    if layout is None:
        layout = laid_out(b, p)
    if layout is not None:
        types, versions_at, sig_at = layout.walked
    else:
        walked = _walk(b, p, end)
        if walked is None:
            return None
        types, versions_at, sig_at = walked
    # supported_versions: a uint8 length, then 2-byte versions (RFC 8446
    # 4.2.1); signature_algorithms: a uint16 length, then 2-byte schemes
    # (4.2.3). JA4 reads what is there; the backend's TLS stack judges it.
    versions = None if versions_at is None else b[p + versions_at[0] + 1 : p + versions_at[1]]
    sig_algs = b"" if sig_at is None else b[p + sig_at[0] + 2 : p + sig_at[1]]
    if layout is None:
        return fingerprint(prefix, legacy_version, ciphers, types, versions, sig_algs, alpn)
    # The fingerprint depends on nothing else: a client repeating itself
    # gets the one computed for its previous hello, without the sort and
    # look-up of fingerprint().
    fields = (prefix, legacy_version, ciphers, versions, sig_algs, alpn)
    last_fields, ja4 = layout.last
    if fields != last_fields:
        ja4 = fingerprint(prefix, legacy_version, ciphers, types, versions, sig_algs, alpn)
        if len(ciphers) <= _KEPT_BYTES:
            layout.last = (fields, ja4)
    return ja4


def _walk(b: bytes, p: int, end: int) -> _Walked | None:
    """Walk the extension entries ``b[p:end]``; keep their layout.

    Every extension is visited, its type kept in order; the bodies of
    supported_versions and signature_algorithms are only located here.
    ``None`` when the entries do not fill the block exactly, or repeat
    server_name or ALPN.
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
        return None
    if p != end:
        return None
    starts.append(end)
    # RFC 8446 4.2: no two extensions of the same type. The parser refuses
    # a repeat it meets before it stops; one after is refused here.
    count = types.count
    if count(_EXT_SERVER_NAME) > 1 or count(_EXT_ALPN) > 1:
        return None
    # One scan each where the extension is there (every TLS 1.3 hello), not
    # an ``in`` and then an ``index``.
    versions_at = sig_at = None
    try:
        i = types.index(_EXT_SUPPORTED_VERSIONS)
        versions_at = (starts[i] + 4 - start, starts[i + 1] - start)
    except ValueError:
        pass
    try:
        i = types.index(_EXT_SIGNATURE_ALGORITHMS)
        sig_at = (starts[i] + 4 - start, starts[i + 1] - start)
    except ValueError:
        pass
    walked = (tuple(types), versions_at, sig_at)
    # A client that sends GREASE values (BoringSSL: Chrome and others) also
    # shuffles its extensions, so its layout never repeats: it is not kept.
    if len(types) <= _LAID_OUT_EXTENSIONS and GREASE.isdisjoint(types):
        sni_at = alpn_at = None
        if _EXT_SERVER_NAME in types:
            i = types.index(_EXT_SERVER_NAME)
            sni_at = (starts[i] + 4 - start, starts[i + 1] - start)
        if _EXT_ALPN in types:
            i = types.index(_EXT_ALPN)
            alpn_at = (starts[i] + 4 - start, starts[i + 1] - start)
        if len(layouts) >= _MAX_LAYOUTS:
            layouts.clear()
        layouts[b[start - 2 : start + 4]] = Layout(
            walked, (sni_at, alpn_at), *_shape(types, starts)
        )
    return walked


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

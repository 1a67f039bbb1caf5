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

:func:`fingerprint` is called by the ClientHello parser once per hello, on
the fields it has walked, so it sits on the identification hot path. The
two hashes depend only on what a client build sends the same way every time
(its cipher suites; its extension types and signature algorithms), so they
are kept in small bounded tables: a client seen before costs two dictionary
look-ups, an unknown one the full computation. (The parser also reuses the
whole fingerprint of a hello shaped like the previous one.)
"""

from __future__ import annotations

from collections.abc import Sequence
from hashlib import sha256
from typing import Final, TypeVar

__all__ = ["GREASE", "fingerprint"]

_K = TypeVar("_K")
_V = TypeVar("_V")

GREASE: Final = frozenset(0x0A0A + 0x1010 * i for i in range(16))
"""The 16 reserved GREASE values (RFC 8701 section 2), as 16-bit integers."""

_GREASE_HEX: Final = frozenset(f"{v:04x}" for v in GREASE)
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
    kept = sorted(extensions)
    if not GREASE.isdisjoint(kept):
        # Usually one or two GREASE values: removed in C rather than
        # filtering every type in the interpreter.
        for value in GREASE.intersection(kept):
            for _ in range(kept.count(value)):
                kept.remove(value)
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

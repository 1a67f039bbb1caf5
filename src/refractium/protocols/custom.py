r"""User-defined protocols from the configuration: byte patterns and a regex.

A custom protocol is recognised by fixed byte patterns, a regular expression,
or both:

* patterns: a pattern matches if it occurs *anywhere* in the bytes seen so
  far (a substring search, like the memmem of Refractium's Rust implementation). The
  probe needs more while the data is a strict prefix of some pattern; once the
  data is as long as every pattern without containing one, the answer is NO.
* regex: a bytes regex run with the third-party ``regex`` module's partial
  matching (``search(data, partial=True)``): a full match is a Match, a
  partial match (the data could still grow into a match) is NEED_MORE, no
  match at all is NO.

Caveat, by design of partial matching: an *unanchored* regex is a partial
match of every input, because the bytes after the end of the data could
always start a match (``regex`` reports an empty partial match at the end of
the string). Such a probe never says NO; it answers NEED_MORE until it
matches or the caller stops waiting (timeout, buffer cap). Anchor the regex
with ``^`` or ``\A`` (e.g. ``^HELLO [0-9]+``) to get a NO as soon as the
first bytes rule the protocol out.

Patterns come from TOML strings, where ``"\\x01"`` arrives as the characters
backslash, x, 0, 1; :func:`decode_pattern` turns those escapes into bytes.

The data probed is untrusted peer input. The regex itself comes from the
operator's configuration; note that a pathological one (nested quantifiers)
can still backtrack badly on hostile input.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Final

from refractium.protocols.base import Match, ProbeResult, Transport, Verdict

# Enum members bound once: attribute lookups on an Enum class cost ~0.1 us
# in CPython 3.11, more than the rest of a probe's early exits.
_NO: Final = Verdict.NO
_NEED_MORE: Final = Verdict.NEED_MORE

if TYPE_CHECKING:
    # ``regex`` is imported lazily: it costs ~20 ms and only configurations
    # with a custom regex need it.
    import regex as regex_module

__all__ = ["CustomProbe", "compile_regex", "decode_pattern"]

_SIMPLE_ESCAPES: Final = {"n": 0x0A, "r": 0x0D, "t": 0x09, "0": 0x00, "\\": 0x5C}
_HEX_DIGITS: Final = frozenset("0123456789abcdefABCDEF")
_OCTAL_DIGITS: Final = frozenset("01234567")


def decode_pattern(text: str) -> bytes:
    r"""Decode a configured byte pattern into bytes.

    Understands ``\xHH``, ``\n``, ``\r``, ``\t``, ``\0`` and ``\\``; any other
    character stands for itself (non-ASCII text is encoded as UTF-8). ``\0``
    is NUL only: ``\0`` followed by an octal digit is refused rather than read
    as a C octal escape, so ``\012`` cannot silently mean NUL, "1", "2".

    Raises:
        ValueError: on a bad escape or an empty result (an empty pattern
            would match every connection).
    """
    out = bytearray()
    i = 0
    n = len(text)
    while i < n:
        j = text.find("\\", i)
        if j < 0:
            out += text[i:].encode()
            break
        out += text[i:j].encode()
        if j + 1 >= n:
            raise ValueError("pattern ends with a lone backslash")
        c = text[j + 1]
        if c == "x":
            digits = text[j + 2 : j + 4]
            if len(digits) != 2 or not _HEX_DIGITS.issuperset(digits):
                raise ValueError(f"bad \\x escape at offset {j}: expected two hex digits")
            out.append(int(digits, 16))
            i = j + 4
        elif c in _SIMPLE_ESCAPES:
            if c == "0" and j + 2 < n and text[j + 2] in _OCTAL_DIGITS:
                raise ValueError(f"octal escape at offset {j} is not supported; use \\xHH")
            out.append(_SIMPLE_ESCAPES[c])
            i = j + 2
        else:
            raise ValueError(f"unknown escape \\{c} at offset {j}")
    if not out:
        raise ValueError("empty pattern")
    return bytes(out)


def compile_regex(text: str) -> regex_module.Pattern[bytes]:
    """Compile a configured regex into a bytes pattern of the ``regex`` module.

    The text is encoded as UTF-8; write ``\\xHH`` (regex syntax) for raw
    bytes.

    Raises:
        ValueError: the pattern does not compile, or it matches the empty
            input (it would then match every connection).
    """
    import regex

    try:
        pattern = regex.compile(text.encode())
    # regex.error for syntax; ValueError for e.g. (?u) on bytes or a lone
    # surrogate that cannot be encoded.
    except (regex.error, ValueError) as exc:
        raise ValueError(f"bad regex {text!r}: {exc}") from None
    if pattern.search(b"") is not None:
        raise ValueError(f"regex {text!r} matches empty input, so it would match everything")
    return pattern


class CustomProbe:
    """A protocol defined in the configuration by byte patterns and/or a regex.

    ``patterns`` are bytes (see :func:`decode_pattern`), ``regex`` is the
    regex source text (compiled here with :func:`compile_regex`). Either
    matching is a Match; NEED_MORE when either still could and neither did.

    Raises:
        ValueError: no pattern and no regex, an empty pattern, or a bad regex.
    """

    __slots__ = ("_compiled", "_match", "name", "patterns", "regex", "transport")

    name: str
    transport: Transport
    patterns: tuple[bytes, ...]
    regex: str | None

    def __init__(
        self,
        name: str,
        patterns: Iterable[bytes] = (),
        regex: str | None = None,
        transport: Transport = Transport.BOTH,
    ) -> None:
        self.name = name
        self.transport = transport
        self.patterns = tuple(patterns)
        self.regex = regex
        if not self.patterns and regex is None:
            raise ValueError(f"protocol {name!r} needs at least one pattern or a regex")
        if any(not p for p in self.patterns):
            raise ValueError(f"protocol {name!r} has an empty pattern")
        self._compiled = None if regex is None else compile_regex(regex)
        self._match = Match(name)

    def __repr__(self) -> str:
        return f"CustomProbe({self.name!r}, patterns={self.patterns!r}, regex={self.regex!r})"

    def probe(self, data: bytes) -> ProbeResult:
        """Identify ``data`` by the configured patterns and regex. Never raises."""
        need_more = False
        n = len(data)
        for pattern in self.patterns:
            if pattern in data:
                return self._match
            if n < len(pattern) and pattern.startswith(data):
                need_more = True
        if self._compiled is not None:
            found = self._compiled.search(data, partial=True)
            if found is not None:
                if not found.partial:
                    return self._match
                need_more = True
        return _NEED_MORE if need_more else _NO

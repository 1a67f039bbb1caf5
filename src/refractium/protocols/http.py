"""HTTP probe: HTTP/1.x request lines and the HTTP/2 connection preface.

An HTTP/1.x request starts with ``method SP request-target SP version``
(RFC 9112 section 3). The probe matches a known method followed by a space:
the standard methods (RFC 9110 section 9, plus PATCH from RFC 5789) and the
WebDAV ones (RFC 4918). Methods are case-sensitive (RFC 9110 section 9.1).

A client using HTTP/2 with prior knowledge opens instead with the fixed
24-byte preface ``PRI * HTTP/2.0\\r\\n\\r\\nSM\\r\\n\\r\\n`` (RFC 7540 section
3.5, RFC 9113 section 3.4). It matches once the whole preface is there; any
prefix of it needs more.

Any prefix of a method and its space (the empty input included) needs more;
anything else is not HTTP. The input is untrusted peer data; the probe only
compares it with fixed strings.
"""

from __future__ import annotations

from typing import Final

from refractium.protocols.base import Match, ProbeResult, Transport, Verdict

# Enum members bound once: attribute lookups on an Enum class cost ~0.1 us
# in CPython 3.11, more than the rest of a probe's early exits.
_NO: Final = Verdict.NO
_NEED_MORE: Final = Verdict.NEED_MORE

__all__ = ["METHODS", "PREFACE", "HttpProbe"]

METHODS: Final = frozenset(
    {
        b"GET",
        b"HEAD",
        b"POST",
        b"PUT",
        b"DELETE",
        b"CONNECT",
        b"OPTIONS",
        b"TRACE",
        b"PATCH",
        # WebDAV, RFC 4918.
        b"PROPFIND",
        b"PROPPATCH",
        b"MKCOL",
        b"COPY",
        b"MOVE",
        b"LOCK",
        b"UNLOCK",
    }
)

PREFACE: Final = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# Every strict prefix of something that would match: a set lookup answers
# NEED_MORE in one step instead of a loop over the methods.
_TOKENS: Final = (*(m + b" " for m in METHODS), PREFACE)
_PREFIXES: Final = frozenset(t[:i] for t in _TOKENS for i in range(len(t)))
_LONGEST_PREFIX: Final = max(len(t) for t in _TOKENS) - 1
# The space after the longest method sits at this index at most.
_SPACE_BY: Final = max(len(m) for m in METHODS) + 1


class HttpProbe:
    """Matches an HTTP/1.x request line or the HTTP/2 prior-knowledge preface."""

    __slots__ = ("_match", "name", "transport")

    #: What a request can start with (see ``base.first_bytes``).
    first_bytes: Final = frozenset(t[0] for t in _TOKENS)

    name: str
    transport: Transport

    def __init__(self, name: str = "http") -> None:
        self.name = name
        self.transport = Transport.TCP
        # Match is frozen, so one instance can be shared by every connection.
        self._match = Match(name)

    def __repr__(self) -> str:
        return f"HttpProbe({self.name!r})"

    def probe(self, data: bytes) -> ProbeResult:
        """Identify ``data`` as (a prefix of) an HTTP request. Never raises."""
        # The length guard keeps a long buffer from being hashed for nothing.
        if len(data) <= _LONGEST_PREFIX and data in _PREFIXES:
            return _NEED_MORE
        space = data.find(b" ", 0, _SPACE_BY)
        if space > 0 and data[:space] in METHODS:
            return self._match
        if data.startswith(PREFACE):
            return self._match
        return _NO

"""SOCKS5 probe: the client's method-selection greeting.

A SOCKS5 client opens with ``VER NMETHODS METHODS`` (RFC 1928 section 3):
version 5, the number of authentication methods it offers, then that many
method bytes. It then waits for the server's choice before it says anything
else.

As sslh does, the probe accepts only the assigned method numbers 0 to 9 (IANA
"SOCKS Methods": no authentication, GSSAPI, username/password, CHAP, CRAM,
SSL, NDS, MAF, JSON) and so at most 10 methods: a longer list would have to
repeat one. Private methods (0x80-0xFE) are refused: four bytes such as
``05 01 80 ...`` would otherwise be SOCKS5 to the probe.

* Match: the version, a count of 1 to 10 and the whole list of methods, each
  0 to 9. Bytes after the list are ignored.
* Need more: a valid prefix of that (the empty input, ``05``, ``05 02 00``).
* No: anything else.

The input is untrusted peer data; the probe reads at most 12 bytes of it.
"""

from __future__ import annotations

from typing import Final

from refractium.protocols.base import Match, ProbeResult, Transport, Verdict

# Enum members bound once: attribute lookups on an Enum class cost ~0.1 us
# in CPython 3.11, more than the rest of a probe's early exits.
_NO: Final = Verdict.NO
_NEED_MORE: Final = Verdict.NEED_MORE

__all__ = ["Socks5Probe"]

_VERSION: Final = 5
_MAX_METHOD: Final = 9
_MAX_METHODS: Final = _MAX_METHOD + 1


class Socks5Probe:
    """Matches a SOCKS5 greeting: version 5 and a list of known methods."""

    __slots__ = ("_match", "name", "transport")

    #: The version byte (see ``base.first_bytes``).
    first_bytes: Final = frozenset({_VERSION})

    name: str
    transport: Transport

    def __init__(self, name: str = "socks5") -> None:
        self.name = name
        self.transport = Transport.TCP
        # Match is read-only, so one instance can be shared by every connection.
        self._match = Match(name)

    def __repr__(self) -> str:
        return f"Socks5Probe({self.name!r})"

    def probe(self, data: bytes) -> ProbeResult:
        """Identify ``data`` as (a prefix of) a SOCKS5 greeting. Never raises."""
        if len(data) < 2:
            return _NEED_MORE if data in (b"", b"\x05") else _NO
        count = data[1]
        if data[0] != _VERSION or not 1 <= count <= _MAX_METHODS:
            return _NO
        methods = data[2 : 2 + count]
        if methods and max(methods) > _MAX_METHOD:
            return _NO
        return self._match if len(methods) == count else _NEED_MORE

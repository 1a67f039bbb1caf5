"""TLS probe: identify a TLS ClientHello and learn its SNI, ALPN and JA4.

A TLS connection opens with a handshake record (content type 22, RFC 8446
section 5.1) carrying a ClientHello (RFC 8446 section 4.1.2). The parsing is
done by :mod:`refractium.protocols.clienthello`; this module maps its outcome
onto the probe contract:

* complete hello -> ``Match(name, sni, alpn, ja4)`` (server_name per RFC
  6066 section 3, ALPN per RFC 7301, the JA4 fingerprint with a ``t``
  prefix, computed only when the Match's ``ja4`` is first read),
* valid prefix (split over TCP reads or records) -> ``NEED_MORE``,
* malformed, or not a handshake record -> ``NO``.

SSLv2-compatible hellos (first byte with the high bit set) are refused: no
supported TLS version needs them and they carry no extensions to route on.

The input is untrusted peer data; the parser checks every length it reads.
"""

from __future__ import annotations

from typing import Final

from refractium.protocols.base import Match, ProbeResult, Transport, Verdict
from refractium.protocols.clienthello import Incomplete, Malformed, scan_client_hello
from refractium.protocols.ja4 import hello_fingerprint

# Enum members bound once: attribute lookups on an Enum class cost ~0.1 us
# in CPython 3.11, more than the rest of a probe's early exits.
_NO: Final = Verdict.NO
_NEED_MORE: Final = Verdict.NEED_MORE
_deferred: Final = Match.deferred

__all__ = ["TlsProbe"]

_CONTENT_HANDSHAKE: Final = 0x16


class TlsProbe:
    """Matches a TLS ClientHello; the Match carries its SNI, ALPN and JA4.

    The same logic is registered under several names ("tls", "https"); each
    instance reports its own name in the matches it returns.
    """

    __slots__ = ("name", "transport")

    #: A handshake record (see ``base.first_bytes``).
    first_bytes: Final = frozenset({_CONTENT_HANDSHAKE})
    #: What a Match carries (see ``base.metadata``).
    metadata: Final = frozenset({"sni", "alpn", "ja4"})

    name: str
    transport: Transport

    def __init__(self, name: str = "tls") -> None:
        self.name = name
        self.transport = Transport.TCP

    def __repr__(self) -> str:
        return f"TlsProbe({self.name!r})"

    def probe(self, data: bytes) -> ProbeResult:
        """Identify ``data`` as (a prefix of) a TLS ClientHello. Never raises."""
        if not data:
            return _NEED_MORE
        # One byte decides most non-TLS traffic (and SSLv2's high-bit header)
        # before the parser is even called.
        if data[0] != _CONTENT_HANDSHAKE:
            return _NO
        try:
            sni, alpn, source = scan_client_hello(data)
        except Incomplete:
            return _NEED_MORE
        except Malformed:
            return _NO
        return _deferred(self.name, sni, alpn, hello_fingerprint, source)

"""FTP probe: a client that sends an FTP command before the server's greeting.

FTP is server-speaks-first (RFC 959 section 5.4): the server greets with a
``220`` reply and an ordinary client sends nothing until it has read it. A
proxy that waits for the client's first bytes therefore sees nothing from an
FTP client; route those connections with ``on_timeout = "ftp"`` (see
docs/identification.md). This probe covers the other case: a client (a
script, a pipelining or preconfigured client) that speaks first.

It matches a command a client can start a session with, followed by a space
(then its argument) or CRLF: ``USER``, ``PASS``, ``AUTH`` (RFC 2228, for
explicit FTPS), ``FEAT`` (RFC 2389), ``OPTS``, ``SYST``, ``HOST`` (RFC 7151),
``CLNT``, ``LANG`` (RFC 2640), ``HELP`` and ``NOOP``. Commands are
case-insensitive (RFC 959 section 5.3.1): ``user anonymous`` matches too.

* Match: such a command and a space, or such a command and CRLF.
* Need more: a prefix of one (``US``, ``feat\\r``).
* No: anything else.

The input is untrusted peer data; the probe compares its first six bytes
with fixed strings.
"""

from __future__ import annotations

from typing import Final

from refractium.protocols.base import Match, ProbeResult, Transport, Verdict

# Enum members bound once: attribute lookups on an Enum class cost ~0.1 us
# in CPython 3.11, more than the rest of a probe's early exits.
_NO: Final = Verdict.NO
_NEED_MORE: Final = Verdict.NEED_MORE

__all__ = ["COMMANDS", "FtpProbe"]

#: The commands that can open a session, upper-case.
COMMANDS: Final = frozenset(b"USER PASS AUTH FEAT OPTS SYST HOST CLNT LANG HELP NOOP".split())
_CRLF: Final = b"\r\n"
_TOKENS: Final = tuple(c + sep for c in COMMANDS for sep in (b" ", _CRLF))
# Every strict prefix of a token, upper-case: one set lookup answers NEED_MORE.
_PREFIXES: Final = frozenset(t[:i] for t in _TOKENS for i in range(len(t)))
_LONGEST_PREFIX: Final = max(len(t) for t in _TOKENS) - 1
_WORD: Final = 4


class FtpProbe:
    """Matches an FTP command line sent before the server's greeting."""

    __slots__ = ("_match", "name", "transport")

    #: The commands' first letters, in either case (see ``base.first_bytes``).
    first_bytes: Final = frozenset(b for c in COMMANDS for b in (c[0], c.lower()[0]))

    name: str
    transport: Transport

    def __init__(self, name: str = "ftp") -> None:
        self.name = name
        self.transport = Transport.TCP
        # Match is read-only, so one instance can be shared by every connection.
        self._match = Match(name)

    def __repr__(self) -> str:
        return f"FtpProbe({self.name!r})"

    def probe(self, data: bytes) -> ProbeResult:
        """Identify ``data`` as (a prefix of) an FTP command line. Never raises."""
        if len(data) <= _LONGEST_PREFIX and data.upper() in _PREFIXES:
            return _NEED_MORE
        if data[:_WORD].upper() in COMMANDS:
            separator = data[_WORD : _WORD + 2]
            if separator[:1] == b" " or separator == _CRLF:
                return self._match
        return _NO

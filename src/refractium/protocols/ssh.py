"""SSH probe: the identification string every SSH client sends first.

RFC 4253 section 4.2: both sides open with ``SSH-protoversion-softwareversion``
(``SSH-2.0-...``, or ``SSH-1.99-...`` from software that also speaks SSH 1).
The four bytes ``SSH-`` are enough to decide, so the probe matches as soon as
they are present and does not wait for the end of the line.

The input is untrusted peer data; the probe only compares a fixed prefix.
"""

from __future__ import annotations

from typing import Final

from refractium.protocols.base import Match, ProbeResult, Transport, Verdict

# Enum members bound once: attribute lookups on an Enum class cost ~0.1 us
# in CPython 3.11, more than the rest of a probe's early exits.
_NO: Final = Verdict.NO
_NEED_MORE: Final = Verdict.NEED_MORE

__all__ = ["SshProbe"]

_PREFIX: Final = b"SSH-"


class SshProbe:
    """Matches data starting with ``SSH-``; a prefix of it needs more."""

    __slots__ = ("_match", "name", "transport")

    #: What a banner can start with (see ``base.first_bytes``).
    first_bytes: Final = frozenset(_PREFIX[:1])

    name: str
    transport: Transport

    def __init__(self, name: str = "ssh") -> None:
        self.name = name
        self.transport = Transport.TCP
        # Match is frozen, so one instance can be shared by every connection.
        self._match = Match(name)

    def __repr__(self) -> str:
        return f"SshProbe({self.name!r})"

    def probe(self, data: bytes) -> ProbeResult:
        """Identify ``data`` as (a prefix of) an SSH banner. Never raises."""
        if data.startswith(_PREFIX):
            return self._match
        # Covers the empty input too: b"SSH-".startswith(b"") is true.
        if _PREFIX.startswith(data):
            return _NEED_MORE
        return _NO

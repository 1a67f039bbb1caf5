"""WireGuard probe: the handshake initiation that opens every session.

A WireGuard peer starts a session with a handshake initiation message
(WireGuard whitepaper section 5.4.2): message type 1, three reserved zero
bytes, then the sender index (4), the unencrypted ephemeral key (32), the
encrypted static key (48), the encrypted timestamp (28), ``mac1`` and
``mac2`` (16 each): 148 bytes in all, always. The probe matches a datagram of
exactly that length starting with ``01 00 00 00``, as sslh does; the rest is
random or encrypted and cannot be checked.

WireGuard runs over UDP only, one message per datagram, so there is nothing
to wait for: any other datagram is not a WireGuard initiation. (A peer whose
session is already up sends transport data, type 4, instead: such a flow is
only recognised at its next handshake.)

The input is untrusted peer data; the probe only compares a length and a
fixed prefix.
"""

from __future__ import annotations

from typing import Final

from refractium.protocols.base import Match, ProbeResult, Transport, Verdict

# Enum members bound once: attribute lookups on an Enum class cost ~0.1 us
# in CPython 3.11, more than the rest of a probe's early exits.
_NO: Final = Verdict.NO

__all__ = ["WireGuardProbe"]

_PREFIX: Final = b"\x01\x00\x00\x00"
INITIATION_SIZE: Final = 148


class WireGuardProbe:
    """Matches a 148-byte WireGuard handshake initiation datagram."""

    __slots__ = ("_match", "name", "transport")

    #: Message type 1 (see ``base.first_bytes``).
    first_bytes: Final = frozenset(_PREFIX[:1])

    name: str
    transport: Transport

    def __init__(self, name: str = "wireguard") -> None:
        self.name = name
        self.transport = Transport.UDP
        # Match is read-only, so one instance can be shared by every connection.
        self._match = Match(name)

    def __repr__(self) -> str:
        return f"WireGuardProbe({self.name!r})"

    def probe(self, data: bytes) -> ProbeResult:
        """Identify ``data``, one datagram, as a handshake initiation. Never raises."""
        if len(data) == INITIATION_SIZE and data.startswith(_PREFIX):
            return self._match
        return _NO

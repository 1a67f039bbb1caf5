"""The probe contract: what every protocol identifier answers.

A probe is a pure function of the bytes a client has sent so far. It never
reads a socket, the clock or the configuration, never logs and never raises:
for any input it answers one of

* a :class:`Match` (this is the protocol, with what was learnt: SNI, ALPN,
  the client's JA4 fingerprint),
* :attr:`Verdict.NO` (these bytes can never start this protocol),
* :attr:`Verdict.NEED_MORE` (a prefix of this protocol; read on).

The input is untrusted peer data: every length and offset read from it is
checked before use.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, StrEnum, auto
from typing import Protocol, runtime_checkable


class Verdict(Enum):
    """A probe's answer when it does not match."""

    NO = auto()
    NEED_MORE = auto()


class Transport(StrEnum):
    """Which listeners a protocol or route applies to."""

    TCP = "tcp"
    UDP = "udp"
    BOTH = "both"

    def covers(self, other: Transport) -> bool:
        """True when a route of this transport applies to ``other`` traffic."""
        return self is Transport.BOTH or self is other


# Not frozen: a frozen dataclass costs ~0.5 us to construct (object.__setattr__
# per field) and one Match is built per TLS connection. Treat it as read-only.
@dataclass(slots=True)
class Match:
    """A positive identification and what the first bytes told us (read-only).

    Attributes:
        protocol: the probe's name (``"tls"``, ``"http"``...).
        sni: the TLS server name, lower-cased, without a trailing dot.
        alpn: the ALPN protocol names the client offered, in its order.
        ja4: the client's JA4 fingerprint (``t13d1516h2_8daaf6152771_...``),
            from a TLS or QUIC ClientHello; ``None`` for other protocols.
    """

    protocol: str
    sni: str | None = None
    alpn: tuple[str, ...] = ()
    ja4: str | None = None


ProbeResult = Match | Verdict


@runtime_checkable
class Probe(Protocol):
    """Anything that can identify a protocol from its first bytes."""

    @property
    def name(self) -> str:
        """The protocol's name as written in the configuration."""
        ...

    @property
    def transport(self) -> Transport:
        """The transport the protocol runs on when a route does not say."""
        ...

    def probe(self, data: bytes) -> ProbeResult:
        """Identify ``data``, the bytes seen so far. Must never raise."""
        ...


def first_bytes(probe: Probe) -> frozenset[int] | None:
    """The byte values a probe's protocol can start with; None: any.

    A probe may declare them in a ``first_bytes`` attribute (a frozenset of
    ints). The route table then skips the probe, without calling it, for
    data starting with any other byte: most traffic is ruled out by its
    first byte, and not calling a probe is cheaper than any probe.
    """
    declared = getattr(probe, "first_bytes", None)
    return None if declared is None else frozenset(declared)


def metadata(probe: Probe) -> frozenset[str]:
    """What a probe's matches can carry besides the name: ``"sni"``, ``"alpn"``, ``"ja4"``.

    A probe that fills in :attr:`Match.sni`, :attr:`Match.alpn` or
    :attr:`Match.ja4` declares it in a ``metadata`` attribute (a frozenset of
    those field names); none declared means it never does. ``refractium
    check`` warns about a route filtering on what its protocol never carries,
    as ``sni`` on ``http``.
    """
    return frozenset(getattr(probe, "metadata", ()))

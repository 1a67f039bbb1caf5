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

from collections.abc import Callable
from enum import Enum, StrEnum, auto
from typing import Any, Protocol, TypeVar, runtime_checkable


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


_T = TypeVar("_T")


class Match:
    """A positive identification and what the first bytes told us (read-only).

    Attributes:
        protocol: the probe's name (``"tls"``, ``"http"``...).
        sni: the TLS server name, lower-cased, without a trailing dot.
        alpn: the ALPN protocol names the client offered, in its order.
        ja4: the client's JA4 fingerprint (``t13d1516h2_8daaf6152771_...``),
            from a TLS or QUIC ClientHello; ``None`` for other protocols.

    ``Match(protocol, sni, alpn, ja4)`` holds the four values as given.
    :meth:`deferred` builds one whose fingerprint is computed when
    :attr:`ja4` is first read: most connections are routed without it, and
    computing it costs more than the rest of a TLS identification. Two
    matches are equal when the four values are (the fingerprint computed
    for the comparison).
    """

    # A plain class with slots, not a dataclass: one Match is built per
    # identified connection, and a frozen dataclass costs ~0.5 us to build
    # (object.__setattr__ per field). Treat it as read-only.
    __slots__ = ("_ja4", "_ja4_from", "_ja4_of", "alpn", "protocol", "sni")
    __match_args__ = ("protocol", "sni", "alpn", "ja4")

    protocol: str
    sni: str | None
    alpn: tuple[str, ...]
    _ja4: str | None
    #: What computes the fingerprint, and its argument; None once computed.
    _ja4_of: Callable[[Any], str | None] | None
    _ja4_from: object

    def __init__(
        self,
        protocol: str,
        sni: str | None = None,
        alpn: tuple[str, ...] = (),
        ja4: str | None = None,
    ) -> None:
        self.protocol = protocol
        self.sni = sni
        self.alpn = alpn
        self._ja4 = ja4
        self._ja4_of = None
        self._ja4_from = None

    @classmethod
    def deferred(
        cls,
        protocol: str,
        sni: str | None,
        alpn: tuple[str, ...],
        ja4_of: Callable[[_T], str | None],
        source: _T,
    ) -> Match:
        """A Match whose fingerprint is ``ja4_of(source)``, computed on first read.

        ``source`` is kept by reference until then (a probe passes the bytes
        it parsed and where the fields are, not copies). ``ja4_of`` must not
        raise: it answers ``None`` for input it cannot fingerprint.
        """
        match = _new(cls)
        match.protocol = protocol
        match.sni = sni
        match.alpn = alpn
        match._ja4 = None
        match._ja4_of = ja4_of
        match._ja4_from = source
        return match

    @property
    def ja4(self) -> str | None:
        """The client's JA4 fingerprint, or ``None``; computed once, when first read."""
        ja4_of = self._ja4_of
        if ja4_of is not None:
            self._ja4 = ja4_of(self._ja4_from)
            # The source (the client's first bytes) is not needed any more.
            self._ja4_of = self._ja4_from = None
        return self._ja4

    def settle(self, keep: bool) -> None:
        """Stop holding the client's first bytes: compute the fingerprint now
        (``keep``), or give it up when nothing will ever read it (then
        :attr:`ja4` stays ``None``, unless it was computed already)."""
        if self._ja4_of is None:
            return
        if keep:
            self.ja4  # noqa: B018  # computed and cached by the property
        else:
            self._ja4_of = self._ja4_from = None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Match) or other.__class__ is not self.__class__:
            return NotImplemented
        return (
            self.protocol == other.protocol
            and self.sni == other.sni
            and self.alpn == other.alpn
            and self.ja4 == other.ja4
        )

    # Equal matches need not be the same object, and the fields could be
    # assigned to: not hashable (as a dataclass with eq and without frozen).
    __hash__ = None  # type: ignore[assignment]  # object's stub says it always is

    def __repr__(self) -> str:
        return (
            f"Match(protocol={self.protocol!r}, sni={self.sni!r}, "
            f"alpn={self.alpn!r}, ja4={self.ja4!r})"
        )


_new = object.__new__


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

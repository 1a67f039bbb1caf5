"""OpenVPN probe: the client's first packet, P_CONTROL_HARD_RESET_CLIENT_V2/V3.

An OpenVPN client in TLS mode opens with a hard reset packet. Its first byte
holds the opcode in the high five bits and the key id in the low three: 7
(``P_CONTROL_HARD_RESET_CLIENT_V2``) or, with a client-specific tls-crypt-v2
key, 10 (``P_CONTROL_HARD_RESET_CLIENT_V3``), key id 0. Then come the
client's random 8-byte session id and, depending on how the control channel
is protected, one of these layouts (OpenVPN ``ssl_pkt.c``, ``tls_crypt.c``):

* no protection: the reliable layer's ACK array (empty: length byte 0) and
  the message packet id (0 for the first message): five zero bytes;
* ``tls-auth``: an HMAC (16 to 64 bytes, by the ``auth`` digest), the replay
  packet id and a timestamp (4 bytes each), then the five zero bytes above;
* ``tls-crypt`` (V2) and ``tls-crypt-v2`` (V3): the replay packet id and a
  timestamp, a 32-byte tag, then at least five encrypted bytes; a V3 packet
  ends with the wrapped client key (WKc), whose last two bytes give its length
  (290 to 1024 bytes).

The replay packet id of the first packet is small (counted from 1; a few
retransmissions may precede the one seen), or for tls-crypt-v2 clients of
OpenVPN 2.6 and later the early-negotiation marker ``0x0f000000`` plus that
count. As sslh does for tls-auth, the probe requires it to be at most
``_MAX_REPLAY_ID`` (above the marker for V3).

Over UDP (:meth:`OpenVpnProbe.probe_datagram`) the datagram is the packet.
Over TCP (:meth:`OpenVpnProbe.probe`) the packet is preceded by its length in
two bytes; the probe needs more until the whole packet is there, as long as
the bytes so far fit one of the layouts.

Not recognised: key-method 1 (``P_CONTROL_HARD_RESET_CLIENT_V1``, removed in
OpenVPN 2.5), static-key mode (no control channel: the first packet is data)
and ``--replay-persist`` (the replay packet id carries on from a previous run).

The input is untrusted peer data; every offset is checked before use.
"""

from __future__ import annotations

from typing import Final

from refractium.protocols.base import Match, ProbeResult, Transport, Verdict

# Enum members bound once: attribute lookups on an Enum class cost ~0.1 us
# in CPython 3.11, more than the rest of a probe's early exits.
_NO: Final = Verdict.NO
_NEED_MORE: Final = Verdict.NEED_MORE

__all__ = ["OpenVpnProbe"]

# Opcode << 3 | key id 0.
_RESET_V2: Final = 7 << 3
_RESET_V3: Final = 10 << 3

_SESSION_END: Final = 1 + 8
# The ACK array length (0) and the message packet id (0).
_ZEROS: Final = bytes(5)
# SHA-1 (the default), MD5, SHA-224, SHA-256, SHA-384, SHA-512.
_HMAC_SIZES: Final = (20, 16, 28, 32, 48, 64)
_MAX_REPLAY_ID: Final = 8
_EARLY_NEG: Final = b"\x0f\x00\x00"
_TAG: Final = 32
# Opcode, session id, replay packet id and time, tag, ACK length and message id.
_MIN_CRYPT: Final = _SESSION_END + 8 + _TAG + 5
_MIN_WKC: Final = _TAG + 256 + 2
_MAX_WKC: Final = 1024

# The plain layout, the shortest.
_MIN_PACKET: Final = _SESSION_END + len(_ZEROS)
_MAX_TCP_PACKET: Final = 2047


def _zeros(data: bytes, start: int, stop: int) -> bool:
    """Whether ``data[start:stop]`` (maybe cut short) is all zero bytes."""
    chunk = data[start:stop]
    return chunk == _ZEROS[: len(chunk)]


def _replay_id(data: bytes, start: int, stop: int, early: bool) -> bool:
    """Whether the replay packet id at ``start`` (maybe cut at ``stop``) is a first one."""
    chunk = data[start : min(start + 4, stop)]
    head = chunk[:3]
    if head != _ZEROS[: len(head)] and not (early and head == _EARLY_NEG[: len(head)]):
        return False
    return len(chunk) < 4 or chunk[3] <= _MAX_REPLAY_ID


def _fits(data: bytes, base: int, total: int, stop: int) -> bool:
    """Whether the packet of ``total`` bytes at ``base`` fits a hard reset layout.

    Only ``data[base:stop]`` is there when ``stop < base + total`` (a TCP
    prefix): the answer is then whether some layout is not ruled out yet.
    """
    op = data[base]
    if op == _RESET_V3:
        return (
            total >= _MIN_CRYPT + _MIN_WKC
            and _replay_id(data, base + _SESSION_END, stop, early=True)
            and (
                stop < base + total
                or _MIN_WKC
                <= (data[stop - 2] << 8 | data[stop - 1])
                <= min(_MAX_WKC, total - _MIN_CRYPT)
            )
        )
    if op != _RESET_V2:
        return False
    s = base + _SESSION_END
    if total >= _SESSION_END + 5 and _zeros(data, s, min(s + 5, stop)):
        return True
    for size in _HMAC_SIZES:
        if (
            total >= _SESSION_END + size + 13
            and _replay_id(data, s + size, stop, early=False)
            and _zeros(data, s + size + 8, min(s + size + 13, stop))
        ):
            return True
    return total >= _MIN_CRYPT and _replay_id(data, s, stop, early=False)


class OpenVpnProbe:
    """Matches an OpenVPN client hard reset (V2 or V3): a UDP datagram or a TCP packet."""

    __slots__ = ("_match", "name", "transport")

    #: The high byte of a TCP packet's length (see ``base.first_bytes``). Over
    #: UDP, where the opcode comes first, the route table calls
    #: ``probe_datagram`` whatever the first byte.
    first_bytes: Final = frozenset(range((_MAX_TCP_PACKET >> 8) + 1))

    name: str
    transport: Transport

    def __init__(self, name: str = "openvpn") -> None:
        self.name = name
        self.transport = Transport.BOTH
        # Match is read-only, so one instance can be shared by every connection.
        self._match = Match(name)

    def __repr__(self) -> str:
        return f"OpenVpnProbe({self.name!r})"

    def probe(self, data: bytes) -> ProbeResult:
        """Identify ``data``, a TCP stream, as (a prefix of) a hard reset. Never raises."""
        if len(data) < 2:
            return _NEED_MORE if not data or data[0] <= _MAX_TCP_PACKET >> 8 else _NO
        length = (data[0] << 8) | data[1]
        if not _MIN_PACKET <= length <= _MAX_TCP_PACKET:
            return _NO
        if len(data) == 2:
            return _NEED_MORE
        stop = min(len(data), 2 + length)
        if not _fits(data, 2, length, stop):
            return _NO
        return self._match if stop == 2 + length else _NEED_MORE

    def probe_datagram(self, data: bytes) -> ProbeResult:
        """Identify ``data``, one UDP datagram, as a hard reset. Never raises."""
        if len(data) < _MIN_PACKET or not _fits(data, 0, len(data), len(data)):
            return _NO
        return self._match

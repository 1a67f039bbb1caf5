"""ADB probe: the host's CONNECT message to an adbd over TCP.

The Android Debug Bridge host (``adb connect``) opens a TCP connection to the
device's adbd with a CNXN message (AOSP ``adb/protocol.txt``): a 24-byte
header of six little-endian 32-bit words, then the payload::

    command     "CNXN" (0x4e584e43)
    arg0        the protocol version, 0x01000000 or 0x01000001
    arg1        the largest payload the host accepts
    data_length the payload's length
    data_check  its CRC32 (0 from version 0x01000001 on)
    magic       command ^ 0xffffffff
    payload     "host:<serial>:<banner>" (today "host::features=...")

As sslh does, the probe matches the command and the ``host:`` that starts the
payload; it also checks the magic, the major version (the top byte of arg0 is
1, the two middle bytes 0) and that data_length is 5 to 1 MiB. It matches once
the 29 bytes up to ``host:`` are there, needs more while the data is a valid
prefix of them, and says no otherwise.

Like sslh, it also accepts the CNXN message preceded by an empty message (20
zero bytes, then a magic of ``ff ff ff ff``), which adb 26.0.0 rc1 sent first
by mistake.

The input is untrusted peer data; the probe compares fixed offsets only.
"""

from __future__ import annotations

from typing import Final

from refractium.protocols.base import Match, ProbeResult, Transport, Verdict

# Enum members bound once: attribute lookups on an Enum class cost ~0.1 us
# in CPython 3.11, more than the rest of a probe's early exits.
_NO: Final = Verdict.NO
_NEED_MORE: Final = Verdict.NEED_MORE

__all__ = ["AdbProbe"]

_CNXN: Final = b"CNXN"
_MAGIC: Final = bytes(b ^ 0xFF for b in _CNXN)
# The top three bytes of arg0 (little-endian): version 0x010000xx.
_VERSION_HIGH: Final = b"\x00\x00\x01"
_HOST: Final = b"host:"
_HEADER: Final = 24
_MIN_PAYLOAD: Final = len(_HOST)
_MAX_PAYLOAD: Final = 1 << 20
# The bytes that decide: the header and "host:".
_NEEDED: Final = _HEADER + len(_HOST)
# The stray empty message of adb 26.0.0 rc1.
_EMPTY_MESSAGE: Final = bytes(20) + b"\xff\xff\xff\xff"

# (offset, expected bytes) of the fixed fields of a CNXN message.
_FIXED: Final = ((0, _CNXN), (5, _VERSION_HIGH), (20, _MAGIC), (24, _HOST))


def _cnxn(data: bytes, base: int) -> bool:
    """Whether the CNXN message at ``base`` is valid as far as the data goes."""
    for offset, expected in _FIXED:
        chunk = data[base + offset : base + offset + len(expected)]
        if chunk != expected[: len(chunk)]:
            return False
    length = data[base + 12 : base + 16]
    return len(length) < 4 or _MIN_PAYLOAD <= int.from_bytes(length, "little") <= _MAX_PAYLOAD


class AdbProbe:
    """Matches an ADB host's CNXN message (optionally after adb 26's empty message)."""

    __slots__ = ("_match", "name", "transport")

    #: "C", or the empty message's first zero (see ``base.first_bytes``).
    first_bytes: Final = frozenset({_CNXN[0], 0})

    name: str
    transport: Transport

    def __init__(self, name: str = "adb") -> None:
        self.name = name
        self.transport = Transport.TCP
        # Match is read-only, so one instance can be shared by every connection.
        self._match = Match(name)

    def __repr__(self) -> str:
        return f"AdbProbe({self.name!r})"

    def probe(self, data: bytes) -> ProbeResult:
        """Identify ``data`` as (a prefix of) an ADB CNXN message. Never raises."""
        if not data:
            return _NEED_MORE
        base = 0
        if data[0] == 0:
            head = data[: len(_EMPTY_MESSAGE)]
            if head != _EMPTY_MESSAGE[: len(head)]:
                return _NO
            base = len(_EMPTY_MESSAGE)
        if not _cnxn(data, base):
            return _NO
        return self._match if len(data) >= base + _NEEDED else _NEED_MORE

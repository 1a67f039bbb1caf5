"""RDP probe: the X.224 Connection Request an RDP client opens with.

An RDP client's first PDU (MS-RDPBCGR section 2.2.1.1) is an X.224 Class 0
Connection Request TPDU (ITU-T X.224 section 13.3) in a TPKT (RFC 1006
section 6)::

    03 00 LL LL       TPKT: version 3, reserved 0, total length (big-endian)
    LI                X.224 length indicator: the TPDU's length less this byte
    E0                CR TPDU code (1110) and credit 0
    00 00             DST-REF, 0 in a request
    xx xx             SRC-REF
    0x                class 0 (high nibble), options
    ...               optional cookie or routing token, optional RDP_NEG_REQ

The probe checks the header: version 3, reserved 0, a length of 11 to 259
bytes (LI is one byte and 255 is reserved), LI equal to that length less 5
(the TPKT header and LI itself), the CR code, DST-REF 0 and class 0. It
matches once the whole TPKT has arrived (clients send it in one write), needs
more while the data is a valid prefix, and says no otherwise. Bytes after the
TPKT are ignored; the cookie and negotiation request are not inspected.

sslh's ``msrdp`` compares the TPKT length with the bytes read; this probe
checks more of the header and does not mind further bytes.

The input is untrusted peer data; the probe reads fixed offsets only.
"""

from __future__ import annotations

from typing import Final

from refractium.protocols.base import Match, ProbeResult, Transport, Verdict

# Enum members bound once: attribute lookups on an Enum class cost ~0.1 us
# in CPython 3.11, more than the rest of a probe's early exits.
_NO: Final = Verdict.NO
_NEED_MORE: Final = Verdict.NEED_MORE

__all__ = ["RdpProbe"]

_TPKT: Final = b"\x03\x00"
_TPKT_HEADER: Final = 4
_CR: Final = 0xE0
# TPKT header, LI, code, DST-REF, SRC-REF, class.
_MIN_LENGTH: Final = _TPKT_HEADER + 7
_MAX_LENGTH: Final = _TPKT_HEADER + 1 + 254


class RdpProbe:
    """Matches a TPKT carrying an X.224 Connection Request (an RDP client's first PDU)."""

    __slots__ = ("_match", "name", "transport")

    #: The TPKT version (see ``base.first_bytes``).
    first_bytes: Final = frozenset(_TPKT[:1])

    name: str
    transport: Transport

    def __init__(self, name: str = "rdp") -> None:
        self.name = name
        self.transport = Transport.TCP
        # Match is read-only, so one instance can be shared by every connection.
        self._match = Match(name)

    def __repr__(self) -> str:
        return f"RdpProbe({self.name!r})"

    def probe(self, data: bytes) -> ProbeResult:
        """Identify ``data`` as (a prefix of) an X.224 Connection Request. Never raises."""
        have = len(data)
        if have < 4:
            # The length's high byte: 0, or 1 for 256 to 259.
            valid = _TPKT.startswith(data[:2]) and data[2:3] in (b"", b"\x00", b"\x01")
            return _NEED_MORE if valid else _NO
        length = (data[2] << 8) | data[3]
        if data[:2] != _TPKT or not _MIN_LENGTH <= length <= _MAX_LENGTH:
            return _NO
        if have > 4 and data[4] != length - 5:
            return _NO
        if have > 5 and data[5] != _CR:
            return _NO
        if data[6:8] != b"\x00\x00"[: len(data[6:8])]:
            return _NO
        if have > 10 and data[10] & 0xF0:
            return _NO
        return self._match if have >= length else _NEED_MORE

"""pcapng blocks, and what an existing file allows a writer to do with it.

File format (draft-ietf-opsawg-pcapng, "PCAP Now Generic (pcapng) Capture
File Format"): a file is one or more sections, each a Section Header Block
(section 4.1) followed by its Interface Description Blocks (4.2) and packet
blocks. The writer's section has one interface, link type 1
(LINKTYPE_ETHERNET) with ``if_tsresol`` = 9 (nanosecond timestamps), then
one Enhanced Packet Block (4.3) per frame. Everything is written
little-endian; the SHB's byte-order magic tells readers so, per section.

Because a file may hold several sections, a writer appends a new section
to an existing capture instead of truncating it (:func:`examine` says
whether it can). Block encoding is pure; :func:`examine` only reads.
"""

from __future__ import annotations

import enum
import os
import struct
from typing import BinaryIO

__all__ = [
    "Existing",
    "enhanced_packet",
    "examine",
    "interface_description",
    "section_header",
]

# Block types and option codes (draft-ietf-opsawg-pcapng sections 4.1-4.3).
_SHB = 0x0A0D0D0A  # a palindrome: the same in either byte order
_IDB = 0x00000001
_EPB = 0x00000006
_BYTE_ORDER_MAGIC = 0x1A2B3C4D
_OPT_END = 0
_OPT_COMMENT = 1
_SHB_USERAPPL = 4
_IF_NAME = 2
_IF_DESCRIPTION = 3
_IF_TSRESOL = 9
_LINKTYPE_ETHERNET = 1


def _options(*options: tuple[int, bytes]) -> bytes:
    """An options list: code, length, value padded to 32 bits; then opt_endofopt."""
    out = bytearray()
    for code, value in options:
        out += struct.pack("<HH", code, len(value)) + value + _padding(len(value))
    out += struct.pack("<HH", _OPT_END, 0)
    return bytes(out)


def _padding(size: int) -> bytes:
    return b"\0" * (-size % 4)


def _block(block_type: int, body: bytes) -> bytes:
    """A block: type, total length, body, total length again (so readers can go back)."""
    total = 12 + len(body)
    return struct.pack("<II", block_type, total) + body + struct.pack("<I", total)


def section_header() -> bytes:
    """The Section Header Block: byte-order magic, version 1.0, unknown section length."""
    body = struct.pack("<IHHq", _BYTE_ORDER_MAGIC, 1, 0, -1)
    return _block(_SHB, body + _options((_SHB_USERAPPL, b"refractium")))


def interface_description(snaplen: int) -> bytes:
    """The one Interface Description Block: Ethernet, ``snaplen``, nanosecond timestamps."""
    body = struct.pack("<HHI", _LINKTYPE_ETHERNET, 0, snaplen)
    return _block(
        _IDB,
        body
        + _options(
            (_IF_NAME, b"refractium"),
            (_IF_DESCRIPTION, b"TCP frames synthesised from proxied connections"),
            (_IF_TSRESOL, bytes((9,))),  # 10^-9 s: time.time_ns() as is
        ),
    )


def enhanced_packet(timestamp_ns: int, frame: bytes, snaplen: int, comment: str = "") -> bytes:
    """An Enhanced Packet Block on interface 0, cut to ``snaplen`` (0: no limit)."""
    captured = frame if not snaplen or len(frame) <= snaplen else frame[:snaplen]
    header = struct.pack(
        "<IIIII",
        0,
        (timestamp_ns >> 32) & 0xFFFFFFFF,
        timestamp_ns & 0xFFFFFFFF,
        len(captured),
        len(frame),
    )
    options = _options((_OPT_COMMENT, comment.encode())) if comment else b""
    return _block(_EPB, header + captured + _padding(len(captured)) + options)


class Existing(enum.Enum):
    """What is at a capture's path before a writer uses it."""

    #: Nothing, or an empty file: the writer's section is the first.
    NOTHING = "nothing"
    #: A pcapng file that ends with a whole block: a new section can follow.
    CAPTURE = "capture"
    #: A pcapng file cut inside a block (its writer was killed): a section
    #: appended after it would be unreadable.
    DAMAGED = "damaged"
    #: Something else (a classic pcap file, a text file...): not ours to touch.
    FOREIGN = "foreign"


def examine(path: str) -> Existing:
    """What ``path`` holds, read from its first and last blocks' framing only.

    Raises:
        OSError: ``path`` exists but cannot be read (or is a directory).
    """
    try:
        with open(path, "rb") as file:
            return _examine(file)
    except FileNotFoundError:
        return Existing.NOTHING


def _examine(file: BinaryIO) -> Existing:
    size = os.fstat(file.fileno()).st_size
    if size == 0:
        return Existing.NOTHING
    head = file.read(12)
    if len(head) < 12 or struct.unpack_from("<I", head)[0] != _SHB:
        return Existing.FOREIGN
    if head[8:12] not in (
        struct.pack("<I", _BYTE_ORDER_MAGIC),
        struct.pack(">I", _BYTE_ORDER_MAGIC),
    ):
        return Existing.FOREIGN
    if size % 4 or size < 28:  # blocks are 32-bit aligned; an SHB alone is 28 bytes
        return Existing.DAMAGED
    file.seek(size - 4)
    tail = file.read(4)
    # The last section may be of either byte order: a whole last block has its
    # length at both ends.
    for order in "<>":
        (total,) = struct.unpack(order + "I", tail)
        if total < 12 or total % 4 or total > size:
            continue
        file.seek(size - total + 4)
        if file.read(4) == tail:
            return Existing.CAPTURE
    return Existing.DAMAGED

"""pcapng blocks (pure) and what an existing file allows: checked byte by byte."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from refractium.hooks.pcapng import (
    Existing,
    enhanced_packet,
    examine,
    interface_description,
    section_header,
)

SHB, IDB, EPB = 0x0A0D0D0A, 1, 6


def blocks(data: bytes) -> list[tuple[int, bytes]]:
    """(type, body) of each block, checking the framing: aligned, length at both ends."""
    out = []
    offset = 0
    while offset < len(data):
        block_type, total = struct.unpack_from("<II", data, offset)
        assert total % 4 == 0 and total >= 12, (offset, total)
        assert struct.unpack_from("<I", data, offset + total - 4) == (total,)
        out.append((block_type, data[offset + 8 : offset + total - 4]))
        offset += total
    assert offset == len(data)
    return out


def options(body: bytes) -> dict[int, bytes]:
    """An options list: code -> value, up to opt_endofopt, which must be there."""
    found: dict[int, bytes] = {}
    offset = 0
    while True:
        code, length = struct.unpack_from("<HH", body, offset)
        if code == 0:
            assert length == 0 and offset + 4 == len(body)
            return found
        found[code] = body[offset + 4 : offset + 4 + length]
        offset += 4 + length + (-length % 4)


def test_section_header() -> None:
    ((kind, body),) = blocks(section_header())
    assert kind == SHB
    assert struct.unpack_from("<IHHq", body) == (0x1A2B3C4D, 1, 0, -1)
    assert options(body[16:]) == {4: b"refractium"}  # shb_userappl


def test_interface_description() -> None:
    ((kind, body),) = blocks(interface_description(1500))
    assert kind == IDB
    assert struct.unpack_from("<HHI", body) == (1, 0, 1500)  # Ethernet, reserved, snaplen
    assert options(body[8:]) == {
        2: b"refractium",
        3: b"TCP frames synthesised from proxied connections",
        9: bytes((9,)),  # if_tsresol: nanoseconds
    }


def test_enhanced_packet_pads_cuts_and_comments() -> None:
    timestamp = 0x0123_4567_89AB_CDEF
    ((kind, body),) = blocks(enhanced_packet(timestamp, b"abcde", 0))
    assert kind == EPB
    interface, high, low, captured, original = struct.unpack_from("<IIIII", body)
    assert (interface, high << 32 | low, captured, original) == (0, timestamp, 5, 5)
    assert body[20:28] == b"abcde\0\0\0"  # padded to 32 bits
    assert len(body) == 28, "no options: no opt_endofopt either"

    ((_, cut),) = blocks(enhanced_packet(1, b"x" * 100, 64, comment="first"))
    assert struct.unpack_from("<II", cut, 12) == (64, 100)
    assert cut[20:84] == b"x" * 64
    assert options(cut[84:]) == {1: b"first"}


def write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def test_examine_tells_what_a_path_holds(tmp_path: Path) -> None:
    one = section_header() + interface_description(0) + enhanced_packet(1, b"frame", 0)
    assert examine(str(tmp_path / "missing.pcapng")) is Existing.NOTHING
    assert examine(write(tmp_path / "empty", b"")) is Existing.NOTHING
    assert examine(write(tmp_path / "one", one)) is Existing.CAPTURE
    assert examine(write(tmp_path / "two", one + one)) is Existing.CAPTURE
    assert examine(write(tmp_path / "header", section_header())) is Existing.CAPTURE
    # Killed while writing: the last block is cut short, at any byte.
    for cut in (1, 4, 9, 12):
        assert examine(write(tmp_path / "cut", one[:-cut])) is Existing.DAMAGED, cut
    assert examine(write(tmp_path / "short", one[:20])) is Existing.DAMAGED
    # Not pcapng at all: classic pcap, text, a pcapng-looking start with a bad magic.
    pcap = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    assert examine(write(tmp_path / "classic", pcap)) is Existing.FOREIGN
    assert examine(write(tmp_path / "text", b"[server]\nport = 8080\n")) is Existing.FOREIGN
    assert examine(write(tmp_path / "magic", one[:8] + b"ABCD" + one[12:])) is Existing.FOREIGN
    assert examine(write(tmp_path / "tiny", b"\n\r\r\n")) is Existing.FOREIGN


def test_examine_reads_a_big_endian_section(tmp_path: Path) -> None:
    """Another tool's capture, written on a big-endian machine, can be appended to."""
    options_end = struct.pack(">HH", 0, 0)
    body = struct.pack(">IHHq", 0x1A2B3C4D, 1, 0, -1) + options_end
    total = 12 + len(body)
    shb = struct.pack(">II", SHB, total) + body + struct.pack(">I", total)
    assert examine(write(tmp_path / "be", shb)) is Existing.CAPTURE
    assert examine(write(tmp_path / "be-cut", shb[:-4])) is Existing.DAMAGED


def test_examine_of_a_directory_is_an_oserror(tmp_path: Path) -> None:
    with pytest.raises(IsADirectoryError):
        examine(str(tmp_path))

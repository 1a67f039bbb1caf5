"""The ADB probe: the host's CNXN message, optionally after adb 26's empty message."""

from __future__ import annotations

import struct
from typing import Any

import pytest

from refractium.protocols import BUILTIN, Match, Transport, Verdict
from refractium.protocols.adb import AdbProbe
from refractium.protocols.base import first_bytes

S = Any  # the conftest ``samples`` fixture (a class of helpers)

PROBE = BUILTIN["adb"]
assert isinstance(PROBE, AdbProbe)
MATCH = Match("adb")

A_CNXN = 0x4E584E43
FEATURES = (
    b"host::features=shell_v2,cmd,stat_v2,ls_v2,fixed_push_mkdir,apex,abb,"
    b"fixed_push_symlink_timestamp,abb_exec,remount_shell,track_app,sendrecv_v2,"
    b"sendrecv_v2_brotli,sendrecv_v2_lz4,sendrecv_v2_zstd,sendrecv_v2_dry_run_send"
)
EMPTY_MESSAGE = bytes(20) + b"\xff\xff\xff\xff"


def cnxn(
    payload: bytes = FEATURES,
    *,
    command: int = A_CNXN,
    version: int = 0x01000001,
    max_data: int = 1 << 20,
    length: int | None = None,
    check: int = 0,
    magic: int | None = None,
) -> bytes:
    """An ADB message: six little-endian words, then the payload."""
    header = struct.pack(
        "<6I",
        command,
        version,
        max_data,
        len(payload) if length is None else length,
        check,
        command ^ 0xFFFFFFFF if magic is None else magic,
    )
    return header + payload


# adb before 2016: version 0x01000000, 4 KiB payloads, a byte sum as data_check.
LEGACY = cnxn(b"host::\x00", version=0x01000000, max_data=4096, check=sum(b"host::\x00"))


def test_registered() -> None:
    assert PROBE.name == "adb"
    assert PROBE.transport is Transport.TCP
    assert first_bytes(PROBE) == frozenset({ord("C"), 0})


def test_header_layout() -> None:
    assert cnxn()[:4] == b"CNXN"
    assert cnxn()[20:24] == bytes.fromhex("bcb1a7b1")


@pytest.mark.parametrize(
    "message",
    [
        pytest.param(cnxn(), id="modern"),
        pytest.param(LEGACY, id="legacy"),
        pytest.param(cnxn(b"host:emulator-5554:banner"), id="serial-and-banner"),
        pytest.param(EMPTY_MESSAGE + cnxn(), id="adb-26-empty-message-first"),
    ],
)
def test_connect_byte_by_byte(message: bytes, samples: S) -> None:
    # Decided once "host:" is in; every shorter prefix needs more.
    decided = message.index(b"host:") + 5
    assert samples.assert_incremental(PROBE, message[:decided]) == MATCH
    assert PROBE.probe(message) == MATCH


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(cnxn(command=0x48545541), id="AUTH"),
        pytest.param(cnxn(command=0x4E45504F), id="OPEN"),
        pytest.param(cnxn(b"device::ro.product.name=x"), id="device-banner"),
        pytest.param(cnxn(magic=0), id="bad-magic"),
        pytest.param(cnxn(version=0x02000000), id="version-2"),
        pytest.param(cnxn(version=0x01010000), id="version-middle-byte"),
        pytest.param(cnxn(length=4), id="payload-too-short"),
        pytest.param(cnxn(length=(1 << 20) + 1), id="payload-too-long"),
        pytest.param(b"\x00" * 24 + cnxn(), id="other-leading-message"),
        pytest.param(EMPTY_MESSAGE + LEGACY.replace(b"host", b"HOST"), id="variant-bad-payload"),
        pytest.param(b"cnxn" + cnxn()[4:], id="lower-case"),
        pytest.param(b"GET / HTTP/1.1\r\n", id="http"),
    ],
)
def test_not_adb(data: bytes) -> None:
    assert PROBE.probe(data) is Verdict.NO


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"C", id="C"),
        pytest.param(b"CNXN\x01\x00\x00", id="version-in-progress"),
        pytest.param(cnxn()[:14], id="length-in-progress"),
        pytest.param(b"\x00" * 20, id="empty-message-zeros"),
        pytest.param(EMPTY_MESSAGE + b"CN", id="after-empty-message"),
    ],
)
def test_prefixes_need_more(data: bytes) -> None:
    assert PROBE.probe(data) is Verdict.NEED_MORE


def test_fields_are_checked_as_they_arrive() -> None:
    assert PROBE.probe(cnxn(version=0x02000000)[:8]) is Verdict.NO
    assert PROBE.probe(cnxn(length=0)[:16]) is Verdict.NO
    assert PROBE.probe(cnxn(magic=0)[:21]) is Verdict.NO
    assert PROBE.probe(bytes(21) + b"\xfe") is Verdict.NO

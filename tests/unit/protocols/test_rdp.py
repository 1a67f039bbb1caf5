"""The RDP probe: a TPKT carrying an X.224 Connection Request."""

from __future__ import annotations

from typing import Any

import pytest

from refractium.protocols import BUILTIN, Match, Transport, Verdict
from refractium.protocols.base import first_bytes
from refractium.protocols.rdp import RdpProbe

S = Any  # the conftest ``samples`` fixture (a class of helpers)

PROBE = BUILTIN["rdp"]
assert isinstance(PROBE, RdpProbe)
MATCH = Match("rdp")

# RDP_NEG_REQ (MS-RDPBCGR 2.2.1.1.1): type 1, flags 0, length 8, protocols TLS|CredSSP|HybridEx.
NEG_REQ = bytes.fromhex("010008000b000000")


def connection_request(
    user_data: bytes = b"",
    *,
    code: int = 0xE0,
    dst_ref: bytes = b"\x00\x00",
    src_ref: bytes = b"\x00\x00",
    class_option: int = 0,
    li_delta: int = 0,
) -> bytes:
    """TPKT header, then the X.224 CR TPDU and what the client puts after it."""
    tpdu = bytes([code]) + dst_ref + src_ref + bytes([class_option]) + user_data
    length = 4 + 1 + len(tpdu)
    return b"\x03\x00" + length.to_bytes(2, "big") + bytes([len(tpdu) + li_delta]) + tpdu


# What mstsc sends: a cookie with the user name, then the negotiation request.
MSTSC = connection_request(b"Cookie: mstshash=Administr\r\n" + NEG_REQ)
# FreeRDP without a user name: the negotiation request only.
FREERDP = connection_request(NEG_REQ)
# nmap's RDP service probe, and rdesktop's classic request with a cookie only.
NMAP = bytes.fromhex("0300000b06e00000000000")
RDESKTOP = connection_request(b"Cookie: mstshash=user\r\n")


def test_registered() -> None:
    assert PROBE.name == "rdp"
    assert PROBE.transport is Transport.TCP
    assert first_bytes(PROBE) == frozenset({3})


def test_sample_layout() -> None:
    assert FREERDP.hex() == "030000130ee00000000000" + NEG_REQ.hex()
    assert connection_request() == NMAP


@pytest.mark.parametrize(
    "request_pdu",
    [
        pytest.param(MSTSC, id="mstsc"),
        pytest.param(FREERDP, id="freerdp"),
        pytest.param(NMAP, id="nmap"),
        pytest.param(RDESKTOP, id="rdesktop"),
        pytest.param(connection_request(src_ref=b"\x12\x34"), id="src-ref"),
        pytest.param(connection_request(b"x" * 248), id="longest"),
    ],
)
def test_requests_byte_by_byte(request_pdu: bytes, samples: S) -> None:
    assert samples.assert_incremental(PROBE, request_pdu) == MATCH


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"\x02\x00" + NMAP[2:], id="tpkt-version-2"),
        pytest.param(b"\x03\x01" + NMAP[2:], id="tpkt-reserved"),
        pytest.param(connection_request(li_delta=1), id="li-too-large"),
        pytest.param(connection_request(li_delta=-1), id="li-too-small"),
        pytest.param(connection_request(code=0xD0), id="connection-confirm"),
        pytest.param(connection_request(code=0xF0), id="data-tpdu"),
        pytest.param(connection_request(code=0xE1), id="credit"),
        pytest.param(connection_request(dst_ref=b"\x00\x01"), id="dst-ref"),
        pytest.param(connection_request(class_option=0x40), id="class-4"),
        pytest.param(bytes.fromhex("0300000a05e000000000"), id="length-10"),
        pytest.param(connection_request(b"x" * 249), id="length-260"),
        pytest.param(b"\x03\x00\x02", id="length-high-byte-2"),
        pytest.param(b"\x16\x03\x01\x00\x05", id="tls"),
    ],
)
def test_not_rdp(data: bytes) -> None:
    assert PROBE.probe(data) is Verdict.NO


def test_trailing_bytes_are_ignored() -> None:
    assert PROBE.probe(FREERDP + b"\x16\x03\x01") == MATCH


@pytest.mark.parametrize("data", [b"", b"\x03", b"\x03\x00", b"\x03\x00\x01", MSTSC[:-1]])
def test_prefixes_need_more(data: bytes) -> None:
    assert PROBE.probe(data) is Verdict.NEED_MORE

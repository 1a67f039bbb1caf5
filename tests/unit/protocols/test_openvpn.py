"""The OpenVPN probe: client hard resets over UDP and TCP, in every wrapping."""

from __future__ import annotations

import random
from typing import Any

import pytest

from refractium.protocols import BUILTIN, Match, Transport, Verdict
from refractium.protocols.base import first_bytes
from refractium.protocols.openvpn import OpenVpnProbe

S = Any  # the conftest ``samples`` fixture (a class of helpers)

PROBE = BUILTIN["openvpn"]
assert isinstance(PROBE, OpenVpnProbe)
MATCH = Match("openvpn")

V2 = 0x38  # P_CONTROL_HARD_RESET_CLIENT_V2 << 3, key id 0
V3 = 0x50  # P_CONTROL_HARD_RESET_CLIENT_V3 << 3
SESSION = bytes.fromhex("6b2f0e3d4a5c7e91")
TIME = bytes.fromhex("6650a1b2")
# The reliable layer: an empty ACK array and message packet id 0.
RELIABLE = b"\x00" + bytes(4)
# HMACs, tags and ciphertext look random; a fixed seed keeps the tests repeatable.
RANDOM = random.Random(1194)


def noise(size: int) -> bytes:
    return RANDOM.randbytes(size)


def plain(op: int = V2, reliable: bytes = RELIABLE) -> bytes:
    """No tls-auth or tls-crypt: opcode, session id, ACK array, message id."""
    return bytes([op]) + SESSION + reliable


def tls_auth(hmac_size: int = 20, replay_id: int = 1, reliable: bytes = RELIABLE) -> bytes:
    """--tls-auth: the HMAC, replay packet id and time precede the reliable layer."""
    hmac = noise(hmac_size)
    return bytes([V2]) + SESSION + hmac + replay_id.to_bytes(4, "big") + TIME + reliable


def tls_crypt(replay_id: int = 1, op: int = V2, ciphertext: int = 5) -> bytes:
    """--tls-crypt: replay packet id and time, 32-byte tag, encrypted rest."""
    return bytes([op]) + SESSION + replay_id.to_bytes(4, "big") + TIME + noise(32 + ciphertext)


def wkc(size: int = 291 + 8) -> bytes:
    """A wrapped client key: tag, encrypted key and metadata, then its own length."""
    return noise(size - 2) + size.to_bytes(2, "big")


def tls_crypt_v2(replay_id: int = 0x0F000001, key: bytes | None = None) -> bytes:
    """--tls-crypt-v2: a tls-crypt packet with opcode V3, then the WKc."""
    return tls_crypt(replay_id, op=V3) + (wkc() if key is None else key)


def tcp(packet: bytes) -> bytes:
    return len(packet).to_bytes(2, "big") + packet


def test_registered() -> None:
    assert PROBE.name == "openvpn"
    assert PROBE.transport is Transport.BOTH
    # The TCP length's high byte (packets below 2 KiB); the route table does
    # not filter probe_datagram's first byte.
    assert first_bytes(PROBE) == frozenset(range(8))


LAYOUTS = {
    "plain": plain(),
    "tls-auth-sha1": tls_auth(20),
    "tls-auth-md5": tls_auth(16),
    "tls-auth-sha224": tls_auth(28),
    "tls-auth-sha256": tls_auth(32),
    "tls-auth-sha384": tls_auth(48),
    "tls-auth-sha512": tls_auth(64),
    "tls-auth-retransmission": tls_auth(20, replay_id=5),
    "tls-auth-replay-id-0": tls_auth(20, replay_id=0),
    "tls-crypt": tls_crypt(),
    "tls-crypt-long": tls_crypt(3, ciphertext=100),
    "tls-crypt-v2": tls_crypt_v2(),
    "tls-crypt-v2-2.5-client": tls_crypt_v2(replay_id=1),
    "tls-crypt-v2-largest-key": tls_crypt_v2(key=wkc(1024)),
    "tls-crypt-v2-smallest-key": tls_crypt_v2(key=wkc(290)),
}


@pytest.mark.parametrize("packet", LAYOUTS.values(), ids=LAYOUTS.keys())
def test_hard_reset_over_udp(packet: bytes) -> None:
    assert PROBE.probe_datagram(packet) == MATCH


@pytest.mark.parametrize("packet", LAYOUTS.values(), ids=LAYOUTS.keys())
def test_hard_reset_over_tcp_byte_by_byte(packet: bytes, samples: S) -> None:
    # Every prefix of the packet fits a layout: more is needed until it is whole.
    assert samples.assert_incremental(PROBE, tcp(packet)) == MATCH


def test_tcp_split_reset() -> None:
    # Some clients send the first byte alone (a censorship workaround).
    stream = tcp(tls_auth())
    assert PROBE.probe(stream[:1]) is Verdict.NEED_MORE
    assert PROBE.probe(stream) == MATCH


def test_plain_reset_is_fourteen_bytes() -> None:
    assert plain().hex() == "38" + SESSION.hex() + "0000000000"
    assert PROBE.probe_datagram(plain()) == MATCH
    assert PROBE.probe(bytes.fromhex("000e") + plain()) == MATCH


@pytest.mark.parametrize(
    "packet",
    [
        pytest.param(plain(op=0x39), id="key-id-1"),
        pytest.param(plain(op=0x08), id="hard-reset-v1"),
        pytest.param(plain(op=0x40), id="hard-reset-server-v2"),
        pytest.param(plain(op=0x20), id="control-v1"),
        pytest.param(plain(op=0x28), id="ack-v1"),
        pytest.param(plain(op=0x30), id="data-v1"),
        pytest.param(plain(op=0x48), id="data-v2"),
        pytest.param(plain(op=0x58), id="control-wkc-v1"),
        pytest.param(plain()[:-1], id="too-short"),
        pytest.param(plain(reliable=b"\x01" + bytes(4)), id="ack-array-not-empty"),
        pytest.param(plain(reliable=b"\x00\x00\x00\x00\x01"), id="message-id-1"),
        pytest.param(tls_auth(reliable=b"\x00\x00\x00\x00\x01"), id="tls-auth-message-id-1"),
        pytest.param(tls_auth(replay_id=9), id="tls-auth-replay-id-9"),
        pytest.param(tls_auth(replay_id=0x0F000001), id="tls-auth-early-negotiation"),
        pytest.param(tls_auth(24), id="hmac-of-unknown-size"),
        pytest.param(tls_crypt(replay_id=9), id="tls-crypt-replay-id-9"),
        pytest.param(tls_crypt(ciphertext=4), id="tls-crypt-too-short"),
        pytest.param(tls_crypt(replay_id=0x0F000001), id="early-negotiation-with-v2"),
        pytest.param(tls_crypt_v2(replay_id=0x0F000009), id="v3-replay-id-9"),
        pytest.param(tls_crypt_v2(replay_id=0x0E000001), id="v3-other-marker"),
        pytest.param(tls_crypt_v2(key=wkc(289)), id="wkc-too-small"),
        pytest.param(tls_crypt_v2(key=wkc(1025)), id="wkc-too-large"),
        pytest.param(tls_crypt_v2()[:-1], id="wkc-length-cut"),
        pytest.param(tls_crypt(op=V3) + b"\x01\x30", id="v3-too-short-for-a-wkc"),
        pytest.param(tls_crypt_v2(key=noise(298) + b"\x03\xe8"), id="wkc-longer-than-packet"),
        pytest.param(bytes([V3]) + plain()[1:], id="v3-without-wkc"),
    ],
)
def test_not_a_hard_reset(packet: bytes) -> None:
    assert PROBE.probe_datagram(packet) is Verdict.NO
    assert PROBE.probe(tcp(packet)) is Verdict.NO


@pytest.mark.parametrize(
    "stream",
    [
        pytest.param(b"\x00\x0d" + plain()[:13], id="length-13"),
        pytest.param(b"\x08\x00" + plain(), id="length-2048"),
        pytest.param(b"\x08", id="high-byte-8"),
        pytest.param(b"\x38" + plain(), id="udp-packet-on-tcp"),
        pytest.param(b"\x00\x0e\x39", id="bad-opcode-early"),
        pytest.param(b"\x00\x0e" + plain()[:9] + b"\x01", id="bad-ack-early"),
        pytest.param(tcp(tls_auth(32, replay_id=77))[:50], id="bad-replay-id-early"),
    ],
)
def test_tcp_refusals(stream: bytes) -> None:
    assert PROBE.probe(stream) is Verdict.NO


@pytest.mark.parametrize(
    "stream",
    [b"", b"\x00", b"\x07", b"\x00\x0e", b"\x00\x0e\x38", tcp(tls_crypt_v2())[:200]],
)
def test_tcp_prefixes_need_more(stream: bytes) -> None:
    assert PROBE.probe(stream) is Verdict.NEED_MORE


def test_tcp_trailing_bytes_are_ignored() -> None:
    assert PROBE.probe(tcp(plain()) + tcp(plain())) == MATCH


@pytest.mark.parametrize(
    "datagram",
    [
        b"",
        b"\x38",
        bytes(14),
        b"GET / HTTP/1.1\r\n\r\n",
        # A WireGuard initiation is no OpenVPN packet.
        b"\x01\x00\x00\x00" + bytes(144),
    ],
)
def test_udp_garbage(datagram: bytes) -> None:
    assert PROBE.probe_datagram(datagram) is Verdict.NO

"""The WireGuard probe: the 148-byte handshake initiation, over UDP only."""

from __future__ import annotations

import random

import pytest

from refractium.protocols import BUILTIN, Match, Transport, Verdict
from refractium.protocols.base import first_bytes
from refractium.protocols.wireguard import INITIATION_SIZE, WireGuardProbe

PROBE = BUILTIN["wireguard"]
assert isinstance(PROBE, WireGuardProbe)
MATCH = Match("wireguard")
RANDOM = random.Random(51820)


def message(msg_type: int, *fields: int) -> bytes:
    """A WireGuard message: type, three reserved zero bytes, then random fields."""
    return bytes([msg_type, 0, 0, 0]) + b"".join(RANDOM.randbytes(size) for size in fields)


# sender index, ephemeral, encrypted static, encrypted timestamp, mac1, mac2
INITIATION = message(1, 4, 32, 32 + 16, 12 + 16, 16, 16)
# sender, receiver, ephemeral, encrypted nothing, mac1, mac2
RESPONSE = message(2, 4, 4, 32, 16, 16, 16)
# receiver, nonce, encrypted cookie
COOKIE_REPLY = message(3, 4, 24, 32)
# receiver, counter, an encrypted 64-byte packet
TRANSPORT = message(4, 4, 8, 64 + 16)


def test_registered() -> None:
    assert PROBE.name == "wireguard"
    assert PROBE.transport is Transport.UDP
    assert first_bytes(PROBE) == frozenset({1})


def test_initiation() -> None:
    assert len(INITIATION) == INITIATION_SIZE == 148
    assert PROBE.probe(INITIATION) == MATCH
    # mac2 is all zeros unless the responder asked for a cookie.
    assert PROBE.probe(INITIATION[:-16] + bytes(16)) == MATCH


@pytest.mark.parametrize(
    "datagram",
    [
        pytest.param(RESPONSE, id="response"),
        pytest.param(COOKIE_REPLY, id="cookie-reply"),
        pytest.param(TRANSPORT, id="transport-data"),
        pytest.param(b"\x04\x00\x00\x00" + INITIATION[4:], id="type-4-of-148-bytes"),
        pytest.param(b"\x02\x00\x00\x00" + INITIATION[4:], id="type-2-of-148-bytes"),
        pytest.param(INITIATION[:-1], id="147-bytes"),
        pytest.param(INITIATION + b"\x00", id="149-bytes"),
        pytest.param(b"\x01\x00\x00\x01" + INITIATION[4:], id="reserved-not-zero"),
        pytest.param(b"\x01\x01\x00\x00" + INITIATION[4:], id="reserved-not-zero-2"),
        pytest.param(b"\x01\x00\x00\x00", id="header-only"),
        pytest.param(b"", id="empty"),
        pytest.param(bytes(148), id="zeros"),
    ],
)
def test_not_an_initiation(datagram: bytes) -> None:
    assert PROBE.probe(datagram) is Verdict.NO


def test_prefixes_do_not_wait() -> None:
    # One datagram is one message: a short one is never completed by the next.
    for i in range(len(INITIATION)):
        assert PROBE.probe(INITIATION[:i]) is Verdict.NO

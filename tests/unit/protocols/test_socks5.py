"""The SOCKS5 probe: the RFC 1928 method-selection greeting."""

from __future__ import annotations

from typing import Any

import pytest

from refractium.protocols import BUILTIN, Match, Transport, Verdict
from refractium.protocols.base import first_bytes
from refractium.protocols.socks5 import Socks5Probe

S = Any  # the conftest ``samples`` fixture (a class of helpers)

PROBE = BUILTIN["socks5"]
assert isinstance(PROBE, Socks5Probe)
MATCH = Match("socks5")

# Captured from curl 7.88 (Debian 12): `curl -x socks5h://127.0.0.1:PORT ...`
# offers no authentication and GSSAPI; with `u:p@` it adds username/password.
CURL_GREETING = bytes.fromhex("05020001")
CURL_GREETING_WITH_AUTH = bytes.fromhex("0503000102")


def test_registered() -> None:
    assert PROBE.name == "socks5"
    assert PROBE.transport is Transport.TCP
    assert first_bytes(PROBE) == frozenset({5})


@pytest.mark.parametrize(
    "greeting",
    [
        CURL_GREETING,
        CURL_GREETING_WITH_AUTH,
        b"\x05\x01\x00",  # no authentication only
        b"\x05\x01\x02",  # username/password only
        bytes([5, 10, *range(10)]),  # every assigned method
        b"\x05\x02\x00\x00",  # a repeated method is not refused
    ],
)
def test_greetings_byte_by_byte(greeting: bytes, samples: S) -> None:
    assert samples.assert_incremental(PROBE, greeting) == MATCH


def test_request_sent_without_waiting_is_ignored() -> None:
    # An optimistic client may pipeline its CONNECT request after the greeting.
    connect = b"\x05\x01\x00\x03\x0bexample.com\x01\xbb"
    assert PROBE.probe(b"\x05\x01\x00" + connect) == MATCH


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"\x04\x01\x00\x50\x7f\x00\x00\x01user\x00", id="socks4"),
        pytest.param(b"\x05\x00", id="no-methods"),
        pytest.param(b"\x05\x0b" + bytes(11), id="eleven-methods"),
        pytest.param(b"\x05\xff" + bytes(255), id="255-methods"),
        pytest.param(b"\x05\x01\x0a", id="unassigned-method"),
        pytest.param(b"\x05\x01\x80", id="private-method"),
        pytest.param(b"\x05\x01\xff", id="no-acceptable-method"),
        pytest.param(b"\x05\x03\x00\x01\x80", id="bad-method-last"),
        pytest.param(b"\x05\x03\x80", id="bad-method-before-the-list-ends"),
        pytest.param(b"\x06", id="version-6"),
        pytest.param(b"GET / HTTP/1.1\r\n", id="http"),
    ],
)
def test_not_socks5(data: bytes) -> None:
    assert PROBE.probe(data) is Verdict.NO


@pytest.mark.parametrize("data", [b"", b"\x05", b"\x05\x02", b"\x05\x02\x00", b"\x05\x0a\x00"])
def test_prefixes_need_more(data: bytes) -> None:
    assert PROBE.probe(data) is Verdict.NEED_MORE

"""The HTTP probe: HTTP/1.x methods and the HTTP/2 prior-knowledge preface."""

from __future__ import annotations

from typing import Any

import pytest

from refractium.protocols import BUILTIN, HttpProbe, Match, Transport, Verdict
from refractium.protocols.http import METHODS, PREFACE

S = Any  # the conftest ``samples`` fixture (a class of helpers)

PROBE = BUILTIN["http"]

ALL_METHODS = sorted(
    m.decode()
    for m in (
        b"GET HEAD POST PUT DELETE CONNECT OPTIONS TRACE PATCH "
        b"PROPFIND PROPPATCH MKCOL COPY MOVE LOCK UNLOCK"
    ).split()
)


def test_registered() -> None:
    assert isinstance(PROBE, HttpProbe)
    assert PROBE.name == "http"
    assert PROBE.transport is Transport.TCP
    assert sorted(m.decode() for m in METHODS) == ALL_METHODS


@pytest.mark.parametrize("method", ALL_METHODS)
def test_every_method_byte_by_byte(method: str, samples: S) -> None:
    request = f"{method} /index.html HTTP/1.1\r\nHost: example.com\r\n\r\n".encode()
    # Everything before the space needs more; from the space on it matches.
    samples.assert_incremental(PROBE, method.encode() + b" ")
    for i in range(len(method) + 1, len(request) + 1):
        assert PROBE.probe(request[:i]) == Match("http")


def test_connect_and_options_forms() -> None:
    assert PROBE.probe(b"CONNECT example.com:443 HTTP/1.1\r\n") == Match("http")
    assert PROBE.probe(b"OPTIONS * HTTP/1.1\r\n") == Match("http")
    assert PROBE.probe(b"GET http://proxy.example/ HTTP/1.0\r\n") == Match("http")


def test_http2_preface_byte_by_byte(samples: S) -> None:
    match = samples.assert_incremental(PROBE, PREFACE)
    assert match == Match("http")
    # The preface is followed by the client's SETTINGS frame.
    assert PROBE.probe(PREFACE + b"\x00\x00\x12\x04\x00\x00\x00\x00\x00") == Match("http")


@pytest.mark.parametrize(
    "data",
    [
        b"get / HTTP/1.1\r\n",  # methods are case-sensitive
        b"GETS / HTTP/1.1\r\n",
        b"GET\t/ HTTP/1.1\r\n",
        b"GET/ HTTP/1.1",
        b"FOO / HTTP/1.1\r\n",
        b" GET / HTTP/1.1\r\n",
        b"\r\nGET / HTTP/1.1\r\n",
        b"PROPFINDX / HTTP/1.1",
        b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n",
        b"PRI / HTTP/1.1\r\n",
        b"SSH-2.0-OpenSSH_9.6\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        b"\x00",
        b"G\x00",
        b"x" * 5000,
    ],
)
def test_not_http(data: bytes) -> None:
    assert PROBE.probe(data) is Verdict.NO


@pytest.mark.parametrize(
    "data", [b"", b"G", b"GE", b"GET", b"P", b"PR", b"PRI", b"PRI ", b"PROPPATCH", b"UNLOC"]
)
def test_prefixes_need_more(data: bytes) -> None:
    assert PROBE.probe(data) is Verdict.NEED_MORE


def test_preface_prefixes_need_more() -> None:
    for i in range(len(PREFACE)):
        assert PROBE.probe(PREFACE[:i]) is Verdict.NEED_MORE

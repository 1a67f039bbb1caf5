"""The TLS probe ("tls" and "https"): real hellos, fragmented hellos, refusals."""

from __future__ import annotations

from typing import Any

import pytest

from refractium.protocols import BUILTIN, Match, TlsProbe, Transport, Verdict

S = Any  # the conftest ``samples`` fixture (a class of helpers)

# JA4 values below are those FoxIO's reference implementation gives the same
# hellos (see data/ja4/README.md for how it was run).
CAPTURED_OPENSSL_JA4 = "t13d3111h2_e8f1e7e78f70_1f22a2ca17c4"


@pytest.fixture(params=["tls", "https"])
def probe(request: pytest.FixtureRequest) -> TlsProbe:
    found = BUILTIN[request.param]
    assert isinstance(found, TlsProbe)
    return found


def test_identity(probe: TlsProbe) -> None:
    assert probe.transport is Transport.TCP
    assert probe.name in ("tls", "https")


def test_real_hello_byte_by_byte(probe: TlsProbe, real_hello: bytes, samples: S) -> None:
    match = samples.assert_incremental(probe, real_hello)
    assert (match.sni, match.alpn) == ("mixed.example.com", ("h2", "http/1.1"))
    # This Python's own build decides the exact value; data/ja4 pins real ones.
    assert match.ja4 is not None
    assert match.ja4.startswith("t13d")


def test_captured_openssl_hello(probe: TlsProbe, samples: S) -> None:
    match = samples.assert_incremental(probe, samples.captured_openssl_hello)
    assert match == Match(
        probe.name, "captured.example.org", ("h2", "http/1.1"), CAPTURED_OPENSSL_JA4
    )


@pytest.mark.parametrize("sizes", [(100,), (3, 300), (60, 60, 60)], ids=["2", "3", "4"])
def test_hello_over_several_records(
    probe: TlsProbe, real_hello: bytes, samples: S, sizes: tuple[int, ...]
) -> None:
    stream = samples.reframe(real_hello, sizes)
    match = samples.assert_incremental(probe, stream)
    whole = probe.probe(real_hello)
    assert isinstance(whole, Match)
    assert match == Match(probe.name, "mixed.example.com", ("h2", "http/1.1"), whole.ja4)


def test_no_sni_no_alpn(probe: TlsProbe, samples: S) -> None:
    stream = samples.python_hello(server_hostname=None, alpn=None)
    match = samples.assert_incremental(probe, stream)
    assert (match.sni, match.alpn) == (None, ())
    # "i": no server_name extension; "00": no ALPN.
    assert match.ja4 is not None
    assert match.ja4[3] == "i"
    assert match.ja4[8:10] == "00"


def test_hand_made_hello_with_ip_literal_name(probe: TlsProbe, samples: S) -> None:
    msg = samples.handshake([samples.sni_extension(b"192.0.2.7"), samples.alpn_extension(b"h2")])
    stream = samples.frame(msg, (50,))
    assert samples.assert_incremental(probe, stream) == Match(
        probe.name, "192.0.2.7", ("h2",), "t12d0302h2_40b44b994229_000000000000"
    )


def test_tls12_style_hello_without_extensions(probe: TlsProbe, samples: S) -> None:
    stream = samples.frame(samples.handshake(None))
    assert samples.assert_incremental(probe, stream) == Match(
        probe.name, None, (), "t12i030000_40b44b994229_000000000000"
    )


def test_sslv2_hello_is_refused(probe: TlsProbe, samples: S) -> None:
    assert probe.probe(samples.sslv2_hello) is Verdict.NO
    assert probe.probe(samples.sslv2_hello[:1]) is Verdict.NO


@pytest.mark.parametrize(
    "data",
    [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"SSH-2.0-OpenSSH_9.6\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        b"\x00",
        b"\x16\x02",  # record version byte must be 3
        b"\x16\x03\x09",
        b"\x16\x03\x01\x00\x00",
        b"\x16\x03\x01\x00\x30\x02",  # a ServerHello
        b"\x15\x03\x03\x00\x02\x02\x28",  # an alert record
    ],
)
def test_not_tls(probe: TlsProbe, data: bytes) -> None:
    assert probe.probe(data) is Verdict.NO


@pytest.mark.parametrize("data", [b"", b"\x16", b"\x16\x03", b"\x16\x03\x01\x02\x00\x01"])
def test_prefixes_need_more(probe: TlsProbe, data: bytes) -> None:
    assert probe.probe(data) is Verdict.NEED_MORE


def test_corrupted_hello_is_no_or_need_more(probe: TlsProbe, real_hello: bytes) -> None:
    # Inflate the extensions length by one: the hello no longer adds up.
    bad = bytearray(real_hello)
    bad[3:5] = (int.from_bytes(bad[3:5], "big") + 1).to_bytes(2, "big")
    bad[6:9] = (int.from_bytes(bad[6:9], "big") + 1).to_bytes(3, "big")
    assert probe.probe(bytes(bad)) is Verdict.NEED_MORE  # one byte short
    assert probe.probe(bytes(bad) + b"\x00") is Verdict.NO


def test_duplicate_sni_is_refused(probe: TlsProbe, samples: S) -> None:
    msg = samples.handshake([samples.sni_extension(b"a.com"), samples.sni_extension(b"b.com")])
    assert probe.probe(samples.frame(msg)) is Verdict.NO

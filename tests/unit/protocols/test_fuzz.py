"""Property tests: no probe raises, whatever the peer sends; answers agree across prefixes."""

from __future__ import annotations

import contextlib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from refractium.protocols import BUILTIN, CustomProbe, Match, Probe, Verdict
from refractium.protocols.clienthello import (
    ClientHello,
    Incomplete,
    Malformed,
    parse_client_hello,
    parse_handshake,
)

CUSTOM = (
    CustomProbe("patterns", (b"\x00\x0e8", b"MAGIC", b"\xff" * 40)),
    CustomProbe("anchored", regex=r"^HELLO [0-9]+"),
    CustomProbe("unanchored", (b"xy",), regex=r"(ab|cd)+\x00"),
)
PROBES: tuple[Probe, ...] = (*BUILTIN.values(), *CUSTOM)
# The UDP side of the probes whose framing differs between TCP and UDP.
DATAGRAM_PROBES = tuple(
    (probe, probe.probe_datagram) for probe in PROBES if hasattr(probe, "probe_datagram")
)
# Stream probes whose answer only firms up as data comes: once NO, always NO;
# once a Match, always the same Match. (Not custom patterns, which search the
# whole data, nor wireguard, whose datagram must be exactly 148 bytes.)
PREFIX_CONSISTENT = tuple(
    BUILTIN[name]
    for name in (
        "http",
        "tls",
        "ssh",
        "dns",
        "openvpn",
        "xmpp",
        "socks5",
        "tinc",
        "adb",
        "rdp",
        "syslog",
        "ftp",
        "anyprot",
    )
)

FAST = settings(
    max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
# For the checks that call every probe on many prefixes or mutations.
LIGHT = settings(max_examples=300, deadline=None)

# Inputs that get past the first byte of each probe more often than random.
interesting = st.one_of(
    st.binary(max_size=2048),
    st.builds(lambda b: b"\x16\x03\x01" + b, st.binary(max_size=600)),
    st.builds(lambda b: b"\x16\x03\x03\x00\x80\x01\x00\x00\x7c\x03\x03" + b, st.binary()),
    st.builds(lambda b: b"GET" + b, st.binary(max_size=20)),
    st.builds(lambda b: b"PRI * HTTP/2.0\r\n" + b, st.binary(max_size=20)),
    st.builds(lambda b: b"SS" + b, st.binary(max_size=8)),
    st.builds(lambda b: b"HELLO" + b, st.binary(max_size=8)),
    # dns: a query header, bare (UDP) or after a TCP length.
    st.builds(
        lambda b: b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00" + b, st.binary(max_size=80)
    ),
    st.builds(
        lambda b: b"\x00\x21\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00" + b, st.binary(max_size=80)
    ),
    # openvpn: the hard reset opcodes, over UDP and TCP.
    st.builds(lambda b: b"\x38" + b, st.binary(max_size=120)),
    st.builds(lambda b: b"\x50" + b, st.binary(max_size=600)),
    st.builds(lambda b: b"\x00\x0e\x38" + b, st.binary(max_size=20)),
    st.builds(lambda b: b"\x38" + bytes(13) + b, st.binary(max_size=20)),
    # wireguard: an initiation's header and length.
    st.builds(lambda b: b"\x01\x00\x00\x00" + b, st.binary(min_size=144, max_size=144)),
    st.builds(lambda b: b"<?xml " + b, st.binary(max_size=40)),
    st.builds(lambda b: b"<stream:stream " + b, st.binary(max_size=40)),
    st.builds(lambda b: b"\x05" + b, st.binary(max_size=12)),
    st.builds(lambda b: b"0 " + b, st.binary(max_size=12)),
    st.builds(lambda b: b"CNXN" + b, st.binary(max_size=40)),
    st.builds(lambda b: bytes(20) + b"\xff\xff\xff\xffCNXN" + b, st.binary(max_size=40)),
    st.builds(lambda b: b"\x03\x00\x00" + b, st.binary(max_size=40)),
    st.builds(lambda b: b"<1" + b, st.binary(max_size=12)),
    st.builds(lambda b: b"99 <" + b, st.binary(max_size=12)),
    st.builds(lambda b: b"USER" + b, st.binary(max_size=8)),
)


def check_all(data: bytes) -> None:
    for probe in PROBES:
        result = probe.probe(data)
        assert isinstance(result, (Match, Verdict)), (probe, data)
        if isinstance(result, Match):
            assert result.protocol == probe.name
            # Computed on this first read, from the rest of the bytes.
            assert result.ja4 is None or result.ja4[0] == "t"


@FAST
@given(interesting)
def test_probes_never_raise(data: bytes) -> None:
    check_all(data)


def check_datagrams(data: bytes) -> None:
    for probe, probe_datagram in DATAGRAM_PROBES:
        result = probe_datagram(data)
        assert isinstance(result, (Match, Verdict)), (probe, data)
        if isinstance(result, Match):
            assert result.protocol == probe.name
            assert result.ja4 is None or result.ja4[0] == "q"


@FAST
@given(interesting)
def test_datagram_probes_never_raise(data: bytes) -> None:
    check_datagrams(data)


def check_prefixes(data: bytes, cuts: list[int]) -> None:
    """Probe ``data`` cut at ``cuts`` (modulo its length) and whole: NO and Match are final."""
    lengths = sorted({c % (len(data) + 1) for c in cuts} | {len(data)})
    for probe in PREFIX_CONSISTENT:
        before: object = Verdict.NEED_MORE
        for length in lengths:
            now = probe.probe(data[:length])
            if before is Verdict.NO or isinstance(before, Match):
                assert now == before, (probe, data[:length], before, now)
            before = now


@LIGHT
@given(interesting, st.lists(st.integers(min_value=0), min_size=1, max_size=8))
def test_answers_agree_across_prefixes(data: bytes, cuts: list[int]) -> None:
    check_prefixes(data, cuts)


@FAST
@given(st.binary(max_size=2048))
def test_parsers_raise_only_their_own_errors(data: bytes) -> None:
    for parse in (parse_client_hello, parse_handshake):
        with contextlib.suppress(Incomplete, Malformed):
            assert isinstance(parse(data), ClientHello)


@FAST
@given(
    flips=st.lists(
        st.tuples(st.integers(min_value=0), st.integers(min_value=0, max_value=255)),
        min_size=1,
        max_size=6,
    ),
    cut=st.none() | st.integers(min_value=0),
)
def test_mutated_real_hello(
    real_hello: bytes, flips: list[tuple[int, int]], cut: int | None
) -> None:
    data = bytearray(real_hello)
    for position, value in flips:
        data[position % len(data)] = value
    mutated = bytes(data if cut is None else data[: cut % (len(data) + 1)])
    check_all(mutated)
    check_datagrams(mutated)
    # The bare-message entry point, on the same bytes minus the record header.
    with contextlib.suppress(Incomplete, Malformed):
        parse_handshake(mutated[5:])


# Valid first flights of the other built-in protocols, to mutate like the hello.
OPENVPN_TLS_AUTH = b"\x38" + bytes(range(1, 9)) + bytes(range(100, 120)) + b"\x00\x00\x00\x01"
OPENVPN_TLS_AUTH += b"\x66\x50\xa1\xb2" + bytes(5)
VALID_FIRST_FLIGHTS = (
    # dig's UDP and TCP queries (see test_dns.py)
    bytes.fromhex(
        "cca40120000100000000000103777777076578616d706c6503636f6d000001000100002904d0000000"
        "00000c000a00087e2b40bd4904eccd"
    ),
    bytes.fromhex(
        "0038df3d0120000100000000000103777777076578616d706c6503636f6d00001c000100002904d00000"
        "0000000c000a00089481ac3722e5a6ab"
    ),
    OPENVPN_TLS_AUTH,
    len(OPENVPN_TLS_AUTH).to_bytes(2, "big") + OPENVPN_TLS_AUTH,
    b"\x50" + bytes(8) + b"\x0f\x00\x00\x01" + bytes(4 + 32 + 5 + 298) + b"\x01\x2c",
    b"\x01\x00\x00\x00" + bytes(range(144)),
    b"<?xml version='1.0'?><stream:stream to='example.com' xmlns='jabber:client'>",
    b"\x05\x02\x00\x01",
    b"0 alpha 17.7\n",
    b"CNXN\x01\x00\x00\x01\x00\x00\x10\x00\x07\x00\x00\x00\x00\x00\x00\x00\xbc\xb1\xa7\xb1host::\x00",
    b"\x03\x00\x00\x13\x0e\xe0\x00\x00\x00\x00\x00\x01\x00\x08\x00\x0b\x00\x00\x00",
    b"<13>1 2026-11-21T23:36:34.329417+00:00 vm root - - - hello",
    b"99 <13>Nov 21 23:36:34 vm root: hello",
    b"USER anonymous\r\n",
)


@LIGHT
@given(
    sample=st.sampled_from(VALID_FIRST_FLIGHTS),
    flips=st.lists(
        st.tuples(st.integers(min_value=0), st.integers(min_value=0, max_value=255)),
        max_size=4,
    ),
    cuts=st.lists(st.integers(min_value=0), max_size=6),
)
def test_mutated_first_flights(
    sample: bytes, flips: list[tuple[int, int]], cuts: list[int]
) -> None:
    data = bytearray(sample)
    for position, value in flips:
        data[position % len(data)] = value
    mutated = bytes(data)
    check_all(mutated)
    check_datagrams(mutated)
    check_prefixes(mutated, cuts)

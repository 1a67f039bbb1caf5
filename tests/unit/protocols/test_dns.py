"""The DNS probe: queries over UDP (one datagram) and TCP (length-prefixed)."""

from __future__ import annotations

from typing import Any

import pytest

from refractium.protocols import BUILTIN, Match, Transport, Verdict
from refractium.protocols.base import first_bytes
from refractium.protocols.dns import DnsProbe

S = Any  # the conftest ``samples`` fixture (a class of helpers)

PROBE = BUILTIN["dns"]
assert isinstance(PROBE, DnsProbe)
MATCH = Match("dns")

# Captured from dig 9.18 (Debian 12): `dig @127.0.0.1 -p PORT www.example.com A`
# (RD, AD, an EDNS OPT record with a client cookie), the same with
# `+noedns +nocookie example.org MX`, and `+tcp www.example.com AAAA`.
DIG_UDP = bytes.fromhex(
    "cca40120000100000000000103777777076578616d706c6503636f6d000001000100002904d0000000"
    "00000c000a00087e2b40bd4904eccd"
)
DIG_UDP_NO_EDNS = bytes.fromhex("012001200001000000000000076578616d706c65036f726700000f0001")
DIG_TCP = bytes.fromhex(
    "0038df3d0120000100000000000103777777076578616d706c6503636f6d00001c000100002904d00000"
    "0000000c000a00089481ac3722e5a6ab"
)

OPT = b"\x00" + b"\x00\x29" + b"\x04\xd0" + b"\x00\x00\x00\x00" + b"\x00\x00"


def encode_name(name: str) -> bytes:
    labels = [label.encode() for label in name.strip(".").split(".") if label]
    return b"".join(len(label).to_bytes(1, "big") + label for label in labels) + b"\x00"


def message(
    name: str = "www.example.com",
    qtype: int = 1,
    qclass: int = 1,
    *,
    ident: int = 0x1234,
    flags: int = 0x0100,  # RD
    counts: tuple[int, int, int, int] | None = None,
    records: bytes = b"",
    raw_name: bytes | None = None,
) -> bytes:
    """A DNS message: header, one question, then ``records`` as they are.

    ``counts`` defaults to (1, 0, 0, number of OPT records in ``records``).
    """
    if counts is None:
        counts = (1, 0, 0, records.count(OPT))
    header = ident.to_bytes(2, "big") + flags.to_bytes(2, "big")
    header += b"".join(c.to_bytes(2, "big") for c in counts)
    qname = encode_name(name) if raw_name is None else raw_name
    return header + qname + qtype.to_bytes(2, "big") + qclass.to_bytes(2, "big") + records


def tcp(msg: bytes) -> bytes:
    return len(msg).to_bytes(2, "big") + msg


def rr(rtype: int, rdata: bytes, name: bytes = b"\x00") -> bytes:
    return (
        name
        + rtype.to_bytes(2, "big")
        + b"\x00\x01"
        + b"\x00\x00\x0e\x10"
        + (len(rdata).to_bytes(2, "big") + rdata)
    )


SOA_RDATA = encode_name("ns.example.com") + encode_name("admin.example.com") + bytes(20)


def question_end(msg: bytes) -> int:
    """The offset just past the first question of a message."""
    pos = 12
    while msg[pos]:
        pos += 1 + msg[pos]
    return pos + 1 + 4


def assert_tcp_incremental(msg: bytes) -> None:
    """Over TCP: more is needed until the question is in; from there on, a match."""
    stream = tcp(msg)
    decided = 2 + question_end(msg)
    for i in range(len(stream) + 1):
        expected = MATCH if i >= decided else Verdict.NEED_MORE
        assert PROBE.probe(stream[:i]) == expected, f"prefix of {i} bytes"
    assert PROBE.probe(stream + b"\x00trailing\xff bytes") == MATCH


def both(msg: bytes) -> tuple[object, object]:
    """The datagram verdict and the TCP verdict of one message."""
    return PROBE.probe_datagram(msg), PROBE.probe(tcp(msg))


def test_registered() -> None:
    assert PROBE.name == "dns"
    assert PROBE.transport is Transport.BOTH
    # A datagram starts with the random ID: no first-byte filter.
    assert first_bytes(PROBE) is None


# --- real clients ---------------------------------------------------------------


@pytest.mark.parametrize("datagram", [DIG_UDP, DIG_UDP_NO_EDNS], ids=["edns", "no-edns"])
def test_captured_dig_datagrams(datagram: bytes) -> None:
    assert PROBE.probe_datagram(datagram) == MATCH
    # A datagram is complete: any cut of it is refused, not waited on.
    for i in range(len(datagram)):
        assert PROBE.probe_datagram(datagram[:i]) is Verdict.NO
    assert PROBE.probe_datagram(datagram + b"\x00") is Verdict.NO


def test_captured_dig_tcp_byte_by_byte() -> None:
    assert_tcp_incremental(DIG_TCP[2:])


# --- hand-made requests ---------------------------------------------------------


@pytest.mark.parametrize(
    "msg",
    [
        pytest.param(message(), id="A"),
        pytest.param(message("", qtype=2), id="root-NS"),
        pytest.param(message("version.bind", qtype=16, qclass=3), id="CH-TXT"),
        pytest.param(message("example.com", qtype=255, qclass=255), id="ANY-ANY"),
        pytest.param(message("example.com", qtype=252), id="AXFR"),
        pytest.param(message(flags=0x0000), id="no-RD"),
        pytest.param(message(flags=0x0130), id="AD-CD"),
        pytest.param(message(records=OPT), id="EDNS"),
        pytest.param(
            message(
                records=OPT + rr(250, b"x" * 40, name=encode_name("key.example")),
                counts=(1, 0, 0, 2),
            ),
            id="EDNS-and-TSIG",
        ),
        pytest.param(
            message(records=rr(250, b"x" * 40, name=b"\xc0\x0c"), counts=(1, 0, 0, 1)),
            id="compressed-additional-name",
        ),
        pytest.param(
            message("a" * 63 + "." + "b" * 63 + "." + "c" * 63 + "." + "d" * 61), id="255-byte-name"
        ),
        pytest.param(message(raw_name=b"\x03a\x00b\x01\xff\x00"), id="binary-labels"),
    ],
)
def test_queries(msg: bytes) -> None:
    assert PROBE.probe_datagram(msg) == MATCH
    assert_tcp_incremental(msg)


def test_ixfr_with_soa_in_authority() -> None:
    msg = message(
        "example.com", qtype=251, counts=(1, 0, 1, 0), records=rr(6, SOA_RDATA, b"\xc0\x0c")
    )
    assert both(msg) == (MATCH, MATCH)
    # Only IXFR carries an authority record.
    other = message(
        "example.com", qtype=6, counts=(1, 0, 1, 0), records=rr(6, SOA_RDATA, b"\xc0\x0c")
    )
    assert both(other) == (Verdict.NO, Verdict.NO)


def test_notify_with_and_without_soa() -> None:
    notify = 0x2400  # opcode 4, AA
    assert both(message("example.com", qtype=6, flags=notify)) == (MATCH, MATCH)
    msg = message(
        "example.com",
        qtype=6,
        flags=notify,
        counts=(1, 1, 0, 0),
        records=rr(6, SOA_RDATA, b"\xc0\x0c"),
    )
    assert both(msg) == (MATCH, MATCH)


def test_update() -> None:
    update = 0x2800  # opcode 5
    add = rr(1, b"\xc0\x00\x02\x01", encode_name("host.example.com"))
    msg = message("example.com", qtype=6, flags=update, counts=(1, 0, 1, 0), records=add)
    assert both(msg) == (MATCH, MATCH)
    # The zone section must name the zone's SOA.
    wrong = message("example.com", qtype=1, flags=update, counts=(1, 0, 1, 0), records=add)
    assert both(wrong) == (Verdict.NO, Verdict.NO)


def test_pipelined_tcp_queries(samples: S) -> None:
    first, second = tcp(message("a.example")), tcp(message("b.example", qtype=28))
    assert samples.assert_incremental(PROBE, first) == MATCH
    assert PROBE.probe(first + second) == MATCH


def test_tcp_decides_on_the_question_only() -> None:
    # The additional record has not arrived: the question and the length decide.
    msg = tcp(message(records=OPT))
    end_of_question = len(msg) - len(OPT)
    assert PROBE.probe(msg[:end_of_question]) == MATCH
    assert PROBE.probe(msg[: end_of_question - 1]) is Verdict.NEED_MORE


# --- refusals -------------------------------------------------------------------


def _flip(msg: bytes, offset: int, value: int) -> bytes:
    return msg[:offset] + bytes([value]) + msg[offset + 1 :]


BASE = message(records=OPT)


@pytest.mark.parametrize(
    "msg",
    [
        pytest.param(message(flags=0x8180), id="response"),
        pytest.param(message(flags=0x0300), id="TC"),
        pytest.param(message(flags=0x0140), id="Z"),
        pytest.param(message(flags=0x0101), id="RCODE"),
        pytest.param(message(flags=0x0900), id="IQUERY"),
        pytest.param(message(flags=0x1100), id="STATUS"),
        pytest.param(message(flags=0x1900), id="opcode-3"),
        pytest.param(message(flags=0x3100), id="DSO"),
        pytest.param(message(counts=(0, 0, 0, 0)), id="no-question"),
        pytest.param(message(counts=(2, 0, 0, 0)), id="two-questions"),
        pytest.param(message(counts=(1, 1, 0, 0), records=rr(1, bytes(4))), id="answer"),
        pytest.param(message(counts=(1, 0, 0, 3), records=OPT * 3), id="three-additional"),
        pytest.param(message(raw_name=b"\x40" + b"a" * 64 + b"\x00"), id="64-byte-label"),
        pytest.param(message(raw_name=b"\xc0\x0c"), id="pointer-in-question"),
        pytest.param(message(raw_name=b"\x41\x00"), id="extended-label"),
        pytest.param(message(raw_name=(b"\x3f" + b"a" * 63) * 4 + b"\x00"), id="256-byte-name"),
        pytest.param(message(qtype=0), id="qtype-0"),
        pytest.param(message(qclass=2), id="class-CS"),
        pytest.param(message(qclass=0x0101), id="class-257"),
        pytest.param(message(counts=(1, 0, 0, 1)), id="missing-additional"),
        pytest.param(BASE[:-1], id="truncated-OPT"),
    ],
)
def test_not_dns(msg: bytes) -> None:
    assert PROBE.probe_datagram(msg) is Verdict.NO
    assert PROBE.probe(tcp(msg)) is Verdict.NO


@pytest.mark.parametrize(
    "msg",
    [
        pytest.param(rr(250, b"x" * 40, name=b"\xc0\x40"), id="forward-pointer"),
        pytest.param(rr(250, b"x" * 40, name=b"\xc0\x05"), id="pointer-into-header"),
        pytest.param(rr(250, b"x" * 40, name=b"\x40" + bytes(65)), id="64-byte-label"),
        pytest.param(rr(250, b"x" * 40)[:-1], id="rdata-overrun"),
        pytest.param(rr(250, b"")[:-3], id="truncated-fixed-fields"),
        pytest.param(b"\xc0", id="truncated-pointer"),
    ],
)
def test_datagram_records_are_walked(msg: bytes) -> None:
    # Over TCP the records are not looked at (the question and the length decide).
    datagram = message(records=msg, counts=(1, 0, 0, 1))
    assert PROBE.probe_datagram(datagram) is Verdict.NO


def test_datagram_with_trailing_bytes_is_refused() -> None:
    assert PROBE.probe_datagram(BASE + b"\x00") is Verdict.NO
    # Over TCP the length prefix says where the message ends: the rest is the next one.
    assert PROBE.probe(tcp(BASE) + b"\x00") == MATCH


@pytest.mark.parametrize(
    "stream",
    [
        pytest.param(b"\x00\x10" + message()[:16], id="length-below-minimum"),
        pytest.param(b"\x00\x11" + message()[:17], id="length-ends-in-the-name"),
        pytest.param(tcp(message())[:-1].replace(b"\x00\x21", b"\x00\x20", 1), id="length-short"),
        pytest.param(tcp(message() + b"\x00"), id="length-long-no-records"),
    ],
)
def test_tcp_length_must_agree(stream: bytes) -> None:
    assert PROBE.probe(stream) is Verdict.NO


def test_tcp_records_must_fit_the_length() -> None:
    msg = message(records=OPT)
    # The length leaves fewer than 11 bytes for the one additional record.
    short = (len(msg) - 1).to_bytes(2, "big") + msg[:-1]
    assert PROBE.probe(short) is Verdict.NO


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00",
        b"\xff",  # a 65280-byte message could still be a query
        b"\x00\x21",
        b"\x00\x21\x12\x34\x01",
        tcp(message())[:20],
    ],
)
def test_tcp_prefixes_need_more(data: bytes) -> None:
    assert PROBE.probe(data) is Verdict.NEED_MORE


def test_tcp_header_is_checked_as_it_arrives() -> None:
    stream = tcp(message(flags=0x8180))
    assert PROBE.probe(stream[:5]) is Verdict.NO  # QR is in the first flags byte
    stream = tcp(message(counts=(1, 0, 0, 0x0100)))
    assert PROBE.probe(stream[:13]) is Verdict.NO  # ARCOUNT's high byte alone rules it out


@pytest.mark.parametrize(
    "data",
    [
        b"",
        bytes(16),
        b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n",
        b"SSH-2.0-OpenSSH_9.6\r\n",
        bytes(range(64)),
    ],
)
def test_datagram_garbage(data: bytes) -> None:
    assert PROBE.probe_datagram(data) is Verdict.NO

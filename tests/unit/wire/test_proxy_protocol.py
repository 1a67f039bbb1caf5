"""Tests for the PROXY protocol codec (refractium.wire.proxy_protocol)."""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from refractium.wire.proxy_protocol import (
    MAX_HEADER,
    MAX_V1,
    MAX_V2,
    NEED_MORE,
    NOT_PROXY,
    V2_SIGNATURE,
    Endpoint,
    Malformed,
    NeedMore,
    NotProxy,
    ProxyHeader,
    encode_v1,
    encode_v2,
    parse,
)

SIG = V2_SIGNATURE
APP = b"GET / HTTP/1.1\r\nHost: example\r\n\r\n"


def v2(ver_cmd: int, family: int, block: bytes, length: int | None = None) -> bytes:
    """A v2 header by hand: signature, the two bytes, the length, the block."""
    size = len(block) if length is None else length
    return SIG + bytes((ver_cmd, family)) + struct.pack("!H", size) + block


def host(text: str) -> str:
    """What parse reports for ``text``: canonical, IPv4-mapped as IPv4."""
    address = ipaddress.ip_address(text)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def assert_incremental(header: bytes, expected: ProxyHeader) -> None:
    """Byte by byte: every strict prefix needs more; the whole (plus app data) parses."""
    assert expected.length == len(header)
    buffer = bytearray()
    for byte in header:
        assert parse(bytes(buffer)) == NEED_MORE, bytes(buffer)
        buffer.append(byte)
    assert parse(bytes(buffer)) == expected
    data = bytes(buffer) + APP
    assert parse(data) == expected
    assert data[expected.length :] == APP


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize(
    ("source", "destination"),
    [
        (("192.0.2.1", 56324), ("198.51.100.7", 443)),
        (("0.0.0.0", 0), ("255.255.255.255", 65535)),
        (("2001:db8::1", 40000), ("2001:db8:0:0:1::2", 22)),
        (("::", 0), ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535)),
        (("fe80::1", 1), ("::1", 2)),
    ],
)
@pytest.mark.parametrize("version", [1, 2])
def test_round_trip(source: tuple[str, int], destination: tuple[str, int], version: int) -> None:
    header = encode_v1(source, destination) if version == 1 else encode_v2(source, destination)
    expected = ProxyHeader(
        (host(source[0]), source[1]), (host(destination[0]), destination[1]), version, len(header)
    )
    assert_incremental(header, expected)


def test_longest_v1_line_fits() -> None:
    ones = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
    header = encode_v1((ones, 65535), (ones, 65535))
    assert len(header) == 104  # the specification's TCP6 figure
    assert_incremental(header, ProxyHeader((ones, 65535), (ones, 65535), 1, 104))


def test_encode_v1_spec_example() -> None:
    assert (
        encode_v1(("192.168.0.1", 56324), ("192.168.0.11", 443))
        == b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n"
    )
    assert (
        encode_v1(("2001:DB8:0::1", 1), ("2001:db8::0:2", 2))
        == b"PROXY TCP6 2001:db8::1 2001:db8::2 1 2\r\n"
    )


def test_encode_v2_bytes() -> None:
    assert encode_v2(("192.168.0.1", 56324), ("192.168.0.11", 443)) == (
        SIG + b"\x21\x11\x00\x0c" + b"\xc0\xa8\x00\x01" + b"\xc0\xa8\x00\x0b" + b"\xdc\x04\x01\xbb"
    )
    assert encode_v2(("::1", 1), ("2001:db8::2", 2)) == (
        SIG
        + b"\x21\x21\x00\x24"
        + b"\x00" * 15
        + b"\x01"
        + b"\x20\x01\x0d\xb8"
        + b"\x00" * 11
        + b"\x02"
        + b"\x00\x01\x00\x02"
    )


def test_mixed_families() -> None:
    # v1 cannot mix: UNKNOWN ("use the real endpoints").
    assert encode_v1(("192.0.2.1", 1), ("2001:db8::2", 2)) == b"PROXY UNKNOWN\r\n"
    # v2 sends the IPv4 one as IPv4-mapped IPv6; parse reports it as IPv4 again.
    header = encode_v2(("192.0.2.1", 1), ("2001:db8::2", 2))
    assert header[13] == 0x21
    assert b"\x00" * 10 + b"\xff\xff\xc0\x00\x02\x01" in header
    assert parse(header) == ProxyHeader(("192.0.2.1", 1), ("2001:db8::2", 2), 2, 52)


def test_ipv4_mapped_inputs_are_sent_as_ipv4() -> None:
    assert (
        encode_v1(("::ffff:192.0.2.1", 1), ("192.0.2.2", 2))
        == b"PROXY TCP4 192.0.2.1 192.0.2.2 1 2\r\n"
    )
    assert encode_v2(("::ffff:192.0.2.1", 1), ("::ffff:192.0.2.2", 2))[13] == 0x11


def test_zone_id_is_dropped() -> None:
    assert encode_v1(("fe80::1%eth0", 1), ("fe80::2", 2)) == b"PROXY TCP6 fe80::1 fe80::2 1 2\r\n"


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (("example.com", 1), "does not appear to be"),
        (("", 1), "does not appear to be"),
        (("1.2.3.4", -1), "port out of range"),
        (("1.2.3.4", 65536), "port out of range"),
        (("1.2.3.4", True), "port out of range"),
    ],
)
@pytest.mark.parametrize("encode", [encode_v1, encode_v2])
def test_encode_rejects(
    source: tuple[str, int], message: str, encode: Callable[[Endpoint, Endpoint], bytes]
) -> None:
    with pytest.raises(ValueError, match=message):
        encode(source, ("1.2.3.4", 80))


# --------------------------------------------------------------------------- v1 by hand


def test_v1_spec_example() -> None:
    data = (
        b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n"
        b"GET / HTTP/1.1\r\nHost: 192.168.0.11\r\n\r\n"
    )
    assert parse(data) == ProxyHeader(("192.168.0.1", 56324), ("192.168.0.11", 443), 1, 47)


@pytest.mark.parametrize(
    ("line", "source", "destination"),
    [
        (b"PROXY TCP6 2001:DB8::1 2001:0db8:0000::0002 1 2\r\n", "2001:db8::1", "2001:db8::2"),
        (b"PROXY TCP6 ::ffff:192.0.2.1 ::ffff:c000:202 1 2\r\n", "192.0.2.1", "192.0.2.2"),
        (b"PROXY TCP6 1:2:3:4:5:6:1.2.3.4 1::2:3 1 2\r\n", "1:2:3:4:5:6:102:304", "1::2:3"),
        (b"PROXY TCP6 1:2:3:4:5:6:7:: ::1 1 2\r\n", "1:2:3:4:5:6:7:0", "::1"),
    ],
)
def test_v1_ipv6_spellings(line: bytes, source: str, destination: str) -> None:
    assert_incremental(line, ProxyHeader((source, 1), (destination, 2), 1, len(line)))


@pytest.mark.parametrize(
    "line",
    [
        b"PROXY UNKNOWN\r\n",
        b"PROXY UNKNOWN ffff:f::f ffff:f::f 65535 65535\r\n",
        b"PROXY UNKNOWN whatever \x00\xff\r\x0a",
        b"PROXY UNKNOWN lone\rCR and lone\nLF\r\n",
        b"PROXY UNKNOWN \r\r\n",
        b"PROXY UNKNOWN " + b"x" * (MAX_V1 - 16) + b"\r\n",  # exactly 107 bytes
    ],
)
def test_v1_unknown(line: bytes) -> None:
    assert_incremental(line, ProxyHeader(None, None, 1, len(line)))


@pytest.mark.parametrize(
    "line",
    [
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1111 65536\r\n",  # port > 65535
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1111 99999\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 0111 2222\r\n",  # heading zero
        b"PROXY TCP4 1.2.3.4 5.6.7.8 +111 2222\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2222\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1_1 2222\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 \xd9\xa1 2222\r\n",  # Arabic-Indic one
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1111 \r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1111\r\n",  # a field missing
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1111 2222 \r\n",  # trailing space
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1111 2222 3333\r\n",
        b"PROXY TCP4  1.2.3.4 5.6.7.8 1111 2222\r\n",  # two spaces
        b"PROXY TCP4 1.2.3.4\t5.6.7.8 1111 2222\r\n",
        b"PROXY TCP4 1.2.3.256 5.6.7.8 1111 2222\r\n",  # bad addresses
        b"PROXY TCP4 1.2.3.04 5.6.7.8 1111 2222\r\n",
        b"PROXY TCP4 1.2.3 5.6.7.8 1111 2222\r\n",
        b"PROXY TCP4 ::1 5.6.7.8 1111 2222\r\n",  # wrong family
        b"PROXY TCP6 1.2.3.4 ::1 1111 2222\r\n",
        b"PROXY TCP6 ::1 ::1::2 1111 2222\r\n",
        b"PROXY TCP6 fe80::1%eth0 ::1 1111 2222\r\n",  # zone id
        b"PROXY TCP6 ::g ::1 1 2\r\n",
        b"PROXY TCP4 localhost 5.6.7.8 1111 2222\r\n",
        b"PROXY TCP4 \xef\xbc\x91.2.3.4 5.6.7.8 1111 2222\r\n",  # fullwidth one
        b"PROXY TCP5 1.2.3.4 5.6.7.8 1111 2222\r\n",  # bad protocol
        b"PROXY tcp4 1.2.3.4 5.6.7.8 1111 2222\r\n",
        b"PROXY UDP4 1.2.3.4 5.6.7.8 1111 2222\r\n",
        b"PROXY UNKNOWNX\r\n",
        b"PROXY UNKNOWN\r\r\n",  # UNKNOWN ends with the CRLF or a space
        b"PROXY \r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1111 2222\nmore\r\n",  # a lone LF does not end it
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1111 2222\rmore\r\n",  # nor a lone CR
    ],
)
def test_v1_malformed(line: bytes) -> None:
    result = parse(line)
    assert isinstance(result, Malformed), result


@pytest.mark.parametrize(
    "prefix",
    [
        b"PROXY X",
        b"PROXY TCP4 256",
        b"PROXY TCP4 1.2.3.4.",
        b"PROXY TCP4 01",
        b"PROXY TCP4 1.2.3.4  ",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1111 2222 ",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 65536",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 0 01",  # "0" is complete; "01" could never be
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX",  # after the CR only the LF may come
        b"PROXY TCP6 1.",
        b"PROXY TCP6 1:2:3:4:5:6:7:8:",
        b"PROXY TCP6 ::1::",
        b"PROXY TCP6 12345",
        b"PROXY TCP6 ::1 ::1 1 2\n",
        b"PROXY TCP4 1.2.3.4\r",
    ],
)
def test_v1_invalid_prefix_is_malformed_at_once(prefix: bytes) -> None:
    assert parse(prefix[:-1]) == NEED_MORE
    assert isinstance(parse(prefix), Malformed), prefix


def test_v1_length_limit() -> None:
    # The CRLF must end within the first 107 bytes.
    at_limit = b"PROXY UNKNOWN " + b"x" * (MAX_V1 - 16) + b"\r\n"
    assert len(at_limit) == MAX_V1
    assert parse(at_limit + APP) == ProxyHeader(None, None, 1, MAX_V1)
    over = b"PROXY UNKNOWN " + b"x" * (MAX_V1 - 15) + b"\r\n"
    assert isinstance(parse(over), Malformed)
    # Without a CRLF: need more while one can still fit, malformed once it cannot.
    assert parse(at_limit[:-2]) == NEED_MORE  # 105 bytes
    assert parse(over[:-3]) == NEED_MORE  # 105 bytes
    assert parse(at_limit[:-1]) == NEED_MORE  # 106 bytes ending in CR: the LF makes 107
    assert isinstance(parse(over[:-2]), Malformed)  # 106 bytes, no CR: CRLF would end at 108
    assert isinstance(parse(over[:-1]), Malformed)  # 107 bytes, no CRLF
    assert isinstance(parse(b"PROXY UNKNOWN " + b"x" * 500), Malformed)
    # A TCP6 line with IPv4 tails can exceed 107 bytes: not a valid header.
    long = "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255"
    line = f"PROXY TCP6 {long} {long} 65535 65535\r\n".encode()
    assert len(line) > MAX_V1
    assert isinstance(parse(line), Malformed)


# --------------------------------------------------------------------------- v2 by hand


def test_v2_tcp4_by_hand_with_tlvs() -> None:
    block = bytes([192, 168, 0, 1, 192, 168, 0, 11]) + struct.pack("!HH", 56324, 443)
    tlvs = b"\x01\x00\x02h2" + b"\x04\x00\x00"  # ALPN "h2", then a NOOP
    header = v2(0x21, 0x11, block + tlvs)
    assert len(header) == 16 + 12 + 8
    expected = ProxyHeader(("192.168.0.1", 56324), ("192.168.0.11", 443), 2, 36)
    assert_incremental(header, expected)


def test_v2_tcp6_by_hand() -> None:
    source = ipaddress.IPv6Address("2001:db8::1").packed
    destination = ipaddress.IPv6Address("::ffff:10.0.0.1").packed
    header = v2(0x21, 0x21, source + destination + struct.pack("!HH", 1, 65535))
    expected = ProxyHeader(("2001:db8::1", 1), ("10.0.0.1", 65535), 2, 52)
    assert_incremental(header, expected)


@pytest.mark.parametrize(
    "header",
    [
        v2(0x20, 0x00, b""),  # LOCAL, UNSPEC: what HAProxy sends with health checks
        v2(0x20, 0x11, bytes(12)),  # LOCAL ignores the addresses...
        v2(0x20, 0x11, b""),  # ...even when there are too few
        v2(0x20, 0x21, bytes(7)),
        v2(0x21, 0x00, b""),  # PROXY, UNSPEC: addresses unknown
        v2(0x21, 0x00, bytes(12)),
        v2(0x21, 0x12, bytes(12)),  # UDP: no use to a TCP proxy, treated as UNSPEC
        v2(0x21, 0x22, bytes(36)),
        v2(0x21, 0x31, bytes(216)),  # UNIX
        v2(0x21, 0x32, bytes(216) + b"\x04\x00\x01\x00"),
    ],
)
def test_v2_without_addresses(header: bytes) -> None:
    assert_incremental(header, ProxyHeader(None, None, 2, len(header)))


def test_v2_length_limit() -> None:
    longest = v2(0x21, 0x11, bytes(MAX_V2 - 16))
    assert parse(longest + APP) == ProxyHeader(("0.0.0.0", 0), ("0.0.0.0", 0), 2, MAX_V2)
    assert parse(longest[:-1]) == NEED_MORE
    assert isinstance(parse(v2(0x21, 0x11, bytes(MAX_V2 - 15))), Malformed)
    # Rejected as soon as the length's high byte rules it out.
    assert parse(SIG + b"\x21\x11\x0f") == NEED_MORE
    assert isinstance(parse(SIG + b"\x21\x11\x10"), Malformed)
    assert isinstance(parse(SIG + b"\x21\x11\xff\xff"), Malformed)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (v2(0x11, 0x11, bytes(12)), "version"),  # version 1 nibble
        (v2(0x31, 0x11, bytes(12)), "version"),
        (v2(0x01, 0x11, bytes(12)), "version"),
        (v2(0x22, 0x11, bytes(12)), "command"),
        (v2(0x2F, 0x11, bytes(12)), "command"),
        (v2(0x21, 0x13, bytes(12)), "family"),  # unknown protocol nibble
        (v2(0x21, 0x41, bytes(12)), "family"),  # unknown family nibble
        (v2(0x21, 0x01, bytes(12)), "family"),
        (v2(0x21, 0x10, bytes(12)), "family"),
        (v2(0x21, 0xFF, bytes(12)), "family"),
        (v2(0x21, 0x11, bytes(11)), "too short"),  # length below the address block
        (v2(0x21, 0x21, bytes(12)), "too short"),
        (v2(0x21, 0x31, bytes(36)), "too short"),
        (v2(0x21, 0x11, bytes(12), length=5000), "longer than MAX_V2"),
    ],
)
def test_v2_malformed(data: bytes, reason: str) -> None:
    result = parse(data)
    assert isinstance(result, Malformed)
    assert reason in result.reason
    # Found as soon as the offending byte arrives.
    first_bad = {"version": 13, "command": 13, "family": 14}.get(reason, 16)
    if reason == "longer than MAX_V2":
        first_bad = 15
    assert parse(data[: first_bad - 1]) == NEED_MORE
    assert isinstance(parse(data[:first_bad]), Malformed)


def test_v2_length_overrun_needs_more() -> None:
    # The length announces more bytes than have come: wait, do not read past.
    header = v2(0x21, 0x11, bytes(12), length=40)
    assert parse(header) == NEED_MORE
    assert parse(header + bytes(27)) == NEED_MORE
    assert parse(header + bytes(28)) == ProxyHeader(("0.0.0.0", 0), ("0.0.0.0", 0), 2, 56)


# --------------------------------------------------------------------------- not PROXY


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"P",
        b"PROXY",
        b"\r",
        b"\r\n\r\n",
        SIG[:-1],
        SIG,
        SIG + b"\x21",
        SIG + b"\x21\x11",
        SIG + b"\x21\x11\x00",
        SIG + b"\x21\x11\x00\x0c",
        b"PROXY ",
        b"PROXY TCP",
        b"PROXY UNKNOWN",
    ],
)
def test_need_more(data: bytes) -> None:
    assert parse(data) == NEED_MORE


@pytest.mark.parametrize(
    "data",
    [
        APP,
        b"SSH-2.0-OpenSSH_9.2\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        b"PROXX TCP4 1.2.3.4 5.6.7.8 1 2\r\n",  # diverges from the signature...
        b"PROXY\tTCP4 1.2.3.4 5.6.7.8 1 2\r\n",
        b"PROXYTCP4",
        b"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
        b"\r\n\r\nX",
        SIG[:-2] + b"X\n\x21\x11\x00\x0c" + bytes(12),  # ...of either version
        b"\n\r\n\r\x00\r\nQUIT\n",
        b"\x00",
    ],
)
def test_not_proxy(data: bytes) -> None:
    assert parse(data) == NOT_PROXY


def test_bytes_like_inputs() -> None:
    header = encode_v2(("192.0.2.1", 1), ("192.0.2.2", 2)) + APP
    expected = ProxyHeader(("192.0.2.1", 1), ("192.0.2.2", 2), 2, 28)
    assert parse(bytearray(header)) == expected
    assert parse(memoryview(header)) == expected
    assert parse(memoryview(b"PROXY TCP4")) == NEED_MORE


def test_result_objects() -> None:
    assert NeedMore() == NEED_MORE
    assert NotProxy() == NOT_PROXY
    assert max(MAX_V1, MAX_V2) <= MAX_HEADER
    header = ProxyHeader(("192.0.2.1", 1), None, 2, 16)
    with pytest.raises(AttributeError):
        header.length = 3  # type: ignore[misc]


# --------------------------------------------------------------------------- properties

PROPERTY = settings(max_examples=500, deadline=None)

ip4 = st.ip_addresses(v=4)
ip6 = st.ip_addresses(v=6)
port = st.integers(0, 65535)


def ipv6_spellings(address: ipaddress.IPv6Address) -> st.SearchStrategy[str]:
    """The ways a v1 sender may write ``address``: compressed, full, upper case,
    and with the low 32 bits as a dotted quad."""
    groups = [f"{group:x}" for group in struct.unpack("!6H", address.packed[:12])]
    dotted = str(ipaddress.IPv4Address(address.packed[12:]))
    runs = [
        (i, j)
        for i in range(6)
        for j in range(i + 1, 7)
        if all(group == "0" for group in groups[i:j])
    ]
    tails = [":".join([*groups, dotted])]
    for i, j in runs:
        left, right = ":".join(groups[:i]), ":".join([*groups[j:], dotted])
        tails.append(f"{left}::{right}")
    return st.sampled_from(
        [str(address), address.exploded, str(address).upper(), address.exploded.upper(), *tails]
    )


@st.composite
def v1_lines(draw: st.DrawFn) -> tuple[bytes, ProxyHeader | None]:
    """A v1 line as any sender may spell it, and what it should parse to
    (``None`` when it is over 107 bytes)."""
    if draw(st.booleans()):
        source, destination = draw(ip4), draw(ip4)
        protocol, texts = "TCP4", (str(source), str(destination))
    else:
        source, destination = draw(ip6), draw(ip6)
        assert isinstance(source, ipaddress.IPv6Address)
        assert isinstance(destination, ipaddress.IPv6Address)
        protocol = "TCP6"
        texts = (draw(ipv6_spellings(source)), draw(ipv6_spellings(destination)))
    sport, dport = draw(port), draw(port)
    line = f"PROXY {protocol} {texts[0]} {texts[1]} {sport} {dport}\r\n".encode()
    if len(line) > MAX_V1:
        return line, None
    return line, ProxyHeader(
        (host(str(source)), sport), (host(str(destination)), dport), 1, len(line)
    )


@PROPERTY
@given(v1_lines(), st.binary(max_size=40))
def test_v1_every_prefix_needs_more(case: tuple[bytes, ProxyHeader | None], tail: bytes) -> None:
    line, expected = case
    if expected is None:
        assert isinstance(parse(line + tail), Malformed)
        return
    for end in range(len(line)):
        assert parse(line[:end]) == NEED_MORE, line[:end]
    assert parse(line + tail) == expected


@PROPERTY
@given(st.one_of(ip4, ip6), port, st.one_of(ip4, ip6), port, st.binary(max_size=40))
def test_round_trip_property(
    source: ipaddress.IPv4Address | ipaddress.IPv6Address,
    sport: int,
    destination: ipaddress.IPv4Address | ipaddress.IPv6Address,
    dport: int,
    tail: bytes,
) -> None:
    src, dst = (str(source), sport), (str(destination), dport)
    expected_src, expected_dst = (host(src[0]), sport), (host(dst[0]), dport)
    mixed = (
        ipaddress.ip_address(expected_src[0]).version
        != ipaddress.ip_address(expected_dst[0]).version
    )
    one = encode_v1(src, dst)
    if mixed:
        assert parse(one + tail) == ProxyHeader(None, None, 1, len(one))
    else:
        assert parse(one + tail) == ProxyHeader(expected_src, expected_dst, 1, len(one))
    two = encode_v2(src, dst)
    assert parse(two + tail) == ProxyHeader(expected_src, expected_dst, 2, len(two))


def check_result(data: bytes) -> None:
    """The documented results only, and consistent with each other."""
    result = parse(data)
    assert isinstance(result, (ProxyHeader, NeedMore, NotProxy, Malformed)), result
    if isinstance(result, ProxyHeader):
        assert result.version in (1, 2)
        assert 0 < result.length <= min(len(data), MAX_HEADER)
        assert (result.source is None) == (result.destination is None)
        # The header alone, or followed by anything else, gives the same.
        assert parse(data[: result.length]) == result
        assert parse(data[: result.length] + b"\r\n\x00junk") == result
        # Every strict prefix of a valid header is a prefix of a valid header.
        for end in range(result.length):
            assert parse(data[:end]) == NEED_MORE, data[:end]
    elif isinstance(result, NeedMore):
        assert len(data) < MAX_HEADER
        for end in range(len(data)):
            assert parse(data[:end]) == NEED_MORE, data[:end]
    elif isinstance(result, Malformed):
        # Malformed is final: more bytes never rescue it.
        assert isinstance(parse(data + b"\r\n" + bytes(40)), Malformed)


@PROPERTY
@given(
    st.one_of(
        st.binary(max_size=300),
        st.builds(lambda b: b"PROXY " + b, st.binary(max_size=120)),
        # v1 lines from the characters that matter, to get past the first field
        st.builds(
            lambda b: b"PROXY " + bytes(b),
            st.lists(st.sampled_from(b"TCP46UNKOW .:0129afAF\r\n%"), max_size=110),
        ),
        st.builds(lambda b: SIG + b, st.binary(max_size=300)),
        st.builds(
            lambda vc, fam, b: SIG + bytes((vc, fam)) + b,
            st.sampled_from([0x20, 0x21, 0x22, 0x11]),
            st.sampled_from([0x00, 0x11, 0x12, 0x21, 0x22, 0x31, 0x32, 0x13]),
            st.binary(max_size=300),
        ),
    )
)
def test_random_bytes(data: bytes) -> None:
    check_result(data)


valid_headers = st.one_of(
    st.builds(
        encode_v1,
        st.tuples(st.ip_addresses().map(str), port),
        st.tuples(st.ip_addresses().map(str), port),
    ),
    st.builds(
        encode_v2,
        st.tuples(st.ip_addresses().map(str), port),
        st.tuples(st.ip_addresses().map(str), port),
    ),
    v1_lines().map(lambda case: case[0]),
    st.sampled_from(
        [
            b"PROXY UNKNOWN\r\n",
            b"PROXY UNKNOWN 1.2.3.4 5.6.7.8 1 2\r\n",
            v2(0x20, 0x00, b""),
            v2(0x21, 0x11, bytes(12) + b"\x01\x00\x02h2"),
            v2(0x21, 0x31, bytes(216)),
        ]
    ),
)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(valid_headers) + draw(st.binary(max_size=20)))
    signature = len(SIG) if data.startswith(SIG) else len(b"PROXY ")
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate", "repeat"]))
        # Mostly past the signature, where a mutation does not just make it NotProxy.
        low = min(signature, len(data)) if draw(st.integers(0, 3)) else 0
        at = draw(st.integers(low, max(len(data) - 1, low)))
        if kind == "flip" and at < len(data):
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set" and at < len(data):
            data[at] = draw(st.sampled_from(b" \r\n\x00.:0129afAF\xff"))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=4))
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 4))]
        elif kind == "truncate":
            del data[at:]
        elif kind == "repeat":
            data[at:at] = data[at : at + draw(st.integers(1, 8))]
    return bytes(data)


@PROPERTY
@given(mutated())
def test_mutated_headers(data: bytes) -> None:
    check_result(data)

"""JA4 fingerprints: the specification's examples, and hellos fingerprinted by FoxIO's code.

``data/ja4`` holds real hellos (curl, OpenSSL, Python's ssl, aioquic, and
Chrome from FoxIO's own capture) with the value FoxIO's reference
implementation gives each; its README says how they were made. The
hand-made hellos below went through that implementation too (as
``data/ja4/handmade.pcap``).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from refractium.protocols import ja4
from refractium.protocols.base import Match, Verdict
from refractium.protocols.clienthello import parse_client_hello, parse_handshake
from refractium.protocols.ja4 import fingerprint
from refractium.protocols.quic import QuicProbe
from refractium.protocols.tls import TlsProbe

S = Any  # the conftest ``samples`` fixture (a class of helpers)
DATA = Path(__file__).parent / "data" / "ja4"
REFERENCE = json.loads((DATA / "reference.json").read_text())


# --- reading the captures ----------------------------------------------------


def client_payloads(path: Path) -> list[bytes]:
    """The payloads a client sent to port 443 in a classic pcap (Ethernet, IPv4)."""
    raw = path.read_bytes()
    assert struct.unpack_from("<IHH", raw) == (0xA1B2C3D4, 2, 4)
    assert struct.unpack_from("<I", raw, 20)[0] == 1  # Ethernet
    payloads = []
    pos = 24
    while pos < len(raw):
        size = struct.unpack_from("<I", raw, pos + 8)[0]
        frame = raw[pos + 16 : pos + 16 + size]
        pos += 16 + size
        assert frame[12:14] == b"\x08\x00"
        ip = frame[14:]
        ihl = (ip[0] & 0x0F) * 4
        proto, segment = ip[9], ip[ihl : struct.unpack_from(">H", ip, 2)[0]]
        dport = struct.unpack_from(">H", segment, 2)[0]
        if dport != 443:
            continue
        if proto == 6:  # TCP
            data = segment[(segment[12] >> 4) * 4 :]
        else:
            assert proto == 17  # UDP
            data = segment[8:]
        if data:
            payloads.append(data)
    return payloads


def ja4_of_capture(name: str) -> str | None:
    payloads = client_payloads(DATA / name)
    if name.startswith("aioquic"):
        match = QuicProbe().probe_datagrams(payloads)
    else:
        match = TlsProbe().probe(b"".join(payloads))
    assert isinstance(match, Match)
    return match.ja4


# --- the specification's examples (technical_details/JA4.md) ----------------

SPEC_CIPHERS = "1301,1302,1303,c02b,c02f,c02c,c030,cca9,cca8,c013,c014,009c,009d,002f,0035"
SPEC_EXTENSIONS = "001b,0000,0033,0010,4469,0017,002d,000d,0005,0023,0012,002b,ff01,000b,000a,0015"
SPEC_SIG_ALGS = "0403,0804,0401,0503,0805,0501,0806,0601"


def u16(csv: str) -> bytes:
    return bytes.fromhex(csv.replace(",", ""))


def spec_fingerprint(
    *,
    ciphers: str = SPEC_CIPHERS,
    extensions: str = SPEC_EXTENSIONS,
    sig_algs: str = SPEC_SIG_ALGS,
    alpn: tuple[str, ...] = ("h2", "http/1.1"),
    prefix: str = "t",
) -> str:
    return fingerprint(
        prefix,
        0x0303,
        u16(ciphers),
        [int(t, 16) for t in extensions.split(",")],
        b"\x03\x04\x03\x03",
        u16(sig_algs),
        alpn,
    )


def test_the_specification_example() -> None:
    assert spec_fingerprint() == "t13d1516h2_8daaf6152771_e5627efa2ab1"
    assert spec_fingerprint(prefix="q") == "q13d1516h2_8daaf6152771_e5627efa2ab1"


def test_without_signature_algorithms_no_underscore_is_hashed() -> None:
    # JA4.md: "0005,...,ff01 = 6d807ffa2a79" when no signature algorithms are sent.
    assert spec_fingerprint(sig_algs="").endswith("_6d807ffa2a79")


@pytest.mark.parametrize(
    ("first", "chars"),
    [
        (b"h2", "h2"),
        (b"http/1.1", "h1"),
        (b"h", "hh"),  # one character: both first and last
        # JA4.md: a first or last byte that is not an ASCII letter or digit
        # gives the first and last hex digits of the value.
        (b"\xab", "ab"),
        (b"\x20", "20"),
        (b"\xab\xcd", "ad"),
        (b"\x20\x61", "21"),
        (b"\x30\xab", "3b"),
        (b"\x61\x20", "60"),
        (b"\x30\x31\xab\xcd", "3d"),
        (b"\x30\xab\xcd\x31", "01"),
    ],
)
def test_alpn_characters(first: bytes, chars: str) -> None:
    got = spec_fingerprint(alpn=(first.decode("latin-1"), "h2"))
    assert got == f"t13d1516{chars}_8daaf6152771_e5627efa2ab1"


def test_grease_alpn_identifiers_are_skipped() -> None:
    # RFC 8701 reserves 0x0A0A, 0x1A1A, ... as ALPN identifiers too.
    assert spec_fingerprint(alpn=("\x0a\x0a", "\xfa\xfa", "http/1.1"))[8:10] == "h1"
    assert spec_fingerprint(alpn=("\x0a\x0a",))[8:10] == "00"
    # A two-byte name that is not a GREASE value counts.
    assert spec_fingerprint(alpn=("\x0a\x1a", "h2"))[8:10] == "0a"


@pytest.mark.parametrize("legacy", [0x0303, 0x0301, 0x0300, 0x0305])
def test_supported_versions_of_grease_only_fall_back_to_the_legacy_version(legacy: int) -> None:
    got = fingerprint("t", legacy, u16(SPEC_CIPHERS), [0x002B], b"\x0a\x0a\x1a\x1a", b"", ())
    assert got[1:3] == {0x0303: "12", 0x0301: "10", 0x0300: "s3", 0x0305: "00"}[legacy]


def test_highest_supported_version_wins_whatever_the_order() -> None:
    for versions, code in [
        (b"\x03\x03\x03\x04", "13"),
        (b"\x7a\x7a\x03\x02\x03\x01", "11"),
        (b"\xfe\xfd", "d2"),  # DTLS 1.2
        (b"\x7f\x1c", "00"),  # a TLS 1.3 draft: unknown
    ]:
        got = fingerprint("t", 0x0303, u16(SPEC_CIPHERS), [0x002B], versions, b"", ())
        assert got[1:3] == code


def test_no_alpn_is_00() -> None:
    assert spec_fingerprint(alpn=())[8:10] == "00"


# --- real clients, fingerprinted by FoxIO's reference -------------------------


@pytest.mark.parametrize("name", sorted(REFERENCE["captures"]))
def test_captured_clients(name: str) -> None:
    assert ja4_of_capture(name) == REFERENCE["captures"][name]


def test_chrome_hello_of_the_specification() -> None:
    hello = bytes.fromhex((DATA / "foxio-chrome-tcp.hex").read_text())
    expected = REFERENCE["foxio"]["foxio-chrome-tcp.hex"]
    assert expected == "t13d1516h2_8daaf6152771_e5627efa2ab1"
    assert TlsProbe().probe(hello) == Match(
        "tls", "cloudflare-quic.com", ("h2", "http/1.1"), expected
    )


def test_chrome_quic_initial() -> None:
    datagram = bytes.fromhex((DATA / "foxio-chrome-quic.hex").read_text())
    assert QuicProbe().probe(datagram) == Match(
        "quic", "cloudflare-quic.com", ("h3",), REFERENCE["foxio"]["foxio-chrome-quic.hex"]
    )


# --- hand-made hellos, fingerprinted by FoxIO's reference ---------------------

SIG_ALGS = (0x0403, 0x0804, 0x0401)
TLS13 = (0x1301, 0x1302, 0x1303, 0xC02B, 0xC02F)


def ext(ext_type: int, body: bytes = b"") -> bytes:
    return ext_type.to_bytes(2, "big") + len(body).to_bytes(2, "big") + body


def u16s(values: Sequence[int]) -> bytes:
    return b"".join(v.to_bytes(2, "big") for v in values)


def sni(name: bytes) -> bytes:
    entry = b"\x00" + len(name).to_bytes(2, "big") + name
    return ext(0x0000, len(entry).to_bytes(2, "big") + entry)


def alpn(*names: bytes) -> bytes:
    body = b"".join(len(n).to_bytes(1, "big") + n for n in names)
    return ext(0x0010, len(body).to_bytes(2, "big") + body)


def versions(*values: int) -> bytes:
    return ext(0x002B, (2 * len(values)).to_bytes(1, "big") + u16s(values))


def sig_algs(*values: int) -> bytes:
    return ext(0x000D, (2 * len(values)).to_bytes(2, "big") + u16s(values))


def groups(*values: int) -> bytes:
    return ext(0x000A, (2 * len(values)).to_bytes(2, "big") + u16s(values))


def hello(
    ciphers: Sequence[int], extensions: Sequence[bytes] | None, legacy_version: int = 0x0303
) -> bytes:
    """A ClientHello in one TLS record; ``extensions=None`` omits the block."""
    body = legacy_version.to_bytes(2, "big") + bytes(range(32)) + b"\x00"
    body += (2 * len(ciphers)).to_bytes(2, "big") + u16s(ciphers) + b"\x01\x00"
    if extensions is not None:
        block = b"".join(extensions)
        body += len(block).to_bytes(2, "big") + block
    msg = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + len(msg).to_bytes(2, "big") + msg


# In data/ja4/handmade.pcap in this order, then conftest's captured OpenSSL hello.
HANDMADE: dict[str, bytes] = {
    # GREASE in the cipher suites, extension types, supported_versions and
    # signature_algorithms: all of it left out.
    "grease": hello(
        (0x0A0A, *TLS13),
        [
            ext(0x1A1A),
            sni(b"grease.example"),
            alpn(b"h2", b"http/1.1"),
            versions(0x2A2A, 0x0304, 0x0303),
            sig_algs(0x3A3A, *SIG_ALGS),
            groups(0x4A4A, 0x001D, 0x0017),
            ext(0xFAFA, b"\x00"),
        ],
    ),
    "no-sni-no-alpn": hello(TLS13, [versions(0x0304), sig_algs(*SIG_ALGS), groups(0x001D)]),
    # server_name present but an IP literal: no SNI to route on, still "d".
    "ip-literal-sni": hello(TLS13, [sni(b"192.0.2.1"), alpn(b"h2"), versions(0x0304)]),
    "many-ciphers": hello(range(1, 121), [sni(b"many.example"), sig_algs(*SIG_ALGS)]),
    "many-extensions": hello(TLS13, [ext(0x1000 + i) for i in range(105)] + [sig_algs(0x0403)]),
    "tls12-no-extensions": hello((0x002F, 0x0035, 0x000A), None),
    "sni-and-alpn-only": hello(TLS13, [sni(b"only.example"), alpn(b"http/1.1")]),
    "tls10-no-versions": hello((0x002F, 0x0035), [sni(b"old.example"), groups(0x0017)], 0x0301),
    "ssl3": hello((0x000A, 0x0005), [ext(0xFF01, b"\x00")], 0x0300),
    "versions-unsorted": hello(TLS13, [versions(0x0302, 0x0304, 0x0303), alpn(b"h3")]),
}


def test_handmade_capture_holds_these_hellos(samples: S) -> None:
    payloads = client_payloads(DATA / "handmade.pcap")
    assert payloads == [*HANDMADE.values(), samples.captured_openssl_hello]


@pytest.mark.parametrize("name", list(HANDMADE))
def test_handmade(name: str) -> None:
    assert parse_client_hello(HANDMADE[name]).ja4 == REFERENCE["handmade"][name]


def test_captured_openssl_hello(samples: S) -> None:
    got = parse_client_hello(samples.captured_openssl_hello).ja4
    assert got == REFERENCE["handmade"]["captured-openssl-hello"]


@pytest.mark.parametrize("name", ["grease", "many-extensions", "tls12-no-extensions"])
def test_bare_handshake_is_quic(name: str) -> None:
    msg = HANDMADE[name][5:]
    assert parse_handshake(msg).ja4 == "q" + REFERENCE["handmade"][name][1:]


def test_hello_split_over_records_has_the_same_fingerprint(samples: S) -> None:
    whole = HANDMADE["grease"]
    for sizes in [(1,), (60,), (7, 11, 13), (1,) * 40]:
        stream = samples.reframe(whole, sizes)
        assert parse_client_hello(stream).ja4 == REFERENCE["handmade"]["grease"]


# --- what is kept between hellos ----------------------------------------------


def forget() -> None:
    for table in (
        ja4._fingerprints,
        ja4._ciphers_table,
        ja4._extensions_table,
        ja4._versions_table,
        ja4._alpn_table,
    ):
        table.clear()
    ja4.layouts.clear()


def test_results_do_not_depend_on_what_was_seen_before() -> None:
    expected = {name: REFERENCE["handmade"][name] for name in HANDMADE}
    for _ in range(2):  # the second round reuses layouts and hashes
        assert {n: parse_client_hello(h).ja4 for n, h in HANDMADE.items()} == expected
    forget()
    assert {n: parse_client_hello(h).ja4 for n, h in reversed(HANDMADE.items())} == expected


def direct(ciphers: Sequence[int], types: Sequence[int], alpn: tuple[str, ...] = ("h2",)) -> str:
    """The fingerprint from the fields, without the parser's layouts."""
    return fingerprint("t", 0x0303, u16s(ciphers), types, None, b"", alpn)


def test_hellos_of_one_size_and_first_extension_are_told_apart() -> None:
    # Same extensions block length and first extension header: the layout
    # kept for one is checked, found wrong, and the other is walked.
    one = hello(TLS13, [sni(b"a.example"), alpn(b"h2"), ext(0x0017), ext(0x0023)])
    two = hello(TLS13, [sni(b"b.example"), ext(0x0017), ext(0x0022), alpn(b"h3")])
    three = hello(TLS13, [sni(b"c.example"), alpn(b"h3"), ext(0x0017), ext(0x0023)])
    assert len(one) == len(two) == len(three)
    expected = [
        ("a.example", ("h2",), direct(TLS13, [0, 16, 0x17, 0x23], ("h2",))),
        ("b.example", ("h3",), direct(TLS13, [0, 0x17, 0x22, 16], ("h3",))),
        # one's layout exactly, but another ALPN value.
        ("c.example", ("h3",), direct(TLS13, [0, 16, 0x17, 0x23], ("h3",))),
    ]
    assert len(set(e[2] for e in expected)) == 3
    forget()
    for order in ([0, 1, 2], [1, 0, 2, 0], [2, 0, 1, 2, 2, 0]):
        for i in order:
            got = parse_client_hello((one, two, three)[i])
            assert (got.sni, got.alpn, got.ja4) == expected[i]


def test_a_hello_laid_out_as_before_is_still_read() -> None:
    # Once a fingerprint was read, the parser finds SNI and ALPN through the
    # layout kept for the hello; their content is still checked.
    forget()
    good = hello(TLS13, [sni(b"a.example"), alpn(b"h2"), versions(0x0304)])
    expected = fingerprint("t", 0x0303, u16s(TLS13), [0, 16, 0x2B], b"\x03\x04", b"", ("h2",))
    assert expected.startswith("t13d0503h2_")
    assert parse_client_hello(good).ja4 == expected
    assert len(ja4.layouts) == 1
    assert TlsProbe().probe(good) == Match("tls", "a.example", ("h2",), expected)
    at = good.index(b"\x00\x03\x02h2") + 2
    empty_name = good[:at] + b"\x00" + good[at + 1 :]  # RFC 7301 3.1: not allowed
    assert TlsProbe().probe(empty_name) is Verdict.NO
    other = good.replace(b"a.example", b"b.EXAMPLE")
    assert TlsProbe().probe(other) == Match("tls", "b.example", ("h2",), expected)
    assert len(ja4.layouts) == 1


def test_tables_stay_bounded() -> None:
    for i in range(3 * ja4._TABLE_SIZE):
        made_up = hello((0x1301, i + 1), [ext(0x2000 + (i % 5000)), sig_algs(i + 1)])
        parse_client_hello(made_up)
    for table in (ja4._fingerprints, ja4._ciphers_table, ja4._extensions_table):
        assert 0 < len(table) <= ja4._TABLE_SIZE
    assert 0 < len(ja4.layouts) <= ja4._MAX_LAYOUTS
    assert parse_client_hello(HANDMADE["grease"]).ja4 == REFERENCE["handmade"]["grease"]


def test_oversized_hellos_are_not_kept() -> None:
    forget()
    big = hello(range(1, 300), [sni(b"big.example")] + [ext(0x1000 + i) for i in range(70)])
    assert parse_client_hello(big).ja4 == direct(range(1, 300), [0, *range(0x1000, 0x1046)], ())
    assert not ja4._fingerprints
    assert not ja4._ciphers_table
    assert not ja4._extensions_table
    assert not ja4.layouts


def test_greased_hellos_are_walked_every_time() -> None:
    # Such a client shuffles its extensions: its layout never repeats, so
    # none is kept to check the next hello against.
    forget()
    parse_client_hello(HANDMADE["grease"])
    assert not ja4.layouts
    parse_client_hello(HANDMADE["no-sni-no-alpn"])
    (layout,) = ja4.layouts.values()
    assert layout.walked[0] == (43, 13, 10)


# --- computed when read, and GREASE ---------------------------------------------

CHROME_TCP = bytes.fromhex((DATA / "foxio-chrome-tcp.hex").read_text())
CHROME_QUIC = bytes.fromhex((DATA / "foxio-chrome-quic.hex").read_text())
GREASE_VALUES = sorted(ja4.GREASE)


def regreased(stream: bytes, value: int, shift: int) -> bytes:
    """Chrome's hello as on another connection: other GREASE values, extensions rotated.

    ``value`` becomes the GREASE cipher suite and supported version; the two
    GREASE extensions get ``value`` and the next GREASE value; the
    extensions after the first are rotated by ``shift``.
    """
    body = bytearray(stream[9:])
    p = 34 + 1 + body[34]
    assert body[p + 2 : p + 4] == b"\xba\xba"  # the capture's GREASE suite
    body[p + 2 : p + 4] = value.to_bytes(2, "big")
    p += 2 + int.from_bytes(body[p : p + 2], "big")
    p += 1 + body[p]
    head, q, entries = bytes(body[: p + 2]), p + 2, []
    greased = [value, GREASE_VALUES[(GREASE_VALUES.index(value) + 1) % 16]]
    while q < len(body):
        ext_type, size = struct.unpack_from(">HH", body, q)
        entry = bytearray(body[q : q + 4 + size])
        if ext_type in ja4.GREASE:
            entry[:2] = greased.pop(0).to_bytes(2, "big")
        elif ext_type == 0x002B:  # supported_versions: a GREASE value first
            assert entry[5] == entry[6] and entry[5] & 0x0F == 0x0A
            entry[5:7] = value.to_bytes(2, "big")
        entries.append(entry)
        q += 4 + size
    assert not greased  # the capture's two GREASE extensions
    first, rest = entries[0], entries[1:]
    entries = [first, *rest[shift:], *rest[:shift]]
    block = head + b"".join(entries)
    msg = b"\x01" + len(block).to_bytes(3, "big") + block
    return stream[:3] + len(msg).to_bytes(2, "big") + msg


def test_chrome_on_every_connection_is_one_table_entry() -> None:
    # Chrome picks new GREASE values and a new extension order per
    # connection: one fingerprint, kept once, whatever the values.
    expected = REFERENCE["foxio"]["foxio-chrome-tcp.hex"]
    forget()
    hellos = [regreased(CHROME_TCP, v, i) for i, v in enumerate(GREASE_VALUES)]
    assert len(set(hellos)) == 16
    for hello in hellos:
        match = TlsProbe().probe(hello)
        assert match == Match("tls", "cloudflare-quic.com", ("h2", "http/1.1"), expected)
    assert len(ja4._fingerprints) == 1
    assert len(ja4._ciphers_table) == 1
    assert len(ja4._versions_table) == 1


@pytest.mark.parametrize("where", ["tcp", "quic"])
def test_probe_fingerprint_is_computed_when_read(where: str) -> None:
    forget()
    match = TlsProbe().probe(CHROME_TCP) if where == "tcp" else QuicProbe().probe(CHROME_QUIC)
    assert isinstance(match, Match)
    assert match.sni == "cloudflare-quic.com"
    # Identified without a fingerprint: nothing of JA4's was computed.
    assert not ja4._fingerprints and not ja4._ciphers_table
    expected = REFERENCE["foxio"][f"foxio-chrome-{where}.hex"]
    assert match.ja4 == expected
    assert len(ja4._fingerprints) == 1
    forget()
    # Read again: the value kept in the Match, nothing computed.
    assert match.ja4 == expected
    assert not ja4._fingerprints

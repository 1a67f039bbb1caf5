"""The ClientHello parser: record layer, reassembly, SNI, ALPN and JA4 extraction."""

from __future__ import annotations

import re
from typing import Any

import pytest

from refractium.protocols.clienthello import (
    MAX_HANDSHAKE,
    ClientHello,
    ClientHelloError,
    Incomplete,
    Malformed,
    parse_client_hello,
    parse_handshake,
    scan_client_hello,
    scan_handshake,
)
from refractium.protocols.ja4 import hello_fingerprint

S = Any  # the conftest ``samples`` fixture (a class of helpers)

# The captured OpenSSL hello's JA4, as FoxIO's reference computes it
# (data/ja4/reference.json).
CAPTURED_OPENSSL_JA4 = "t13d3111h2_e8f1e7e78f70_1f22a2ca17c4"


def record_body(stream: bytes) -> bytes:
    return stream[5 : 5 + int.from_bytes(stream[3:5], "big")]


def length_fields(stream: bytes) -> list[tuple[int, int]]:
    """(offset, width) of every length field of a single-record hello."""
    fields = [(3, 2), (6, 3)]
    p = 9 + 34
    fields.append((p, 1))
    p += 1 + stream[p]
    fields.append((p, 2))
    p += 2 + int.from_bytes(stream[p : p + 2], "big")
    fields.append((p, 1))
    p += 1 + stream[p]
    fields.append((p, 2))
    end = p + 2 + int.from_bytes(stream[p : p + 2], "big")
    p += 2
    while p < end:
        ext_type = int.from_bytes(stream[p : p + 2], "big")
        size = int.from_bytes(stream[p + 2 : p + 4], "big")
        fields.append((p + 2, 2))
        if ext_type == 0:
            fields += [(p + 4, 2), (p + 7, 2)]
        elif ext_type == 16:
            fields.append((p + 4, 2))
            q = p + 6
            while q < p + 4 + size:
                fields.append((q, 1))
                q += 1 + stream[q]
        p += 4 + size
    return fields


def routed(hello: ClientHello) -> tuple[str | None, tuple[str, ...]]:
    """What a route matches on: the server name and the ALPN list."""
    return hello.sni, hello.alpn


# The shape of every JA4 fingerprint (JA4.md): a, b and c.
JA4_SHAPE = re.compile(r"[tq](1[0-3]|s[23]|00)[di]\d{4}[0-9A-Za-z]{2}_[0-9a-f]{12}_[0-9a-f]{12}")


def outcome(data: bytes) -> ClientHello | type[ClientHelloError]:
    """The parse result, or which of the two exceptions it raised."""
    try:
        return parse_client_hello(data)
    except Incomplete:
        return Incomplete
    except Malformed:
        return Malformed


# --- real hellos ---------------------------------------------------------


def test_python_hello(real_hello: bytes) -> None:
    assert 300 < len(real_hello) < 2000
    hello = parse_client_hello(real_hello)
    assert routed(hello) == ("mixed.example.com", ("h2", "http/1.1"))
    # The exact value depends on this Python's OpenSSL build; the captured
    # hellos of tests/unit/protocols/data/ja4 pin exact values.
    assert hello.ja4 is not None
    assert JA4_SHAPE.fullmatch(hello.ja4)
    assert hello.ja4.startswith("t13d")
    assert hello.ja4.endswith("h2", 0, 10)


def test_captured_openssl_hello(samples: S) -> None:
    # Sent as "Captured.Example.ORG.": lower-cased, one trailing dot stripped.
    assert parse_client_hello(samples.captured_openssl_hello) == ClientHello(
        "captured.example.org", ("h2", "http/1.1"), CAPTURED_OPENSSL_JA4
    )


def test_scan_variants_return_plain_tuples(samples: S) -> None:
    hello = samples.captured_openssl_hello
    sni, alpn, source = scan_client_hello(hello)
    assert (sni, alpn) == ("captured.example.org", ("h2", "http/1.1"))
    # The fingerprint is computed from the source only when asked for.
    assert hello_fingerprint(source) == CAPTURED_OPENSSL_JA4
    # A bare handshake message is QUIC's: the same fingerprint with "q".
    sni, alpn, source = scan_handshake(record_body(hello))
    assert (sni, alpn) == ("captured.example.org", ("h2", "http/1.1"))
    assert hello_fingerprint(source) == "q" + CAPTURED_OPENSSL_JA4[1:]
    with pytest.raises(Incomplete):
        scan_client_hello(hello[:-1])


def test_python_hello_without_sni(samples: S) -> None:
    hello = parse_client_hello(samples.python_hello(server_hostname=None))
    assert routed(hello) == (None, ("h2", "http/1.1"))


def test_python_hello_without_alpn(samples: S) -> None:
    hello = parse_client_hello(samples.python_hello(alpn=None))
    assert routed(hello) == ("mixed.example.com", ())


def test_python_hello_to_an_ip_address_sends_no_sni(samples: S) -> None:
    # RFC 6066 3 forbids IP literals in server_name; OpenSSL leaves it out.
    assert parse_client_hello(samples.python_hello("192.0.2.1")).sni is None


def test_bare_handshake_entry_point(real_hello: bytes) -> None:
    msg = record_body(real_hello)
    bare, framed = parse_handshake(msg), parse_client_hello(real_hello)
    assert routed(bare) == routed(framed)
    assert bare.ja4 is not None and framed.ja4 is not None
    assert (bare.ja4[0], framed.ja4[0]) == ("q", "t")
    assert bare.ja4[1:] == framed.ja4[1:]
    assert parse_handshake(msg + b"\x02\x00\x00\x00 next message") == parse_handshake(msg)
    for i in range(len(msg)):
        with pytest.raises(Incomplete):
            parse_handshake(msg[:i])


@pytest.mark.parametrize("which", ["python", "captured"])
def test_every_truncation_is_incomplete(samples: S, real_hello: bytes, which: str) -> None:
    hello = real_hello if which == "python" else samples.captured_openssl_hello
    for i in range(len(hello)):
        with pytest.raises(Incomplete):
            parse_client_hello(hello[:i])


def test_trailing_bytes_are_ignored(real_hello: bytes) -> None:
    expected = parse_client_hello(real_hello)
    # e.g. a ChangeCipherSpec or early data following the hello
    assert parse_client_hello(real_hello + b"\x14\x03\x03\x00\x01\x01") == expected
    assert parse_client_hello(real_hello + b"\xff" * 100) == expected


# --- fragmentation across records -----------------------------------------


@pytest.mark.parametrize(
    "sizes",
    [
        pytest.param((100,), id="two-records"),
        pytest.param((50, 200), id="three-records"),
        pytest.param((1,), id="type-byte-alone"),
        pytest.param((2, 1), id="header-over-three-records"),
        pytest.param((4,), id="header-alone"),
        pytest.param((9,) * 30, id="many-small"),
    ],
)
def test_hello_fragmented_over_records(
    real_hello: bytes, samples: S, sizes: tuple[int, ...]
) -> None:
    stream = samples.reframe(real_hello, sizes)
    assert stream.count(b"\x16\x03\x01") >= len(sizes) + 1
    hello = parse_client_hello(stream)
    assert routed(hello) == ("mixed.example.com", ("h2", "http/1.1"))
    assert hello.ja4 == parse_client_hello(real_hello).ja4
    for i in range(len(stream)):
        with pytest.raises(Incomplete):
            parse_client_hello(stream[:i])


def test_one_byte_records(samples: S) -> None:
    msg = samples.handshake([samples.sni_extension(b"a.example")])
    stream = samples.frame(msg, (1,) * (len(msg) - 1))
    assert routed(parse_client_hello(stream)) == ("a.example", ())


def test_hello_ending_mid_record_is_complete(samples: S) -> None:
    # The message ends inside the second record; the rest of it is not needed.
    msg = samples.handshake([samples.alpn_extension(b"h2")])
    stream = samples.frame(msg + b"\x00" * 10, (20,))
    assert routed(parse_client_hello(stream)) == (None, ("h2",))


def test_other_record_type_between_fragments_is_malformed(real_hello: bytes, samples: S) -> None:
    stream = samples.reframe(real_hello, (100,))
    second = 5 + 100
    assert stream[second] == 0x16
    bad = stream[:second] + b"\x17" + stream[second + 1 :]
    assert outcome(bad) is Malformed
    # Detected from the first byte of the second header.
    assert outcome(bad[: second + 1]) is Malformed


# --- hand-made hellos ------------------------------------------------------


def test_no_extensions_block(samples: S) -> None:
    assert routed(parse_handshake(samples.handshake(None))) == (None, ())


def test_empty_extensions_block(samples: S) -> None:
    assert routed(parse_handshake(samples.handshake([]))) == (None, ())


def test_unrelated_extensions_are_skipped(samples: S) -> None:
    msg = samples.handshake(
        [
            samples.extension(0x0A0A, b""),  # GREASE
            samples.extension(43, b"\x02\x03\x04"),
            samples.sni_extension(b"Example.NET"),
            samples.extension(21, bytes(200)),  # padding
            samples.alpn_extension(b"h3", b"\xe9t\xe9"),
        ]
    )
    assert routed(parse_handshake(msg)) == ("example.net", ("h3", "\xe9t\xe9"))


def test_ssl3_record_and_hello_versions(samples: S) -> None:
    msg = samples.handshake([samples.sni_extension(b"x.y")], legacy_version=b"\x03\x00")
    assert parse_client_hello(samples.frame(msg, version=b"\x03\x00")).sni == "x.y"


@pytest.mark.parametrize(
    ("name", "sni"),
    [
        (b"example.com", "example.com"),
        (b"EXAMPLE.com.", "example.com"),
        (b"example.com..", "example.com."),
        (b"192.0.2.1", "192.0.2.1"),  # forbidden by RFC 6066 but passed on
        (b"_srv.example", "_srv.example"),
        (b"a" * 255, "a" * 255),
        (b"a" * 255 + b".", "a" * 255),
        (b"a" * 256, None),
        (b"", None),
        (b".", None),
        (b"caf\xc3\xa9.example", None),
        (b"bad\x00name", None),
        (b"bad name", None),
        (b"bad\nname", None),
        (b"\xff", None),
    ],
)
def test_server_name_normalisation(samples: S, name: bytes, sni: str | None) -> None:
    msg = samples.handshake([samples.sni_extension(name), samples.alpn_extension(b"h2")])
    # An unusable name only loses the SNI, not the hello.
    assert routed(parse_handshake(msg)) == (sni, ("h2",))


def test_unknown_name_type_is_skipped(samples: S) -> None:
    entries = b"\x07\x00\x03abc" + b"\x00\x00\x05x.org"
    ext = samples.extension(0, len(entries).to_bytes(2, "big") + entries)
    assert parse_handshake(samples.handshake([ext])).sni == "x.org"


def test_only_unknown_name_types_give_no_sni(samples: S) -> None:
    assert (
        parse_handshake(samples.handshake([samples.sni_extension(b"x", name_type=9)])).sni is None
    )


MALFORMED_EXTENSIONS = {
    "duplicate-sni": lambda s: [s.sni_extension(b"a.com"), s.sni_extension(b"b.com")],
    "duplicate-alpn": lambda s: [s.alpn_extension(b"h2"), s.alpn_extension(b"h2")],
    "duplicate-host-name": lambda s: [s.sni_extension(b"a.com", b"b.com")],
    "empty-sni-extension": lambda s: [s.extension(0, b"")],
    "empty-server-name-list": lambda s: [s.extension(0, b"\x00\x00")],
    "sni-list-too-long": lambda s: [s.extension(0, b"\x00\x09\x00\x00\x03abc")],
    "sni-list-too-short": lambda s: [s.extension(0, b"\x00\x05\x00\x00\x03abc")],
    "sni-name-overrun": lambda s: [s.extension(0, b"\x00\x06\x00\x00\x09abc")],
    "sni-truncated-entry": lambda s: [s.extension(0, b"\x00\x02\x00\x00")],
    "empty-alpn-extension": lambda s: [s.extension(16, b"")],
    "empty-alpn-list": lambda s: [s.extension(16, b"\x00\x00")],
    "empty-alpn-name": lambda s: [s.extension(16, b"\x00\x04\x02h2\x00")],
    "alpn-name-overrun": lambda s: [s.extension(16, b"\x00\x03\x05h2")],
    "alpn-list-mismatch": lambda s: [s.extension(16, b"\x00\x02\x02h2")],
    "extension-overrun": lambda s: [b"\x00\x2b\x00\xff\x02\x03\x04"],
    "truncated-extension-header": lambda s: [b"\x00\x2b\x00"],
}


@pytest.mark.parametrize("case", sorted(MALFORMED_EXTENSIONS))
def test_malformed_extensions(samples: S, case: str) -> None:
    msg = samples.handshake(MALFORMED_EXTENSIONS[case](samples))
    with pytest.raises(Malformed):
        parse_handshake(msg)
    with pytest.raises(Malformed):
        parse_client_hello(samples.frame(msg))


@pytest.mark.parametrize(
    ("case", "kwargs"),
    [
        ("session-id-too-long", {"session_id": bytes(33)}),
        ("odd-cipher-suites", {"ciphers": b"\x13\x01\x13"}),
        ("no-cipher-suites", {"ciphers": b""}),
        ("no-compression", {"compression": b""}),
        ("legacy-version", {"legacy_version": b"\x02\x00"}),
        ("server-hello", {"msg_type": 2}),
    ],
)
def test_malformed_body(samples: S, case: str, kwargs: dict[str, Any]) -> None:
    msg = samples.handshake([samples.sni_extension(b"a.com")], **kwargs)
    with pytest.raises(Malformed):
        parse_handshake(msg)


def test_extensions_length_must_fill_the_body(samples: S) -> None:
    msg = bytearray(samples.handshake([samples.sni_extension(b"a.com")]))
    # Grow the handshake length by two and append junk after the extensions.
    msg[1:4] = (int.from_bytes(msg[1:4], "big") + 2).to_bytes(3, "big")
    with pytest.raises(Malformed):
        parse_handshake(bytes(msg) + b"\x00\x00")


def test_extensions_block_overrunning_the_body(samples: S) -> None:
    msg = samples.handshake([samples.sni_extension(b"a.com")])
    cut = msg[:-1]
    cut = cut[:1] + (len(cut) - 4).to_bytes(3, "big") + cut[4:]
    with pytest.raises(Malformed):
        parse_handshake(cut)


def test_body_too_short(samples: S) -> None:
    with pytest.raises(Malformed):
        parse_handshake(b"\x01\x00\x00\x10" + bytes(16))


# --- record and handshake headers ------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"\x17",
        b"\x16\x02",
        b"\x16\x03\x05",
        b"\x16\x03\x01\x41",  # record length > 2^14
        b"\x16\x03\x01\x00\x00",  # empty record
        b"\x16\x03\x01\x02\x00\x02",  # ServerHello
        b"\x16\x03\x01\x02\x00\x01\x02",  # handshake length >= 2^17
        b"\x16\x03\x01\x02\x00\x01\x00\x00\x10",  # shorter than any hello
        b"\x15\x03\x01\x00\x02\x02\x28",  # an alert
    ],
)
def test_bad_headers_are_malformed_early(data: bytes) -> None:
    with pytest.raises(Malformed):
        parse_client_hello(data)


def test_handshake_length_cap(samples: S) -> None:
    over = b"\x01" + (MAX_HANDSHAKE + 1).to_bytes(3, "big")
    with pytest.raises(Malformed):
        parse_handshake(over)
    with pytest.raises(Malformed):
        parse_client_hello(samples.frame(over + bytes(100)))
    # Exactly the cap is accepted as a prefix (waiting for the rest).
    at_cap = b"\x01" + MAX_HANDSHAKE.to_bytes(3, "big") + b"\x03\x03"
    with pytest.raises(Incomplete):
        parse_handshake(at_cap)
    with pytest.raises(Incomplete):
        parse_client_hello(samples.frame(at_cap))


def test_large_hello_over_many_full_records(samples: S) -> None:
    msg = samples.handshake(
        [samples.extension(21, bytes(40_000)), samples.sni_extension(b"big.example")]
    )
    stream = samples.frame(msg, (1 << 14, 1 << 14))
    assert parse_client_hello(stream).sni == "big.example"
    assert outcome(stream[:-1]) is Incomplete


# --- corruption --------------------------------------------------------------


@pytest.mark.parametrize("which", ["python", "captured"])
def test_corrupted_lengths_never_raise_anything_else(
    samples: S, real_hello: bytes, which: str
) -> None:
    hello = real_hello if which == "python" else samples.captured_openssl_hello
    fields = length_fields(hello)
    assert len(fields) > 15
    for offset, width in fields:
        value = int.from_bytes(hello[offset : offset + width], "big")
        top = (1 << (8 * width)) - 1
        for new in {0, 1, value - 1, value + 1, value + 7, top, top >> 1}:
            if not 0 <= new <= top or new == value:
                continue
            bad = hello[:offset] + new.to_bytes(width, "big") + hello[offset + width :]
            for data in (bad, bad[: len(bad) // 2], bad + bytes(64)):
                result = outcome(data)
                assert result in (Incomplete, Malformed) or isinstance(result, ClientHello)


def test_walk_stops_once_sni_and_alpn_are_known(samples: S) -> None:
    """A later duplicate is the backend's to refuse (RFC 8446 4.2); the first SNI routes.

    The fingerprint walks the whole block and finds it: there is none.
    """
    hello = samples.frame(
        samples.handshake(
            [
                samples.sni_extension(b"first.example"),
                samples.alpn_extension(b"h2"),
                samples.sni_extension(b"second.example"),
            ]
        )
    )
    assert parse_client_hello(hello) == ClientHello("first.example", ("h2",), None)


@pytest.mark.parametrize(
    "tail",
    [
        pytest.param(b"\x00\x2b\x00\xff\x02\x03\x04", id="extension-overrun"),
        pytest.param(b"\x00\x2b\x00", id="truncated-extension-header"),
        pytest.param(b"\x00\x10\x00\x04\x00\x02\x01h", id="duplicate-alpn"),
    ],
)
def test_malformed_after_sni_and_alpn_has_no_fingerprint(samples: S, tail: bytes) -> None:
    """Not read to route: the hello is identified, its fingerprint is None."""
    msg = samples.handshake(
        [samples.alpn_extension(b"h2"), samples.sni_extension(b"a.example"), tail]
    )
    assert parse_handshake(msg) == ClientHello("a.example", ("h2",), None)
    # The same entries with the tail first: the walk meets it, a refusal.
    first = samples.handshake(
        [tail, samples.alpn_extension(b"h2"), samples.sni_extension(b"a.example")]
    )
    with pytest.raises(Malformed):
        parse_handshake(first)

"""User-defined protocols: pattern decoding, regex compilation, the probe."""

from __future__ import annotations

from typing import Any

import pytest

from refractium.protocols import (
    CustomProbe,
    Match,
    Probe,
    Transport,
    Verdict,
    compile_regex,
    decode_pattern,
)

S = Any  # the conftest ``samples`` fixture (a class of helpers)


# --- decode_pattern -----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("\\x01\\x02\\x03", b"\x01\x02\x03"),
        ("hello", b"hello"),
        ("OpenVPN\\x00", b"OpenVPN\x00"),
        ("\\xfF\\xAb", b"\xff\xab"),
        ("\\n\\r\\t\\0\\\\", b"\n\r\t\x00\\"),
        ("ab\\x4Fc", b"abOc"),
        ("\\0x", b"\x00x"),
        ("\\09", b"\x009"),  # 9 is not an octal digit
        ("caf\u00e9", "caf\u00e9".encode()),
        ("\\\\x01", b"\\x01"),  # an escaped backslash, then plain text
    ],
)
def test_decode_pattern(text: str, expected: bytes) -> None:
    assert decode_pattern(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("\\x", "hex digits"),
        ("\\x1", "hex digits"),
        ("\\xG1", "hex digits"),
        ("\\x 1", "hex digits"),
        ("\\x+1", "hex digits"),
        ("\\q", "unknown escape"),
        ("\\u00e9", "unknown escape"),
        ("abc\\", "lone backslash"),
        ("\\012", "octal"),
        ("", "empty"),
    ],
)
def test_decode_pattern_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        decode_pattern(text)


# --- compile_regex ---------------------------------------------------------------


def test_compile_regex() -> None:
    pattern = compile_regex(r"^\x00\x0e8[a-z]+")
    assert pattern.search(b"\x00\x0e8abc") is not None


@pytest.mark.parametrize("text", ["(", "[a-", "a{99999999999999999999}", "(?u)x", "\udc80"])
def test_compile_regex_errors(text: str) -> None:
    with pytest.raises(ValueError, match="bad regex"):
        compile_regex(text)


@pytest.mark.parametrize("text", ["", "a*", "^", "x|", "(?:)"])
def test_compile_regex_refuses_match_everything(text: str) -> None:
    with pytest.raises(ValueError, match="empty input"):
        compile_regex(text)


# --- CustomProbe: patterns ----------------------------------------------------------


def test_identity() -> None:
    probe = CustomProbe("mine", (b"abc",))
    assert isinstance(probe, Probe)
    assert probe.name == "mine"
    assert probe.transport is Transport.BOTH
    assert CustomProbe("udp-thing", (b"x",), transport=Transport.UDP).transport is Transport.UDP


def test_pattern_byte_by_byte(samples: S) -> None:
    probe = CustomProbe("mine", (decode_pattern("\\x01\\x02\\x03HELLO"),))
    assert samples.assert_incremental(probe, b"\x01\x02\x03HELLO") == Match("mine")


def test_pattern_anywhere() -> None:
    probe = CustomProbe("mine", (b"MAGIC",))
    assert probe.probe(b"....MAGIC....") == Match("mine")
    assert probe.probe(b"xxMAGIC") == Match("mine")
    # Not a prefix and too short to contain it: never this protocol by the rule.
    assert probe.probe(b"xxMA") is Verdict.NO
    assert probe.probe(b"xxxxxxxxxxxxx") is Verdict.NO


def test_several_patterns() -> None:
    probe = CustomProbe("mine", (b"LONGPATTERN", b"AB"))
    assert probe.probe(b"AB") == Match("mine")
    assert probe.probe(b"LONG") is Verdict.NEED_MORE
    assert probe.probe(b"A") is Verdict.NEED_MORE
    assert probe.probe(b"LONGPATTERN!") == Match("mine")
    assert probe.probe(b"LONGPATTERX") is Verdict.NO
    assert probe.probe(b"") is Verdict.NEED_MORE


# --- CustomProbe: regex ---------------------------------------------------------------


def test_anchored_regex_byte_by_byte(samples: S) -> None:
    probe = CustomProbe("hello", regex="^HELLO [0-9]+")
    assert samples.assert_incremental(probe, b"HELLO 4") == Match("hello")
    assert probe.probe(b"HELLO 42 and more") == Match("hello")
    assert probe.probe(b"HELLO x") is Verdict.NO
    assert probe.probe(b"XHELLO 1") is Verdict.NO
    assert probe.probe(b"\xff\xfe") is Verdict.NO


def test_anchored_regex_on_raw_bytes(samples: S) -> None:
    probe = CustomProbe("vpnish", regex=r"\A\x00[\x0e-\x10]\x38")
    assert samples.assert_incremental(probe, b"\x00\x0e\x38") == Match("vpnish")
    assert probe.probe(b"\x00\x20") is Verdict.NO


def test_unanchored_regex_never_says_no() -> None:
    # Documented: partial matching reports an empty partial match at the end
    # of any data, since the next bytes could start a match.
    probe = CustomProbe("hello", regex="HELLO [0-9]+")
    assert probe.probe(b"xyz") is Verdict.NEED_MORE
    assert probe.probe(b"xyz HELL") is Verdict.NEED_MORE
    assert probe.probe(b"xyz HELLO 7") == Match("hello")


def test_patterns_and_regex() -> None:
    probe = CustomProbe("both", (b"MAGIC",), regex="^HELLO")
    assert probe.probe(b"HELLO") == Match("both")
    assert probe.probe(b"..MAGIC") == Match("both")
    # The pattern still could match, the regex cannot: need more.
    assert probe.probe(b"MAG") is Verdict.NEED_MORE
    # The regex still could match, the pattern cannot: need more.
    assert probe.probe(b"HELL") is Verdict.NEED_MORE
    assert probe.probe(b"xyzxyz") is Verdict.NO


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "at least one"),
        ({"patterns": (b"",)}, "empty pattern"),
        ({"regex": "("}, "bad regex"),
        ({"regex": ".*"}, "empty input"),
    ],
)
def test_constructor_errors(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CustomProbe("bad", **kwargs)

"""Match: the four values as given, or a fingerprint computed when first read."""

from __future__ import annotations

import pytest

from refractium.protocols.base import Match

JA4 = "t13d1516h2_8daaf6152771_e5627efa2ab1"


class Counting:
    """A fingerprint function that counts its calls."""

    def __init__(self, answer: str | None) -> None:
        self.answer = answer
        self.sources: list[object] = []

    def __call__(self, source: object) -> str | None:
        self.sources.append(source)
        return self.answer


def test_values_as_given() -> None:
    match = Match("tls", "a.example", ("h2",), JA4)
    assert (match.protocol, match.sni, match.alpn, match.ja4) == ("tls", "a.example", ("h2",), JA4)
    assert Match("http") == Match("http", None, (), None)
    assert Match("http").ja4 is None
    assert Match("tls", ja4=JA4) == Match("tls", None, (), JA4)
    assert Match("tls", ja4=JA4) != Match("tls")
    assert repr(match) == (f"Match(protocol='tls', sni='a.example', alpn=('h2',), ja4='{JA4}')")


def test_deferred_fingerprint_is_computed_once_when_read() -> None:
    compute = Counting(JA4)
    source = (b"hello", 1, 2)
    match = Match.deferred("tls", "a.example", ("h2",), compute, source)
    assert (match.protocol, match.sni, match.alpn) == ("tls", "a.example", ("h2",))
    assert compute.sources == []
    assert match.ja4 == JA4
    assert match.ja4 == JA4
    assert compute.sources == [source]


def test_deferred_none() -> None:
    compute = Counting(None)
    match = Match.deferred("quic", None, (), compute, "source")
    assert match.ja4 is None
    assert match.ja4 is None
    assert compute.sources == ["source"]


def test_equality_and_repr_read_the_fingerprint() -> None:
    deferred = Match.deferred("tls", "a.example", ("h2",), Counting(JA4), None)
    assert repr(deferred) == repr(Match("tls", "a.example", ("h2",), JA4))
    assert Match.deferred("tls", "a.example", ("h2",), Counting(JA4), None) == Match(
        "tls", "a.example", ("h2",), JA4
    )
    other = Match.deferred("tls", "a.example", ("h2",), Counting("t12i000000_x_y"), None)
    assert other != Match("tls", "a.example", ("h2",), JA4)
    assert Match("tls") != ("tls", None, (), None)


def test_not_hashable_and_matchable_by_position() -> None:
    match = Match.deferred("tls", "a.example", (), Counting(JA4), None)
    with pytest.raises(TypeError):
        hash(match)
    match match:
        case Match("tls", sni, alpn, ja4):
            assert (sni, alpn, ja4) == ("a.example", (), JA4)
        case _:
            pytest.fail("no match")


def test_settle_computes_what_will_be_read_and_drops_what_will_not() -> None:
    kept = Match.deferred("tls", None, (), Counting(JA4), b"hello")
    kept.settle(True)
    assert kept._ja4_from is None  # the hello is no longer held
    assert kept.ja4 == JA4
    dropped = Match.deferred("tls", None, (), compute := Counting(JA4), b"hello")
    dropped.settle(False)
    assert dropped._ja4_from is None
    assert dropped.ja4 is None and compute.sources == []
    read = Match.deferred("tls", None, (), Counting(JA4), b"hello")
    assert read.ja4 == JA4
    read.settle(False)  # already computed: kept
    assert read.ja4 == JA4

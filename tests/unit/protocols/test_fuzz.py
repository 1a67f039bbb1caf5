"""Property tests: no probe raises, whatever the peer sends."""

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

FAST = settings(
    max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

# Inputs that get past the first byte of each probe more often than random.
interesting = st.one_of(
    st.binary(max_size=2048),
    st.builds(lambda b: b"\x16\x03\x01" + b, st.binary(max_size=600)),
    st.builds(lambda b: b"\x16\x03\x03\x00\x80\x01\x00\x00\x7c\x03\x03" + b, st.binary()),
    st.builds(lambda b: b"GET" + b, st.binary(max_size=20)),
    st.builds(lambda b: b"PRI * HTTP/2.0\r\n" + b, st.binary(max_size=20)),
    st.builds(lambda b: b"SS" + b, st.binary(max_size=8)),
    st.builds(lambda b: b"HELLO" + b, st.binary(max_size=8)),
)


def check_all(data: bytes) -> None:
    for probe in PROBES:
        result = probe.probe(data)
        assert isinstance(result, (Match, Verdict)), (probe, data)
        if isinstance(result, Match):
            assert result.protocol == probe.name


@FAST
@given(interesting)
def test_probes_never_raise(data: bytes) -> None:
    check_all(data)


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
    # The bare-message entry point, on the same bytes minus the record header.
    with contextlib.suppress(Incomplete, Malformed):
        parse_handshake(mutated[5:])

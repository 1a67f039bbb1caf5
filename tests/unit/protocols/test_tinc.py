"""The tinc probe: the ID request ``0 <name> <version>``."""

from __future__ import annotations

from typing import Any

import pytest

from refractium.protocols import BUILTIN, Match, Transport, Verdict
from refractium.protocols.base import first_bytes
from refractium.protocols.tinc import MAX_NAME, TincProbe

S = Any  # the conftest ``samples`` fixture (a class of helpers)

PROBE = BUILTIN["tinc"]
assert isinstance(PROBE, TincProbe)
MATCH = Match("tinc")


def test_registered() -> None:
    assert PROBE.name == "tinc"
    assert PROBE.transport is Transport.TCP
    assert first_bytes(PROBE) == frozenset(b"0")


@pytest.mark.parametrize(
    "line",
    [
        pytest.param(b"0 alpha 17.7\n", id="tinc-1.1"),
        pytest.param(b"0 node_01 17\n", id="tinc-1.0"),
        pytest.param(b"0 ?Zx-_0aB9Qw 17.1\n", id="invitation"),
        pytest.param(b"0 ^3f2a9c 0\n", id="control"),
        pytest.param(b"0 " + b"n" * MAX_NAME + b" 17.7\n", id="longest-name"),
    ],
)
def test_id_requests_byte_by_byte(line: bytes, samples: S) -> None:
    # Decided at the version's first digit; every shorter prefix needs more.
    decided = line.rindex(b" ") + 2
    assert samples.assert_incremental(PROBE, line[:decided]) == MATCH
    assert PROBE.probe(line) == MATCH


@pytest.mark.parametrize(
    "data",
    [
        b"1 alpha 17\n",
        b"00 alpha 17\n",
        b"0  alpha 17\n",
        b"0 alpha\n",
        b"0 alpha x\n",
        b"0 alpha  17\n",
        b"0 al pha 17\n",
        b"0 al.pha 17\n",
        b"0 ? 17\n",
        b"0 ?^x 17\n",
        b"0 " + b"n" * (MAX_NAME + 1) + b" 17\n",
        b"0 " + b"n" * (MAX_NAME + 1),
        b"0\n",
        b"GET / HTTP/1.1\r\n",
    ],
)
def test_not_tinc(data: bytes) -> None:
    assert PROBE.probe(data) is Verdict.NO


@pytest.mark.parametrize(
    "data", [b"", b"0", b"0 ", b"0 ?", b"0 ^", b"0 alpha", b"0 alpha ", b"0 " + b"n" * MAX_NAME]
)
def test_prefixes_need_more(data: bytes) -> None:
    assert PROBE.probe(data) is Verdict.NEED_MORE

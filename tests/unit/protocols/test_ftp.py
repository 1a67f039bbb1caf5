"""The FTP probe: a client that sends a command before the server's greeting."""

from __future__ import annotations

from typing import Any

import pytest

from refractium.protocols import BUILTIN, Match, Transport, Verdict
from refractium.protocols.base import first_bytes
from refractium.protocols.ftp import COMMANDS, FtpProbe

S = Any  # the conftest ``samples`` fixture (a class of helpers)

PROBE = BUILTIN["ftp"]
assert isinstance(PROBE, FtpProbe)
MATCH = Match("ftp")


def test_registered() -> None:
    assert PROBE.name == "ftp"
    assert PROBE.transport is Transport.TCP
    assert sorted(c.decode() for c in COMMANDS) == sorted(
        ["USER", "PASS", "AUTH", "FEAT", "OPTS", "SYST", "HOST", "CLNT", "LANG", "HELP", "NOOP"]
    )
    letters = {c[0] for c in COMMANDS}
    assert first_bytes(PROBE) == frozenset(letters | {b | 0x20 for b in letters})


@pytest.mark.parametrize("command", sorted(c.decode() for c in COMMANDS))
@pytest.mark.parametrize("case", [str.upper, str.lower, str.capitalize])
def test_every_command_byte_by_byte(command: str, case: Any, samples: S) -> None:
    word = case(command).encode()
    assert samples.assert_incremental(PROBE, word + b" ") == MATCH
    assert samples.assert_incremental(PROBE, word + b"\r\n") == MATCH


@pytest.mark.parametrize(
    "line",
    [
        b"USER anonymous\r\n",
        b"AUTH TLS\r\n",
        b"FEAT\r\n",
        b"OPTS UTF8 ON\r\n",
        b"HOST ftp.example.com\r\n",
        b"user ftp\r\nPASS guest@\r\n",
    ],
)
def test_command_lines(line: bytes) -> None:
    assert PROBE.probe(line) == MATCH


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"USER\n", id="bare-lf"),
        pytest.param(b"USER\t x\r\n", id="tab"),
        pytest.param(b"USERS x\r\n", id="longer-word"),
        pytest.param(b"USE x\r\n", id="shorter-word"),
        pytest.param(b" USER x\r\n", id="leading-space"),
        pytest.param(b"RETR file\r\n", id="after-login-command"),
        pytest.param(b"QUIT\r\n", id="quit"),
        pytest.param(b"220 ftp.example.com ready\r\n", id="server-greeting"),
        pytest.param(b"EHLO mail.example.com\r\n", id="smtp"),
        pytest.param(b"GET / HTTP/1.1\r\n", id="http"),
        pytest.param(b"\xc3\xbcSER x", id="non-ascii"),
    ],
)
def test_not_ftp(data: bytes) -> None:
    assert PROBE.probe(data) is Verdict.NO


@pytest.mark.parametrize("data", [b"", b"U", b"us", b"USE", b"USER", b"user\r", b"Fe", b"FEAT\r"])
def test_prefixes_need_more(data: bytes) -> None:
    assert PROBE.probe(data) is Verdict.NEED_MORE

"""The syslog probe: ``<PRI>`` and a version or timestamp, over UDP and TCP."""

from __future__ import annotations

from typing import Any

import pytest

from refractium.config import parse_config
from refractium.protocols import BUILTIN, Match, Transport, Verdict, registry
from refractium.protocols.base import first_bytes
from refractium.protocols.syslog import SyslogProbe
from refractium.routing import Tables, build_tables

S = Any  # the conftest ``samples`` fixture (a class of helpers)

_REGISTERED = BUILTIN["syslog"]
assert isinstance(_REGISTERED, SyslogProbe)
PROBE: SyslogProbe = _REGISTERED
MATCH = Match("syslog")

# Captured from util-linux logger 2.38 (Debian 12): `logger -n 127.0.0.1 -P PORT`
# with -d (UDP, RFC 5424 by default), -d --rfc3164, -T (TCP, non-transparent
# framing: one message per line) and -T --octet-count (RFC 6587 octet counting).
LOGGER_UDP = (
    b'<13>1 2026-11-21T23:36:34.329417+00:00 vm root - - [timeQuality tzKnown="1" '
    b'isSynced="0"] hello udp'
)
LOGGER_UDP_3164 = b"<13>Nov 21 23:36:34 vm root: hello udp"
LOGGER_TCP = (
    b'<13>1 2026-11-21T23:36:34.332383+00:00 vm root - - [timeQuality tzKnown="1" '
    b'isSynced="0"] hello tcp\n'
)
LOGGER_TCP_OCTETS = (
    b'99 <13>1 2026-11-21T23:36:34.333646+00:00 vm root - - [timeQuality tzKnown="1" '
    b'isSynced="0"] hello tcp'
)

MESSAGES = {
    "rfc5424": LOGGER_UDP,
    "rfc3164": LOGGER_UDP_3164,
    "rfc5424-example": b"<165>1 2003-08-24T05:14:15.000003-07:00 192.0.2.1 myproc 8710 - - "
    b"%% It's time to make the do-nuts.",
    "rfc3164-example": b"<34>Oct 11 22:14:15 mymachine su: 'su root' failed for lonvick",
    "iso-timestamp": b"<14>2024-05-01T10:00:00Z host app: started",
    "pri-0": b"<0>Jan  1 00:00:00 kernel: panic",
    "pri-191": b"<191>1 - - - - - -",
    "version-999": b"<7>999 - - - - - -",
}


def decided_at(message: bytes) -> int:
    """Where the probe decides: after the version or month and a space, or the year and -."""
    after = message.index(b">") + 1
    for end in range(after + 1, len(message) + 1):
        if message[end - 1 : end] in (b" ", b"-"):
            return end
    raise AssertionError(message)


# The same logger 2.38 over TCP, RFC 3164 format (-T --rfc3164, with and without
# --octet-count): the month is followed by a day padded to two characters.
LOGGER_TCP_3164 = b"<13>Dec  2 22:56:48 vm root: hello refractium\n"
LOGGER_TCP_3164_OCTETS = b"45 <13>Dec  2 22:56:48 vm root: hello refractium"

TCP_STREAMS = {
    "logger-tcp": LOGGER_TCP,
    "logger-tcp-octet-count": LOGGER_TCP_OCTETS,
    "logger-tcp-rfc3164": LOGGER_TCP_3164,
    "logger-tcp-rfc3164-octet-count": LOGGER_TCP_3164_OCTETS,
}


def test_registered() -> None:
    assert PROBE.name == "syslog"
    # RFC 5426 (UDP) and RFC 6587 (TCP): a route without `transport` serves both.
    assert PROBE.transport is Transport.BOTH
    assert first_bytes(PROBE) == frozenset(b"<123456789")


def _routes_without_transport() -> Tables:
    # Every built-in protocol but anyprot, so the other probes see syslog's bytes too.
    names = sorted(registry.names() - {"anyprot"})
    routes = [
        {"name": name, "forward_to": f"127.0.0.1:{10000 + i}"} for i, name in enumerate(names)
    ]
    return build_tables(parse_config({"protocols": routes}, None))


@pytest.mark.parametrize("stream", TCP_STREAMS.values(), ids=TCP_STREAMS.keys())
def test_route_without_transport_serves_tcp(stream: bytes) -> None:
    table = _routes_without_transport().tcp
    decisions = [table.decide(stream[:end], False) for end in range(1, len(stream) + 1)]
    decided = next(i for i, d in enumerate(decisions) if d is not Verdict.NEED_MORE)
    # Waits while the bytes are a prefix of syslog, then routes every longer prefix.
    assert decided >= 4
    for decision in decisions[decided:]:
        assert not isinstance(decision, Verdict)
        route, match = decision
        assert route is not None and route.name == "syslog"
        assert match == MATCH


def test_route_without_transport_still_serves_udp() -> None:
    decision = _routes_without_transport().udp.decide_datagrams([LOGGER_UDP], False)
    assert not isinstance(decision, Verdict)
    assert decision[0] is not None and decision[0].name == "syslog"


@pytest.mark.parametrize("message", MESSAGES.values(), ids=MESSAGES.keys())
def test_datagrams(message: bytes) -> None:
    assert PROBE.probe_datagram(message) == MATCH
    # A datagram is a whole message: a cut before the decision point is refused.
    for i in range(decided_at(message)):
        assert PROBE.probe_datagram(message[:i]) is Verdict.NO


@pytest.mark.parametrize("message", MESSAGES.values(), ids=MESSAGES.keys())
def test_tcp_byte_by_byte(message: bytes, samples: S) -> None:
    decided = decided_at(message)
    assert samples.assert_incremental(PROBE, message[:decided]) == MATCH
    assert PROBE.probe(message) == MATCH


@pytest.mark.parametrize("stream", TCP_STREAMS.values(), ids=TCP_STREAMS.keys())
def test_tcp_framings(stream: bytes, samples: S) -> None:
    assert PROBE.probe(stream) == MATCH
    body = stream.index(b"<")
    decided = body + decided_at(stream[body:])
    assert samples.assert_incremental(PROBE, stream[:decided]) == MATCH
    for end in range(decided, len(stream) + 1):
        assert PROBE.probe(stream[:end]) == MATCH


def test_octet_counting_is_tcp_only() -> None:
    # Octet counting is a TCP framing: a datagram carries the bare message.
    assert PROBE.probe_datagram(LOGGER_TCP_OCTETS) is Verdict.NO


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"<192>1 - - - - - -", id="pri-192"),
        pytest.param(b"<999>1 -", id="pri-999"),
        pytest.param(b"<1000>1 -", id="pri-4-digits"),
        pytest.param(b"<01>1 -", id="pri-leading-zero"),
        pytest.param(b"<>1 -", id="pri-empty"),
        pytest.param(b"<-1>1 -", id="pri-negative"),
        pytest.param(b"< 13>1 -", id="pri-space"),
        pytest.param(b"<13 >1 -", id="pri-space-after"),
        pytest.param(b"<13>hello world", id="no-timestamp"),
        pytest.param(b"<13>0 - - -", id="version-0"),
        pytest.param(b"<13>1000 - - -", id="version-4-digits"),
        pytest.param(b"<13>1- - -", id="version-hyphen"),
        pytest.param(b"<13>202-05-01", id="year-3-digits"),
        pytest.param(b"<13>20245-05-01", id="year-5-digits"),
        pytest.param(b"<13>jan  1 00:00:00", id="month-lower-case"),
        pytest.param(b"<13>Jan1 00:00:00", id="month-no-space"),
        pytest.param(b"<13>Foo 1 00:00:00", id="not-a-month"),
        pytest.param(b"<13> 1 -", id="space-first"),
        pytest.param(b"13>1 -", id="no-bracket"),
        pytest.param(b"GET / HTTP/1.1\r\n", id="http"),
    ],
)
def test_not_syslog(data: bytes) -> None:
    assert PROBE.probe_datagram(data) is Verdict.NO
    assert PROBE.probe(data) is Verdict.NO


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"099 <13>1 -", id="octets-leading-zero"),
        pytest.param(b"12345678 <13>1 -", id="octets-8-digits"),
        pytest.param(b"99<13>1 -", id="octets-no-space"),
        pytest.param(b"99 13>1 -", id="octets-no-bracket"),
        pytest.param(b"99 <13>x -", id="octets-bad-message"),
    ],
)
def test_not_octet_counted(data: bytes) -> None:
    assert PROBE.probe(data) is Verdict.NO


@pytest.mark.parametrize(
    "data",
    [b"", b"<", b"<1", b"<19", b"<191", b"<13>", b"<13>1", b"<13>Ja", b"<13>2024", b"99", b"99 <1"],
)
def test_tcp_prefixes_need_more(data: bytes) -> None:
    assert PROBE.probe(data) is Verdict.NEED_MORE

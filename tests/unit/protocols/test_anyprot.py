"""The anyprot catch-all: any non-empty data matches at once; its route belongs last."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from refractium.config import parse_config
from refractium.protocols import BUILTIN, Match, Transport, Verdict
from refractium.protocols.anyprot import AnyProbe
from refractium.protocols.base import first_bytes
from refractium.routing import build_tables

PROBE = BUILTIN["anyprot"]
assert isinstance(PROBE, AnyProbe)
MATCH = Match("anyprot")


def test_registered() -> None:
    assert PROBE.name == "anyprot"
    assert PROBE.transport is Transport.BOTH
    # Tried on every input: no first-byte filter.
    assert first_bytes(PROBE) is None
    assert not hasattr(PROBE, "probe_datagram")


def test_empty_needs_more() -> None:
    assert PROBE.probe(b"") is Verdict.NEED_MORE


def test_single_bytes() -> None:
    for value in range(256):
        assert PROBE.probe(bytes([value])) == MATCH


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=1, max_size=4096))
def test_anything_matches(data: bytes) -> None:
    assert PROBE.probe(data) == MATCH


def test_match_is_shared() -> None:
    # One read-only Match for every connection, as the other probes do.
    assert PROBE.probe(b"a") is PROBE.probe(b"b")


# --- in a route table: anyprot belongs last ----------------------------------------


def tables(*names: str) -> Any:
    routes = [{"name": n, "forward_to": f"127.0.0.1:{i + 1}"} for i, n in enumerate(names)]
    return build_tables(parse_config({"protocols": routes}, source="test"))


def tcp_route(table: Any, data: bytes) -> str | None:
    decision = table.tcp.decide(data, False)
    assert decision is not Verdict.NEED_MORE, data
    route, _ = decision
    return None if route is None else str(route.name)


def udp_route(table: Any, datagram: bytes) -> str | None:
    decision = table.udp.decide_datagrams([datagram], False)
    assert decision is not Verdict.NEED_MORE, datagram
    route, _ = decision
    return None if route is None else str(route.name)


# socks5 before dns: see test_short_greeting_after_dns_waits.
ALL_BUT_ANYPROT = (
    "http",
    "tls",
    "ssh",
    "socks5",
    "dns",
    "openvpn",
    "wireguard",
    "xmpp",
    "tinc",
    "adb",
    "rdp",
    "syslog",
    "ftp",
)

TCP_FLIGHTS = {
    b"GET / HTTP/1.1\r\n": "http",
    b"SSH-2.0-OpenSSH_9.6\r\n": "ssh",
    b"\x00\x21\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00"
    b"\x03www\x07example\x03com\x00\x00\x01\x00\x01": "dns",
    b"\x00\x0e\x38" + bytes(range(1, 9)) + bytes(5): "openvpn",
    b"<?xml version='1.0'?><stream:stream xmlns='jabber:client'>": "xmpp",
    b"\x05\x02\x00\x01": "socks5",
    b"0 alpha 17.7\n": "tinc",
    b"CNXN\x01\x00\x00\x01\x00\x00\x10\x00\x07\x00\x00\x00\x00\x00\x00\x00"
    b"\xbc\xb1\xa7\xb1host::\x00": "adb",
    b"\x03\x00\x00\x0b\x06\xe0\x00\x00\x00\x00\x00": "rdp",
    b"USER anonymous\r\n": "ftp",
    b"<13>1 2026-11-21T23:36:34Z host app - - - hello\n": "syslog",
    b"47 <13>1 2026-11-21T23:36:34Z host app - - - hello": "syslog",
    b"\x00\xff\x00garbage": "anyprot",
    b"\xfe" * 8: "anyprot",
}

UDP_FLIGHTS = {
    b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00"
    b"\x03www\x07example\x03com\x00\x00\x01\x00\x01": "dns",
    b"\x38" + bytes(range(1, 9)) + bytes(5): "openvpn",
    b"\x01\x00\x00\x00" + bytes(144): "wireguard",
    b"<13>1 2026-11-21T23:36:34Z host app - - - hello": "syslog",
    b"\x01\x00\x00\x00" + bytes(143): "anyprot",
    b"GET / HTTP/1.1\r\n": "anyprot",
}


@pytest.mark.parametrize(("data", "expected"), TCP_FLIGHTS.items())
def test_every_tcp_flight_reaches_its_route(data: bytes, expected: str) -> None:
    assert tcp_route(tables(*ALL_BUT_ANYPROT, "anyprot"), data) == expected


@pytest.mark.parametrize(("datagram", "expected"), UDP_FLIGHTS.items())
def test_every_udp_flight_reaches_its_route(datagram: bytes, expected: str) -> None:
    assert udp_route(tables(*ALL_BUT_ANYPROT, "anyprot"), datagram) == expected


def test_anyprot_first_takes_everything() -> None:
    table = tables("anyprot", *ALL_BUT_ANYPROT)
    for data in TCP_FLIGHTS:
        assert tcp_route(table, data) == "anyprot"
    for datagram in UDP_FLIGHTS:
        assert udp_route(table, datagram) == "anyprot"


def test_anyprot_last_waits_for_the_others() -> None:
    table = tables("ssh", "anyprot")
    # "SS" could still become SSH, which outranks anyprot: read on.
    assert table.tcp.decide(b"SS", False) is Verdict.NEED_MORE
    assert tcp_route(table, b"SSH-") == "ssh"
    assert tcp_route(table, b"SSX") == "anyprot"
    # Out of time or data: what anyprot matched is taken.
    route, _ = table.tcp.decide(b"SS", True)
    assert route is not None and route.name == "anyprot"


def test_short_greeting_after_dns_waits() -> None:
    # Over TCP, two bytes of length and two of ID can start any DNS query: a
    # 4-byte SOCKS5 greeting cannot be told apart from one until a fifth byte.
    greeting = b"\x05\x02\x00\x01"
    assert BUILTIN["dns"].probe(greeting) is Verdict.NEED_MORE
    # With dns first in the file, the greeting waits for more (the timeout)...
    dns_first = tables("dns", "socks5")
    assert dns_first.tcp.decide(greeting, False) is Verdict.NEED_MORE
    route, _ = dns_first.tcp.decide(greeting, True)
    assert route is not None and route.name == "socks5"
    # ... with socks5 first, it is decided at once.
    assert tcp_route(tables("socks5", "dns"), greeting) == "socks5"

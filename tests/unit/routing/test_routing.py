"""The routing decision, table-driven: which route a first flight reaches."""

from __future__ import annotations

import ssl
from typing import Any

import pytest

from refractium.config import parse_config
from refractium.protocols.base import Match, Transport, Verdict
from refractium.routing import build_tables


def client_hello(sni: str | None, alpn: list[str] | None = None) -> bytes:
    """A real ClientHello from this Python's ssl module."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(alpn)
    conn = ctx.wrap_bio(ssl.MemoryBIO(), out := ssl.MemoryBIO(), server_hostname=sni)
    with pytest.raises(ssl.SSLWantReadError):
        conn.do_handshake()
    return out.read()


def tables(*routes: dict[str, Any], **server: Any) -> Any:
    config = parse_config({"server": server, "protocols": list(routes)}, source="test")
    return build_tables(config)


def target(table: Any, data: bytes, final: bool = False) -> str | None:
    """The first backend of the chosen route, or None when nothing matched."""
    decision = table.decide(data, final)
    assert decision is not Verdict.NEED_MORE, "expected a decision"
    route, _match = decision
    return None if route is None else str(route.pool.members[0])


TLS_ROUTES = (
    {"name": "https", "sni": "*.example.org", "forward_to": "127.0.0.1:1001"},
    {"name": "https", "sni": ["api.example.org"], "forward_to": "127.0.0.1:1002"},
    {"name": "https", "sni": ["*.deep.example.org"], "forward_to": "127.0.0.1:1003"},
    {"name": "tls", "alpn": ["h2"], "forward_to": "127.0.0.1:1004"},
    {"name": "tls", "sni": "a.test", "alpn": ["h2"], "forward_to": "127.0.0.1:1005"},
    {"name": "tls", "sni": "a.test", "forward_to": "127.0.0.1:1006"},
    {"name": "https", "forward_to": "127.0.0.1:1007"},
)


@pytest.mark.parametrize(
    ("sni", "alpn", "expected"),
    [
        ("api.example.org", None, "127.0.0.1:1002"),  # exact beats an earlier wildcard
        ("API.Example.ORG", None, "127.0.0.1:1002"),  # case-insensitive
        ("www.example.org", None, "127.0.0.1:1001"),  # wildcard
        ("x.y.example.org", None, "127.0.0.1:1001"),  # wildcards match any depth
        ("x.deep.example.org", None, "127.0.0.1:1003"),  # longer wildcard wins
        ("example.org", None, "127.0.0.1:1007"),  # the bare domain is not *.example.org
        ("a.test", ["h2"], "127.0.0.1:1005"),  # SNI + ALPN beats SNI alone
        ("a.test", ["http/1.1"], "127.0.0.1:1006"),
        ("b.test", ["h2"], "127.0.0.1:1004"),  # ALPN alone
        ("b.test", ["http/1.1"], "127.0.0.1:1007"),  # no filter matched: plain route
        (None, None, "127.0.0.1:1007"),  # no SNI at all
    ],
)
def test_tls_specificity(sni: str | None, alpn: list[str] | None, expected: str) -> None:
    table = tables(*TLS_ROUTES).tcp
    assert target(table, client_hello(sni, alpn)) == expected


def test_file_order_breaks_ties() -> None:
    table = tables(
        {"name": "mine", "patterns": ["HELLO"], "forward_to": "127.0.0.1:1"},
        {"name": "anything", "regex": "^HEL", "forward_to": "127.0.0.1:2"},
    ).tcp
    assert target(table, b"HELLO world") == "127.0.0.1:1"


def test_unmatched_filters_fall_to_fallback_route() -> None:
    t = tables(
        {"name": "https", "sni": "only.test", "forward_to": "127.0.0.1:1"},
        fallback_tcp="127.0.0.1:9",
    ).tcp
    assert t.decide(client_hello("other.test"), False) == (None, None)
    assert t.fallback is not None and str(t.fallback.pool.members[0]) == "127.0.0.1:9"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"GET / HTTP/1.1\r\n\r\n", "127.0.0.1:1"),
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "127.0.0.1:1"),
        (b"SSH-2.0-OpenSSH_9.2\r\n", "127.0.0.1:2"),
        (b"\x01\x02\x03rest", "127.0.0.1:3"),
        (b"HELLO 42\n", "127.0.0.1:4"),
        (b"\x00garbage", None),
    ],
)
def test_each_probe_reaches_its_route(data: bytes, expected: str | None) -> None:
    table = tables(
        {"name": "http", "forward_to": "127.0.0.1:1"},
        {"name": "ssh", "forward_to": "127.0.0.1:2"},
        {"name": "mine", "patterns": ["\\x01\\x02\\x03"], "forward_to": "127.0.0.1:3"},
        {"name": "hello", "regex": "^HELLO [0-9]+", "forward_to": "127.0.0.1:4"},
    ).tcp
    assert target(table, data) == expected
    # Fed one byte at a time: undecided until the deciding byte, then the same route.
    for end in range(1, len(data)):
        if table.decide(data[:end], False) is not Verdict.NEED_MORE:
            assert target(table, data[:end]) == expected
            break


def test_waits_while_an_earlier_route_may_still_match() -> None:
    table = tables(
        {"name": "special", "patterns": ["GET /special"], "forward_to": "127.0.0.1:1"},
        {"name": "http", "forward_to": "127.0.0.1:2"},
    ).tcp
    assert table.decide(b"GET /spe", False) is Verdict.NEED_MORE
    assert target(table, b"GET /spe", final=True) == "127.0.0.1:2"
    assert target(table, b"GET /special/x") == "127.0.0.1:1"
    assert target(table, b"GET /other") == "127.0.0.1:2"


def test_does_not_wait_for_a_route_that_cannot_win() -> None:
    table = tables(
        {"name": "http", "forward_to": "127.0.0.1:1"},
        {"name": "later", "patterns": ["GET /later"], "forward_to": "127.0.0.1:2"},
    ).tcp
    assert target(table, b"GET /") == "127.0.0.1:1"


def test_on_timeout_defaults_to_ssh_route() -> None:
    t = tables(
        {"name": "http", "forward_to": "127.0.0.1:1"},
        {"name": "ssh", "forward_to": "127.0.0.1:2"},
    )
    assert t.tcp.on_timeout is not None and t.tcp.on_timeout.name == "ssh"
    t = tables({"name": "http", "forward_to": "127.0.0.1:1"})
    assert t.tcp.on_timeout is None
    t = tables(
        {"name": "ftpish", "patterns": ["220 "], "forward_to": "127.0.0.1:3"},
        {"name": "ssh", "forward_to": "127.0.0.1:2"},
        on_timeout="ftpish",
    )
    assert t.tcp.on_timeout is not None and t.tcp.on_timeout.name == "ftpish"


def test_udp_only_routes_stay_out_of_the_tcp_table() -> None:
    t = tables(
        {"name": "http", "forward_to": "127.0.0.1:1"},
        {"name": "mine", "patterns": ["X"], "transport": "udp", "forward_to": "127.0.0.1:2"},
    )
    assert [r.name for r in t.tcp.routes] == ["http"]
    assert [r.name for r in t.udp.routes] == ["mine"]


class CountingProbe:
    """Matches anything starting with G, and counts its calls."""

    name = "counting"
    transport = Transport.TCP

    def __init__(self) -> None:
        self.calls = 0

    def probe(self, data: bytes) -> Match | Verdict:
        self.calls += 1
        return Match("counting") if data.startswith(b"G") else Verdict.NO


@pytest.mark.parametrize(
    ("counting_first", "calls", "winner"), [(False, 0, "http"), (True, 1, "counting")]
)
def test_probes_that_cannot_win_are_not_called(
    counting_first: bool, calls: int, winner: str
) -> None:
    counting = CountingProbe()
    routes = [{"name": "http", "forward_to": "127.0.0.1:1"}]
    mine = {"name": "counting", "forward_to": "127.0.0.1:2"}
    routes.insert(0 if counting_first else 1, mine)
    config = parse_config({"protocols": routes}, source="t", extra_protocols={"counting"})
    table = build_tables(config, {"counting": counting}).tcp
    route, _ = table.decide(b"GET / HTTP/1.1\r\n", False)  # type: ignore[misc]
    assert route.name == winner
    assert counting.calls == calls


# --- ja4 filters -------------------------------------------------------------------------


def fingerprint(hello: bytes) -> str:
    """The JA4 the TLS probe gives ``hello``."""
    from refractium.protocols.tls import TlsProbe

    match = TlsProbe().probe(hello)
    assert isinstance(match, Match) and match.ja4 is not None
    return match.ja4


def test_ja4_filters_take_their_fingerprints_only() -> None:
    hello = client_hello("a.test", ["h2"])
    mine = fingerprint(hello)
    table = tables(
        {
            "name": "tls",
            "ja4": ["t13d0000h2_000000000000_000000000000"],
            "forward_to": "127.0.0.1:1",
        },
        {"name": "tls", "ja4": [mine], "forward_to": "127.0.0.1:2"},
        {"name": "tls", "forward_to": "127.0.0.1:3"},
    ).tcp
    assert target(table, hello) == "127.0.0.1:2"
    # Another client's hello (no ALPN: another fingerprint) skips both filters.
    assert fingerprint(client_hello("a.test")) != mine
    assert target(table, client_hello("a.test")) == "127.0.0.1:3"


def test_a_ja4_prefix_takes_every_fingerprint_it_starts() -> None:
    hello = client_hello("a.test", ["h2"])
    table = tables(
        {"name": "tls", "forward_to": "127.0.0.1:1"},
        {"name": "tls", "ja4": ["q*", fingerprint(hello)[:4] + "*"], "forward_to": "127.0.0.1:2"},
    ).tcp
    assert target(table, hello) == "127.0.0.1:2"  # a filter outranks an earlier plain route


def test_ja4_ranks_like_alpn_below_sni() -> None:
    hello = client_hello("a.test", ["h2"])
    ja4 = fingerprint(hello)
    table = tables(
        {"name": "tls", "ja4": [ja4], "forward_to": "127.0.0.1:1"},
        {"name": "tls", "alpn": ["h2"], "ja4": [ja4], "forward_to": "127.0.0.1:2"},
        {"name": "tls", "sni": "*.test", "forward_to": "127.0.0.1:3"},
    ).tcp
    assert target(table, hello) == "127.0.0.1:3"  # any SNI filter beats ALPN and JA4 together
    table = tables(
        {"name": "tls", "ja4": [ja4], "forward_to": "127.0.0.1:1"},
        {"name": "tls", "alpn": ["h2"], "ja4": [ja4], "forward_to": "127.0.0.1:2"},
    ).tcp
    assert target(table, hello) == "127.0.0.1:2"  # ALPN and JA4 beat JA4 alone
    table = tables(
        {"name": "tls", "alpn": ["h2"], "forward_to": "127.0.0.1:1"},
        {"name": "tls", "ja4": [ja4], "forward_to": "127.0.0.1:2"},
    ).tcp
    assert target(table, hello) == "127.0.0.1:1"  # ALPN alone and JA4 alone tie: file order

"""The warnings ``refractium check`` gives about a valid config: each case and its near misses."""

from __future__ import annotations

import tomllib

import pytest

from refractium.config import parse_config, starter_text
from refractium.routing.lint import lint


def warnings_of(text: str) -> list[str]:
    return lint(parse_config(tomllib.loads(text), "refractium.toml"))


def route(name: str, *lines: str, to: str = "10.0.0.9:1") -> str:
    body = "".join(f"{line}\n" for line in lines)
    return f'[[protocols]]\nname = "{name}"\nforward_to = "{to}"\n{body}'


WARNED = [
    pytest.param(
        route("http", 'sni = ["example.com"]'),
        "protocols[0] (http): sni never matches: http carries no SNI",
        id="sni-on-http",
    ),
    pytest.param(
        route("ssh", 'alpn = ["h2"]'),
        "protocols[0] (ssh): alpn never matches: ssh carries no ALPN",
        id="alpn-on-ssh",
    ),
    pytest.param(
        route("http", 'ja4 = ["t13d*"]'),
        "protocols[0] (http): ja4 never matches: http carries no JA4",
        id="ja4-on-http",
    ),
    pytest.param(
        route("tls", 'ja4 = ["t13d*"]')
        + route("https", 'ja4 = ["t13d1516h2_8daaf6152771_b186095e22b6"]'),
        "protocols[1] (https): never matches: protocols[0] (tls) comes first with the same "
        "protocol and the same or wider filters",
        id="ja4-shadowed-by-prefix",
    ),
    pytest.param(
        route("mine", 'patterns = ["HI"]', 'sni = ["a.example"]'),
        "protocols[0] (mine): sni never matches: mine carries no SNI",
        id="sni-on-patterns",
    ),
    pytest.param(
        route("quic", 'transport = "tcp"'),
        "protocols[0] (quic): never matches: transport is tcp, but quic runs over udp only",
        id="quic-over-tcp",
    ),
    pytest.param(
        route("wireguard", 'transport = "tcp"'),
        "protocols[0] (wireguard): never matches: transport is tcp, "
        "but wireguard runs over udp only",
        id="wireguard-over-tcp",
    ),
    pytest.param(
        route("https", to="10.0.0.1:443") + route("https", to="10.0.0.2:443"),
        "protocols[1] (https): never matches: protocols[0] (https) comes first with the same "
        "protocol and the same or wider filters",
        id="shadowed-same",
    ),
    pytest.param(
        route("tls", 'sni = ["*.example.org", "a.example.org"]', 'alpn = ["h2", "http/1.1"]')
        + route("https", 'sni = ["a.example.org"]', 'alpn = ["h2"]'),
        "protocols[1] (https): never matches: protocols[0] (tls) comes first with the same "
        "protocol and the same or wider filters",
        id="shadowed-wider",
    ),
    pytest.param(
        "[server]\nport = [443, 8443]\n" + route("ssh") + route("ssh", "ports = [8443]"),
        "protocols[1] (ssh): never matches: protocols[0] (ssh) comes first with the same "
        "protocol and the same or wider filters",
        id="shadowed-on-its-port",
    ),
    pytest.param(
        route("anyprot") + route("http") + route("https", 'sni = ["a.example"]') + route("ssh"),
        "protocols[0] (anyprot): matches every client, so the routes after it never match: "
        "protocols[1] (http), protocols[3] (ssh); put anyprot last",
        id="anyprot-first",
    ),
    pytest.param(
        route("mine", "regex = 'HELLO [0-9]+'"),
        "protocols[0] (mine): regex 'HELLO [0-9]+' is not anchored: it never rules a client "
        "out, so other clients may wait for more bytes until peek_timeout_ms; start it with ^",
        id="unanchored-regex",
    ),
    pytest.param(
        route("http", to="127.0.0.1:8080"),
        "protocols[0] (http): forwards to 127.0.0.1:8080, the proxy's own listener "
        "0.0.0.0:8080: connections would loop",
        id="loop-loopback-wildcard",
    ),
    pytest.param(
        '[server]\nbind = ["::"]\nport = [443, 8443]\n' + route("http", to="localhost:8443"),
        "protocols[0] (http): forwards to localhost:8443, the proxy's own listener "
        "[::]:8443: connections would loop",
        id="loop-localhost",
    ),
    pytest.param(
        '[server]\nbind = "192.0.2.7"\n' + route("http", to="192.0.2.7:8080"),
        "protocols[0] (http): forwards to 192.0.2.7:8080, the proxy's own listener "
        "192.0.2.7:8080: connections would loop",
        id="loop-bind-address",
    ),
    pytest.param(
        'fallback_tcp = "127.0.0.1:8080"\n' + route("ssh"),
        "server.fallback_tcp: forwards to 127.0.0.1:8080, the proxy's own listener "
        "0.0.0.0:8080: connections would loop",
        id="loop-fallback",
    ),
    pytest.param(
        'fallback_udp = "[::1]:8080"\n' + route("http"),
        "server.fallback_udp: forwards to [::1]:8080, the proxy's own listener "
        "0.0.0.0:8080: connections would loop",
        id="loop-udp-fallback",
    ),
    pytest.param(
        "[server]\naccept_proxy_protocol = true\n" + route("http"),
        "server.accept_proxy_protocol: set, but server.trusted_proxies is empty: no upstream "
        "may send a PROXY header, so it has no effect",
        id="proxy-protocol-untrusted",
    ),
    pytest.param(
        route("http", 'overflow = "drop"'),
        "protocols[0] (http): overflow is set but the route has no hooks",
        id="overflow-without-hooks",
    ),
    pytest.param(
        '[server]\nuser = "nobody"\n' + route("ssh", "transparent = true"),
        "protocols[0] (ssh): transparent needs CAP_NET_ADMIN, which dropping to server.user "
        "'nobody' gives up: its dials will fail",
        id="transparent-with-user",
    ),
    pytest.param(
        "[limits]\nban_after = 10\noffences = []\n" + route("http"),
        "limits.ban_after: set, but limits.offences is empty: nothing is ever banned",
        id="ban-without-offences",
    ),
    pytest.param(
        '[limits]\nban_after = 10\noffences = ["limited"]\n' + route("http"),
        "limits.offences: only 'limited' counts, but no connection_rate is set: "
        "nothing is ever banned",
        id="ban-on-limited-without-rate",
    ),
    pytest.param(
        '[limits]\nallow = ["192.0.2.0/24", "10.0.0.0/8"]\ndeny = ["10.1.0.0/16"]\n'
        + route("http"),
        "limits.deny: 10.1.0.0/16 is within limits.allow's 10.0.0.0/8: allow wins, "
        "so it is never refused",
        id="denied-inside-allowed",
    ),
    pytest.param(
        '[limits]\nallow = ["2001:db8::7"]\ndeny = ["2001:db8::7"]\n' + route("http"),
        "limits.deny: 2001:db8::7 is within limits.allow's 2001:db8::7: allow wins, "
        "so it is never refused",
        id="denied-and-allowed-the-same",
    ),
    pytest.param(
        route("dns", 'transport = "udp"', 'connection_rate = "10/s"'),
        "protocols[0] (dns): connection_rate applies to TCP only",
        id="rate-on-udp-route",
    ),
    pytest.param(
        route("wireguard", 'connection_rate = "10/s"'),
        "protocols[0] (wireguard): connection_rate applies to TCP only",
        id="rate-on-udp-protocol",
    ),
    pytest.param(
        '[state]\nurl = "redis://cache:6379/0"\n' + route("http"),
        "state.url: set, but state.backend is memory: only redis uses it",
        id="state-url-with-memory",
    ),
    pytest.param(
        '[state]\non_error = "closed"\n' + route("http"),
        "state.on_error: set, but state.backend is memory: only redis uses it",
        id="state-on-error-with-memory",
    ),
]


@pytest.mark.parametrize(("text", "warning"), WARNED)
def test_each_warning(text: str, warning: str) -> None:
    assert warnings_of(text) == [warning]


QUIET = [
    pytest.param(
        route("tls", 'ja4 = ["t13d*"]') + route("https", 'ja4 = ["t12d*"]'),
        id="ja4-prefixes-apart",
    ),
    pytest.param(
        route("tls", 'ja4 = ["t13d1516h2_8daaf6152771_b186095e22b6"]')
        + route("https", 'ja4 = ["t13d*"]'),
        id="ja4-exact-then-prefix",
    ),
    pytest.param(
        route("quic", 'ja4 = ["q13d*"]'),
        id="ja4-on-quic",
    ),
    pytest.param(route("https", 'sni = ["a.example"]', 'alpn = ["h2"]'), id="sni-alpn-on-tls"),
    pytest.param(route("quic", 'sni = ["a.example"]', 'alpn = ["h3"]'), id="sni-alpn-on-quic"),
    pytest.param(route("dns", 'transport = "tcp"'), id="dns-over-tcp"),
    # The most specific route wins whatever the order: nothing is shadowed.
    pytest.param(route("https") + route("https", 'sni = ["a.example"]'), id="later-more-specific"),
    pytest.param(
        route("https", 'sni = ["*.example"]') + route("https", 'sni = ["a.example"]'),
        id="later-exact-name",
    ),
    pytest.param(
        route("https", 'sni = ["*.example"]') + route("https", 'sni = ["*.a.example"]'),
        id="later-longer-wildcard",
    ),
    pytest.param(
        route("https", 'alpn = ["h2"]') + route("https", 'alpn = ["h2", "http/1.1"]'),
        id="later-wider-alpn",
    ),
    pytest.param(route("https", 'alpn = ["h2"]') + route("https"), id="earlier-filtered"),
    pytest.param(route("http") + route("ssh"), id="other-protocol"),
    pytest.param(
        route("mine", "patterns = ['A']") + route("mine", "patterns = ['B']"),
        id="other-patterns",
    ),
    pytest.param(
        "[server]\nport = [443, 8443]\n" + route("ssh", "ports = [443]") + route("ssh"),
        id="later-on-more-ports",
    ),
    pytest.param(route("dns", 'transport = "udp"') + route("dns"), id="later-on-more-transports"),
    pytest.param(
        route("anyprot", 'transport = "udp"') + route("http"), id="anyprot-on-another-transport"
    ),
    pytest.param(route("http") + route("anyprot"), id="anyprot-last"),
    pytest.param(route("mine", "regex = '^HELLO'"), id="regex-caret"),
    pytest.param(route("mine", "regex = '\\AHELLO'"), id="regex-backslash-a"),
    pytest.param(route("http", to="127.0.0.1:8081"), id="other-port"),
    pytest.param(
        '[server]\nbind = "192.0.2.7"\n' + route("http", to="127.0.0.1:8080"), id="other-address"
    ),
    # Nothing listens for UDP on 8080: no UDP route is served there, no UDP fallback.
    pytest.param(
        "[server]\nport = [53, 8080]\n"
        + route("dns", 'transport = "udp"', "ports = [53]", to="127.0.0.1:8080")
        + route("http", "ports = [8080]"),
        id="udp-to-a-tcp-only-port",
    ),
    pytest.param(
        '[server]\naccept_proxy_protocol = true\ntrusted_proxies = ["10.0.0.0/8"]\n'
        + route("http"),
        id="proxy-protocol-trusted",
    ),
    pytest.param('[admin]\nbind = "127.0.0.1:9901"\n' + route("http"), id="admin-one-worker"),
    pytest.param(
        '[server]\nworkers = 2\n[admin]\nbind = "127.0.0.1:9901"\n' + route("http"),
        id="admin-with-workers",
    ),
    pytest.param(
        route("http", 'overflow = "block"', 'hooks = ["refractium.hooks.logger:TrafficLogger"]'),
        id="overflow-with-hooks",
    ),
    pytest.param(
        '[limits]\nban_after = 10\noffences = ["limited"]\n'
        + route("ssh", 'connection_rate = "3/m"'),
        id="ban-on-a-route-rate",
    ),
    pytest.param(
        '[limits]\nconnection_rate = "20/s"\nban_after = 10\noffences = ["limited"]\n'
        + route("http"),
        id="ban-on-the-rate",
    ),
    pytest.param(
        '[limits]\nallow = ["10.0.0.0/24"]\ndeny = ["10.0.1.0/24", "192.0.2.0/24"]\n'
        + route("http"),
        id="allow-and-deny-apart",
    ),
    # Everyone but these: the allowed networks are exceptions to the denied one.
    pytest.param(
        '[limits]\nallow = ["10.0.0.0/24", "2001:db8::/32"]\ndeny = ["0.0.0.0/0", "::/0"]\n'
        + route("http"),
        id="allowed-inside-denied",
    ),
    pytest.param(
        '[limits]\nallow = ["::/0"]\ndeny = ["10.0.0.0/8"]\n' + route("http"),
        id="allow-of-the-other-family",
    ),
    pytest.param(route("dns", 'connection_rate = "10/s"'), id="rate-on-a-tcp-and-udp-route"),
    pytest.param(
        '[state]\nbackend = "redis"\nurl = "redis://cache:6379/0"\non_error = "closed"\n'
        + route("http"),
        id="state-redis",
    ),
]


@pytest.mark.parametrize("text", QUIET)
def test_no_warning(text: str) -> None:
    assert warnings_of(text) == []


def test_a_route_that_never_matches_shadows_nothing() -> None:
    text = route("http", 'sni = ["a.example"]') + route("http", 'sni = ["a.example"]')
    assert warnings_of(text) == [
        "protocols[0] (http): sni never matches: http carries no SNI",
        "protocols[1] (http): sni never matches: http carries no SNI",
    ]


def test_the_starter_file_has_no_warning() -> None:
    assert warnings_of(starter_text()) == []

"""The one-line errors a bad configuration gives: ``<file>: <key>: <what is wrong>``."""

from __future__ import annotations

import pytest

from refractium.config import parse_config
from refractium.errors import ConfigError, HookLoadError, RefractiumError
from tests.unit.config.helpers import KNOWN, error_of, route


def test_config_error_text_and_attributes() -> None:
    error = ConfigError("refractium.toml", "server.port", "bad")
    assert str(error) == "refractium.toml: server.port: bad"
    assert (error.file, error.key, error.message) == ("refractium.toml", "server.port", "bad")
    assert str(ConfigError(None, "-f", "bad")) == "-f: bad"
    assert str(ConfigError("a.toml", None, "bad")) == "a.toml: bad"
    assert str(ConfigError(None, None, "bad")) == "bad"
    assert issubclass(HookLoadError, ConfigError)
    assert issubclass(ConfigError, RefractiumError)


def test_unknown_key_suggests_the_close_match() -> None:
    assert (
        error_of("[server]\npeek_timout_ms = 3000\n")
        == "refractium.toml: server.peek_timout_ms: unknown key (did you mean 'peek_timeout_ms'?)"
    )


def test_unknown_key_without_a_close_match() -> None:
    assert error_of("[server]\ncolour = 'blue'\n") == "refractium.toml: server.colour: unknown key"


def test_unknown_top_level_table() -> None:
    assert (
        error_of("[servr]\nport = 1\n")
        == "refractium.toml: servr: unknown key (did you mean 'server'?)"
    )


def test_unknown_key_in_a_route_and_a_health_check() -> None:
    assert error_of(route("weight = 2")) == "refractium.toml: protocols[0].weight: unknown key"
    assert (
        error_of(route("health_check = { intervl_ms = 1 }"))
        == "refractium.toml: protocols[0].health_check.intervl_ms: unknown key"
        " (did you mean 'interval_ms'?)"
    )


def test_wrong_type_in_plain_words() -> None:
    assert (
        error_of('[server]\nport = "8080"\n')
        == "refractium.toml: server.port: expected an integer or a list, got a string"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[server]\nhot_reload = 1\n", "server.hot_reload: expected true/false, got an integer"),
        ("[server]\nbind = 1\n", "server.bind: expected a string or a list, got an integer"),
        ("[server]\nbind = ['::', 1]\n", "server.bind[1]: expected a string, got an integer"),
        ("[server]\nport = 1.5\n", "server.port: expected an integer or a list, got a number"),
        ("[server]\nport = 1979-05-27\n", "server.port: expected an integer or a list, got a date"),
        ("server = 1\n", "server: expected a table, got an integer"),
        (
            "[protocols]\nname = 'http'\n",
            "protocols: expected a list, got a table (write [[protocols]], not [protocols])",
        ),
        (
            route("hooks = [1]"),
            "protocols[0].hooks[0]: expected a string or a table, got an integer",
        ),
        (
            route("health_check = 'yes'"),
            "protocols[0].health_check: expected true/false or a table, got a string",
        ),
    ],
)
def test_wrong_types(text: str, message: str) -> None:
    assert error_of(text) == f"refractium.toml: {message}"


def test_bad_forward_to() -> None:
    text = route() + route(name="ssh") + route(name="https", forward_to='"nowhere"')
    assert error_of(text) == "refractium.toml: protocols[2].forward_to: not host:port: 'nowhere'"


def test_bad_forward_to_in_a_pool_names_the_entry() -> None:
    text = route(forward_to='["127.0.0.1:80", "nowhere"]')
    assert error_of(text) == "refractium.toml: protocols[0].forward_to[1]: not host:port: 'nowhere'"


def test_empty_pool() -> None:
    text = route() + route(name="ssh", forward_to="[]")
    assert error_of(text) == "refractium.toml: protocols[1].forward_to: empty pool"


def test_missing_forward_to() -> None:
    text = '[[protocols]]\nname = "http"\n'
    assert error_of(text) == "refractium.toml: protocols[0].forward_to: required key missing"


def test_unknown_protocol() -> None:
    assert (
        error_of(route(name="htp")) == "refractium.toml: protocols[0].name: unknown protocol 'htp'"
        f" (known: {KNOWN}; or give patterns/regex)"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[server]\nport = 70000\n", "server.port: must be 0..65535 (0: any free port), got 70000"),
        (
            "[server]\npeek_buffer_size = 10\n",
            "server.peek_buffer_size: must be at least 64, got 10",
        ),
        ("[server]\npeek_timeout_ms = 0\n", "server.peek_timeout_ms: must be at least 1, got 0"),
        ("[server]\nmax_connections = 0\n", "server.max_connections: must be at least 1, got 0"),
        (
            "[server]\nmax_connections_per_ip = -1\n",
            "server.max_connections_per_ip: must be at least 0, got -1",
        ),
        (
            "[server]\nudp_session_timeout_s = nan\n",
            "server.udp_session_timeout_s: must be a positive number of seconds, got nan",
        ),
        ("[server]\nbind = []\n", "server.bind: no listen address"),
        ("[server]\nbind = ['::', 'a b']\n", "server.bind[1]: bad host name: 'a b'"),
        (
            "[server]\ntrusted_proxies = ['10.0.0.0/8', 'ten']\n",
            "server.trusted_proxies[1]: not a CIDR network: 'ten'",
        ),
        ("[server]\nfallback_tcp = 'x'\n", "server.fallback_tcp: not host:port: 'x'"),
        ("fallback_udp = 'x'\n", "fallback_udp: not host:port: 'x'"),
        (
            "fallback_tcp = '127.0.0.1:1'\n[server]\nfallback_tcp = '127.0.0.1:2'\n",
            "fallback_tcp: also set in [server]; keep one",
        ),
        ("[server]\non_timeout = 'ssh'\n" + route(), "server.on_timeout: no route named 'ssh'"),
        (
            "[server.health_check]\nrise = 0\n",
            "server.health_check.rise: must be at least 1, got 0",
        ),
        (
            "[server.health_check]\nsend = 'a\\q'\n",
            "server.health_check.send: unknown escape \\q at offset 1",
        ),
        ("[admin]\nbind = '127.0.0.1'\n", "admin.bind: not host:port: '127.0.0.1'"),
        ("[admin]\ntoken = ''\n", "admin.token: empty (leave it out to disable authentication)"),
        (
            route("sni = ['a.com', 'a*.com']"),
            "protocols[0].sni[1]: wildcards must be a whole"
            " leftmost label, as in '*.example.com': 'a*.com'",
        ),
        (
            route("sni = '*'"),
            "protocols[0].sni: wildcards must be a whole leftmost label,"
            " as in '*.example.com': '*'",
        ),
        (route("sni = 'a..com'"), "protocols[0].sni: not a server name: 'a..com'"),
        (
            route("sni = 'bücher.de'"),
            "protocols[0].sni: not ASCII (write IDN names as 'xn--' punycode): 'bücher.de'",
        ),
        (route("alpn = ['h2', '']"), "protocols[0].alpn[1]: ALPN ids are 1 to 255 bytes long: ''"),
        (
            route("balance = 'fastest'"),
            "protocols[0].balance: unknown value 'fastest' (expected: round_robin,"
            " least_connections, random, source_hash)",
        ),
        (
            route("transport = 'sctp'"),
            "protocols[0].transport: unknown value 'sctp' (expected: tcp, udp, both)",
        ),
        (
            route("overflow = 'spill'"),
            "protocols[0].overflow: unknown value 'spill' (expected: drop, block)",
        ),
        (route("proxy_protocol = 3"), "protocols[0].proxy_protocol: must be 0, 1 or 2, got 3"),
        (
            route(name="my proto"),
            "protocols[0].name: not a valid name: 'my proto' (use letters, digits, '_', '-', '.')",
        ),
        (route("patterns = ['ok', '']", name="mine"), "protocols[0].patterns[1]: empty pattern"),
        (
            route("regex = '.*'", name="mine"),
            "protocols[0].regex: regex '.*' matches empty input, so it would match everything",
        ),
        (route("hooks = ['nocolon']"), "protocols[0].hooks[0]: not 'module:attribute': 'nocolon'"),
        (route("hooks = 'a:b:c'"), "protocols[0].hooks: not 'module:attribute': 'a:b:c'"),
        (route("hooks = ['a.:b']"), "protocols[0].hooks[0]: not 'module:attribute': 'a.:b'"),
        (route("hooks = [':b']"), "protocols[0].hooks[0]: not 'module:attribute': ':b'"),
        (route("hooks = [{ path = 'x' }]"), "protocols[0].hooks[0].use: required key missing"),
        (
            route("hooks = [{ use = 1 }]"),
            "protocols[0].hooks[0].use: expected a string, got an integer",
        ),
        (
            route("hooks = [{ use = 'a:B', 'max-size' = 1 }]"),
            "protocols[0].hooks[0].max-size: not usable as a Python argument name",
        ),
        (
            route("health_check = { timeout_ms = 0 }"),
            "protocols[0].health_check.timeout_ms: must be at least 1, got 0",
        ),
        ("[endpoint]\nhooks = ['x']\n", "endpoint.hooks[0]: not 'module:attribute': 'x'"),
    ],
)
def test_value_errors(text: str, message: str) -> None:
    assert error_of(text) == f"refractium.toml: {message}"


def test_parse_config_without_a_source_names_no_file() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"server": {"port": -1}}, None)
    assert str(caught.value) == "server.port: must be 0..65535 (0: any free port), got -1"
    assert caught.value.file is None

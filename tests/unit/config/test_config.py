"""Tests for the configuration loader, model, overrides and starter file."""

from __future__ import annotations

import re
import tomllib
from ipaddress import ip_network
from pathlib import Path
from typing import Any

import msgspec
import pytest

from refractium.addr import Address
from refractium.config import (
    AdminConfig,
    Balance,
    Config,
    HealthCheck,
    HookSpec,
    Overflow,
    Overrides,
    RouteConfig,
    ServerConfig,
    apply_overrides,
    describe,
    load_file,
    parse_config,
    starter_text,
)
from refractium.config import schema as config_schema
from refractium.errors import ConfigError, HookLoadError, RefractiumError
from refractium.protocols.base import Transport

FILE = "refractium.toml"

RUST_CRATE_FILE = """\
[server]
bind = "0.0.0.0"
port = 8080
max_connections = 20000
max_connections_per_ip = 2000
peek_timeout_ms = 3000

[[protocols]]
name = "http"
forward_to = "127.0.0.1:9000"
transport = "tcp"

[[protocols]]
name = "ssh"
forward_to = "127.0.0.1:22"
transport = "tcp"
"""


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in an empty directory so files can be named as a user would."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write_and_load(directory: Path, text: str) -> Config:
    (directory / FILE).write_text(text, encoding="utf-8")
    return load_file(FILE)


def error_of(text: str) -> str:
    """The one-line error loading ``text`` as refractium.toml gives."""
    with pytest.raises(ConfigError) as caught:
        parse_config(tomllib.loads(text), FILE)
    return str(caught.value)


def route(extra: str = "", name: str = "http", forward_to: str = '"127.0.0.1:80"') -> str:
    return f'[[protocols]]\nname = "{name}"\nforward_to = {forward_to}\n{extra}\n'


# --- errors ------------------------------------------------------------------


def test_config_error_text_and_attributes() -> None:
    error = ConfigError("refractium.toml", "server.port", "bad")
    assert str(error) == "refractium.toml: server.port: bad"
    assert (error.file, error.key, error.message) == ("refractium.toml", "server.port", "bad")
    assert str(ConfigError(None, "-f", "bad")) == "-f: bad"
    assert str(ConfigError("a.toml", None, "bad")) == "a.toml: bad"
    assert str(ConfigError(None, None, "bad")) == "bad"
    assert issubclass(HookLoadError, ConfigError)
    assert issubclass(ConfigError, RefractiumError)


# --- the error messages users see ----------------------------------------------


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
        == "refractium.toml: server.port: expected an integer, got a string"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[server]\nhot_reload = 1\n", "server.hot_reload: expected true/false, got an integer"),
        ("[server]\nbind = 1\n", "server.bind: expected a string or a list, got an integer"),
        ("[server]\nbind = ['::', 1]\n", "server.bind[1]: expected a string, got an integer"),
        ("[server]\nport = 1.5\n", "server.port: expected an integer, got a number"),
        ("[server]\nport = 1979-05-27\n", "server.port: expected an integer, got a date"),
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


KNOWN = (
    "adb, anyprot, dns, ftp, http, https, openvpn, quic, rdp, socks5, ssh, syslog, tinc, tls,"
    " wireguard, xmpp"
)


def test_unknown_protocol() -> None:
    assert (
        error_of(route(name="htp")) == "refractium.toml: protocols[0].name: unknown protocol 'htp'"
        f" (known: {KNOWN}; or give patterns/regex)"
    )


def test_broken_toml(in_tmp: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        write_and_load(in_tmp, "[server]\nport = 8080\nbind\n")
    assert (
        str(caught.value) == "refractium.toml: invalid TOML: Expected '=' after a key"
        " in a key/value pair (at line 3, column 5)"
    )
    assert caught.value.key is None


def test_missing_file(in_tmp: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_file("missing.toml")
    assert str(caught.value) == "missing.toml: cannot read: No such file or directory"


def test_not_utf8(in_tmp: Path) -> None:
    (in_tmp / FILE).write_bytes(b"# caf\xe9\n")
    with pytest.raises(ConfigError) as caught:
        load_file(FILE)
    assert str(caught.value) == "refractium.toml: not UTF-8 text (byte 5)"


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


# --- what loads ----------------------------------------------------------------


def test_empty_file_gives_all_defaults(in_tmp: Path) -> None:
    config = write_and_load(in_tmp, "")
    assert config == Config(source=FILE)
    assert config.server == ServerConfig()
    assert config.server.bind == ("0.0.0.0",)
    assert config.protocols == ()
    assert config.admin == AdminConfig(bind=None, token=None)
    assert config.timeout_route is None


def test_rust_crate_file_loads_unchanged(in_tmp: Path) -> None:
    config = write_and_load(in_tmp, RUST_CRATE_FILE)
    assert config.source == FILE
    assert config.server == ServerConfig(
        bind=("0.0.0.0",),
        port=8080,
        max_connections=20000,
        max_connections_per_ip=2000,
        peek_timeout_ms=3000,
    )
    assert config.protocols == (
        RouteConfig(
            name="http",
            forward_to=(Address("127.0.0.1", 9000),),
            transport=Transport.TCP,
            index=0,
        ),
        RouteConfig(
            name="ssh", forward_to=(Address("127.0.0.1", 22),), transport=Transport.TCP, index=1
        ),
    )
    assert config.protocols[1].key == "protocols[1]"


def test_every_server_key() -> None:
    text = """
        [server]
        bind = ["0.0.0.0", "::"]
        port = 0
        peek_buffer_size = 64
        peek_timeout_ms = 100
        connect_timeout_ms = 200
        shutdown_grace_ms = 0
        max_connections = 1
        max_connections_per_ip = 0
        hot_reload = false
        fallback_tcp = "127.0.0.1:8081"
        fallback_udp = "[::1]:53"
        on_timeout = "SSH"
        udp_session_timeout_s = 2.5
        udp_max_sessions = 10
        accept_proxy_protocol = true
        trusted_proxies = ["10.0.0.0/8", "192.168.1.7/24", "::1"]
        [server.health_check]
        interval_ms = 100
        send = 'PING\\r\\n'
        expect = 'PONG'
    """ + route(name="ssh")
    server = parse_config(tomllib.loads(text), FILE).server
    assert server == ServerConfig(
        bind=("0.0.0.0", "::"),
        port=0,
        peek_buffer_size=64,
        peek_timeout_ms=100,
        connect_timeout_ms=200,
        shutdown_grace_ms=0,
        max_connections=1,
        max_connections_per_ip=0,
        hot_reload=False,
        fallback_tcp=Address("127.0.0.1", 8081),
        fallback_udp=Address("::1", 53),
        on_timeout="ssh",
        udp_session_timeout_s=2.5,
        udp_max_sessions=10,
        accept_proxy_protocol=True,
        trusted_proxies=(
            ip_network("10.0.0.0/8"),
            ip_network("192.168.1.0/24"),
            ip_network("::1/128"),
        ),
        health_check=HealthCheck(interval_ms=100, send=b"PING\r\n", expect=b"PONG"),
    )


def test_bind_as_a_list_and_v6_backends() -> None:
    text = '[server]\nbind = ["::", "127.0.0.1"]\n' + route(
        name="https", forward_to='["[::1]:443", "[2001:db8::2]:8443"]'
    )
    config = parse_config(tomllib.loads(text), FILE)
    assert config.server.bind == ("::", "127.0.0.1")
    assert config.protocols[0].forward_to == (Address("::1", 443), Address("2001:db8::2", 8443))
    assert [str(a) for a in config.protocols[0].forward_to] == ["[::1]:443", "[2001:db8::2]:8443"]


def test_top_level_fallbacks() -> None:
    text = 'fallback_tcp = "127.0.0.1:8081"\nfallback_udp = "127.0.0.1:53"\n[server]\nport = 1\n'
    server = parse_config(tomllib.loads(text), FILE).server
    assert server.fallback_tcp == Address("127.0.0.1", 8081)
    assert server.fallback_udp == Address("127.0.0.1", 53)


def test_sni_as_a_string_and_name_lower_cased() -> None:
    text = route('sni = "Example.COM."', name="HTTPS")
    (only,) = parse_config(tomllib.loads(text), FILE).protocols
    assert only.name == "https"
    assert only.sni == ("example.com",)


def test_full_route() -> None:
    text = """
        [server.health_check]
        interval_ms = 2000
        fall = 5

        [[protocols]]
        name = "https"
        sni = ["example.com", "*.Example.org"]
        alpn = ["h2", "http/1.1"]
        forward_to = ["10.0.0.1:443", "10.0.0.2:443"]
        balance = "LEAST_CONNECTIONS"
        transport = "both"
        proxy_protocol = 2
        hooks = [
            "mypkg.audit:AuditHook",
            { use = "refractium.hooks.pcap:PcapWriter", path = "cap.pcapng" },
        ]
        overflow = "block"
        health_check = { timeout_ms = 500, send = "PING\\\\r\\\\n", expect = "PONG" }
    """
    (only,) = parse_config(tomllib.loads(text), FILE).protocols
    assert only == RouteConfig(
        name="https",
        forward_to=(Address("10.0.0.1", 443), Address("10.0.0.2", 443)),
        sni=("example.com", "*.example.org"),
        alpn=("h2", "http/1.1"),
        transport=Transport.BOTH,
        balance=Balance.LEAST_CONNECTIONS,
        proxy_protocol=2,
        hooks=(
            HookSpec(use="mypkg.audit:AuditHook", key="protocols[0].hooks[0]"),
            HookSpec(
                use="refractium.hooks.pcap:PcapWriter",
                kwargs={"path": "cap.pcapng"},
                key="protocols[0].hooks[1]",
            ),
        ),
        overflow=Overflow.BLOCK,
        health_check=HealthCheck(
            interval_ms=2000, timeout_ms=500, fall=5, send=b"PING\r\n", expect=b"PONG"
        ),
    )
    with pytest.raises(TypeError):
        only.hooks[1].kwargs["path"] = "elsewhere"  # type: ignore[index]


def test_route_health_check_is_off_unless_asked() -> None:
    text = "[server.health_check]\nrise = 4\n" + route() + route("health_check = true")
    first, second = parse_config(tomllib.loads(text), FILE).protocols
    assert first.health_check is None
    assert second.health_check == HealthCheck(rise=4)


def test_custom_protocol() -> None:
    text = route("patterns = ['\\x01\\x02\\x03', 'MY_PROTO_V1']\nregex = '^HELLO [0-9]+'", "mine")
    (only,) = parse_config(tomllib.loads(text), FILE).protocols
    assert only.patterns == (b"\x01\x02\x03", b"MY_PROTO_V1")
    assert only.regex == "^HELLO [0-9]+"


def test_extra_protocols_are_known() -> None:
    (only,) = parse_config(
        {"protocols": [{"name": "Mqtt", "forward_to": "h:1"}]}, None, extra_protocols={"mqtt"}
    ).protocols
    assert only.name == "mqtt"


def test_endpoint_hooks_and_admin() -> None:
    text = """
        [admin]
        token = "s3cret"
        [endpoint]
        hooks = ["mypkg.auth:AuthHook"]
    """
    config = parse_config(tomllib.loads(text), FILE)
    assert config.admin == AdminConfig(bind=Address("127.0.0.1", 9901), token="s3cret")
    assert config.endpoint.hooks == (HookSpec("mypkg.auth:AuthHook", key="endpoint.hooks[0]"),)


def test_on_timeout_default_stays_none_but_resolves_to_ssh() -> None:
    config = parse_config(tomllib.loads(RUST_CRATE_FILE), FILE)
    assert config.server.on_timeout is None
    assert config.timeout_route == "ssh"
    assert "on timeout:   ssh (default)" in describe(config).splitlines()


def test_explicit_on_timeout() -> None:
    text = RUST_CRATE_FILE.replace("[server]\n", "[server]\non_timeout = 'http'\n")
    config = parse_config(tomllib.loads(text), FILE)
    assert config.timeout_route == "http"
    assert "on timeout:   http" in describe(config).splitlines()


def test_the_model_is_frozen() -> None:
    config = parse_config(tomllib.loads(RUST_CRATE_FILE), FILE)
    with pytest.raises(AttributeError):
        config.server.port = 1  # type: ignore[misc]
    assert hash(config) == hash(parse_config(tomllib.loads(RUST_CRATE_FILE), FILE))


# --- overrides ------------------------------------------------------------------


def rust_config() -> Config:
    return parse_config(tomllib.loads(RUST_CRATE_FILE), FILE)


def test_port_and_bind_override() -> None:
    config = apply_overrides(rust_config(), bind="::,127.0.0.1", port=9999, forwards=())
    assert config.server.bind == ("::", "127.0.0.1")
    assert config.server.port == 9999
    assert config.protocols == rust_config().protocols


def test_no_overrides_change_nothing() -> None:
    assert apply_overrides(rust_config(), bind=None, port=None, forwards=()) == rust_config()
    assert Overrides().apply(rust_config()) == rust_config()


def test_forward_pool_and_replacement() -> None:
    forwards = ["http=10.0.0.1:80", "tls=10.0.0.9:443", "HTTP=[::1]:80"]
    config = Overrides(forwards=tuple(forwards)).apply(rust_config())
    http, ssh, tls = config.protocols
    # The file's http route keeps its settings; only its backends change.
    assert http == RouteConfig(
        name="http",
        forward_to=(Address("10.0.0.1", 80), Address("::1", 80)),
        transport=Transport.TCP,
        index=0,
    )
    assert ssh == rust_config().protocols[1]
    assert tls == RouteConfig(name="tls", forward_to=(Address("10.0.0.9", 443),), index=2)


def test_forwards_without_a_file() -> None:
    config = apply_overrides(Config(), bind=None, port=None, forwards=["ssh=127.0.0.1:22"])
    assert config.protocols == (RouteConfig("ssh", (Address("127.0.0.1", 22),)),)
    assert config.timeout_route == "ssh"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"forwards": ["http=nowhere"]}, "-f: 'http=nowhere': not host:port"),
        ({"forwards": ["http"]}, "-f: 'http': expected NAME=HOST:PORT"),
        ({"forwards": ["http=h:0"]}, "-f: 'http=h:0': port out of range 1..65535"),
        (
            {"forwards": ["htp=h:1"]},
            f"-f: 'htp=h:1': unknown protocol 'htp' (known: {KNOWN})",
        ),
        ({"port": 65536}, "-p: must be 0..65535 (0: any free port), got 65536"),
        ({"bind": "0.0.0.0:80"}, "-b: '0.0.0.0:80': give the listen address without a port"),
        ({"bind": "::,"}, "-b: '': empty listen address"),
    ],
)
def test_override_errors(kwargs: dict[str, Any], message: str) -> None:
    arguments: dict[str, Any] = {"bind": None, "port": None, "forwards": ()} | kwargs
    with pytest.raises(ConfigError) as caught:
        apply_overrides(Config(), **arguments)
    assert str(caught.value) == message
    assert caught.value.file is None


def test_forward_may_name_a_custom_route_of_the_file() -> None:
    config = parse_config(tomllib.loads(route("patterns = 'X'", name="mine")), FILE)
    config = apply_overrides(config, bind=None, port=None, forwards=["mine=h:2"])
    assert config.protocols[0].forward_to == (Address("h", 2),)
    assert config.protocols[0].patterns == (b"X",)


# --- describe, starter ------------------------------------------------------------


def test_describe() -> None:
    text = """
        fallback_tcp = "127.0.0.1:8081"
        [server]
        bind = ["0.0.0.0", "::"]
        [admin]
        token = "t"
        [[protocols]]
        name = "https"
        sni = ["example.com", "*.example.org"]
        alpn = "h2"
        forward_to = ["10.0.0.1:443", "10.0.0.2:443"]
        proxy_protocol = 2
        [[protocols]]
        name = "ssh"
        forward_to = "127.0.0.1:22"
        balance = "source_hash"
    """
    assert describe(parse_config(tomllib.loads(text), FILE)).splitlines() == [
        "config:       refractium.toml",
        "listen:       0.0.0.0:8080, [::]:8080",
        "",
        "#  name   transport  balance      match                                  options"
        "            forward to",
        "0  https  tcp        round_robin  sni=example.com,*.example.org alpn=h2  proxy_protocol=v2"
        "  10.0.0.1:443, 10.0.0.2:443",
        "1  ssh    tcp        source_hash  -                                      -"
        "                  127.0.0.1:22",
        "",
        "fallback tcp: 127.0.0.1:8081",
        "fallback udp: none",
        "on timeout:   ssh (default)",
        "admin:        127.0.0.1:9901 (token required)",
        "endpoint:     no hooks",
    ]


def test_describe_without_routes() -> None:
    text = describe(Config(server=ServerConfig(port=0)))
    assert "config:       (none)" in text
    assert "listen:       0.0.0.0:0 (any free port)" in text
    assert "routes:       none" in text


def test_starter_file_loads(in_tmp: Path) -> None:
    config = write_and_load(in_tmp, starter_text())
    assert [r.name for r in config.protocols] == ["http", "ssh", "https"]
    assert config.protocols[2].sni
    assert config.server == ServerConfig()


def test_starter_file_documents_every_key_with_its_default() -> None:
    # Uncomment every "# key = value" and "# [table]" line: it must still load,
    # mention every key of the format, and keep the defaults it claims.
    text = re.sub(r"(?m)^# (\[.*\]|[a-z_]+ = .*)$", r"\1", starter_text())
    data = tomllib.loads(text)
    config = parse_config(data, FILE)
    documented = set(re.findall(r"(?m)^([a-z_]+) = ", text))
    every_key = {
        f.name
        for table in (
            config_schema.ConfigFile,
            config_schema.ServerTable,
            config_schema.HealthCheckTable,
            config_schema.AdminTable,
            config_schema.EndpointTable,
            config_schema.ProtocolTable,
        )
        for f in msgspec.structs.fields(table)
        if f.name not in {"server", "admin", "endpoint", "protocols", "health_check"}
    }
    assert every_key - documented == set()
    defaults = ServerConfig()
    assert config.server.peek_buffer_size == defaults.peek_buffer_size
    assert config.server.shutdown_grace_ms == defaults.shutdown_grace_ms
    assert config.server.udp_max_sessions == defaults.udp_max_sessions
    assert config.server.health_check.interval_ms == HealthCheck().interval_ms

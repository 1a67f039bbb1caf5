"""Loading: reading the file, what each key resolves to, and the starter file."""

from __future__ import annotations

import re
import tomllib
from ipaddress import ip_network
from pathlib import Path

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
    RouteConfig,
    ServerConfig,
    load_file,
    parse_config,
    starter_text,
)
from refractium.config import schema as config_schema
from refractium.errors import ConfigError
from refractium.protocols.base import Transport
from tests.unit.config.helpers import (
    FILE,
    RUST_CRATE_FILE,
    error_of,
    load_text,
    route,
    write_and_load,
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
        port=(8080,),
        max_connections=20000,
        max_connections_per_ip=2000,
        peek_timeout_ms=3000,
    )
    assert config.protocols == (
        RouteConfig(
            name="http",
            id="http",
            forward_to=(Address("127.0.0.1", 9000),),
            transport=Transport.TCP,
            index=0,
        ),
        RouteConfig(
            name="ssh",
            id="ssh",
            forward_to=(Address("127.0.0.1", 22),),
            transport=Transport.TCP,
            index=1,
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
        port=(0,),
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
        id="https",
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
        overflow_set=True,
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


def test_starter_file_loads(in_tmp: Path) -> None:
    config = write_and_load(in_tmp, starter_text())
    assert [r.name for r in config.protocols] == ["http", "ssh", "https"]
    assert config.protocols[2].sni
    assert config.server == ServerConfig()


# The keys that hold tables: the starter file documents the keys inside them.
TABLE_KEYS = {"server", "admin", "endpoint", "log", "limits", "state", "protocols", "health_check"}


def test_starter_file_documents_every_key_with_its_default() -> None:
    # Uncomment every "# key = value" and "# [table]" line: it must still load,
    # mention every key of the format, and keep the defaults it claims.
    text = re.sub(r"(?m)^# (\[.*\]|[a-z0-9_]+ = .*)$", r"\1", starter_text())
    data = tomllib.loads(text)
    config = parse_config(data, FILE)
    documented = set(re.findall(r"(?m)^([a-z0-9_]+) = ", text))
    every_key = {
        f.name
        for table in (
            config_schema.ConfigFile,
            config_schema.ServerTable,
            config_schema.HealthCheckTable,
            config_schema.AdminTable,
            config_schema.EndpointTable,
            config_schema.LogTable,
            config_schema.LimitsTable,
            config_schema.StateTable,
            config_schema.ProtocolTable,
        )
        for f in msgspec.structs.fields(table)
        if f.name not in TABLE_KEYS
    }
    assert every_key - documented == set()
    defaults = ServerConfig()
    assert config.server.peek_buffer_size == defaults.peek_buffer_size
    assert config.server.shutdown_grace_ms == defaults.shutdown_grace_ms
    assert config.server.udp_max_sessions == defaults.udp_max_sessions
    assert config.server.health_check.interval_ms == HealthCheck().interval_ms


# --- on_timeout ----------------------------------------------------------------

UDP_ONLY = "on_timeout is for TCP clients that send nothing"


@pytest.mark.parametrize(
    ("routes", "name"),
    [
        pytest.param(route(name="quic"), "quic", id="quic"),
        pytest.param(route(name="wireguard"), "WireGuard", id="wireguard-any-case"),
        pytest.param(route("transport = 'udp'", name="dns"), "dns", id="dns-set-to-udp"),
        pytest.param(route("transport = 'udp'", name="ssh"), "ssh", id="ssh-set-to-udp"),
        pytest.param(
            route("patterns = 'X'\ntransport = 'udp'", name="mine"), "mine", id="patterns-udp"
        ),
    ],
)
def test_on_timeout_must_name_a_route_that_serves_tcp(routes: str, name: str) -> None:
    # Only TCP clients can connect and stay silent: a UDP-only route would
    # leave them closed while `check` shows the setting in force.
    assert error_of(f"[server]\non_timeout = '{name}'\n" + route() + routes) == (
        f"refractium.toml: server.on_timeout: route '{name.lower()}' serves UDP only; {UDP_ONLY}"
    )


@pytest.mark.parametrize(
    ("routes", "name"),
    [
        pytest.param(route(name="ssh"), "ssh", id="ssh"),
        pytest.param(route(name="dns"), "dns", id="dns-both"),
        pytest.param(route(name="syslog"), "syslog", id="syslog-both"),
        pytest.param(route("patterns = 'X'", name="mine"), "mine", id="patterns-both"),
        pytest.param(route("transport = 'tcp'", name="quic"), "quic", id="set-to-tcp"),
        pytest.param(
            route("transport = 'udp'", name="dns") + route("transport = 'tcp'", name="dns"),
            "dns",
            id="one-of-two-routes-serves-tcp",
        ),
    ],
)
def test_on_timeout_naming_a_route_that_serves_tcp(routes: str, name: str) -> None:
    config = load_text(f"[server]\non_timeout = '{name}'\n" + routes)
    assert config.server.on_timeout == name
    assert config.timeout_route == name


@pytest.mark.parametrize("name", ["mqtt", "quic"])
def test_on_timeout_may_name_a_protocol_given_in_code(name: str) -> None:
    # A probe given in code (even one replacing a built-in) has a transport
    # only it knows: the route table decides.
    data = {"server": {"on_timeout": name}, "protocols": [{"name": name, "forward_to": "h:1"}]}
    assert parse_config(data, None, extra_protocols={name}).timeout_route == name


def test_on_timeout_belongs_in_server() -> None:
    # Unlike the fallbacks, the Rust crate has no top-level on_timeout.
    assert error_of("on_timeout = 'ssh'\n" + route(name="ssh")) == (
        "refractium.toml: on_timeout: unknown key"
    )


def test_on_timeout_default_is_the_ssh_route_without_checks() -> None:
    config = load_text(route(name="quic") + route(name="ssh"))
    assert config.server.on_timeout is None
    assert config.timeout_route == "ssh"
    assert load_text(route(name="quic")).timeout_route is None


def test_new_server_and_route_keys() -> None:
    config = parse_config(
        {
            "server": {"port": [443, 8443], "idle_timeout_s": 300, "user": "nobody"},
            "protocols": [
                {"name": "ssh", "forward_to": "127.0.0.1:22", "ports": 443, "idle_timeout_s": 0}
            ],
            "log": {"level": "DEBUG", "format": "json", "syslog": "udp:127.0.0.1:514"},
        },
        FILE,
    )
    assert config.server.port == (443, 8443)
    assert config.server.idle_timeout_s == 300 and config.server.user == "nobody"
    (route,) = config.protocols
    assert route.ports == (443,) and route.idle_timeout_s == 0 and not route.transparent
    assert (config.log.level, config.log.format, config.log.syslog) == (
        "debug",
        "json",
        "udp:127.0.0.1:514",
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"server": {"port": [443, 443]}}, "server.port: a port is listed twice: [443, 443]"),
        (
            {"server": {"port": [0, 443]}},
            "server.port: 0 (any free port) cannot be listed with other ports",
        ),
        (
            {"server": {"idle_timeout_s": -1}},
            "server.idle_timeout_s: must be 0 (never) or a positive number of seconds, got -1.0",
        ),
        (
            {"log": {"level": "loud"}},
            "log.level: unknown value 'loud' (expected: debug, info, warning, error)",
        ),
        (
            {"log": {"syslog": "tcp:127.0.0.1:514"}},
            "log.syslog: expected 'unix:/dev/log' or 'udp:HOST:PORT', got 'tcp:127.0.0.1:514'",
        ),
    ],
)
def test_new_keys_errors(data: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(data, FILE)
    assert str(caught.value) == f"{FILE}: {message}"

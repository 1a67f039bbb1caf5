"""The text ``refractium check`` prints for a configuration."""

from __future__ import annotations

import tomllib

from refractium.config import Config, ServerConfig, describe, parse_config
from tests.unit.config.helpers import FILE, load_text, route


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
        "#  id     name   transport  balance      match                                  options"
        "            forward to",
        "0  https  https  tcp        round_robin  sni=example.com,*.example.org alpn=h2"
        "  proxy_protocol=v2  10.0.0.1:443, 10.0.0.2:443",
        "1  ssh    ssh    tcp        source_hash  -                                      -"
        "                  127.0.0.1:22",
        "",
        "fallback tcp: 127.0.0.1:8081",
        "fallback udp: none",
        "on timeout:   ssh (default)",
        "admin:        127.0.0.1:9901 (token required)",
        "workers:      1 (one process)",
        "endpoint:     no hooks",
    ]


def test_describe_without_routes() -> None:
    text = describe(Config(server=ServerConfig(port=(0,))))
    assert "config:       (none)" in text
    assert "listen:       0.0.0.0:0 (any free port)" in text
    assert "routes:       none" in text


def test_describe_gives_each_route_the_transport_it_serves() -> None:
    text = (
        route(name="syslog")
        + route(name="quic")
        + route(name="dns")
        + route("patterns = 'X'", name="mine")
        + route("transport = 'udp'", name="ssh")
    )
    lines = describe(load_text(text)).splitlines()
    assert lines[3].split()[:4] == ["#", "id", "name", "transport"]
    assert [line.split()[2:4] for line in lines[4:9]] == [
        ["syslog", "both"],  # RFC 5426 over UDP and RFC 6587 over TCP
        ["quic", "udp"],
        ["dns", "both"],
        ["mine", "both"],
        ["ssh", "udp"],
    ]


def test_describe_says_which_routes_each_port_serves() -> None:
    text = (
        "[server]\nport = [443, 8443, 9000]\n"
        + route("ports = [443]", name="ssh")
        + route(name="https")
        + route("ports = [443, 8443]", name="http")
    )
    lines = describe(load_text(text)).splitlines()
    assert lines[1:6] == [
        "listen:       0.0.0.0:443, 0.0.0.0:8443, 0.0.0.0:9000",
        "port 443:     0 ssh, 1 https, 2 http",
        "port 8443:    1 https, 2 http",
        "port 9000:    1 https",
        "",
    ]


def test_describe_names_no_port_when_there_is_one_for_all() -> None:
    lines = describe(load_text(route(name="ssh"))).splitlines()
    assert lines[1:3] == ["listen:       0.0.0.0:8080", ""]


def test_describe_shows_route_ids_and_ja4_filters() -> None:
    text = (
        route("sni = 'a.example'", name="https")
        + route("ja4 = ['t13d*']", name="https")
        + route("id = 'rest'", name="https")
    )
    lines = describe(load_text(text)).splitlines()
    assert [line.split()[1:3] for line in lines[4:7]] == [
        ["https#1", "https"],
        ["https#2", "https"],
        ["rest", "https"],
    ]
    assert lines[5].split()[5] == "ja4=t13d*"

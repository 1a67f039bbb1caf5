"""Command-line overrides: ``-b``, ``-p`` and ``-f`` over a loaded configuration."""

from __future__ import annotations

import tomllib
from typing import Any

import pytest

from refractium.addr import Address
from refractium.config import Config, RouteConfig, apply_overrides, parse_config
from refractium.errors import ConfigError
from refractium.protocols.base import Transport
from tests.unit.config.helpers import FILE, KNOWN, route, rust_config


def test_port_and_bind_override() -> None:
    config = apply_overrides(rust_config(), bind="::,127.0.0.1", port=9999, forwards=())
    assert config.server.bind == ("::", "127.0.0.1")
    assert config.server.port == (9999,)
    assert config.protocols == rust_config().protocols


def test_repeated_ports() -> None:
    config = apply_overrides(rust_config(), bind=None, port=[8443, 443], forwards=())
    assert config.server.port == (8443, 443)


def test_ports_a_route_names_must_stay_listened_on() -> None:
    base = parse_config(
        {
            "server": {"port": [443, 8443]},
            "protocols": [{"name": "ssh", "forward_to": "127.0.0.1:22", "ports": [8443]}],
        },
        "refractium.toml",
    )
    with pytest.raises(ConfigError) as caught:
        apply_overrides(base, bind=None, port=[443], forwards=())
    assert str(caught.value) == "protocols[0].ports: 8443 is not a listen port (server.port: 443)"


def test_no_overrides_change_nothing() -> None:
    assert apply_overrides(rust_config(), bind=None, port=None, forwards=()) == rust_config()


def test_forward_pool_and_replacement() -> None:
    forwards = ["http=10.0.0.1:80", "tls=10.0.0.9:443", "HTTP=[::1]:80"]
    config = apply_overrides(rust_config(), bind=None, port=None, forwards=forwards)
    http, ssh, tls = config.protocols
    # The file's http route keeps its settings; only its backends change.
    assert http == RouteConfig(
        name="http",
        id="http",
        forward_to=(Address("10.0.0.1", 80), Address("::1", 80)),
        transport=Transport.TCP,
        index=0,
    )
    assert ssh == rust_config().protocols[1]
    assert tls == RouteConfig(name="tls", id="tls", forward_to=(Address("10.0.0.9", 443),), index=2)


def test_forwards_without_a_file() -> None:
    config = apply_overrides(Config(), bind=None, port=None, forwards=["ssh=127.0.0.1:22"])
    assert config.protocols == (RouteConfig("ssh", (Address("127.0.0.1", 22),), id="ssh"),)
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

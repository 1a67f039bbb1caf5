"""What the configuration tests share: a file in the Rust crate's format and ways to load text."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from refractium.config import Config, load_file, parse_config
from refractium.errors import ConfigError

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

# The built-in protocol names as error messages list them.
KNOWN = (
    "adb, anyprot, dns, ftp, http, https, openvpn, quic, rdp, socks5, ssh, syslog, tinc, tls,"
    " wireguard, xmpp"
)


def write_and_load(directory: Path, text: str) -> Config:
    (directory / FILE).write_text(text, encoding="utf-8")
    return load_file(FILE)


def load_text(text: str) -> Config:
    """``text`` parsed as refractium.toml."""
    return parse_config(tomllib.loads(text), FILE)


def error_of(text: str) -> str:
    """The one-line error loading ``text`` as refractium.toml gives."""
    with pytest.raises(ConfigError) as caught:
        load_text(text)
    return str(caught.value)


def route(extra: str = "", name: str = "http", forward_to: str = '"127.0.0.1:80"') -> str:
    return f'[[protocols]]\nname = "{name}"\nforward_to = {forward_to}\n{extra}\n'


def rust_config() -> Config:
    return load_text(RUST_CRATE_FILE)

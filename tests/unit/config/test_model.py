"""The model: defaults that apply when a key is absent, and immutability."""

from __future__ import annotations

import tomllib

import pytest

from refractium.config import describe, parse_config
from tests.unit.config.helpers import FILE, RUST_CRATE_FILE


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

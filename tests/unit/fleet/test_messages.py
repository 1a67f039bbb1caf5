"""The JSON instances exchange through Redis: each shape both ways, and what is refused."""

from __future__ import annotations

import json
from ipaddress import ip_network

import pytest

from refractium.fleet.messages import (
    Allow,
    Lift,
    Remote,
    Revoke,
    allow_message,
    ban_message,
    glob_escape,
    lift_message,
    parse,
    revoke_message,
)
from refractium.shared.allows import table_key
from refractium.shared.stores import Ban


def test_a_ban_as_sent_and_read_back() -> None:
    ban = Ban(ip_network("198.51.100.7/32"), "manual", 1767225600.5, 1767226200.25)
    data = ban_message(ban, "a1")
    assert json.loads(data) == {
        "op": "ban",
        "address": "198.51.100.7",
        "reason": "manual",
        "since": 1767225600.5,
        "expires": 1767226200.25,
        "origin": "a1",
    }
    assert parse(data) == Remote(ban, "a1")
    net = Ban(ip_network("2001:db8::/64"), "limited", 1.0, 2.0)
    assert parse(ban_message(net, "b")) == Remote(net, "b")


def test_lift_allow_revoke() -> None:
    assert json.loads(lift_message(ip_network("192.0.2.0/24"), "a")) == {
        "op": "lift",
        "address": "192.0.2.0/24",
        "origin": "a",
    }
    assert parse(lift_message(ip_network("192.0.2.0/24"), "a")) == Lift(
        ip_network("192.0.2.0/24"), "a"
    )
    key = table_key("a token")
    assert json.loads(allow_message(key, 5.5, "a")) == {
        "op": "allow",
        "key": key.hex(),
        "until": 5.5,
        "origin": "a",
    }
    assert parse(allow_message(key, 5.5, "a")) == Allow(key, 5.5, "a")
    assert parse(revoke_message(key, "a")) == Revoke(key, "a")


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not json",
        b"\xff\xfe",
        b"[]",
        b'{"op": "ban"}',
        b'{"op": "ban", "address": "198.51.100.7", "reason": "x", "since": 1, "expires": 2}',
        b'{"op": "ban", "address": "198.51.100.0/16", "reason": "x", "since": 1, "expires": 2,'
        b' "origin": "a"}',  # host bits set
        b'{"op": "ban", "address": "198.51.100.7", "reason": "x", "since": true, "expires": 2,'
        b' "origin": "a"}',
        b'{"op": "ban", "address": "198.51.100.7", "reason": "x", "since": 1, "expires": NaN,'
        b' "origin": "a"}',
        b'{"op": "lift", "address": "nowhere", "origin": "a"}',
        b'{"op": "allow", "key": "00", "until": 2, "origin": "a"}',
        b'{"op": "allow", "key": "' + b"0" * 32 + b'", "until": 2, "origin": "a"}',  # EMPTY
        b'{"op": "allow", "key": "' + b"g" * 32 + b'", "until": 2, "origin": "a"}',
        b'{"op": "revoke", "key": 7, "origin": "a"}',
        b'{"op": "reset", "origin": "a"}',
    ],
)
def test_not_a_message(data: bytes) -> None:
    assert parse(data) is None


def test_a_long_reason_is_cut() -> None:
    data = ban_message(Ban(ip_network("198.51.100.7/32"), "r" * 500, 1.0, 2.0), "a")
    parsed = parse(data)
    assert isinstance(parsed, Remote)
    assert parsed.ban.reason == "r" * 200


def test_glob_escape() -> None:
    assert glob_escape(b"app:") == b"app:"
    assert glob_escape(b"a*b?[c]\\") == b"a\\*b\\?\\[c\\]\\\\"

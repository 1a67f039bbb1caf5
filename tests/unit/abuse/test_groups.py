"""Client groups: keys and networks of IPv4, mapped and IPv6 addresses."""

from __future__ import annotations

import hashlib
from ipaddress import ip_network

import pytest

from refractium.abuse.groups import group_key, group_network, route_key
from refractium.shared.keys import address_key


@pytest.mark.parametrize(
    ("ip", "v4", "v6", "key", "network"),
    [
        ("203.0.113.7", 32, 64, "::ffff:203.0.113.7", "203.0.113.7/32"),
        ("203.0.113.7", 24, 64, "::ffff:203.0.113.0", "203.0.113.0/24"),
        ("203.0.113.7", 20, 64, "::ffff:203.0.112.0", "203.0.112.0/20"),
        ("203.0.113.7", 1, 64, "::ffff:128.0.0.0", "128.0.0.0/1"),
        ("::ffff:203.0.113.7", 32, 64, "::ffff:203.0.113.7", "203.0.113.7/32"),
        ("::ffff:203.0.113.7", 24, 64, "::ffff:203.0.113.0", "203.0.113.0/24"),
        ("::ffff:203.0.113.7", 29, 64, "::ffff:203.0.113.0", "203.0.113.0/29"),
        ("2001:db8:1:2:3:4:5:6", 32, 64, "2001:db8:1:2::", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:3:4:5:6", 32, 48, "2001:db8:1::", "2001:db8:1::/48"),
        ("2001:db8:1:2:3:4:5:6", 32, 60, "2001:db8:1::", "2001:db8:1::/60"),
        ("2001:db8:1:2:3:4:5:6", 32, 63, "2001:db8:1:2::", "2001:db8:1:2::/63"),
        ("2001:db8:1:3:3:4:5:6", 32, 63, "2001:db8:1:2::", "2001:db8:1:2::/63"),
        ("2001:db8:1:2:3:4:5:6", 32, 128, "2001:db8:1:2:3:4:5:6", "2001:db8:1:2:3:4:5:6/128"),
        ("2001:db8:1:2:3:4:5:6", 32, 127, "2001:db8:1:2:3:4:5:6", "2001:db8:1:2:3:4:5:6/127"),
        ("fe80::1:2%eth0", 32, 128, "fe80::1:2", "fe80::1:2/128"),
    ],
)
def test_group_key_and_network(ip: str, v4: int, v6: int, key: str, network: str) -> None:
    assert group_key(ip, v4, v6) == ip_network(key).network_address.packed
    assert group_network(ip, v4, v6) == ip_network(network)


def test_a_whole_address_keys_as_the_shared_tables_do() -> None:
    for ip in ("203.0.113.7", "::ffff:203.0.113.7", "2001:db8::1"):
        assert group_key(ip, 32, 128) == address_key(ip)


def test_one_group_whichever_host_of_it() -> None:
    keys = {group_key(f"2001:db8:1:2::{i:x}", 32, 64) for i in range(1, 300)}
    assert len(keys) == 1
    assert group_key("203.0.113.7", 24, 64) == group_key("::ffff:203.0.113.200", 24, 64)
    assert group_key("203.0.113.7", 24, 64) != group_key("203.0.114.7", 24, 64)


@pytest.mark.parametrize("ip", ["", "host.example", "203.0.113", "2001:db8::1::2", "1.2.3.4\x00"])
def test_not_an_address(ip: str) -> None:
    with pytest.raises(ValueError, match="not an IP address"):
        group_key(ip, 32, 64)
    with pytest.raises(ValueError, match="not an IP address"):
        group_network(ip, 32, 64)


def test_route_key() -> None:
    group = group_key("203.0.113.7", 32, 64)
    key = route_key("ssh", group)
    # Pinned: instances sharing state must agree on it, release after release.
    assert key.hex() == "8817bf30db7ec5f5c7e2fca6096d8ead"
    assert key == hashlib.blake2b(group + b"ssh", digest_size=16).digest()
    assert route_key("http", group) != key
    assert route_key("ssh", group_key("203.0.113.8", 32, 64)) != key
    assert route_key("ssh", group) != group


@pytest.mark.parametrize(("ip", "v6"), [("::1", 64), ("::2", 64), ("::1", 127), ("2001:db8::1", 1)])
def test_no_group_key_is_all_zero(ip: str, v6: int) -> None:
    # 16 zero bytes mark an empty slot in the shared tables: ::/n is keyed ::1.
    assert group_key(ip, 32, v6) == bytes(15) + b"\x01"
    assert group_network(ip, 32, v6) == ip_network(f"::/{v6}")


def test_the_unspecified_address_is_no_client() -> None:
    with pytest.raises(ValueError, match="'::' is no client's address"):
        group_key("::", 32, 64)
    assert group_key("::1", 32, 128) == bytes(15) + b"\x01"

"""CidrSet: the most specific network, both address families, bad input."""

from __future__ import annotations

from ipaddress import ip_network

import pytest

from refractium.abuse.cidrs import CidrSet
from refractium.abuse.prefixes import PrefixMap

NETS = CidrSet(
    [
        ip_network("203.0.113.0/24"),
        ip_network("203.0.113.7/32"),
        ip_network("10.0.0.0/8"),
        ip_network("2001:db8::/32"),
        ip_network("2001:db8:1:2::/64"),
        ip_network("::ffff:198.51.100.0/120"),  # IPv4 written mapped into IPv6
    ]
)


@pytest.mark.parametrize(
    ("ip", "network"),
    [
        ("203.0.113.7", "203.0.113.7/32"),
        ("203.0.113.8", "203.0.113.0/24"),
        ("::ffff:203.0.113.7", "203.0.113.7/32"),  # a dual-stack listener's IPv4 client
        ("::FFFF:203.0.113.9", "203.0.113.0/24"),
        ("10.255.255.255", "10.0.0.0/8"),
        ("198.51.100.9", "::ffff:198.51.100.0/120"),
        ("::ffff:198.51.100.200", "::ffff:198.51.100.0/120"),
        ("2001:db8::1", "2001:db8::/32"),
        ("2001:db8:1:2:ffff::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2::1%eth0", "2001:db8:1:2::/64"),  # the zone is dropped
        ("2001:0db8:0001:0002:0000:0000:0000:0001", "2001:db8:1:2::/64"),
    ],
)
def test_the_most_specific_network_matches(ip: str, network: str) -> None:
    assert NETS.match(ip) == ip_network(network)
    assert ip in NETS


@pytest.mark.parametrize(
    "ip",
    [
        "203.0.112.255",
        "11.0.0.0",
        "198.51.101.1",
        "2001:db9::1",
        "::1",
        "::ffff:11.0.0.1",
        "fe80::1%eth0",
        # Not addresses: nothing matches, nothing raises.
        "",
        "203.0.113",
        "203.0.113.7.1",
        "203.0.113.256",
        "203.0.113.7/32",
        "2001:db8::1::2",
        "203.0.113.7\x00",
        "2001:db8::é",
        "host.example",
        "%",
    ],
)
def test_others_do_not(ip: str) -> None:
    assert NETS.match(ip) is None
    assert ip not in NETS


def test_ipv6_networks_do_not_cover_ipv4_clients() -> None:
    every6 = CidrSet([ip_network("::/0")])
    assert "2001:db8::1" in every6
    assert "203.0.113.7" not in every6
    assert "::ffff:203.0.113.7" not in every6
    every4 = CidrSet([ip_network("0.0.0.0/0")])
    assert every4.match("::ffff:203.0.113.7") == ip_network("0.0.0.0/0")
    assert "2001:db8::1" not in every4
    assert "::ffff:0:0/96" not in every4  # a network is no address


def test_size_networks_and_duplicates() -> None:
    nets = CidrSet(
        [
            ip_network("203.0.113.0/24"),
            ip_network("2001:db8::/32"),
            ip_network("203.0.113.0/24"),
            ip_network("::ffff:203.0.113.0/120"),  # the same hosts, written mapped
        ]
    )
    assert len(nets) == 2
    assert nets.networks == (ip_network("203.0.113.0/24"), ip_network("2001:db8::/32"))
    assert nets.match("::ffff:203.0.113.1") == ip_network("203.0.113.0/24")
    assert bool(nets)
    assert repr(nets) == "CidrSet(2 networks)"


def test_empty() -> None:
    empty = CidrSet()
    assert len(empty) == 0
    assert not empty
    assert empty.networks == ()
    assert empty.match("203.0.113.7") is None
    assert "2001:db8::1" not in empty
    assert 42 not in empty


def test_ten_thousand_networks() -> None:
    networks = [ip_network(f"10.{i >> 8}.{i & 255}.0/24") for i in range(5000)]
    networks += [ip_network(f"172.16.{i >> 8}.{i & 255}/32") for i in range(5000)]
    nets = CidrSet(networks)
    assert len(nets) == 10_000
    assert nets.match("10.19.135.200") == ip_network("10.19.135.0/24")
    assert nets.match("172.16.19.135") == ip_network("172.16.19.135/32")
    assert nets.match("172.16.19.136") is None  # the last is 4999 = 19 * 256 + 135
    assert nets.match("172.16.0.0") == ip_network("172.16.0.0/32")
    assert nets.match("10.20.0.1") is None


def test_prefix_map_put_get_pop() -> None:
    bans: PrefixMap[str] = PrefixMap()
    assert bans.put(ip_network("203.0.113.0/24"), "range") is None
    assert bans.put(ip_network("203.0.113.7/32"), "host") is None
    assert bans.put(ip_network("203.0.113.7/32"), "host again") == "host"
    assert len(bans) == 2
    assert bans.lookup("203.0.113.7") == "host again"
    assert bans.get(ip_network("::ffff:203.0.113.7/128")) == "host again"
    assert bans.get(ip_network("203.0.113.0/25")) is None
    assert bans.pop(ip_network("203.0.113.7/32")) == "host again"
    assert bans.pop(ip_network("203.0.113.7/32")) is None
    assert bans.lookup("203.0.113.7") == "range"
    assert bans.values() == ["range"]
    assert bans.pop(ip_network("203.0.113.0/24")) == "range"
    assert len(bans) == 0
    assert bans.lookup("203.0.113.7") is None
    assert bans.pop(ip_network("2001:db8::/32")) is None


def test_prefix_map_values_most_specific_first() -> None:
    nets: PrefixMap[int] = PrefixMap()
    nets.put(ip_network("2001:db8::/32"), 1)
    nets.put(ip_network("10.0.0.0/8"), 2)
    nets.put(ip_network("2001:db8::1/128"), 3)
    nets.put(ip_network("10.1.2.3/32"), 4)
    assert nets.values() == [4, 2, 3, 1]

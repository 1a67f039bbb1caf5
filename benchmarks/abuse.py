"""Time the per-connection parts of abuse control, and the memory of its buckets.

    python benchmarks/abuse.py [--quick]

Each figure is the best of several rounds of ``timeit``, in nanoseconds per
call (the best: the machine is shared, and the floor is what the code costs):

* ``CidrSet.match`` on 10,000 networks (random /24s and /32s, half each; for
  IPv6 random /48s and /128s), for an address inside one (hit), inside none
  (miss), an IPv4 address mapped into IPv6, and an empty set; with, for
  scale, a linear scan of the same networks with ``ipaddress``;
* ``group_key`` (IPv4 /32 and /24, mapped, IPv6 /64) and ``route_key``;
* ``LocalBuckets.take`` (a key seen before, and 100,000 new keys in a row
  into a store of that capacity), ``LocalOffences.add``;
* ``LocalBans.banned`` with 0, 1 and 10,000 bans (random /32s and /24s);
* the memory of ``LocalBuckets`` holding 100,000 keys (tracemalloc).
"""

from __future__ import annotations

import argparse
import random
import sys
import timeit
import tracemalloc
from collections.abc import Callable
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from refractium.abuse.cidrs import CidrSet
from refractium.abuse.groups import group_key, route_key
from refractium.abuse.local import LocalBans, LocalBuckets, LocalOffences

NOW = 1_700_000_000.0
ENTRIES = 10_000


def best_ns(fn: Callable[[], object], number: int, rounds: int) -> float:
    """The best of ``rounds`` timings of ``number`` calls, per call, in ns."""
    return min(timeit.repeat(fn, number=number, repeat=rounds)) / number * 1e9


def v4_networks(rng: random.Random, n: int) -> list[IPv4Network]:
    """``n`` distinct random IPv4 networks, /24 and /32 alternately."""
    nets: dict[IPv4Network, None] = {}
    while len(nets) < n:
        plen = 24 if len(nets) % 2 else 32
        nets[IPv4Network((rng.getrandbits(32), plen), strict=False)] = None
    return list(nets)


def v6_networks(rng: random.Random, n: int) -> list[IPv6Network]:
    """``n`` distinct random IPv6 networks in 2000::/3, /48 and /128 alternately."""
    nets: dict[IPv6Network, None] = {}
    while len(nets) < n:
        plen = 48 if len(nets) % 2 else 128
        addr = (1 << 125) | rng.getrandbits(125)
        nets[IPv6Network((addr, plen), strict=False)] = None
    return list(nets)


def a_miss(rng: random.Random, nets: CidrSet, version: int) -> str:
    """A random address no network of ``nets`` contains."""
    while True:
        ip = (
            str(IPv4Address(rng.getrandbits(32)))
            if version == 4
            else str(IPv6Address((1 << 125) | rng.getrandbits(125)))
        )
        if nets.match(ip) is None:
            return ip


def cidr_rows(rng: random.Random, number: int, rounds: int) -> list[tuple[str, float]]:
    nets4 = v4_networks(rng, ENTRIES)
    nets6 = v6_networks(rng, ENTRIES)
    set4, set6, empty = CidrSet(nets4), CidrSet(nets6), CidrSet()
    hit4 = str(nets4[1].network_address + 7)  # inside a /24
    hit4_32 = str(nets4[0].network_address)
    hit6 = str(nets6[1].network_address + 7)  # inside a /48
    miss4, miss6 = a_miss(rng, set4, 4), a_miss(rng, set6, 6)
    mapped = "::ffff:" + miss4
    assert set4.match(hit4) == nets4[1]
    assert set4.match(hit4_32) == nets4[0]
    assert set6.match(hit6) == nets6[1]
    mixed = CidrSet([*nets4, *nets6])  # one set of both families: 20,000 networks
    rows = [
        (
            "CidrSet.match, 10,000 IPv4, hit a /24",
            best_ns(lambda: set4.match(hit4), number, rounds),
        ),
        (
            "CidrSet.match, 10,000 IPv4, hit a /32",
            best_ns(lambda: set4.match(hit4_32), number, rounds),
        ),
        ("CidrSet.match, 10,000 IPv4, miss", best_ns(lambda: set4.match(miss4), number, rounds)),
        (
            "CidrSet.match, 10,000 IPv4, mapped miss",
            best_ns(lambda: set4.match(mapped), number, rounds),
        ),
        (
            "CidrSet.match, 10,000 IPv6, hit a /48",
            best_ns(lambda: set6.match(hit6), number, rounds),
        ),
        ("CidrSet.match, 10,000 IPv6, miss", best_ns(lambda: set6.match(miss6), number, rounds)),
        (
            "CidrSet.match, 20,000 of both, IPv4 miss",
            best_ns(lambda: mixed.match(miss4), number, rounds),
        ),
        ("CidrSet.match, empty", best_ns(lambda: empty.match(miss4), number, rounds)),
        ("ip in CidrSet, 10,000 IPv4, miss", best_ns(lambda: miss4 in set4, number, rounds)),
    ]
    # For scale: what a list of ipaddress networks would cost, scanned (a miss scans all).
    addr = ip_address(miss4)
    rows.append(
        (
            "linear scan of 10,000 ipaddress networks, miss",
            best_ns(lambda: any(addr in net for net in nets4), max(1, number // 10_000), rounds),
        )
    )
    return rows


def group_rows(number: int, rounds: int) -> list[tuple[str, float]]:
    group = group_key("203.0.113.7", 32, 64)
    return [
        ("group_key, IPv4 /32", best_ns(lambda: group_key("203.0.113.7", 32, 64), number, rounds)),
        ("group_key, IPv4 /24", best_ns(lambda: group_key("203.0.113.7", 24, 64), number, rounds)),
        ("group_key, IPv4 /20", best_ns(lambda: group_key("203.0.113.7", 20, 64), number, rounds)),
        (
            "group_key, mapped IPv4 /32",
            best_ns(lambda: group_key("::ffff:203.0.113.7", 32, 64), number, rounds),
        ),
        (
            "group_key, IPv6 /64",
            best_ns(lambda: group_key("2001:db8:1:2::7", 32, 64), number, rounds),
        ),
        ("route_key", best_ns(lambda: route_key("ssh", group), number, rounds)),
    ]


def store_rows(rng: random.Random, number: int, rounds: int) -> list[tuple[str, float]]:
    key = group_key("203.0.113.7", 32, 64)
    buckets = LocalBuckets(100_000)
    # A rate no call exceeds: every take takes a token, as for a client within its rate.
    allowed = best_ns(lambda: buckets.take(key, 1e12, 10, NOW), number, rounds)
    refused_buckets = LocalBuckets(100_000)
    refused = best_ns(lambda: refused_buckets.take(key, 1e-9, 1, NOW), number, rounds)
    # New keys, each a first sight, with the store at capacity: each take evicts one.
    keys = [rng.getrandbits(128).to_bytes(16) for _ in range(100_000)]
    full = LocalBuckets(100_000)
    for k in keys:
        full.take(k, 1.0, 10, NOW)
    fresh = [rng.getrandbits(128).to_bytes(16) for _ in range(100_000)]
    it = iter(fresh)
    new_key = best_ns(lambda: full.take(next(it), 1.0, 10, NOW), 100_000, 1)
    offences = LocalOffences(100_000)
    seen = [0.0]

    def add() -> int:
        seen[0] += 1.0  # one offence a second, in a 60 s window: 60 kept, steady
        return offences.add(key, 60.0, NOW + seen[0])

    return [
        ("LocalBuckets.take, a known key, taken", allowed),
        ("LocalBuckets.take, a known key, refused", refused),
        ("LocalBuckets.take, new keys, full store (evicting)", new_key),
        ("LocalOffences.add, a key with 60 in its window", best_ns(add, number, rounds)),
    ]


def ban_rows(rng: random.Random, number: int, rounds: int) -> list[tuple[str, float]]:
    none, one, many = LocalBans(), LocalBans(), LocalBans(capacity=ENTRIES)
    one.ban(IPv4Network("198.51.100.7/32"), NOW + 600, "limited", NOW)
    nets = v4_networks(rng, ENTRIES)
    for net in nets:
        many.ban(net, NOW + 600, "limited", NOW)
    hit = str(nets[1].network_address + 7)
    miss = str(IPv4Address(rng.getrandbits(32)))
    while many.banned(miss, NOW) is not None:
        miss = str(IPv4Address(rng.getrandbits(32)))
    assert many.banned(hit, NOW) is not None
    assert len(many) == ENTRIES
    return [
        ("LocalBans.banned, 0 bans", best_ns(lambda: none.banned(miss, NOW), number, rounds)),
        ("LocalBans.banned, 1 ban, miss", best_ns(lambda: one.banned(miss, NOW), number, rounds)),
        (
            "LocalBans.banned, 10,000 bans, hit",
            best_ns(lambda: many.banned(hit, NOW), number, rounds),
        ),
        (
            "LocalBans.banned, 10,000 bans, miss",
            best_ns(lambda: many.banned(miss, NOW), number, rounds),
        ),
    ]


def bucket_memory(rng: random.Random, n: int = 100_000) -> tuple[int, int]:
    """Bytes LocalBuckets holds for ``n`` keys (the keys included), and per key."""
    keys = [rng.getrandbits(128).to_bytes(16) for _ in range(n)]
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    buckets = LocalBuckets(n)
    for i, k in enumerate(keys):
        buckets.take(bytes(k), 1.0, 10, NOW + i * 1e-6)  # bytes(k): its own copy, counted
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert len(buckets) == n
    return used, used // n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls and rounds")
    args = parser.parse_args()
    number, rounds = (20_000, 3) if args.quick else (200_000, 7)
    rng = random.Random(7)
    rows = cidr_rows(rng, number, rounds)
    rows += group_rows(number, rounds)
    rows += store_rows(rng, number, rounds)
    rows += ban_rows(rng, number, rounds)
    width = max(len(name) for name, _ in rows)
    print(f"{'call':<{width}}  ns/call")
    for name, ns in rows:
        print(f"{name:<{width}}  {ns:>7,.0f}")
    used, per_key = bucket_memory(rng)
    print(f"\nLocalBuckets, 100,000 keys: {used / 2**20:.1f} MiB ({per_key} bytes a key)")


if __name__ == "__main__":
    main()

"""Bans shared by worker processes: addresses and CIDRs, the most specific, expiry, eviction."""

from __future__ import annotations

import fcntl
import multiprocessing as mp
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from ipaddress import IPv4Network, IPv6Network, ip_network
from multiprocessing.connection import Connection

import pytest

from refractium.shared.bans import COUNTS, KINDS, LENGTHS, SharedBans
from refractium.shared.keys import key_hash
from refractium.shared.slots import META_BYTES, SLOTS, WINDOW
from refractium.shared.stores import Ban
from tests.kit.locks import kill_while_holding

FORK = mp.get_context("fork")
FAR = 4_000_000_000.0  # a deadline well ahead of any test's clock


@pytest.fixture
def table() -> Iterator[SharedBans]:
    bans = SharedBans.create()
    yield bans
    bans.close()


def _in_use(table: SharedBans) -> dict[str, int]:
    """Prefix length ("v4/24", "v6/64") -> slots holding it, from the header."""
    at = META_BYTES + 8 * table.stripes + 4 * COUNTS
    raw = os.pread(table.fd, 4 * KINDS, at)
    counts = (int.from_bytes(raw[4 * k : 4 * k + 4], "little") for k in range(KINDS))
    return {
        f"v4/{k - LENGTHS - 96}" if k >= LENGTHS else f"v6/{k}": n
        for k, n in enumerate(counts)
        if n
    }


def test_an_address_is_banned_until_its_deadline(table: SharedBans) -> None:
    assert table.banned("192.0.2.7", 1000.0) is None
    ban = table.ban(ip_network("192.0.2.7"), 1600.0, "unidentified", 1000.0)
    assert ban == Ban(IPv4Network("192.0.2.7/32"), "unidentified", 1000.0, 1600.0)
    assert ban.address == "192.0.2.7"
    assert table.banned("192.0.2.7", 1200.0) == ban
    assert table.banned("::ffff:192.0.2.7", 1200.0) == ban  # one address, two spellings
    assert table.banned("192.0.2.8", 1200.0) is None
    assert table.banned("192.0.2.7", 1600.0) is None  # the deadline reached: over
    v6 = table.ban(ip_network("2001:db8::7"), 1600.0, "manual", 1000.0)
    assert table.banned("2001:db8::7", 1200.0) == v6
    assert table.banned("2001:db8::8", 1200.0) is None


def test_a_cidr_covers_its_addresses_and_the_most_specific_ban_wins(table: SharedBans) -> None:
    wide = table.ban(ip_network("198.51.100.0/24"), 3000.0, "manual", 1000.0)
    narrow = table.ban(ip_network("198.51.100.0/28"), 2000.0, "rejected", 1000.0)
    host = table.ban(ip_network("198.51.100.9"), 1500.0, "limited", 1000.0)
    assert table.banned("198.51.100.9", 1100.0) == host
    assert table.banned("198.51.100.10", 1100.0) == narrow
    assert table.banned("198.51.100.200", 1100.0) == wide
    assert table.banned("198.51.101.1", 1100.0) is None
    # Once the specific ones are over, the wider one still covers.
    assert table.banned("198.51.100.9", 1700.0) == narrow
    assert table.banned("198.51.100.9", 2500.0) == wide
    assert table.banned("198.51.100.9", 3000.0) is None
    v6 = table.ban(ip_network("2001:db8:1::/48"), 3000.0, "manual", 1000.0)
    assert table.banned("2001:db8:1:ffff::1", 1100.0) == v6
    assert table.banned("2001:db8:2::1", 1100.0) is None


def test_ipv4_networks_written_in_ipv6_are_ipv4_and_short_ipv6_ones_cover_no_ipv4(
    table: SharedBans,
) -> None:
    table.ban(ip_network("192.0.2.0/24"), 2000.0, "first", 1000.0)
    mapped = table.ban(ip_network("::ffff:192.0.2.0/120"), 3000.0, "second", 1000.0)
    assert mapped.network == IPv4Network("192.0.2.0/24")  # the same network, replaced
    assert table.all(1100.0) == [mapped]
    every6 = table.ban(ip_network("::/0"), 3000.0, "v6", 1000.0)
    assert every6.network == IPv6Network("::/0")
    assert table.banned("2001:db8::1", 1100.0) == every6
    assert table.banned("203.0.113.1", 1100.0) is None  # an IPv6 /0 is no IPv4 network
    assert table.banned("192.0.2.1", 1100.0) == mapped
    every4 = table.ban(ip_network("0.0.0.0/0"), 3000.0, "v4", 1000.0)
    assert table.banned("203.0.113.1", 1100.0) == every4
    assert table.banned("2001:db8::1", 1100.0) == every6
    # Counted apart: an IPv6 client probes the IPv6 lengths only, and the reverse.
    assert _in_use(table) == {"v4/24": 1, "v4/0": 1, "v6/0": 1}


def test_a_ban_replaces_the_ban_of_the_same_network(table: SharedBans) -> None:
    table.ban(ip_network("192.0.2.0/24"), 2000.0, "limited", 1000.0)
    again = table.ban(ip_network("192.0.2.0/24"), 5000.0, "manual", 1500.0)
    assert table.banned("192.0.2.1", 1600.0) == again
    assert table.all(1600.0) == [again]
    assert _in_use(table) == {"v4/24": 1}


def test_unban_lifts_exactly_one_network(table: SharedBans) -> None:
    host = table.ban(ip_network("192.0.2.7"), FAR, "manual", 1000.0)
    table.ban(ip_network("192.0.2.0/24"), FAR, "manual", 1000.0)
    assert table.unban(ip_network("192.0.2.0/25")) is False  # not banned as such
    assert table.unban(ip_network("192.0.2.0/24")) is True
    assert table.unban(ip_network("192.0.2.0/24")) is False
    assert table.banned("192.0.2.1", 1100.0) is None
    assert table.banned("192.0.2.7", 1100.0) == host
    assert table.unban(ip_network("192.0.2.7/32")) is True
    assert table.banned("192.0.2.7", 1100.0) is None
    # The lifted bans end their chains: their slots are emptied and the
    # prefix lengths no longer cost a lookup a probe.
    assert _in_use(table) == {}
    assert table.all(1100.0) == []


def test_all_lists_the_bans_in_force_soonest_to_expire_first(table: SharedBans) -> None:
    later = table.ban(ip_network("2001:db8::/32"), 3000.0, "manual", 1000.0)
    sooner = table.ban(ip_network("192.0.2.7"), 2000.0, "limited", 1000.0)
    table.ban(ip_network("192.0.2.8"), 1100.0, "limited", 1000.0)
    assert table.all(1200.0) == [sooner, later]
    assert [ban.address for ban in table.all(1200.0)] == ["192.0.2.7", "2001:db8::/32"]
    assert table.all(3000.0) == []
    # all() empties the slots of bans over that end their chains.
    assert _in_use(table) == {}
    assert table.banned("192.0.2.7", 1000.0) is None


def test_a_reason_is_kept_to_32_bytes_of_utf8(table: SharedBans) -> None:
    ban = table.ban(ip_network("192.0.2.7"), FAR, "é" * 20, 1000.0)
    assert ban.reason == "é" * 16
    assert table.banned("192.0.2.7", 1000.0) == ban
    ban = table.ban(ip_network("192.0.2.7"), FAR, "a" + "é" * 20, 1000.0)
    assert ban.reason == "a" + "é" * 15  # 31 bytes: half a character is dropped
    assert table.all(1000.0)[0].reason == "a" + "é" * 15


def test_what_is_no_address_is_banned_by_nothing(table: SharedBans) -> None:
    table.ban(ip_network("0.0.0.0/0"), FAR, "v4", 1000.0)
    table.ban(ip_network("::/0"), FAR, "v6", 1000.0)
    assert table.banned("", 1000.0) is None
    assert table.banned("example.com", 1000.0) is None
    assert table.banned("::", 1000.0) is None


def _networks(table: SharedBans, prefix: int, count: int) -> list[IPv6Network]:
    """``count`` IPv6 networks of ``prefix`` bits whose slots start at one place."""
    head = os.pread(table.fd, META_BYTES, 0)
    mult = int.from_bytes(head[16:32], "little")
    found: list[IPv6Network] = []
    want = None
    for n in range(1, 1 << 20):
        number = (0x20010DB8 << 96) | (n << (128 - prefix))
        h = key_hash((number + prefix).to_bytes(16), mult)
        if want is None:
            want = h & (SLOTS - 1)
        if h & (SLOTS - 1) == want:
            found.append(IPv6Network((number, prefix)))
            if len(found) == count:
                return found
    raise AssertionError("no such networks")


def test_a_full_window_forgets_the_ban_that_expires_first() -> None:
    table = SharedBans.create(256)  # one stripe
    nets = _networks(table, 64, WINDOW + 1)
    for i, net in enumerate(nets[:WINDOW]):
        table.ban(net, 2000.0 + i, "manual", 1000.0)
    table.ban(nets[0], 5000.0, "manual", 1000.0)  # now the last to expire
    assert table.evictions == 0
    newest = table.ban(nets[WINDOW], 3000.0, "manual", 1000.0)
    assert table.evictions == 1
    assert table.banned(str(nets[1][1]), 1100.0) is None  # it expired first: forgotten
    assert table.banned(str(nets[0][1]), 1100.0) is not None
    assert table.banned(str(nets[WINDOW][1]), 1100.0) == newest
    assert len(table.all(1100.0)) == WINDOW
    # A ban over leaves its slot free: taking it is no eviction.
    table.ban(nets[1], 3000.0, "manual", 2002.5)
    assert table.evictions == 1
    assert table.banned(str(nets[2][1]), 2002.5) is None
    assert _in_use(table) == {"v6/64": WINDOW}
    table.close()


def test_sizes(table: SharedBans) -> None:
    assert table.capacity == 4096
    small = SharedBans.create(100)
    assert small.capacity == 256
    small.close()


def test_a_ban_made_in_one_process_is_seen_in_another(table: SharedBans) -> None:
    ban = table.ban(ip_network("198.51.100.0/24"), FAR, "manual", 1000.0)
    assert table.banned("2001:db8::77", 1000.0) is None  # this process read the lengths in use
    code = """
        import sys, time
        from ipaddress import ip_network
        from refractium.shared.bans import SharedBans
        bans = SharedBans.attach(int(sys.argv[1]))
        now = time.time()
        print(bans.banned("198.51.100.1", now), flush=True)
        bans.ban(ip_network("2001:db8::/64"), 4_000_000_000.0, "from the child", now)
        print(bans.unban(ip_network("198.51.100.0/24")), flush=True)
        bans.close()
    """
    child = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), str(table.fd)],
        pass_fds=(table.fd,),
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    )
    assert child.stdout.splitlines() == [repr(ban), "True"]
    got = table.banned("2001:db8::77", time.time())
    assert got is not None
    assert (got.address, got.reason) == ("2001:db8::/64", "from the child")
    assert table.banned("198.51.100.1", time.time()) is None


def _holder(fd: int, out: Connection) -> None:
    bans = SharedBans.attach(os.dup(fd))
    bans.ban(ip_network("192.0.2.0/24"), FAR, "manual", 1000.0)
    fcntl.lockf(bans.fd, fcntl.LOCK_EX, 0, 0)  # every stripe's lock and the header's
    out.send("holding")
    time.sleep(60)


def test_a_process_killed_holding_the_locks_blocks_nobody(table: SharedBans) -> None:
    kill_while_holding(_holder, table.fd, (table.fd, table.stripes))
    got = table.banned("192.0.2.9", 1000.0)
    assert got is not None
    assert got.address == "192.0.2.0/24"
    assert table.unban(ip_network("192.0.2.0/24")) is True

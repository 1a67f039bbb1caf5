"""The one-process stores: token buckets, offence windows, bans."""

from __future__ import annotations

from ipaddress import ip_network

import pytest

from refractium.abuse.groups import group_key
from refractium.abuse.local import KEPT_OFFENCES, LocalBans, LocalBuckets, LocalOffences
from refractium.shared.stores import Ban, Bans, Buckets, Offences

A = group_key("203.0.113.7", 32, 64)
B = group_key("203.0.113.8", 32, 64)
C = group_key("2001:db8:1:2::1", 32, 64)
T0 = 1_000.0


def test_they_implement_the_protocols() -> None:
    # mypy run on this file checks the assignments: they type-check only if the classes fit.
    buckets: Buckets = LocalBuckets(10)
    offences: Offences = LocalOffences(10)
    bans: Bans = LocalBans()
    assert (buckets.evictions, offences.evictions) == (0, 0)
    assert bans.all(T0) == []


# -- buckets ------------------------------------------------------------------


def test_five_per_second_burst_five() -> None:
    buckets = LocalBuckets(100)
    assert [buckets.take(A, 5.0, 5, T0) for _ in range(5)] == [0.0] * 5
    assert buckets.take(A, 5.0, 5, T0) == pytest.approx(0.2)
    assert buckets.take(A, 5.0, 5, T0 + 0.1) == pytest.approx(0.1)  # refused: half a token
    assert buckets.take(A, 5.0, 5, T0 + 0.2) == 0.0  # one more after 0.2 s
    assert buckets.take(A, 5.0, 5, T0 + 0.2) == pytest.approx(0.2)
    # Another key has its own full bucket.
    assert [buckets.take(B, 5.0, 5, T0) for _ in range(5)] == [0.0] * 5
    assert len(buckets) == 2


def test_refill_stops_at_the_burst() -> None:
    buckets = LocalBuckets(100)
    for _ in range(5):
        buckets.take(A, 5.0, 5, T0)
    later = T0 + 3600
    assert [buckets.take(A, 5.0, 5, later) for _ in range(5)] == [0.0] * 5
    assert buckets.take(A, 5.0, 5, later) == pytest.approx(0.2)


def test_a_slow_rate() -> None:
    buckets = LocalBuckets(100)
    per_s = 3 / 60  # "3/m"
    assert [buckets.take(A, per_s, 3, T0) for _ in range(3)] == [0.0] * 3
    assert buckets.take(A, per_s, 3, T0) == pytest.approx(20.0)
    assert buckets.take(A, per_s, 3, T0 + 5) == pytest.approx(15.0)
    assert buckets.take(A, per_s, 3, T0 + 20) == 0.0


def test_a_clock_stepped_back_refills_nothing() -> None:
    buckets = LocalBuckets(100)
    for _ in range(5):
        buckets.take(A, 5.0, 5, T0)
    assert buckets.take(A, 5.0, 5, T0 - 10) == pytest.approx(0.2)
    assert buckets.take(A, 5.0, 5, T0 + 0.2) == 0.0


def test_least_recently_used_bucket_is_evicted_and_counted() -> None:
    buckets = LocalBuckets(2)
    buckets.take(A, 1.0, 5, T0)
    buckets.take(B, 1.0, 5, T0)
    buckets.take(A, 1.0, 5, T0)  # A used last: B goes first
    buckets.take(C, 1.0, 5, T0)
    assert buckets.evictions == 1
    assert len(buckets) == 2
    # A kept its count (two taken, so three left); B starts full again.
    assert [buckets.take(A, 1.0, 5, T0) for _ in range(4)] == [0.0, 0.0, 0.0, 1.0]
    assert buckets.evictions == 1  # A was there: nothing evicted
    assert [buckets.take(B, 1.0, 5, T0) for _ in range(5)] == [0.0] * 5
    assert buckets.evictions == 2  # C made room for B


def test_a_bucket_full_again_goes_without_counting() -> None:
    buckets = LocalBuckets(2)
    buckets.take(A, 1.0, 5, T0)  # full again at T0 + 1
    buckets.take(B, 1.0, 5, T0 + 0.5)  # full again at T0 + 1.5
    buckets.take(C, 1.0, 5, T0 + 1.0)  # A is full again: dropped for free
    assert buckets.evictions == 0
    assert len(buckets) == 2
    buckets.take(A, 1.0, 5, T0 + 1.2)  # B is not: evicted, counted
    assert buckets.evictions == 1


def test_idle_buckets_are_dropped_when_new_keys_come() -> None:
    buckets = LocalBuckets(1000)
    keys = [group_key(f"198.51.100.{i}", 32, 64) for i in range(100)]
    for key in keys:
        buckets.take(key, 10.0, 10, T0)  # each full again at T0 + 0.1
    assert len(buckets) == 100
    for i, key in enumerate(keys[:50]):
        buckets.take(key, 10.0, 10, T0 + 1 + i)  # the same keys, used again
    # Each new key drops up to two idle ones from the least recently used end.
    fresh = [group_key(f"192.0.2.{i}", 32, 64) for i in range(30)]
    for key in fresh:
        buckets.take(key, 10.0, 10, T0 + 100)
    assert len(buckets) == 100 - 60 + 30
    assert buckets.evictions == 0


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="capacity must be at least 1, not 0"):
        LocalBuckets(0)
    with pytest.raises(ValueError, match="capacity must be at least 1, not -1"):
        LocalOffences(-1)
    with pytest.raises(ValueError, match="capacity must be at least 1, not 0"):
        LocalBans(0)


# -- offences -------------------------------------------------------------------


def test_offences_in_a_sliding_window() -> None:
    offences = LocalOffences(100)
    assert offences.add(A, 60, T0) == 1
    assert offences.add(A, 60, T0 + 30) == 2
    assert offences.add(B, 60, T0 + 30) == 1
    assert offences.add(A, 60, T0 + 59.999) == 3  # the first is still in
    assert offences.add(A, 60, T0 + 60) == 3  # exactly 60 s old: out
    assert offences.add(A, 60, T0 + 200) == 1  # all out


def test_clear() -> None:
    offences = LocalOffences(100)
    offences.add(A, 60, T0)
    offences.add(A, 60, T0)
    offences.clear(A)
    offences.clear(B)  # never seen: nothing to do
    assert len(offences) == 0
    assert offences.add(A, 60, T0) == 1


def test_exact_up_to_the_kept_times_never_fewer_beyond() -> None:
    offences = LocalOffences(100)
    # One offence a second, in a 100 s window: the count is exact up to 64...
    counts = [offences.add(A, 100, T0 + i) for i in range(KEPT_OFFENCES)]
    assert counts == list(range(1, KEPT_OFFENCES + 1))
    # ... and never below the exact count beyond.
    for i in range(KEPT_OFFENCES, 300):
        exact = min(i + 1, 100)
        count = offences.add(A, 100, T0 + i)
        assert exact <= count <= exact + 100 // 8, i
    # Once the offences that did not fit are out of the window, exact again.
    assert offences.add(A, 100, T0 + 500) == 1


def test_offences_eviction() -> None:
    offences = LocalOffences(2)
    offences.add(A, 60, T0)
    offences.add(B, 60, T0)
    offences.add(A, 60, T0 + 1)  # A used last: B goes first
    offences.add(C, 60, T0 + 2)
    assert offences.evictions == 1
    assert offences.add(B, 60, T0 + 3) == 1  # forgotten (C goes now: counted)
    assert offences.evictions == 2
    assert offences.add(A, 60, T0 + 70) == 1  # A's two are out of the window
    # B's window is over: dropped for free when a new key comes.
    assert offences.add(C, 60, T0 + 100) == 1
    assert offences.evictions == 2


# -- bans --------------------------------------------------------------------------


def test_ban_and_lookup() -> None:
    bans = LocalBans()
    assert bans.banned("203.0.113.7", T0) is None
    ban = bans.ban(ip_network("203.0.113.7/32"), T0 + 600, "unidentified", T0)
    assert ban == Ban(ip_network("203.0.113.7/32"), "unidentified", T0, T0 + 600)
    assert ban.address == "203.0.113.7"
    assert bans.banned("203.0.113.7", T0 + 1) == ban
    assert bans.banned("::ffff:203.0.113.7", T0 + 1) == ban
    assert bans.banned("203.0.113.8", T0 + 1) is None
    assert bans.banned("not an address", T0 + 1) is None


def test_the_most_specific_ban_wins() -> None:
    bans = LocalBans()
    wide = bans.ban(ip_network("203.0.113.0/24"), T0 + 600, "manual", T0)
    host = bans.ban(ip_network("203.0.113.7/32"), T0 + 60, "limited", T0)
    group = bans.ban(ip_network("2001:db8:1:2::/64"), T0 + 600, "rejected", T0)
    assert bans.banned("203.0.113.7", T0 + 1) == host
    assert bans.banned("203.0.113.9", T0 + 1) == wide
    assert bans.banned("2001:db8:1:2::99", T0 + 1) == group
    assert bans.banned("2001:db8:1:3::99", T0 + 1) is None
    # The address's ban expires: the range still covers it.
    assert bans.banned("203.0.113.7", T0 + 60) == wide
    assert len(bans) == 2
    assert bans.unban(ip_network("203.0.113.0/24"))
    assert bans.banned("203.0.113.7", T0 + 61) is None


def test_expiry() -> None:
    bans = LocalBans()
    ban = bans.ban(ip_network("198.51.100.7/32"), T0 + 10, "limited", T0)
    assert bans.banned("198.51.100.7", T0 + 9.999) == ban
    assert bans.banned("198.51.100.7", T0 + 10) is None  # over at its deadline
    assert len(bans) == 0  # dropped when met


def test_a_ban_replaces_one_of_the_same_network() -> None:
    bans = LocalBans()
    bans.ban(ip_network("198.51.100.0/24"), T0 + 10, "limited", T0)
    again = bans.ban(ip_network("198.51.100.0/24"), T0 + 600, "manual", T0 + 5)
    assert bans.all(T0 + 20) == [again]
    assert bans.banned("198.51.100.1", T0 + 20) == again


def test_unban_exactly_that_network() -> None:
    bans = LocalBans()
    bans.ban(ip_network("198.51.100.0/24"), T0 + 600, "manual", T0)
    assert not bans.unban(ip_network("198.51.100.7/32"))  # covered, but not banned itself
    assert not bans.unban(ip_network("198.51.0.0/16"))
    assert bans.unban(ip_network("198.51.100.0/24"))
    assert not bans.unban(ip_network("198.51.100.0/24"))
    assert bans.banned("198.51.100.7", T0) is None


def test_all_soonest_to_expire_first() -> None:
    bans = LocalBans()
    late = bans.ban(ip_network("2001:db8::/32"), T0 + 900, "manual", T0)
    soon = bans.ban(ip_network("198.51.100.7/32"), T0 + 100, "limited", T0)
    gone = bans.ban(ip_network("198.51.100.8/32"), T0 + 50, "limited", T0)
    middle = bans.ban(ip_network("203.0.113.0/24"), T0 + 300, "unidentified", T0)
    assert bans.all(T0) == [gone, soon, middle, late]
    assert bans.all(T0 + 60) == [soon, middle, late]
    assert len(bans) == 3
    assert [b.address for b in bans.all(T0 + 60)] == [
        "198.51.100.7",
        "203.0.113.0/24",
        "2001:db8::/32",
    ]


def test_full_the_ban_that_expires_first_goes() -> None:
    bans = LocalBans(capacity=3)
    bans.ban(ip_network("192.0.2.1/32"), T0 + 300, "limited", T0)
    bans.ban(ip_network("192.0.2.2/32"), T0 + 100, "limited", T0)
    bans.ban(ip_network("192.0.2.3/32"), T0 + 200, "limited", T0)
    bans.ban(ip_network("192.0.2.4/32"), T0 + 400, "limited", T0)
    assert bans.evictions == 1
    assert [b.address for b in bans.all(T0)] == ["192.0.2.3", "192.0.2.1", "192.0.2.4"]
    # Replacing a ban needs no room.
    bans.ban(ip_network("192.0.2.3/32"), T0 + 500, "manual", T0)
    assert bans.evictions == 1
    # A ban over by now makes room without counting.
    bans.ban(ip_network("192.0.2.5/32"), T0 + 600, "limited", T0 + 350)
    assert bans.evictions == 1
    assert [b.address for b in bans.all(T0 + 350)] == ["192.0.2.4", "192.0.2.3", "192.0.2.5"]


def test_many_bans_and_replacements_stay_bounded() -> None:
    bans = LocalBans(capacity=100)
    for i in range(10_000):
        bans.ban(ip_network(f"10.0.{i % 200}.0/24"), T0 + 600 + i, "limited", T0 + i * 0.01)
    assert len(bans) == 100
    assert len(bans._heap) <= 2 * 100 + 64
    assert bans.banned("10.0.199.1", T0 + 100) is not None
    assert bans.banned("10.0.0.1", T0 + 100) is None  # made room for the later ones

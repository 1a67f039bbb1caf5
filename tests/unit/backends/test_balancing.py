"""Balancing policies: which backend a connection tries first, and the failover order."""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from collections.abc import Callable, Iterable, Mapping

import pytest
from hypothesis import given
from hypothesis import strategies as st

from refractium.addr import Address, parse_address
from refractium.backends.balancing import Pool
from refractium.config import Balance

A, B, C, D = (parse_address(f"10.0.0.{i}:80") for i in range(1, 5))
ABC = (A, B, C)
ABCD = (A, B, C, D)
CLIENTS = [f"198.51.{i // 250}.{i % 250}" for i in range(1000)]


def up_except(*down: Address) -> Callable[[Address], bool]:
    return lambda address: address not in down


def firsts(
    pool: Pool,
    calls: int,
    *,
    is_up: Callable[[Address], bool] | None = None,
    active: Mapping[Address, int] | None = None,
) -> Counter[Address]:
    return Counter(pool.candidates(is_up=is_up, active=active)[0] for _ in range(calls))


def hrw_order(client_ip: str, members: Iterable[Address]) -> list[Address]:
    """Rendezvous order computed straight from the documented formula."""

    def weight(m: Address) -> int:
        digest = hashlib.blake2b(f"{client_ip}|{m.host}|{m.port}".encode(), digest_size=8)
        return int.from_bytes(digest.digest(), "big")

    return sorted(members, key=weight, reverse=True)


# -- every policy -------------------------------------------------------------


@pytest.mark.parametrize("balance", list(Balance))
def test_single_member_is_returned_as_is(balance: Balance) -> None:
    pool = Pool((A,), balance)
    assert pool.candidates("192.0.2.1") is pool.members
    assert pool.candidates(is_up=up_except(B)) is pool.members
    assert pool.candidates(is_up=up_except(A)) == ()


@pytest.mark.parametrize("balance", list(Balance))
@pytest.mark.parametrize("down", [(), (A,), (B, D), (A, B, C)])
def test_failover_has_every_healthy_member_once(
    balance: Balance, down: tuple[Address, ...]
) -> None:
    pool = Pool(ABCD, balance, rng=random.Random(1))
    healthy = [m for m in ABCD if m not in down]
    for i in range(12):
        order = pool.candidates(f"192.0.2.{i}", is_up=up_except(*down), active={B: 2, C: 1})
        assert sorted(order, key=str) == healthy


@pytest.mark.parametrize("balance", list(Balance))
def test_all_down_gives_nothing(balance: Balance) -> None:
    pool = Pool(ABC, balance)
    assert pool.candidates("192.0.2.1", is_up=lambda _: False) == ()


def test_empty_pool_is_refused() -> None:
    with pytest.raises(ValueError, match="empty pool"):
        Pool(())


def test_balance_may_be_given_by_name() -> None:
    assert Pool(ABC, "source_hash").balance is Balance.SOURCE_HASH  # type: ignore[arg-type]


# -- round robin --------------------------------------------------------------


def test_round_robin_spreads_evenly() -> None:
    pool = Pool(ABC)
    assert firsts(pool, 30) == {A: 10, B: 10, C: 10}
    assert pool.candidates() == (A, B, C)
    assert pool.candidates() == (B, C, A)


@pytest.mark.parametrize(
    "steps",
    [
        # (members down for this call, expected order), call after call
        pytest.param([((), ABC), ((B,), (C, A)), ((B,), (A, C)), ((), (B, C, A))], id="B-down"),
        pytest.param(
            [((A,), (B, C)), ((A,), (C, B)), ((A,), (B, C)), ((), (C, A, B))], id="A-down"
        ),
        pytest.param([((B, C), (A,)), ((B, C), (A,)), ((), (B, C, A))], id="only-A-up"),
        pytest.param([((C,), (A, B)), ((), (B, C, A)), ((), (C, A, B))], id="back-up"),
    ],
)
def test_round_robin_skips_down_members(
    steps: list[tuple[tuple[Address, ...], tuple[Address, ...]]],
) -> None:
    pool = Pool(ABC)
    for down, order in steps:
        assert pool.candidates(is_up=up_except(*down)) == order


def test_round_robin_with_a_member_down_shares_between_the_others() -> None:
    pool = Pool(ABCD)
    assert firsts(pool, 30, is_up=up_except(B)) == {A: 10, C: 10, D: 10}


# -- least connections --------------------------------------------------------


@pytest.mark.parametrize(
    ("active", "down", "expected"),
    [
        ({A: 3, B: 1, C: 2}, (), (B, C, A)),
        ({A: 3, B: 1, C: 2}, (B,), (C, A)),
        ({A: 5}, (), (B, C, A)),  # missing counts as 0, ties in rotation order
        ({A: 0, B: 0, C: 0}, (), (A, B, C)),
        ({}, (), (A, B, C)),
    ],
)
def test_least_connections_prefers_the_least_loaded(
    active: dict[Address, int], down: tuple[Address, ...], expected: tuple[Address, ...]
) -> None:
    pool = Pool(ABC, Balance.LEAST_CONNECTIONS)
    assert pool.candidates(is_up=up_except(*down), active=active) == expected


@pytest.mark.parametrize(
    ("active", "down", "expected"),
    [
        ({}, (), {A: 10, B: 10, C: 10}),
        ({C: 4}, (), {A: 15, B: 15}),
        ({A: 1, B: 0, C: 0}, (), {B: 15, C: 15}),
        ({A: 2, B: 2, C: 2}, (B,), {A: 15, C: 15}),
    ],
)
def test_least_connections_spreads_ties(
    active: dict[Address, int], down: tuple[Address, ...], expected: dict[Address, int]
) -> None:
    pool = Pool(ABC, Balance.LEAST_CONNECTIONS)
    assert firsts(pool, 30, is_up=up_except(*down), active=active) == expected


def test_least_connections_follows_the_load() -> None:
    pool = Pool(ABC, Balance.LEAST_CONNECTIONS)
    active: Counter[Address] = Counter()
    for _ in range(30):  # connections that stay open: each pick raises that load
        active[pool.candidates(active=active)[0]] += 1
    assert active == {A: 10, B: 10, C: 10}


# -- random -------------------------------------------------------------------


def test_random_is_roughly_uniform_over_the_healthy_members() -> None:
    pool = Pool(ABCD, Balance.RANDOM, rng=random.Random(42))
    counts = firsts(pool, 6000, is_up=up_except(C))
    assert set(counts) == {A, B, D}
    assert all(1700 <= n <= 2300 for n in counts.values()), counts


def test_random_without_health_checks_uses_every_member() -> None:
    pool = Pool(ABC, Balance.RANDOM, rng=random.Random(7))
    counts = firsts(pool, 3000)
    assert all(800 <= n <= 1200 for n in counts.values()), counts


def test_random_failover_follows_pool_order_from_the_choice() -> None:
    pool = Pool(ABCD, Balance.RANDOM, rng=random.Random(3))
    for _ in range(50):
        order = pool.candidates(is_up=up_except(B))
        start = (A, C, D).index(order[0])
        assert order == ((A, C, D) * 2)[start : start + 3]


def test_random_is_reproducible_with_a_seeded_rng() -> None:
    one = Pool(ABCD, Balance.RANDOM, rng=random.Random(5))
    two = Pool(ABCD, Balance.RANDOM, rng=random.Random(5))
    assert [one.candidates() for _ in range(20)] == [two.candidates() for _ in range(20)]


# -- source hash --------------------------------------------------------------


def test_source_hash_matches_the_documented_formula() -> None:
    members = (*ABC, parse_address("backend.internal:8443"), parse_address("[2001:db8::5]:443"))
    pool = Pool(members, Balance.SOURCE_HASH)
    for ip in [*CLIENTS[:50], "2001:db8::1", ""]:
        assert list(pool.candidates(ip)) == hrw_order(ip, members)


@pytest.mark.parametrize(
    ("client_ip", "expected"),
    [
        # Golden values: if these change, every client moves on upgrade.
        ("192.0.2.1", ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80", "backend.internal:8443"]),
        ("192.0.2.2", ["10.0.0.1:80", "10.0.0.2:80", "backend.internal:8443", "10.0.0.3:80"]),
        ("2001:db8::1", ["10.0.0.3:80", "backend.internal:8443", "10.0.0.1:80", "10.0.0.2:80"]),
        ("", ["10.0.0.2:80", "backend.internal:8443", "10.0.0.1:80", "10.0.0.3:80"]),
    ],
)
def test_source_hash_is_stable_across_processes(client_ip: str, expected: list[str]) -> None:
    pool = Pool((*ABC, parse_address("backend.internal:8443")), Balance.SOURCE_HASH)
    assert [str(m) for m in pool.candidates(client_ip)] == expected


def test_source_hash_is_sticky_and_spreads() -> None:
    pool = Pool(ABCD, Balance.SOURCE_HASH)
    first = {ip: pool.candidates(ip)[0] for ip in CLIENTS}
    assert all(pool.candidates(ip)[0] == first[ip] for ip in CLIENTS)
    counts = Counter(first.values())
    assert set(counts) == set(ABCD)
    assert all(150 <= n <= 350 for n in counts.values()), counts


def test_source_hash_ignores_pool_order() -> None:
    pool = Pool(ABCD, Balance.SOURCE_HASH)
    shuffled = Pool((C, A, D, B), Balance.SOURCE_HASH)
    assert all(pool.candidates(ip) == shuffled.candidates(ip) for ip in CLIENTS)


@pytest.mark.parametrize("gone", ABCD)
@pytest.mark.parametrize("how", ["removed", "down"])
def test_source_hash_moves_only_the_clients_of_a_lost_member(gone: Address, how: str) -> None:
    pool = Pool(ABCD, Balance.SOURCE_HASH)
    before = {ip: pool.candidates(ip) for ip in CLIENTS}
    if how == "removed":
        smaller = Pool([m for m in ABCD if m != gone], Balance.SOURCE_HASH)
        after = {ip: smaller.candidates(ip) for ip in CLIENTS}
    else:
        after = {ip: pool.candidates(ip, is_up=up_except(gone)) for ip in CLIENTS}
    moved = {ip for ip in CLIENTS if after[ip][0] != before[ip][0]}
    assert moved == {ip for ip in CLIENTS if before[ip][0] == gone}
    assert 150 <= len(moved) <= 350
    for ip in CLIENTS:  # the survivors keep their relative order, failover included
        assert after[ip] == tuple(m for m in before[ip] if m != gone)


def test_source_hash_adding_a_member_back_restores_the_mapping() -> None:
    full = Pool(ABCD, Balance.SOURCE_HASH)
    before = {ip: full.candidates(ip) for ip in CLIENTS}
    without = Pool((A, B, D), Balance.SOURCE_HASH)
    assert any(without.candidates(ip) != before[ip] for ip in CLIENTS)
    restored = Pool((A, B, D, C), Balance.SOURCE_HASH)  # added back at the end
    assert all(restored.candidates(ip) == before[ip] for ip in CLIENTS)
    # And a member coming back up after being down:
    assert all(full.candidates(ip, is_up=up_except()) == before[ip] for ip in CLIENTS)


# -- properties ---------------------------------------------------------------

addresses = st.builds(
    Address,
    st.sampled_from(["10.0.0.1", "10.0.0.2", "2001:db8::1", "db.internal", "cache"]),
    st.integers(1, 4),
)


@given(
    members=st.lists(addresses, min_size=1, max_size=8),
    balance=st.sampled_from(list(Balance)),
    down=st.sets(addresses, max_size=6),
    loads=st.dictionaries(addresses, st.integers(0, 5), max_size=8),
    client_ip=st.sampled_from(["", "192.0.2.1", "2001:db8::7", "198.51.100.9"]),
    calls=st.integers(1, 6),
    seed=st.integers(0, 2**32 - 1),
)
def test_candidates_is_a_permutation_of_the_up_members(
    members: list[Address],
    balance: Balance,
    down: set[Address],
    loads: dict[Address, int],
    client_ip: str,
    calls: int,
    seed: int,
) -> None:
    pool = Pool(members, balance, rng=random.Random(seed))
    expected = Counter(m for m in members if m not in down)
    for _ in range(calls):
        order = pool.candidates(client_ip, is_up=lambda m: m not in down, active=loads)
        assert Counter(order) == expected
        if balance is Balance.LEAST_CONNECTIONS and order:
            assert [loads.get(m, 0) for m in order] == sorted(loads.get(m, 0) for m in order)

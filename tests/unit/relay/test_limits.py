"""Admission against the global and per-IP caps."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from refractium.relay.limits import ConnectionLimits, Refusal, SharedLimits
from refractium.shared.counts import SharedCounts


def test_global_cap_then_release() -> None:
    limits = ConnectionLimits()
    assert limits.admit("192.0.2.1", 2, 0) is None
    assert limits.admit("192.0.2.2", 2, 0) is None
    assert limits.admit("192.0.2.3", 2, 0) is Refusal.GLOBAL_LIMIT
    limits.release("192.0.2.1")
    assert limits.admit("192.0.2.3", 2, 0) is None
    assert limits.total == 2


def test_per_ip_cap_counts_each_address_apart() -> None:
    limits = ConnectionLimits()
    assert [limits.admit("192.0.2.1", 100, 2) for _ in range(3)] == [
        None,
        None,
        Refusal.PER_IP_LIMIT,
    ]
    assert limits.admit("192.0.2.2", 100, 2) is None
    limits.release("192.0.2.1")
    limits.release("192.0.2.1")
    assert "192.0.2.1" not in limits.by_ip  # nothing left behind per address
    assert limits.admit("192.0.2.1", 100, 2) is None


def test_lower_caps_keep_open_connections() -> None:
    """A reload that lowers a cap refuses new connections only."""
    limits = ConnectionLimits()
    for _ in range(4):
        limits.admit("192.0.2.1", 10, 5)
    assert limits.admit("192.0.2.1", 10, 2) is Refusal.PER_IP_LIMIT
    assert limits.by_ip["192.0.2.1"] == 4
    assert limits.admit("192.0.2.2", 4, 2) is Refusal.GLOBAL_LIMIT


def test_rekey_moves_a_connection_to_its_real_client() -> None:
    """A trusted proxy's connection ("" until its header) is counted under the client."""
    limits = ConnectionLimits()
    assert limits.admit("", 10, 1) is None
    assert limits.rekey("", "192.0.2.9", 1) is None
    assert limits.by_ip == {"192.0.2.9": 1}
    assert limits.admit("", 10, 1) is None
    assert limits.rekey("", "192.0.2.9", 1) is Refusal.PER_IP_LIMIT
    assert limits.total == 2


# --------------------------------------------------------------------------- workers


@pytest.fixture
def shared() -> Iterator[tuple[SharedLimits, SharedCounts]]:
    """One worker's limits (column 0) over a fresh table."""
    table = SharedCounts.create(2, 4096)
    counts = SharedCounts.attach(os.dup(table.fd), 0)
    try:
        yield SharedLimits(counts), table
    finally:
        counts.close()
        table.close()


def test_shared_caps_refuse_as_the_local_ones_do(
    shared: tuple[SharedLimits, SharedCounts],
) -> None:
    limits, table = shared
    assert [limits.admit("192.0.2.1", 3, 2) for _ in range(3)] == [
        None,
        None,
        Refusal.PER_IP_LIMIT,
    ]
    assert limits.admit("192.0.2.2", 3, 2) is None
    assert limits.admit("192.0.2.3", 3, 2) is Refusal.GLOBAL_LIMIT
    assert (table.total(), table.held("192.0.2.1")) == (3, 2)
    for ip in ("192.0.2.1", "192.0.2.1", "192.0.2.2"):
        limits.release(ip)
    assert (table.total(), table.held("192.0.2.1")) == (0, 0)


def test_without_a_per_ip_cap_no_address_slot_is_taken(
    shared: tuple[SharedLimits, SharedCounts],
) -> None:
    limits, table = shared
    assert limits.admit("192.0.2.1", 10, 0) is None
    assert (table.total(), table.held("192.0.2.1")) == (1, 0)
    # A reload sets a cap of 1 meanwhile: the next one from there is counted per IP.
    assert limits.admit("192.0.2.1", 10, 1) is None
    assert (table.total(), table.held("192.0.2.1")) == (2, 1)
    limits.release("192.0.2.1")
    limits.release("192.0.2.1")
    assert (table.total(), table.held("192.0.2.1")) == (0, 0)
    assert limits.total_only == {}


def test_shared_rekey_moves_a_connection_to_its_real_client(
    shared: tuple[SharedLimits, SharedCounts],
) -> None:
    limits, table = shared
    assert limits.admit("", 10, 1) is None
    assert limits.rekey("", "192.0.2.9", 1) is None
    assert table.held("192.0.2.9") == 1
    assert limits.admit("", 10, 1) is None
    assert limits.rekey("", "192.0.2.9", 1) is Refusal.PER_IP_LIMIT
    assert table.total() == 2
    assert limits.admit("", 10, 0) is None
    assert limits.rekey("", "192.0.2.9", 0) is None  # no cap: total only
    assert (table.total(), table.held("192.0.2.9")) == (3, 1)
    for ip in ("192.0.2.9", "", "192.0.2.9"):
        limits.release(ip)
    assert (table.total(), table.held("192.0.2.9")) == (0, 0)

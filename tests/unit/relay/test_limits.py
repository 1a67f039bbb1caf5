"""Admission against the global and per-IP caps."""

from __future__ import annotations

from refractium.relay.limits import ConnectionLimits, Refusal


def test_global_cap_then_release() -> None:
    limits = ConnectionLimits(max_total=2, max_per_ip=0)
    assert limits.admit("192.0.2.1") is None
    assert limits.admit("192.0.2.2") is None
    assert limits.admit("192.0.2.3") is Refusal.GLOBAL_LIMIT
    limits.release("192.0.2.1")
    assert limits.admit("192.0.2.3") is None
    assert limits.total == 2


def test_per_ip_cap_counts_each_address_apart() -> None:
    limits = ConnectionLimits(max_total=100, max_per_ip=2)
    assert [limits.admit("192.0.2.1") for _ in range(3)] == [None, None, Refusal.PER_IP_LIMIT]
    assert limits.admit("192.0.2.2") is None
    limits.release("192.0.2.1")
    limits.release("192.0.2.1")
    assert "192.0.2.1" not in limits.by_ip  # nothing left behind per address
    assert limits.admit("192.0.2.1") is None


def test_resize_keeps_open_connections() -> None:
    limits = ConnectionLimits(max_total=10, max_per_ip=5)
    for _ in range(4):
        limits.admit("192.0.2.1")
    limits.resize(max_total=10, max_per_ip=2)
    assert limits.by_ip["192.0.2.1"] == 4
    assert limits.admit("192.0.2.1") is Refusal.PER_IP_LIMIT

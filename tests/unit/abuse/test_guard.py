"""The guard's note of the tokens it takes, for the fleet's rate exchange."""

from __future__ import annotations

from ipaddress import ip_network

from refractium.abuse.groups import group_key, route_key
from refractium.abuse.guard import LIMITED, Guard
from refractium.config.model import LimitsConfig, Rate

TEN = Rate(count=10, period_s=1.0, burst=2, text="10/s")
ROUTE = Rate(count=3, period_s=60.0, burst=3, text="3/m")


def guard() -> Guard:
    return Guard(LimitsConfig(connection_rate=TEN), clock=lambda: 100.0)


def test_nothing_is_noted_without_an_exchange() -> None:
    g = guard()
    assert g.at_accept("192.0.2.1") is None
    assert g.pending is None
    assert g.collect_takes() == []


def test_tokens_taken_are_noted_by_key_with_their_rate() -> None:
    g = guard()
    g.note_takes()
    assert g.at_accept("192.0.2.1") is None
    assert g.at_accept("192.0.2.1") is None
    assert g.at_accept("192.0.2.1") is LIMITED  # refused: nothing taken, nothing noted
    assert g.at_accept("192.0.2.2") is None
    assert g.route_rate("ssh", ROUTE, "192.0.2.1") == 0.0
    one, two = group_key("192.0.2.1", 32, 64), group_key("192.0.2.2", 32, 64)
    assert sorted(g.collect_takes()) == sorted(
        [(one, 2, TEN), (two, 1, TEN), (route_key("ssh", one), 1, ROUTE)]
    )
    # Collected: the next collection starts from nothing.
    assert g.collect_takes() == []
    assert g.pending == {}


def test_allowed_clients_take_nothing() -> None:
    g = guard()
    g.note_takes()
    g.configure(LimitsConfig(connection_rate=TEN, allow=(ip_network("192.0.2.0/24"),)))
    assert g.at_accept("192.0.2.9") is None
    assert g.route_rate("ssh", ROUTE, "192.0.2.9") == 0.0
    assert g.collect_takes() == []

"""Route ids: the file's ``id``, else the name, else NAME#K; unique, or a one-line error."""

from __future__ import annotations

from refractium.config import apply_overrides
from tests.unit.config.helpers import FILE, error_of, load_text, route


def ids(text: str) -> list[str]:
    return [r.id for r in load_text(text).protocols]


def test_a_unique_name_is_the_id() -> None:
    assert ids(route(name="http") + route(name="ssh")) == ["http", "ssh"]


def test_shared_names_are_numbered_in_file_order() -> None:
    text = (
        route('sni = "a.example"', name="https")
        + route(name="ssh")
        + route('sni = "b.example"', name="https")
        + route(name="https")
    )
    assert ids(text) == ["https#1", "ssh", "https#2", "https#3"]


def test_an_explicit_id_wins_and_leaves_the_others_numbered() -> None:
    text = route('sni = "a.example"\nid = "shop"', name="https") + route(
        'sni = "b.example"', name="https"
    )
    assert ids(text) == ["shop", "https#2"]


def test_duplicate_ids_name_the_later_route() -> None:
    text = route('id = "web"', name="http") + route('id = "web"', name="ssh")
    assert error_of(text) == (
        f"{FILE}: protocols[1].id: 'web' is already the id of protocols[0] (set a distinct id)"
    )


def test_an_explicit_id_may_not_take_a_default_one() -> None:
    text = route(name="ssh") + route('id = "ssh"', name="http")
    assert error_of(text) == (
        f"{FILE}: protocols[1].id: 'ssh' is already the id of protocols[0] (set a distinct id)"
    )


def test_an_id_is_plain_text() -> None:
    assert error_of(route('id = "my route"')) == (
        f"{FILE}: protocols[0].id: not a valid id: 'my route'"
        " (up to 64 letters, digits and '_', '.', ':', '#', '/', '-')"
    )


def test_routes_added_on_the_command_line_get_ids() -> None:
    config = load_text(route(name="http"))
    merged = apply_overrides(config, bind=None, port=None, forwards=["ssh=127.0.0.1:22"])
    assert [r.id for r in merged.protocols] == ["http", "ssh"]


# --- the ja4 filter's values (kept here: it is a route key like id) ----------------


def test_ja4_filters_are_whole_fingerprints_or_prefixes() -> None:
    text = route('ja4 = ["t13d1516h2_8daaf6152771_b186095e22b6", "t13d*", "q*"]', name="https")
    (only,) = load_text(text).protocols
    assert only.ja4 == ("t13d1516h2_8daaf6152771_b186095e22b6", "t13d*", "q*")


def test_a_ja4_filter_that_is_neither_is_refused() -> None:
    assert error_of(route('ja4 = ["t13d", "x"]', name="https")) == (
        f"{FILE}: protocols[0].ja4[0]: not a JA4 fingerprint nor a prefix ending in '*': 't13d'"
        " (e.g. 't13d1516h2_8daaf6152771_b186095e22b6' or 't13d*')"
    )

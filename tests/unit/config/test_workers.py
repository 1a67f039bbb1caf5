"""``[server] workers``: an integer >= 1 or "auto", and what ``check`` shows of it."""

from __future__ import annotations

import os

import pytest

from refractium.config import describe
from refractium.config.schema import workers
from refractium.errors import ConfigError
from tests.unit.config.helpers import error_of, load_text


def test_one_worker_by_default() -> None:
    assert load_text("").server.workers == 1


def test_a_count() -> None:
    assert load_text("[server]\nworkers = 4\n").server.workers == 4


def test_auto_is_one_per_usable_cpu() -> None:
    expected = len(os.sched_getaffinity(0))
    assert load_text("[server]\nworkers = 'auto'\n").server.workers == expected
    assert load_text("[server]\nworkers = 'AUTO'\n").server.workers == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[server]\nworkers = 0\n", "refractium.toml: server.workers: must be at least 1, got 0"),
        ("[server]\nworkers = -2\n", "refractium.toml: server.workers: must be at least 1, got -2"),
        (
            "[server]\nworkers = 'many'\n",
            "refractium.toml: server.workers: expected an integer >= 1 or \"auto\", got 'many'",
        ),
    ],
)
def test_bad_counts(text: str, message: str) -> None:
    assert error_of(text) == message


def test_a_boolean_is_no_count() -> None:
    message = error_of("[server]\nworkers = true\n")
    assert message.startswith("refractium.toml: server.workers: ")
    assert "\n" not in message


def test_the_command_line_key_names_the_option() -> None:
    with pytest.raises(ConfigError) as caught:
        workers("-w", 0, 2)
    assert str(caught.value) == "-w: must be at least 1, got 0"
    assert workers("-w", "auto", 3) == 3


def test_check_shows_the_count() -> None:
    text = describe(load_text("[server]\nworkers = 3\n"))
    assert "workers:      3\n" in text
    assert "workers:      1 (one process)\n" in describe(load_text(""))

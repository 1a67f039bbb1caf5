"""The supervisor's restart back-off, how it names an exit, and the worker's link."""

from __future__ import annotations

import os

import pytest

from refractium.engine.slot import Backoff, describe_exit
from refractium.engine.worker import WorkerLink
from refractium.errors import RefractiumError


def test_backoff_doubles_up_to_ten_seconds() -> None:
    backoff = Backoff()
    delays = [backoff.delay(lived_s=0.5) for _ in range(10)]
    assert delays == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 10.0, 10.0, 10.0]


def test_backoff_forgives_a_worker_that_lived_ten_seconds() -> None:
    backoff = Backoff()
    assert [backoff.delay(1.0) for _ in range(4)] == [0.1, 0.2, 0.4, 0.8]
    assert backoff.delay(10.0) == 0.1
    assert backoff.delay(9.9) == 0.2


def test_backoff_limits_are_settable() -> None:
    backoff = Backoff(initial_s=1.0, maximum_s=3.0, reset_after_s=60.0)
    assert [backoff.delay(30.0) for _ in range(4)] == [1.0, 2.0, 3.0, 3.0]
    assert backoff.delay(60.0) == 1.0


@pytest.mark.parametrize(
    ("returncode", "text"),
    [
        (-9, "killed by SIGKILL"),
        (-15, "killed by SIGTERM"),
        (1, "exit status 1"),
        (0, "exit status 0"),
    ],
)
def test_describe_exit(returncode: int, text: str) -> None:
    assert describe_exit(returncode) == text


def test_worker_link_round_trips() -> None:
    link = WorkerLink.parse("2:4068:14:15:counts=16,allows=17")
    assert link == WorkerLink(
        index=2,
        supervisor_pid=4068,
        ready_fd=14,
        figures_fd=15,
        tables=(("counts", 16), ("allows", 17)),
    )
    assert link.table("allows") == 17
    assert str(link) == "2:4068:14:15:counts=16,allows=17"
    assert WorkerLink.parse("1:2:3:4:") == WorkerLink(1, 2, 3, 4)
    with pytest.raises(RefractiumError, match="--worker: no bans table"):
        link.table("bans")


@pytest.mark.parametrize(
    "text", ["", "1:2", "1:x:3:4:", "1:2:3", "1:2:3:4:5:6", "-1:2:3:4:", "1:2:3:4:counts=x"]
)
def test_worker_link_rejects_garbage(text: str) -> None:
    with pytest.raises(RefractiumError) as caught:
        WorkerLink.parse(text)
    assert str(caught.value) == (
        f"--worker: expected INDEX:PID:READY:FIGURES:NAME=FD,..., got {text!r}"
    )


def test_a_worker_whose_parent_is_not_the_supervisor_is_orphaned() -> None:
    assert not WorkerLink(1, os.getppid(), 0, 0).orphaned()
    assert WorkerLink(1, os.getppid() + 1, 0, 0).orphaned()

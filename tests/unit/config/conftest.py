"""Fixtures of the configuration tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in an empty directory so files can be named as a user would."""
    monkeypatch.chdir(tmp_path)
    return tmp_path

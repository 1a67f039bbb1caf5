"""Importing ``module:attr`` and building from it: the errors name what failed."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from refractium.errors import HookLoadError
from refractium.util.importer import build, check_build, import_target, importable_from

KEY = "protocols[2].hooks[0]"


@pytest.fixture
def isolated_imports(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """sys.path and sys.modules as they were, after the test."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        del sys.modules[name]


def error(exc: pytest.ExceptionInfo[HookLoadError]) -> str:
    return str(exc.value)


def test_import_target_finds_dotted_attributes() -> None:
    assert import_target("os.path:join", key=KEY, source=None) is os.path.join
    assert import_target("collections:OrderedDict.fromkeys", key=KEY, source=None) == (
        __import__("collections").OrderedDict.fromkeys
    )


def test_import_errors_name_the_file_the_key_and_what_failed(
    tmp_path: Path, isolated_imports: None
) -> None:
    (tmp_path / "broken_at_import.py").write_text("raise RuntimeError('no database')\n")
    source = str(tmp_path / "refractium.toml")
    cases = [
        ("nosuchmodule_xyz:Hook", "cannot import 'nosuchmodule_xyz': No module named"),
        (
            "broken_at_import:Hook",
            "importing 'broken_at_import' failed: RuntimeError: no database",
        ),
        ("os.path:nothing.here", "module 'os.path' has no attribute 'nothing.here'"),
    ]
    for use, message in cases:
        with pytest.raises(HookLoadError) as exc:
            import_target(use, key=KEY, source=source)
        assert error(exc).startswith(f"{source}: {KEY}: {message}"), error(exc)
        assert (exc.value.file, exc.value.key) == (source, KEY)


class Hook:
    built = 0

    def __init__(self, path: str, *, level: int = 1) -> None:
        Hook.built += 1
        self.path = path
        self.level = level


class NoInit:
    pass


class Failing:
    def __init__(self, size: int) -> None:
        raise ValueError(f"size must be positive, got {size}")


def test_build_instantiates_a_class_with_the_keyword_arguments() -> None:
    hook = build(Hook, "m:Hook", {"path": "x", "level": 3}, key=KEY, source="r.toml")
    assert (type(hook), hook.path, hook.level) == (Hook, "x", 3)
    function = len
    assert build(function, "m:len", {}, key=KEY, source="r.toml") is len


def test_build_errors() -> None:
    cases: list[tuple[Any, dict[str, Any], str]] = [
        (len, {"b": 1, "a": 2}, "m:X is not a class: it takes no arguments (a, b)"),
        (Failing, {"size": -1}, "m:X: size must be positive, got -1"),
        (Hook, {}, "m:X: Hook.__init__() missing 1 required positional argument: 'path'"),
        (NoInit, {"x": 1}, "m:X: NoInit() takes no arguments"),
    ]
    for obj, kwargs, message in cases:
        with pytest.raises(HookLoadError) as exc:
            build(obj, "m:X", kwargs, key=KEY, source="r.toml")
        assert error(exc) == f"r.toml: {KEY}: {message}"


class Many:
    def __init__(self, a: int, b: int, /, c: int, *args: int, d: int, e: int = 0) -> None:
        pass


class Anything:
    def __init__(self, **kwargs: Any) -> None:
        pass


class WithNew:
    def __new__(cls, size: int) -> WithNew:
        return super().__new__(cls)


class Inherited(Hook):
    pass


@pytest.mark.parametrize(
    ("cls", "kwargs"),
    [
        (Hook, {}),
        (Hook, {"path": "p"}),
        (Hook, {"path": "p", "wrong": 1}),
        (Hook, {"wrong": 1}),
        (Inherited, {"level": 2}),
        (NoInit, {}),
        (NoInit, {"x": 1}),
        (Many, {}),
        (Many, {"c": 1}),
        (Many, {"a": 1, "c": 1, "d": 1}),
        (Many, {"args": 1}),
        (Many, {"c": 1, "d": 1, "e": 2}),
        (Anything, {"whatever": 1}),
        (WithNew, {}),
        (WithNew, {"other": 1}),
    ],
)
def test_check_build_says_what_the_constructor_would(cls: type, kwargs: dict[str, Any]) -> None:
    """Checking gives the very line loading gives, without building anything."""
    try:
        cls(**kwargs)
    except TypeError as exc:
        expected: str | None = f"r.toml: {KEY}: m:X: {exc}"
    else:
        expected = None
    built = Hook.built
    if expected is None:
        check_build(cls, "m:X", kwargs, key=KEY, source="r.toml")
    else:
        with pytest.raises(HookLoadError) as checking:
            check_build(cls, "m:X", kwargs, key=KEY, source="r.toml")
        assert str(checking.value) == expected
    assert Hook.built == built, "checking never instantiates"


def test_check_build_leaves_what_only_the_constructor_knows() -> None:
    check_build(Failing, "m:X", {"size": -1}, key=KEY, source=None)
    with pytest.raises(HookLoadError, match=r"m:X is not a class: it takes no arguments \(a\)"):
        check_build(len, "m:X", {"a": 1}, key=KEY, source=None)
    check_build(len, "m:X", {}, key=KEY, source=None)


def test_the_config_files_directory_comes_after_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated_imports: None
) -> None:
    etc, work = tmp_path / "etc", tmp_path / "work"
    etc.mkdir()
    work.mkdir()
    monkeypatch.chdir(work)
    sys.path[:] = [p for p in sys.path if p not in ("", str(work))]
    importable_from(str(etc / "refractium.toml"))
    assert sys.path[:2] == [str(work), str(etc)]
    importable_from(str(etc / "refractium.toml"))
    assert sys.path.count(str(etc)) == 1 and sys.path.count(str(work)) == 1
    # A config file in the working directory adds nothing more.
    importable_from("refractium.toml")
    assert sys.path.count(str(work)) == 1

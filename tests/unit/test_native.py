"""Compiled or pure (refractium.native): the switch, the build in place, stale modules."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

import refractium
from refractium import native

PACKAGE = Path(refractium.__file__).parent
# Modules on the per-connection path that setup.py compiles.
HOT = ("refractium.relay.connection", "refractium.relay.pipe", "refractium.routing.table")
SUFFIX = EXTENSION_SUFFIXES[0]

REPORT = """
import importlib, json, sys
from refractium import native
files = {name: importlib.import_module(name).__file__ for name in sys.argv[1:]}
files["refractium.native"] = native.__file__
print(json.dumps({"kind": native.kind(), "files": files}))
"""


def built_compiled() -> bool:
    """Whether this install has the compiled modules (an extension beside the source)."""
    return (PACKAGE / "relay" / f"connection{SUFFIX}").exists()


def loaded(**env: str) -> tuple[str, dict[str, str]]:
    """What a fresh interpreter loads: the kind it reports and each hot module's file."""
    environ = {k: v for k, v in os.environ.items() if k != native.PURE_ENV} | env
    done = subprocess.run(
        [sys.executable, "-c", REPORT, *HOT],
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    report = json.loads(done.stdout)
    return report["kind"], report["files"]


def test_this_process_runs_the_build_it_should() -> None:
    # `make test` says which: compiled (unless REFRACTIUM_COMPILE=0), then pure.
    expected = os.environ.get("REFRACTIUM_BUILT")
    if expected is None:
        expected = "compiled" if built_compiled() and not native.wants_pure() else "pure"
    assert native.kind() == expected
    suffix = SUFFIX if expected == "compiled" else ".py"
    for name in HOT:
        assert (sys.modules[name].__file__ or "").endswith(suffix), name


def test_by_default_the_compiled_modules_load_where_they_exist() -> None:
    kind, files = loaded()
    suffix = SUFFIX if built_compiled() else ".py"
    assert kind == ("compiled" if built_compiled() else "pure")
    for name in HOT:
        assert files[name].endswith(suffix), files[name]
    assert files["refractium.native"].endswith(".py")  # never compiled itself


def test_refractium_pure_loads_every_module_from_its_source() -> None:
    kind, files = loaded(REFRACTIUM_PURE="1")
    assert kind == "pure"
    for name in (*HOT, "refractium.native"):
        assert files[name] == str(PACKAGE / (name.split(".", 1)[1].replace(".", "/") + ".py"))


def test_refractium_pure_0_is_the_default() -> None:
    assert loaded(REFRACTIUM_PURE="0") == loaded()


def checkout(tmp_path: Path, *modules: str) -> Path:
    """A fake checkout: pyproject.toml, and each module as source plus an extension."""
    (tmp_path / "pyproject.toml").write_text("")
    package = tmp_path / "src" / "refractium"
    for module in modules:
        source = package / f"{module}.py"
        source.parent.mkdir(parents=True, exist_ok=True)
        source.write_text("")
        source.with_name(source.stem + SUFFIX).write_bytes(b"")
    return package


def test_a_source_edited_after_the_build_is_stale(tmp_path: Path) -> None:
    package = checkout(tmp_path, "relay/pipe", "relay/flow", "addr")
    assert native.stale_sources(str(package)) == []
    built = os.stat(package / f"addr{SUFFIX}").st_mtime
    os.utime(package / "relay" / "pipe.py", (built + 5, built + 5))
    os.utime(package / "addr.py", (built + 5, built + 5))
    assert native.stale_sources(str(package)) == ["addr.py", "relay/pipe.py"]


def test_outside_a_checkout_nothing_is_stale(tmp_path: Path) -> None:
    package = checkout(tmp_path, "relay/pipe")
    (tmp_path / "pyproject.toml").unlink()  # an installed wheel: no pyproject beside it
    built = os.stat(package / "relay" / f"pipe{SUFFIX}").st_mtime
    os.utime(package / "relay" / "pipe.py", (built + 5, built + 5))
    assert native.stale_sources(str(package)) == []


def test_the_source_finder_finds_only_sources(tmp_path: Path) -> None:
    package = checkout(tmp_path, "relay/pipe", "relay/flow")
    (package / "relay" / "flow.py").unlink()  # compiled only: not found
    finder = native.SourceFinder()
    spec = finder.find_spec("refractium.relay.pipe", [str(package / "relay")])
    assert spec is not None and spec.origin == str(package / "relay" / "pipe.py")
    assert finder.find_spec("refractium.relay.flow", [str(package / "relay")]) is None
    assert finder.find_spec("json", None) is None

"""Compiled or pure: which build of the package runs, and the switch between the two.

Built with a C compiler (see setup.py), the modules on the per-connection
and per-datagram path are extension modules compiled by mypyc, each beside
its ``.py`` source, and Python's import system prefers the extension.
:func:`install`, called first thing by the package's ``__init__``, decides
whether it may:

- ``REFRACTIUM_PURE=1`` in the environment: every ``refractium.*`` module
  loads from its ``.py`` source, compiled or not;
- in a checkout (an editable install), a compiled module whose source was
  edited after the build: the same, with one warning on stderr saying how
  to rebuild, since the compiled module would run the code as it was.

:func:`kind` says which build runs (``refractium --version`` and the start
line of the log show it). This module is never compiled itself.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence
from importlib.abc import MetaPathFinder
from importlib.machinery import (
    EXTENSION_SUFFIXES,
    SOURCE_SUFFIXES,
    FileFinder,
    ModuleSpec,
    SourceFileLoader,
)
from types import ModuleType

#: set to 1 (or anything but 0 and empty) to run the pure-Python modules
PURE_ENV = "REFRACTIUM_PURE"

# A module that is compiled whenever anything is: what kind() looks at.
_PROBE = "refractium.relay.connection"
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


class SourceFinder(MetaPathFinder):
    """Finds ``refractium.*`` modules as ``.py`` files only, never as extension modules."""

    def __init__(self) -> None:
        self._finders: dict[str, FileFinder] = {}

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> ModuleSpec | None:
        if path is None or not fullname.startswith("refractium."):
            return None
        for entry in path:
            finder = self._finders.get(entry)
            if finder is None:
                finder = self._finders[entry] = FileFinder(
                    entry, (SourceFileLoader, SOURCE_SUFFIXES)
                )
            spec = finder.find_spec(fullname, target)
            if spec is not None:
                return spec
        return None


def wants_pure(environ: dict[str, str] | os._Environ[str] = os.environ) -> bool:
    """Whether ``REFRACTIUM_PURE`` asks for the pure-Python modules."""
    return environ.get(PURE_ENV, "") not in ("", "0")


def stale_sources(package_dir: str = _PACKAGE_DIR) -> list[str]:
    """The sources (relative paths) edited after their module was compiled.

    Only in a checkout (``src/refractium`` beside a pyproject.toml): an
    installed wheel's files all carry the time they were unpacked, in no
    particular order, and nobody edits them.
    """
    root = os.path.dirname(os.path.dirname(package_dir))
    if not os.path.exists(os.path.join(root, "pyproject.toml")):
        return []
    stale = []
    for folder, dirs, files in os.walk(package_dir):
        dirs[:] = [name for name in dirs if name != "__pycache__"]
        for name in files:
            suffix = next((s for s in EXTENSION_SUFFIXES if name.endswith(s)), None)
            if suffix is None:
                continue
            compiled = os.path.join(folder, name)
            source = compiled[: -len(suffix)] + ".py"
            try:
                if os.stat(source).st_mtime > os.stat(compiled).st_mtime:
                    stale.append(os.path.relpath(source, package_dir))
            except FileNotFoundError:
                continue  # a source deleted: nothing imports it any more
    return sorted(stale)


def install() -> None:
    """Load every module from source when asked to or when the compiled ones are stale."""
    if any(isinstance(finder, SourceFinder) for finder in sys.meta_path):
        return
    if not wants_pure():
        stale = stale_sources()
        if not stale:
            return
        more = f" and {len(stale) - 1} more" if len(stale) > 1 else ""
        print(
            f"refractium: warning: the compiled modules are older than their sources "
            f"({stale[0]}{more}): running the pure-Python modules; `make run` or "
            "`make test` rebuilds them, as does `pip install -e .`",
            file=sys.stderr,
        )
        # Workers and other child processes run the same modules, without
        # saying it again.
        os.environ[PURE_ENV] = "1"
    sys.meta_path.insert(0, SourceFinder())


def kind() -> str:
    """``"compiled"`` when the per-connection modules run compiled, else ``"pure"``."""
    module = importlib.import_module(_PROBE)
    path = module.__file__ or ""
    return "compiled" if path.endswith(tuple(EXTENSION_SUFFIXES)) else "pure"

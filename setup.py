"""Build hook: the per-connection and per-datagram modules compiled with mypyc.

The project's metadata is in pyproject.toml; this file only adds the
extension modules. Compiling is optional: with ``REFRACTIUM_COMPILE=0`` set,
without mypyc or without a C compiler, the build says so in one line on
stderr and installs the pure-Python package, which behaves the same.
"""

from __future__ import annotations

import os
import shutil
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from setuptools import Extension, setup
from setuptools._distutils.ccompiler import new_compiler
from setuptools._distutils.sysconfig import customize_compiler
from setuptools.command.build_ext import build_ext

# Stands for the compiled modules until build_ext asks mypyc for them.
PLACEHOLDER = "refractium__mypyc"

# The hot path, from the profile of accepting, identifying, dialling and
# relaying connections and datagrams. Everything else stays interpreted:
# it runs once per start or reload, or users subclass it. Left out of the
# hot path too: protocols/base.py (its runtime_checkable Probe protocol is no
# protocol class once compiled), hooks/dispatch.py (HookStats, a defaultdict
# subclass, breaks compiled), relay/stats.py and wire/proxy_protocol.py
# (workers pickle the figures, and compiled classes without a no-argument
# constructor do not unpickle; a compiled int parameter takes True for 1, so
# the codec would accept a bool port), relay/tcp.py (listening only; uvloop's
# Server.sockets is a list where the stubs say tuple), backends/health.py
# (tests replace its probe function, which compiled callers bind early).
# The Makefile reads this list too: keep one "path.py", a line.
COMPILED = (
    "addr.py",
    "abuse/cidrs.py",
    "abuse/guard.py",
    "abuse/prefixes.py",
    "backends/balancing.py",
    "protocols/clienthello.py",
    "protocols/dns.py",
    "protocols/http.py",
    "protocols/quic.py",
    "protocols/registry.py",
    "protocols/ssh.py",
    "protocols/tls.py",
    "relay/access.py",
    "relay/connection.py",
    "relay/context.py",
    "relay/datagrams.py",
    "relay/deadlines.py",
    "relay/dial.py",
    "relay/flow.py",
    "relay/gate.py",
    "relay/halfclose.py",
    "relay/idle.py",
    "relay/limits.py",
    "relay/packets.py",
    "relay/pipe.py",
    "relay/refusal.py",
    "relay/state.py",
    "relay/udp.py",
    "relay/upstream.py",
    "routing/table.py",
    "wire/rejection.py",
)


def _pure(reason: str) -> list[Extension]:
    print(f"refractium: building the pure-Python package ({reason})", file=sys.stderr)
    return []


def _extensions() -> list[Extension]:
    """A placeholder for the compiled modules, or none when they cannot be built."""
    if os.environ.get("REFRACTIUM_COMPILE", "1") == "0":
        return _pure("REFRACTIUM_COMPILE=0")
    try:
        import mypyc.build  # noqa: F401
    except ImportError as exc:
        return _pure(f"mypyc cannot be imported: {exc}")
    compiler = new_compiler()
    customize_compiler(compiler)
    executable = getattr(compiler, "compiler_so", None) or ["cc"]
    if shutil.which(executable[0]) is None:
        return _pure(f"no C compiler: {executable[0]} not found")
    # mypyc runs (and takes its time) only when the extensions are built,
    # not for the metadata or the sdist.
    return [Extension(PLACEHOLDER, [])]


class BuildExt(build_ext):
    """Generates the C code with mypyc, then compiles it, several files at a time."""

    def finalize_options(self) -> None:
        if [ext.name for ext in self.distribution.ext_modules or []] == [PLACEHOLDER]:
            from mypyc.build import mypycify

            paths = [f"src/refractium/{name}" for name in COMPILED]
            self.distribution.ext_modules = mypycify(
                paths, opt_level="3", multi_file=True, group_name="refractium"
            )
        super().finalize_options()

    def run(self) -> None:
        super().run()
        if self.inplace or getattr(self, "editable_mode", False):
            self._drop_leftovers()

    def _drop_leftovers(self) -> None:
        # In a checkout, a module compiled by an earlier build and no longer
        # in COMPILED would still shadow its source, against a shared library
        # that has it no more.
        built = {ext.name for ext in self.extensions}
        for path in Path("src", "refractium").rglob("*.so"):
            name = path.name.split(".", 1)[0]
            module = ".".join((*path.parent.relative_to("src").parts, name))
            if module not in built:
                print(f"removing {path}: no longer compiled", file=sys.stderr)
                path.unlink()

    def build_extension(self, ext: Extension) -> None:
        # One extension holds nearly all the C files (one per module):
        # compiled one after the other they take minutes, so side by side.
        jobs = os.cpu_count() or 1
        compile_files = self.compiler.compile
        if len(ext.sources) < 2 or jobs < 2:
            super().build_extension(ext)
            return

        def compile_apart(sources: list[str], *args: Any, **kwargs: Any) -> list[str]:
            with ThreadPoolExecutor(jobs) as pool:
                parts = pool.map(lambda source: compile_files([source], *args, **kwargs), sources)
                return [obj for part in parts for obj in part]

        self.compiler.compile = compile_apart  # type: ignore[method-assign]
        try:
            super().build_extension(ext)
        finally:
            self.compiler.compile = compile_files  # type: ignore[method-assign]


setup(ext_modules=_extensions(), cmdclass={"build_ext": BuildExt})

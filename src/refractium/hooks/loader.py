"""Loading packet hooks named in the configuration (``module:attr``).

``attr`` may be a hook class (instantiated with the table's other keys as
keyword arguments), a hook instance, a function made with ``define_hook``,
or a plain function ``(ctx, direction, packet)``. Every failure becomes a
:class:`HookLoadError` naming the file and the key, before anything listens.

The working directory is importable, as it is for uvicorn's ``module:app``:
``refractium`` started from a project directory finds its ``mypkg.audit``.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any

from refractium.config import HookSpec
from refractium.errors import HookLoadError
from refractium.hooks.api import ProtocolHook, define_hook


class HookCache:
    """Hook instances by spec, so a reload keeps the ones it still names.

    A hook is often stateful (an open capture file, a mirror connection):
    re-creating it on every reload would truncate or reconnect it.
    """

    def __init__(self, load: Callable[[HookSpec, str | None], Any] | None = None) -> None:
        """``load``: how to build a hook from its spec (default: a packet hook)."""
        self._load = load or load_hook
        self._by_spec: dict[tuple[str, str], Any] = {}

    def get(self, spec: HookSpec, source: str | None) -> Any:
        key = (spec.use, repr(sorted(spec.kwargs.items())))
        hook = self._by_spec.get(key)
        if hook is None:
            hook = self._by_spec[key] = self._load(spec, source)
        return hook

    def all(self) -> list[Any]:
        return list(self._by_spec.values())

    async def aclose(self) -> None:
        """Let hooks that hold resources (files, threads) release them.

        A hook's ``aclose()`` is awaited; a plain ``close()`` may block (a
        writer thread joining), so it runs in a worker thread.
        """
        for hook in self._by_spec.values():
            aclose = getattr(hook, "aclose", None)
            close = getattr(hook, "close", None)
            if callable(aclose):
                await aclose()
            elif callable(close):
                await asyncio.to_thread(close)


def load_hook(spec: HookSpec, source: str | None) -> ProtocolHook:
    """Import and build the hook ``spec`` names.

    Raises:
        HookLoadError: naming ``source`` and ``spec.key``.
    """
    obj = import_target(spec, source)
    kwargs: Mapping[str, Any] = spec.kwargs
    if isinstance(obj, type):
        try:
            hook = obj(**kwargs)
        except Exception as exc:  # the user's constructor: any error is a config error
            raise HookLoadError(source, spec.key, f"{spec.use}: {exc}") from None
    else:
        if kwargs:
            names = ", ".join(sorted(kwargs))
            raise HookLoadError(
                source, spec.key, f"{spec.use} is not a class: it takes no arguments ({names})"
            )
        if callable(getattr(obj, "on_packet", None)):
            hook = obj
        elif callable(obj):
            hook = define_hook(getattr(obj, "__name__", spec.use), obj)
        else:
            raise HookLoadError(source, spec.key, f"{spec.use} is not a packet hook")
    if not callable(getattr(hook, "on_packet", None)):
        raise HookLoadError(source, spec.key, f"{spec.use} is not a packet hook (no on_packet)")
    if not isinstance(getattr(hook, "name", None), str):
        raise HookLoadError(source, spec.key, f"{spec.use}: a hook's name must be a string")
    return hook  # type: ignore[no-any-return]


def import_target(spec: HookSpec, source: str | None) -> Any:
    """The object ``spec.use`` (``module:attr``) names; HookLoadError if none."""
    module_name, _, attr_path = spec.use.partition(":")
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise HookLoadError(source, spec.key, f"cannot import {module_name!r}: {exc}") from None
    except Exception as exc:  # the module's own import-time code failed
        message = f"importing {module_name!r} failed: {type(exc).__name__}: {exc}"
        raise HookLoadError(source, spec.key, message) from None
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise HookLoadError(
                source, spec.key, f"module {module_name!r} has no attribute {attr_path!r}"
            ) from None
    return obj

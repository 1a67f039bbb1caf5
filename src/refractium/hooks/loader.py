"""Loading packet hooks named in the configuration (``module:attr``).

``attr`` may be a hook class (instantiated with the table's other keys as
keyword arguments), a hook instance, a function made with ``define_hook``,
or a plain function ``(ctx, direction, packet)``. Every failure becomes a
:class:`HookLoadError` naming the file and the key, before anything listens.

Importing and building are :mod:`refractium.util.importer`'s (which also
says where modules are looked for); this module says what a packet hook
is. :func:`check_hook` makes the same checks without building anything,
for ``refractium check``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from refractium.config import HookSpec
from refractium.errors import HookLoadError
from refractium.hooks.api import ProtocolHook, define_hook
from refractium.util.importer import build, check_build, import_target

__all__ = ["HookCache", "check_hook", "load_hook"]

Load = Callable[[HookSpec, str | None], Any]
Check = Callable[[HookSpec, str | None], None]


class HookCache:
    """Hook instances by spec, so a reload keeps the ones it still names.

    A hook is often stateful (an open capture file, a mirror connection):
    re-creating it on every reload would truncate or reconnect it.

    With ``check_only=True`` the cache builds nothing: :meth:`get` imports
    and checks the spec with ``check`` (same errors as ``load``) and
    returns None, so validating a configuration opens no file, connects
    nowhere and starts no thread.
    """

    def __init__(
        self, load: Load | None = None, check: Check | None = None, *, check_only: bool = False
    ) -> None:
        """``load``, ``check``: how to build, check a hook from its spec (default: packet hooks)."""
        self._load = load or load_hook
        self._check = check or check_hook
        self._check_only = check_only
        self._by_spec: dict[tuple[str, str], Any] = {}

    def get(self, spec: HookSpec, source: str | None) -> Any:
        """The hook ``spec`` names, built once; None in ``check_only`` mode.

        Raises:
            HookLoadError: naming ``source`` and ``spec.key``.
        """
        if self._check_only:
            self._check(spec, source)
            return None
        key = (spec.use, repr(sorted(spec.kwargs.items())))
        hook = self._by_spec.get(key)
        if hook is None:
            hook = self._by_spec[key] = self._load(spec, source)
        return hook

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
    obj = import_target(spec.use, key=spec.key, source=source)
    built = build(obj, spec.use, spec.kwargs, key=spec.key, source=source)
    if isinstance(obj, type) or callable(getattr(built, "on_packet", None)):
        hook = built
    elif callable(built):
        hook = define_hook(getattr(built, "__name__", spec.use), built)
    else:
        raise HookLoadError(source, spec.key, f"{spec.use} is not a packet hook")
    _check_hook_object(hook, spec, source)
    return hook  # type: ignore[no-any-return]


def check_hook(spec: HookSpec, source: str | None) -> None:
    """Check what :func:`load_hook` checks, without building the hook.

    The module is imported (its import-time code runs) and a class's
    arguments are bound against its signature, but nothing is instantiated.
    For a class, the hook's ``name`` is checked only when the class itself
    sets it: one set in ``__init__`` is known to loading only.

    Raises:
        HookLoadError: as :func:`load_hook` would, for the same spec.
    """
    obj = import_target(spec.use, key=spec.key, source=source)
    check_build(obj, spec.use, spec.kwargs, key=spec.key, source=source)
    if isinstance(obj, type):
        _check_hook_object(obj, spec, source, name_known=_class_sets_name(obj))
    elif callable(getattr(obj, "on_packet", None)):
        _check_hook_object(obj, spec, source)
    elif not callable(obj):
        raise HookLoadError(source, spec.key, f"{spec.use} is not a packet hook")


def _check_hook_object(
    hook: object, spec: HookSpec, source: str | None, *, name_known: bool = True
) -> None:
    if not callable(getattr(hook, "on_packet", None)):
        raise HookLoadError(source, spec.key, f"{spec.use} is not a packet hook (no on_packet)")
    if name_known and not isinstance(getattr(hook, "name", None), str):
        raise HookLoadError(source, spec.key, f"{spec.use}: a hook's name must be a string")


def _class_sets_name(cls: type) -> bool:
    """Whether ``cls`` sets ``name`` itself, as a plain value its instances will have."""
    for klass in cls.__mro__:
        if "name" in vars(klass):
            value = vars(klass)["name"]
            # A property (or any descriptor) computes it per instance.
            return not hasattr(value, "__get__") and value is not None
    return False

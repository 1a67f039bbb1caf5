"""Importing ``module:attr`` and building an object from it, for hooks named in a config.

A configuration names user code as ``"module:attr"`` (``attr`` may be dotted),
optionally with keyword arguments. This module imports the object, and
either builds it (:func:`build`: a class is instantiated with the keyword
arguments; anything else is used as is and takes none) or only checks that
it could be built (:func:`check_build`: the arguments are bound against the
class's signature, nothing is instantiated). What kind of object it must be
(a packet hook, an endpoint hook) is for the caller to check.

Every failure is a :class:`~refractium.errors.HookLoadError` naming the file,
the key (``protocols[2].hooks[0]``) and what failed, so it reads as one line.

Where modules are looked for, after the usual ``sys.path``: the working
directory (as for uvicorn's ``module:app``), then the directory of the
configuration file that names them, so a hook module kept next to
``/etc/refractium/refractium.toml`` imports under systemd, whose working
directory is ``/``.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from collections.abc import Mapping
from typing import Any

from refractium.errors import HookLoadError

__all__ = ["build", "check_build", "import_target", "importable_from"]


def importable_from(source: str | None) -> None:
    """Put the working directory, then ``source``'s directory, on ``sys.path``.

    ``source`` is the configuration file as the user named it (None: no file).
    A directory already on the path stays where it is.
    """
    cwd = os.getcwd()
    if "" in sys.path:
        after = sys.path.index("")
    elif cwd in sys.path:
        after = sys.path.index(cwd)
    else:
        sys.path.insert(0, cwd)
        after = 0
    if source is None:
        return
    directory = os.path.dirname(os.path.abspath(source))
    if directory not in sys.path and not (directory == cwd and "" in sys.path):
        sys.path.insert(after + 1, directory)


def import_target(use: str, *, key: str, source: str | None) -> Any:
    """The object ``use`` (``module:attr``) names.

    Args:
        use: ``"module:attr"``; ``attr`` may be dotted (``pkg.mod:Class.factory``).
        key: where ``use`` is in the file (``protocols[2].hooks[0]``), for errors.
        source: the configuration file, for errors and as a place to import from.

    Raises:
        HookLoadError: the module does not import, or has no such attribute.
    """
    module_name, _, attr_path = use.partition(":")
    importable_from(source)
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise HookLoadError(source, key, f"cannot import {module_name!r}: {exc}") from None
    except Exception as exc:  # the module's own import-time code failed
        message = f"importing {module_name!r} failed: {type(exc).__name__}: {exc}"
        raise HookLoadError(source, key, message) from None
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise HookLoadError(
                source, key, f"module {module_name!r} has no attribute {attr_path!r}"
            ) from None
    return obj


def build(obj: Any, use: str, kwargs: Mapping[str, Any], *, key: str, source: str | None) -> Any:
    """``obj`` made usable: a class instantiated with ``kwargs``, anything else as is.

    Raises:
        HookLoadError: the constructor raised (any error: it is the user's
            code, fed by the user's file), or ``kwargs`` were given for
            something that is not a class.
    """
    if not isinstance(obj, type):
        _no_arguments(use, kwargs, key=key, source=source)
        return obj
    try:
        return obj(**kwargs)
    except Exception as exc:
        raise HookLoadError(source, key, f"{use}: {exc}") from None


def check_build(
    obj: Any, use: str, kwargs: Mapping[str, Any], *, key: str, source: str | None
) -> None:
    """What :func:`build` checks, without building anything.

    A class's keyword arguments are bound against its signature, and a
    mismatch gets the message its constructor would give (``Hook.__init__()
    missing 1 required positional argument: 'path'``). What only the
    constructor's code can tell (a value out of range, a file that cannot be
    created) is not checked: nothing of the user's code runs.

    Raises:
        HookLoadError: as :func:`build` would for these arguments.
    """
    if not isinstance(obj, type):
        _no_arguments(use, kwargs, key=key, source=source)
        return
    problem = _binding_problem(obj, kwargs)
    if problem is not None:
        raise HookLoadError(source, key, f"{use}: {problem}")


def _no_arguments(use: str, kwargs: Mapping[str, Any], *, key: str, source: str | None) -> None:
    if kwargs:
        names = ", ".join(sorted(kwargs))
        raise HookLoadError(source, key, f"{use} is not a class: it takes no arguments ({names})")


def _binding_problem(cls: type, kwargs: Mapping[str, Any]) -> str | None:
    """Why ``cls(**kwargs)`` would fail to bind, in CPython's words; None if it binds."""
    if not _own(cls, "__init__") and not _own(cls, "__new__"):
        return f"{cls.__name__}() takes no arguments" if kwargs else None
    try:
        signature = inspect.signature(cls)
    except (TypeError, ValueError):  # no signature to read (a C type): only building can tell
        return None
    try:
        signature.bind(**kwargs)
    except TypeError as exc:
        return _constructor_message(cls, signature, kwargs, exc)
    return None


def _constructor_message(
    cls: type, signature: inspect.Signature, kwargs: Mapping[str, Any], exc: TypeError
) -> str:
    """The TypeError text calling ``cls(**kwargs)`` gives, so check and load read alike.

    CPython reports an unexpected keyword first, then missing positional
    arguments, then missing keyword-only ones, naming the function by its
    qualified name (``Hook.__init__``).
    """
    # The signature is __new__'s when the class has its own (called first), else __init__'s.
    own = getattr(cls, "__new__" if _own(cls, "__new__") else "__init__")
    function = getattr(own, "__qualname__", cls.__name__)
    params = signature.parameters
    by_keyword = {
        name: p
        for name, p in params.items()
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    }
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    if not takes_any:
        for name in kwargs:
            if name in params and params[name].kind is inspect.Parameter.POSITIONAL_ONLY:
                return (
                    f"{function}() got some positional-only arguments passed as keyword "
                    f"arguments: {name!r}"
                )
            if name not in by_keyword:
                return f"{function}() got an unexpected keyword argument {name!r}"
    for kinds, label in (
        (
            (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD),
            "positional",
        ),
        ((inspect.Parameter.KEYWORD_ONLY,), "keyword-only"),
    ):
        missing = [
            name
            for name, p in params.items()
            if p.kind in kinds
            and p.default is inspect.Parameter.empty
            and (name not in kwargs or p.kind is inspect.Parameter.POSITIONAL_ONLY)
        ]
        if missing:
            plural = "s" if len(missing) > 1 else ""
            return (
                f"{function}() missing {len(missing)} required {label} argument{plural}: "
                f"{_names(missing)}"
            )
    return f"{function}() {exc}"


def _own(cls: type, method: str) -> bool:
    """Whether ``cls`` (or a base other than ``object``) defines ``method``."""
    return getattr(cls, method) is not getattr(object, method)


def _names(names: list[str]) -> str:
    """``'a'``, ``'a' and 'b'``, ``'a', 'b', and 'c'``: as CPython lists missing arguments."""
    quoted = [repr(name) for name in names]
    if len(quoted) == 1:
        return quoted[0]
    if len(quoted) == 2:
        return f"{quoted[0]} and {quoted[1]}"
    return ", ".join(quoted[:-1]) + f", and {quoted[-1]}"

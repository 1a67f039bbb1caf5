"""Loading the endpoint hooks ``[endpoint] hooks`` names (``module:attr``).

``attr`` may be a class (instantiated with the table's other keys as
keyword arguments) or an object with at least one endpoint hook method.
Every failure becomes a :class:`HookLoadError` naming the file and the key,
before anything listens; a packet hook listed here is pointed to where it
belongs.

Importing and building are :mod:`refractium.util.importer`'s (which also
says where modules are looked for); :func:`check_endpoint_hook` makes the
same checks without building anything, for ``refractium check``.
"""

from __future__ import annotations

from refractium.config import HookSpec
from refractium.errors import HookLoadError
from refractium.util.importer import build, check_build, import_target

__all__ = ["METHODS", "check_endpoint_hook", "load_endpoint_hook"]

#: The endpoint hook methods; an endpoint hook has at least one of them.
METHODS = ("on_incoming", "before_connect", "after_handshake", "on_close")


def load_endpoint_hook(spec: HookSpec, source: str | None) -> object:
    """Import and build the endpoint hook ``spec`` names ([endpoint] hooks).

    Raises:
        HookLoadError: naming ``source`` and ``spec.key``.
    """
    obj = import_target(spec.use, key=spec.key, source=source)
    hook: object = build(obj, spec.use, spec.kwargs, key=spec.key, source=source)
    _check_endpoint_object(hook, spec, source)
    return hook


def check_endpoint_hook(spec: HookSpec, source: str | None) -> None:
    """Check what :func:`load_endpoint_hook` checks, without building the hook.

    The module is imported (its import-time code runs) and a class's
    arguments are bound against its signature; its methods are looked for
    on the class. Nothing is instantiated.

    Raises:
        HookLoadError: as :func:`load_endpoint_hook` would, for the same spec.
    """
    obj = import_target(spec.use, key=spec.key, source=source)
    check_build(obj, spec.use, spec.kwargs, key=spec.key, source=source)
    _check_endpoint_object(obj, spec, source)


def _check_endpoint_object(hook: object, spec: HookSpec, source: str | None) -> None:
    """``hook`` (an instance, or the class it would be one of) is an endpoint hook."""
    if callable(getattr(hook, "on_packet", None)):
        raise HookLoadError(
            source, spec.key, f"{spec.use} is a packet hook: list it in a route's hooks"
        )
    if not any(callable(getattr(hook, method, None)) for method in METHODS):
        raise HookLoadError(
            source, spec.key, f"{spec.use} is not an endpoint hook (none of {', '.join(METHODS)})"
        )

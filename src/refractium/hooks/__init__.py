"""Packet hooks: observe every chunk of a connection, in order, off the relay.

See :mod:`refractium.hooks.api` for the interface and
:mod:`refractium.hooks.dispatch` for how they run.
"""

from refractium.hooks.api import (
    Direction,
    FunctionHook,
    HookContext,
    HookedProbe,
    ProtocolHook,
    define_hook,
    hook_protocol,
)

__all__ = [
    "Direction",
    "FunctionHook",
    "HookContext",
    "HookedProbe",
    "ProtocolHook",
    "define_hook",
    "hook_protocol",
]

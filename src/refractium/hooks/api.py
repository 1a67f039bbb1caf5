"""The packet-hook interface: what a hook is given and how it is declared.

A packet hook sees every chunk of a connection's traffic, in the order the
proxy read it, with its direction: plain hooks as each chunk is relayed,
coroutine hooks from a task of the connection's own (see
:mod:`refractium.hooks.dispatch`). It observes: it cannot change, delay or
drop what is relayed (except that ``overflow = "block"`` lets a slow hook
slow the connection down instead of losing packets).

```python
from refractium.hooks import ProtocolHook, HookContext, Direction

class TrafficLogger(ProtocolHook):
    name = "logger"
    def on_packet(self, ctx: HookContext, direction: Direction, packet: bytes) -> None:
        print(f"[{ctx.session_id}] {direction.name} {len(packet)} bytes from {ctx.client_addr}")
```
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, overload

from refractium.protocols.base import Probe, ProbeResult, Transport


class Direction(Enum):
    """Which way a packet was going."""

    INBOUND = "inbound"  # client -> backend
    OUTBOUND = "outbound"  # backend -> client


@dataclass(frozen=True, slots=True)
class HookContext:
    """What a hook knows about the connection a packet belongs to (read-only).

    Attributes:
        client_addr: the client's (host, port); the real client's when a
            trusted upstream sent a PROXY header.
        protocol: the matched route's protocol name (``"fallback"`` for
            traffic that went to ``fallback_tcp``).
        session_id: a random 64-bit integer, unique per connection.
        sni: the TLS server name, when there was one.
        alpn: the ALPN names the client offered.
        ja4: the client's JA4 fingerprint (TLS over TCP, QUIC), else None.
        backend_addr: the backend's (host, port).
        local_addr: the proxy's (host, port) the client connected to.
        transport: ``"tcp"`` (``"udp"`` once UDP flows are served).
    """

    client_addr: tuple[str, int]
    protocol: str
    session_id: int
    sni: str | None = None
    alpn: tuple[str, ...] = ()
    backend_addr: tuple[str, int] | None = None
    local_addr: tuple[str, int] | None = None
    transport: str = "tcp"
    ja4: str | None = None


PacketResult = None | Awaitable[None]


class ProtocolHook:
    """Base class for packet hooks; override :meth:`on_packet`.

    ``on_packet`` may be a plain method or a coroutine. It is called once
    per chunk, in order: a plain method right after the relay has passed the
    chunk on, a coroutine from the connection's own hook task (a slow
    coroutine delays only its own queue, never the relay). A hook that raises is
    logged (rate-limited) and keeps receiving the packets that follow.
    The same hook object serves every connection of its routes: keep
    per-connection state keyed by ``ctx.session_id``.
    """

    #: Shown in logs and metrics.
    name: str = "hook"

    def on_packet(self, ctx: HookContext, direction: Direction, packet: bytes) -> PacketResult:
        """One chunk of ``ctx``'s connection, going ``direction``."""
        return None

    def on_close(self, ctx: HookContext) -> PacketResult:
        """The connection has ended and every one of its packets was delivered."""
        return None


def is_async_hook(hook: ProtocolHook) -> bool:
    """Whether ``hook`` declares a coroutine ``on_packet`` or ``on_close``."""
    if getattr(hook, "is_async", False):  # define_hook's FunctionHook
        return True
    return any(
        inspect.iscoroutinefunction(getattr(hook, method, None))
        for method in ("on_packet", "on_close")
    )


PacketFunction = Callable[[HookContext, Direction, bytes], PacketResult]


class FunctionHook(ProtocolHook):
    """A hook made from a function by :func:`define_hook`."""

    def __init__(self, name: str, function: PacketFunction) -> None:
        self.name = name
        self.function = function
        self.is_async = inspect.iscoroutinefunction(function)

    def on_packet(self, ctx: HookContext, direction: Direction, packet: bytes) -> PacketResult:
        return self.function(ctx, direction, packet)

    def __repr__(self) -> str:
        return f"define_hook({self.name!r}, {self.function.__qualname__})"


@overload
def define_hook(name: str, function: PacketFunction) -> FunctionHook: ...
@overload
def define_hook(name: str) -> Callable[[PacketFunction], FunctionHook]: ...
@overload
def define_hook(name: PacketFunction) -> FunctionHook: ...


def define_hook(
    name: str | PacketFunction, function: PacketFunction | None = None
) -> FunctionHook | Callable[[PacketFunction], FunctionHook]:
    """Turn a function ``(ctx, direction, packet)`` into a hook.

    Three forms::

        audit = define_hook("audit", audit_packet)

        @define_hook("audit")
        def audit(ctx, direction, packet): ...

        @define_hook                      # named after the function
        async def audit(ctx, direction, packet): ...
    """
    if callable(name):
        return FunctionHook(name.__name__, name)
    if function is not None:
        return FunctionHook(name, function)
    label = name

    def decorate(fn: PacketFunction) -> FunctionHook:
        return FunctionHook(label, fn)

    return decorate


class HookedProbe:
    """A probe that identifies like another and carries packet hooks."""

    __slots__ = ("hooks", "inner")

    def __init__(self, inner: Probe, hooks: Sequence[ProtocolHook]) -> None:
        self.inner = inner
        self.hooks = tuple(hooks)

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def transport(self) -> Transport:
        return self.inner.transport

    @property
    def first_bytes(self) -> Any:
        return getattr(self.inner, "first_bytes", None)

    def probe(self, data: bytes) -> ProbeResult:
        return self.inner.probe(data)

    def __repr__(self) -> str:
        return f"hook_protocol({self.inner!r}, hooks={list(self.hooks)!r})"


def hook_protocol(protocol: Probe | str, hooks: Sequence[ProtocolHook]) -> HookedProbe:
    """A protocol that identifies like ``protocol`` and carries ``hooks``.

    ``protocol`` is a probe object or a built-in name (``"http"``). Give the
    result to ``Refractium.builder().route(...)``; its hooks run on every
    connection of that route, before any hooks the route's config adds.

    Raises:
        ValueError: an unknown protocol name, or a hook without ``on_packet``.
    """
    if isinstance(protocol, str):
        from refractium.protocols import registry

        found = registry.get(protocol)
        if found is None:
            raise ValueError(f"unknown protocol {protocol!r}")
        protocol = found
    for hook in hooks:
        if not callable(getattr(hook, "on_packet", None)):
            raise ValueError(f"{hook!r} is not a packet hook (no on_packet)")
    return HookedProbe(protocol, hooks)

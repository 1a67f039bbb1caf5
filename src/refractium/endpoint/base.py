"""The base class of endpoint hooks (see :mod:`refractium.endpoint` for the contract)."""

from __future__ import annotations

from collections.abc import Awaitable

from refractium.endpoint.api import Accept, ConnectionStats, HookResult
from refractium.endpoint.info import ConnectionInfo


class EndpointHooks:
    """Base class for endpoint hooks; override the methods you need.

    The defaults accept and cost nothing: the engine only calls methods a
    hook overrides.
    """

    def on_incoming(self, addr: tuple[str, int]) -> HookResult:
        """A client connected from ``addr``; nothing has been read yet."""
        return Accept

    def before_connect(self, remote_addr: tuple[str, int], conn: ConnectionInfo) -> HookResult:
        """About to dial the backend ``remote_addr`` for ``conn``."""
        return Accept

    def after_handshake(self, conn: ConnectionInfo) -> HookResult:
        """``conn`` is identified (SERVER side) or its backend connected (CLIENT side)."""
        return Accept

    def on_close(self, conn: ConnectionInfo, stats: ConnectionStats) -> Awaitable[None] | None:
        """``conn`` has ended, with these final figures."""
        return None

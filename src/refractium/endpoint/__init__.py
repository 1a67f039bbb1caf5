"""Endpoint hooks: observe or reject a connection at fixed points of its life.

Modelled on the ``EndpointHooks`` of iroh (a Rust networking library),
applied to a proxy. The client's connection to us is the incoming side
(:attr:`Side.SERVER`); our connection to a backend is the outgoing side
(:attr:`Side.CLIENT`).

```python
from refractium.endpoint import EndpointHooks, Accept, Reject, ConnectionInfo, Side

class AuthHook(EndpointHooks):
    def __init__(self, allowed: list[str]) -> None:
        self.allowed = set(allowed)

    async def after_handshake(self, conn: ConnectionInfo):
        if conn.side is Side.SERVER and conn.client_addr[0] not in self.allowed:
            return Reject(error_code=403, reason=b"not authenticated")
        return Accept
```

=====================  ===========================================  ========================
hook                   runs                                         may return
=====================  ===========================================  ========================
``on_incoming(addr)``  on accept, before any byte is read           Accept / Reject / Ignore
``after_handshake``    incoming: identified (protocol, SNI, ALPN    Accept / Reject
                       known), nothing forwarded; outgoing: the
                       backend is connected, no client byte sent
``before_connect``     before dialling a backend (each attempt)     Accept / Reject
``on_close``           once per connection, after it has ended      (observes only)
=====================  ===========================================  ========================

Every method is optional and may be plain or ``async``; returning None is
Accept. Hooks run in the order they were given and the first Reject stops
the rest. A hook that raises counts as a Reject (fail closed) and is logged.
Hooks observe; they never read or write the connection's data:
:class:`ConnectionInfo` is a read-only view, and the only thing it can give
back is a :class:`WeakHandle` whose ``upgrade()`` can close the connection.
Nothing a hook keeps holds a connection (or the engine) alive.
"""

from refractium.endpoint.api import (
    Accept,
    ConnectionEvent,
    ConnectionStats,
    EventKind,
    HookResult,
    Ignore,
    Outcome,
    Reject,
    Side,
    Verdict,
)
from refractium.endpoint.base import EndpointHooks
from refractium.endpoint.info import (
    ConnectionHandle,
    ConnectionInfo,
    ConnectionRecord,
    Figures,
    LiveConnection,
    WeakHandle,
)

__all__ = [
    "Accept",
    "ConnectionEvent",
    "ConnectionHandle",
    "ConnectionInfo",
    "ConnectionRecord",
    "ConnectionStats",
    "EndpointHooks",
    "EventKind",
    "Figures",
    "HookResult",
    "Ignore",
    "LiveConnection",
    "Outcome",
    "Reject",
    "Side",
    "Verdict",
    "WeakHandle",
]

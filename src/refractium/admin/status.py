"""The ``/status`` document: routes and their backends as the engine sees them now."""

from __future__ import annotations

from typing import Any

from refractium.admin.view import EngineView
from refractium.protocols.base import Transport


def status(engine: EngineView, uptime_s: float) -> dict[str, Any]:
    """Routes (with each backend's health and load on the transports it serves)."""
    known = {(b.transport, b.address): b for b in engine.backends()}
    routes = []
    for route in engine.routes:
        transports = [t.value for t in (Transport.TCP, Transport.UDP) if route.transport.covers(t)]
        backends = []
        for member in route.pool.members:
            address = str(member)
            seen = [known[t, address] for t in transports if (t, address) in known]
            # Up on every transport the route serves (unknown: up); load summed.
            backends.append(
                {
                    "address": address,
                    "up": all(b.up for b in seen),
                    "active": sum(b.active for b in seen),
                }
            )
        config = route.config
        routes.append(
            {
                "id": route.id,
                "name": route.name,
                "protocol": route.probe.name if route.probe is not None else None,
                "sni": list(config.sni) if config is not None else [],
                "alpn": list(config.alpn) if config is not None else [],
                "ports": list(config.ports) if config is not None else [],
                "transport": route.transport.value,
                "balance": route.pool.balance.value,
                "backends": backends,
            }
        )
    return {
        "routes": routes,
        "open_connections": engine.open_connections,
        "config": engine.config_source,
        "uptime_s": round(uptime_s, 3),
    }

"""Stand-ins for what the relay's shared pieces are handed: no sockets."""

from __future__ import annotations

from typing import Any

from refractium.addr import Address
from refractium.backends.health import HealthChecker
from refractium.config import parse_config
from refractium.endpoint.api import Verdict
from refractium.hooks.dispatch import HookStats
from refractium.relay.context import Context
from refractium.relay.snapshot import Settings, Snapshot
from refractium.routing import Route, Tables, build_tables


class FakeConn:
    """A connection as the gate and the dial plan see it."""

    def __init__(self, client: tuple[str, int] = ("192.0.2.7", 40000)) -> None:
        self.client_addr = client
        self.route: Route | None = None
        self.backend_addr: Address | None = None
        self.dial_started = 0.0
        self.closed = False
        self.rejected: list[tuple[Verdict, str]] = []
        self.bytes_in = self.bytes_out = self.packets_in = self.packets_out = 0

    def reject(self, verdict: Verdict, where: str) -> None:
        self.rejected.append((verdict, where))
        self.closed = True

    def close_by_hook(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True


class FakeBackend:
    """A transport a connect() returned."""

    def __init__(self, address: Address) -> None:
        self.address = address
        self.closed = False

    def close(self) -> None:
        self.closed = True


class RecordingHealth(HealthChecker):
    """A health checker that also keeps what it was told."""

    def __init__(self) -> None:
        super().__init__()
        self.reports: list[tuple[str, str]] = []

    def report_failure(self, address: Address, reason: str) -> None:
        self.reports.append(("failure", str(address)))
        super().report_failure(address, reason)

    def report_success(self, address: Address) -> None:
        self.reports.append(("success", str(address)))
        super().report_success(address)


def tables(routes: list[dict[str, Any]], **server: Any) -> Tables:
    config = parse_config({"server": server, "protocols": routes}, source="test")
    return build_tables(config)


def context(built: Tables, health: HealthChecker | None = None, **server: Any) -> Context:
    config = parse_config({"server": server}, source="test")
    snapshot = Snapshot(built, None, Settings.from_server(config.server))
    return Context(snapshot, health or HealthChecker(), HookStats())

"""Stand-ins for what the relay's shared pieces are handed: no sockets."""

from __future__ import annotations

from typing import Any

from refractium.addr import Address
from refractium.backends.health import HealthChecker
from refractium.config import parse_config
from refractium.endpoint.api import Verdict
from refractium.hooks.dispatch import HookStats
from refractium.protocols.base import Match
from refractium.relay.context import Context
from refractium.relay.snapshot import Settings, Snapshot
from refractium.routing import Route, Tables, build_tables


class FakeConn:
    """A connection as the gate and the dial plan see it."""

    def __init__(self, client: tuple[str, int] = ("192.0.2.7", 40000)) -> None:
        self.client_addr = client
        self.match: Match | None = None
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


class FakeSocket:
    """What ``get_extra_info("socket")`` gives: only TCP_INFO's state byte is asked."""

    ESTABLISHED, CLOSE = 1, 7

    def __init__(self) -> None:
        self.tcp_state = self.ESTABLISHED

    def getsockopt(self, level: int, option: int, size: int = 0) -> bytes:
        return bytes([self.tcp_state])

    def fileno(self) -> int:
        return -1


class FakeTransport:
    """Records what the protocol did to it."""

    def __init__(self, peer: tuple[str, int] = ("192.0.2.7", 40000)) -> None:
        self.written = bytearray()
        self.eof_written = False
        self.paused = False
        self.closed = False
        self.aborted = False
        self.peer = peer
        # None: half-close through write_eof(); a FakeSocket: TCP_INFO for the sweep.
        self.socket: FakeSocket | None = None
        self.buffered = 0  # what the test pretends is still queued
        self.limits: tuple[int | None, int | None] | None = None

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            return self.peer
        if name == "socket":
            return self.socket
        return default

    def write(self, data: bytes) -> None:
        assert not self.eof_written, "write after write_eof"
        self.written += data

    def can_write_eof(self) -> bool:
        return True

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self.limits = (high, low)

    def write_eof(self) -> None:
        self.eof_written = True

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = self.closed = True

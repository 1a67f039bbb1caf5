"""The admin HTTP API over real sockets, with curl and http.client as the clients."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import logging
import re
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from refractium import Refractium, RefractiumError
from refractium.admin import http as admin_http
from refractium.admin.server import AdminServer
from refractium.remotes import RemoteMap
from tests.kit.backends import http_backend, run

HOST = "127.0.0.1"
NO_FILE = "reload: this engine has no config file to re-read"


@dataclass(frozen=True, slots=True)
class Served:
    admin: AdminServer
    port: int  # the admin listener's
    proxy: int  # the proxy's TCP listener's


@contextlib.asynccontextmanager
async def serving(engine: Refractium, token: str | None = None) -> AsyncIterator[Served]:
    """``engine`` listening on TCP plus its admin API, both on free loopback ports."""
    (_, proxy), *_ = await engine.start_tcp()
    admin = AdminServer(engine, HOST, 0, token)
    try:
        _, port = await admin.start()
        yield Served(admin, port, proxy)
    finally:
        await admin.close()
        await engine.shutdown(0)


def builder_engine(backend: str) -> Refractium:
    return Refractium.builder().bind(HOST).port(0).route("http", backend).build()


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: dict[str, str]  # lower-cased names
    body: bytes

    def json(self) -> Any:
        assert self.headers["content-type"] == "application/json"
        assert self.body.endswith(b"}\n") and b", " not in self.body  # compact, one line
        return json.loads(self.body)


def _fetch(port: int, method: str, path: str, headers: dict[str, str]) -> Answer:
    conn = http.client.HTTPConnection(HOST, port, timeout=5)
    try:
        conn.request(method, path, headers=headers)
        response = conn.getresponse()
        head = {name.lower(): value for name, value in response.getheaders()}
        return Answer(response.status, head, response.read())
    finally:
        conn.close()


async def fetch(
    port: int, path: str, method: str = "GET", headers: dict[str, str] | None = None
) -> Answer:
    """One request with http.client (blocking, so in a thread)."""
    return await asyncio.to_thread(_fetch, port, method, path, headers or {})


async def curl(port: int, path: str, *args: str) -> Answer:
    """One request with curl; ``args`` are extra curl options."""
    done = await run(
        ["curl", "-sS", "--max-time", "5", "-D", "-", *args, f"http://{HOST}:{port}{path}"]
    )
    assert done.returncode == 0, done.err
    head, _, body = done.stdout.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Answer(int(status_line.split()[1]), headers, body)


async def through_proxy(port: int) -> bytes:
    """A GET through the proxy, answered by the backend, closed by both."""
    reader, writer = await asyncio.open_connection(HOST, port)
    writer.write(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    async with asyncio.timeout(5):
        data = await reader.read()
    writer.close()
    return data


def metric(text: str, sample: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == sample and s.labels == labels:
                return s.value
    raise AssertionError(f"no sample {sample}{labels}")


# --------------------------------------------------------------------------- /metrics


async def test_metrics_parse_and_count_a_proxied_connection() -> None:
    async with http_backend("one") as one, serving(builder_engine(one.address)) as served:
        first = await curl(served.port, "/metrics")
        assert first.status == 200
        assert first.headers["content-type"].startswith("text/plain; version=")
        accepted = "refractium_connections_accepted_total"
        assert metric(first.body.decode(), accepted) == 0

        assert (await through_proxy(served.proxy)).endswith(b"one\n")
        second = await curl(served.port, "/metrics")
        text = second.body.decode()
        assert metric(text, accepted) == 1
        assert metric(text, "refractium_routed_total", route="http") == 1
        assert metric(text, "refractium_backend_up", backend=one.address, transport="tcp") == 1


# --------------------------------------------------------------------------- /status


async def test_status_lists_routes_backends_and_health() -> None:
    async with http_backend("one") as one:
        engine = (
            Refractium.builder()
            .bind(HOST)
            .port(0)
            .route("http", [one.address, "127.0.0.1:9"], balance="least_connections")
            .build()
        )
        async with serving(engine) as served:
            status = (await fetch(served.port, "/status")).json()
    assert status["routes"] == [
        {
            "id": "http",
            "name": "http",
            "protocol": "http",
            "sni": [],
            "alpn": [],
            "ports": [],
            "transport": "tcp",
            "balance": "least_connections",
            "backends": [
                {"address": one.address, "up": True, "active": 0},
                {"address": "127.0.0.1:9", "up": True, "active": 0},
            ],
        }
    ]
    assert status["open_connections"] == 0
    assert status["config"] == "builder"
    assert 0 <= status["uptime_s"] < 60


# --------------------------------------------------------------------------- /remotes


class Snapshots(RemoteMap):
    """A RemoteMap whose snapshot() the test decides."""

    def __init__(self, entries: list[dict[str, Any]] | None) -> None:
        super().__init__()
        self.entries = entries

    def snapshot(self) -> list[dict[str, Any]]:
        if self.entries is None:
            raise ValueError("the map broke")
        return self.entries


class WithRemotes(Refractium):
    """An engine whose endpoint hooks are one RemoteMap, as one configured with it has."""

    remotes = Snapshots([])

    @property
    def endpoint_hooks(self) -> tuple[object, ...]:
        return (self.remotes,)


async def test_remotes_without_a_remote_map_is_404_with_the_fix() -> None:
    async with serving(builder_engine("127.0.0.1:9")) as served:
        answer = await fetch(served.port, "/remotes")
    assert answer.status == 404
    assert answer.json() == {
        "error": 'no RemoteMap endpoint hook is configured (add "refractium.remotes:RemoteMap"'
        " to [endpoint] hooks)"
    }


async def test_remotes_gives_the_snapshot() -> None:
    engine = WithRemotes(builder_engine("127.0.0.1:9").config)
    engine.remotes = Snapshots([{"ip": "192.0.2.1", "connections": 2}])
    async with serving(engine) as served:
        answer = await fetch(served.port, "/remotes")
    assert answer.status == 200
    assert answer.json() == {"remotes": [{"ip": "192.0.2.1", "connections": 2}]}


async def test_a_failing_handler_is_a_500_logged_with_its_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    engine = WithRemotes(builder_engine("127.0.0.1:9").config)
    engine.remotes = Snapshots(None)
    with caplog.at_level(logging.ERROR, logger="refractium.admin.server"):
        async with serving(engine) as served:
            answer = await fetch(served.port, "/remotes")
            assert (await fetch(served.port, "/status")).status == 200  # still serving
    assert answer.status == 500
    assert "error" in answer.json()
    [record] = [r for r in caplog.records if r.name == "refractium.admin.server"]
    assert record.exc_info is not None and "the map broke" in str(record.exc_info[1])


# --------------------------------------------------------------------------- token


async def test_a_token_is_required_when_configured() -> None:
    async with serving(builder_engine("127.0.0.1:9"), token="s3cret") as served:
        missing = await curl(served.port, "/status")
        wrong = await curl(served.port, "/metrics", "-H", "Authorization: Bearer s3cre")
        scheme = await curl(served.port, "/status", "-H", "Authorization: Basic s3cret")
        right = await curl(served.port, "/status", "-H", "Authorization: Bearer s3cret")
        unknown = await fetch(served.port, "/nowhere")  # no path probing without the token
    for answer in (missing, wrong, scheme, unknown):
        assert answer.status == 401
        assert answer.headers["www-authenticate"] == "Bearer"
        assert "error" in answer.json()
    assert right.status == 200
    assert right.json()["routes"][0]["name"] == "http"


# --------------------------------------------------------------------------- /reload


async def test_reload_without_a_config_file_is_409() -> None:
    async with serving(builder_engine("127.0.0.1:9")) as served:
        answer = await fetch(served.port, "/reload", "POST")
    assert answer.status == 409
    assert answer.json() == {"error": NO_FILE}


async def test_reload_rereads_the_file_and_keeps_the_routes_on_a_bad_one(tmp_path: Path) -> None:
    path = tmp_path / "refractium.toml"
    head = f'[server]\nbind = "{HOST}"\nport = 0\n[[protocols]]\nname = "http"\n'
    path.write_text(head + 'forward_to = "127.0.0.1:9"\n')
    async with serving(Refractium.from_file(path)) as served:
        status = (await fetch(served.port, "/status")).json()
        assert [r["name"] for r in status["routes"]] == ["http"]
        assert status["config"] == str(path)

        ssh = '[[protocols]]\nname = "ssh"\nforward_to = "127.0.0.1:22"\n'
        path.write_text(head + 'forward_to = "127.0.0.1:9"\n' + ssh)
        reloaded = await fetch(served.port, "/reload", "POST")
        assert reloaded.status == 200
        assert reloaded.json() == {"reloaded": True, "routes": 2}
        status = (await fetch(served.port, "/status")).json()
        assert [r["name"] for r in status["routes"]] == ["http", "ssh"]

        path.write_text(head + "forward_to = []\n")
        broken = await fetch(served.port, "/reload", "POST")
        assert broken.status == 400
        assert "protocols[0].forward_to: empty pool" in broken.json()["error"]
        status = (await fetch(served.port, "/status")).json()
        assert [r["name"] for r in status["routes"]] == ["http", "ssh"]


# --------------------------------------------------------------------------- HTTP itself


async def test_unknown_paths_and_wrong_methods() -> None:
    async with serving(builder_engine("127.0.0.1:9")) as served:
        missing = await fetch(served.port, "/nope")
        get_reload = await fetch(served.port, "/reload")
        post_metrics = await fetch(served.port, "/metrics", "POST")
        with_query = await fetch(served.port, "/status?verbose=1")
    assert missing.status == 404
    assert missing.json() == {"error": "no such endpoint: /nope"}
    assert (get_reload.status, get_reload.headers["allow"]) == (405, "POST")
    assert (post_metrics.status, post_metrics.headers["allow"]) == (405, "GET")
    assert "error" in post_metrics.json()
    assert with_query.status == 200


async def test_keep_alive_serves_two_requests_on_one_connection() -> None:
    def two_requests(port: int) -> tuple[int, int, bool]:
        conn = http.client.HTTPConnection(HOST, port, timeout=5)
        try:
            conn.request("GET", "/status")
            first = conn.getresponse()
            first.read()
            sock = conn.sock
            conn.request("GET", "/metrics")
            second = conn.getresponse()
            second.read()
            # http.client reconnects (new socket) if the server had closed.
            return first.status, second.status, sock is not None and conn.sock is sock
        finally:
            conn.close()

    async with serving(builder_engine("127.0.0.1:9")) as served:
        assert await asyncio.to_thread(two_requests, served.port) == (200, 200, True)


async def raw_exchange(port: int, data: bytes) -> bytes:
    """Send ``data`` on a plain socket; everything received until the server closes."""
    reader, writer = await asyncio.open_connection(HOST, port)
    writer.write(data)
    async with asyncio.timeout(5):
        answer = await reader.read()
    writer.close()
    return answer


async def test_malformed_http_gets_400_and_the_connection_closed() -> None:
    async with serving(builder_engine("127.0.0.1:9")) as served:
        answer = await raw_exchange(served.port, b"GARBAGE\r\n\r\n")
        # Still serving afterwards.
        assert (await fetch(served.port, "/status")).status == 200
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert b"connection: close" in answer.lower()
    assert b'{"error":"bad request: ' in answer


async def test_pipelined_requests_and_connection_close() -> None:
    two = b"GET /status HTTP/1.1\r\nHost: a\r\n\r\nGET /nope HTTP/1.1\r\nHost: a\r\n\r\n"
    close = b"GET /status HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    async with serving(builder_engine("127.0.0.1:9")) as served:
        # reader.read() returning at all shows the server closed after the last one.
        answer = await raw_exchange(served.port, two + close)
    assert re.findall(rb"HTTP/1\.1 (\d+) ", answer) == [b"200", b"404", b"200"]


async def test_a_large_body_is_refused_with_413() -> None:
    big = admin_http.MAX_BODY_BYTES + 1
    head = f"POST /reload HTTP/1.1\r\nHost: a\r\nContent-Length: {big}\r\n\r\n".encode()
    chunked = b"POST /reload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    chunk = f"{big:x}\r\n".encode() + b"x" * big + b"\r\n0\r\n\r\n"
    async with serving(builder_engine("127.0.0.1:9")) as served:
        declared = await raw_exchange(served.port, head)
        streamed = await raw_exchange(served.port, chunked + chunk)
    assert declared.startswith(b"HTTP/1.1 413 ")
    assert streamed.startswith(b"HTTP/1.1 413 ")


async def test_idle_clients_are_closed_after_the_read_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(admin_http, "READ_TIMEOUT_S", 0.2)
    async with serving(builder_engine("127.0.0.1:9")) as served:
        silent = await raw_exchange(served.port, b"")
        slow = await raw_exchange(served.port, b"GET /status HTTP/1.1\r\n")
    assert silent == b""
    assert slow == b""


async def test_close_ends_open_keep_alive_connections() -> None:
    async with serving(builder_engine("127.0.0.1:9")) as served:
        reader, writer = await asyncio.open_connection(HOST, served.port)
        writer.write(b"GET /status HTTP/1.1\r\nHost: a\r\n\r\n")
        async with asyncio.timeout(5):
            head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ")
        await served.admin.close()
        assert served.admin.address is None
        async with asyncio.timeout(5):
            rest = await reader.read()  # the body, then EOF: closed by the server
        writer.close()
    assert rest.endswith(b"}\n")
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection(HOST, served.port)


async def test_a_busy_port_is_a_one_line_error() -> None:
    with socket.socket() as taken:
        taken.bind((HOST, 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = AdminServer(builder_engine("127.0.0.1:9"), HOST, port)
        with pytest.raises(RefractiumError) as err:
            await server.start()
    assert str(err.value) == f"admin.bind 127.0.0.1:{port}: address already in use"
    assert server.address is None

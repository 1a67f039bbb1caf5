"""The dashboard over real sockets: the page, the JSON it reads, the token and its cookie."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import http.client
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from refractium import Refractium
from refractium.admin.server import AdminServer
from refractium.remotes import RemoteMap
from tests.unit.admin.test_metrics import REPLY, backend, get

HOST = "127.0.0.1"
TOKEN = "dashboard-token"
REQUEST = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"
SSH_HELLO = b"SSH-2.0-test\r\n"


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        assert self.headers["content-type"] == "application/json"
        return json.loads(self.body)


def _fetch(port: int, path: str, method: str, headers: dict[str, str]) -> Answer:
    conn = http.client.HTTPConnection(HOST, port, timeout=5)
    try:
        conn.request(method, path, headers=headers)
        response = conn.getresponse()
        head = {name.lower(): value for name, value in response.getheaders()}
        return Answer(response.status, head, response.read())
    finally:
        conn.close()


async def fetch(port: int, path: str, method: str = "GET", **headers: str) -> Answer:
    return await asyncio.to_thread(_fetch, port, path, method, headers)


@contextlib.asynccontextmanager
async def echo_server() -> AsyncIterator[int]:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
        writer.close()

    server = await asyncio.start_server(echo, HOST, 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


@dataclass(frozen=True, slots=True)
class Served:
    engine: Refractium
    admin: AdminServer
    port: int  # the admin listener's
    proxy: int  # the proxy's TCP port
    http_backend: int
    echo_backend: int


@contextlib.asynccontextmanager
async def serving(token: str | None = TOKEN, **server: Any) -> AsyncIterator[Served]:
    """Four routes (two named https) with a RemoteMap, and the admin API on free ports."""
    async with backend() as http_port, echo_server() as echo_port:
        engine = (
            Refractium.builder()
            .bind(HOST)
            .port(0)
            .option(**server)
            .route("http", f"{HOST}:{http_port}")
            .route("https", f"{HOST}:9", sni=["a.example"])
            .route("https", [f"{HOST}:9", f"{HOST}:10"], sni=["b.example"], alpn=["h2"])
            .route("ssh", f"{HOST}:{echo_port}")
            .hooks(RemoteMap())
            .build()
        )
        (_, proxy), *_ = await engine.start_tcp()
        admin = AdminServer(engine, HOST, 0, token)
        try:
            _, port = await admin.start()
            yield Served(engine, admin, port, proxy, http_port, echo_port)
        finally:
            await admin.close()
            await engine.shutdown(0)


async def until(predicate: Any, timeout: float = 5) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


async def login(port: int) -> str:
    """Open the page with ?token=; return the Cookie header to send from then on."""
    answer = await fetch(port, f"/?token={TOKEN}")
    assert answer.status == 303
    assert answer.headers["location"] == "/"
    assert answer.headers["cache-control"] == "no-store"
    set_cookie = answer.headers["set-cookie"]
    assert set_cookie.endswith("; HttpOnly; SameSite=Strict; Path=/")
    assert TOKEN not in set_cookie
    return set_cookie.split(";")[0]


async def test_the_json_the_page_reads() -> None:
    async with serving(max_connections_per_ip=2) as s:
        cookie = await login(s.port)
        for _ in range(2):
            assert (await get(s.proxy)).endswith(b"ok\n")
        # One connection held open through the ssh route, with bytes relayed.
        reader, writer = await asyncio.open_connection(HOST, s.proxy)
        payload = SSH_HELLO + b"x" * 5000
        writer.write(payload)
        assert await reader.readexactly(len(payload)) == payload
        # A second one held silent, so a third from this address is refused.
        _, silent = await asyncio.open_connection(HOST, s.proxy)
        await until(lambda: s.engine.open_connections == 2)
        refused_reader, refused = await asyncio.open_connection(HOST, s.proxy)
        refused_port = refused.get_extra_info("sockname")[1]
        assert await refused_reader.read() == b""
        refused.close()
        silent.close()
        await until(lambda: s.engine.open_connections == 1)
        s.admin.sampler.sample()
        answer = await fetch(s.port, "/dashboard.json", Cookie=cookie)
        writer.close()

    assert answer.status == 200 and answer.headers["cache-control"] == "no-store"
    doc = answer.json()
    assert doc["config"] == "builder"
    assert doc["serving"] == {"tcp": True, "udp": False}
    assert doc["open_connections"] == 1 and doc["open_flows"] == 0
    assert doc["totals"] == {"connections": 4, "flows": 0}
    routes = {r["id"]: r for r in doc["routes"]}
    assert list(routes) == ["http", "https#1", "https#2", "ssh"]
    assert routes["http"] | {"backends": None} == {
        "id": "http",
        "name": "http",
        "protocol": "http",
        "sni": [],
        "alpn": [],
        "ja4": [],
        "ports": [],
        "transport": "tcp",
        "balance": "round_robin",
        "backends": None,
        "active": 0,
        "total": 2,
        "bytes_in": 2 * len(REQUEST),
        "bytes_out": 2 * len(REPLY),
    }
    assert routes["http"]["backends"] == [
        {"address": f"{HOST}:{s.http_backend}", "up": True, "active": 0}
    ]
    assert (routes["https#1"]["name"], routes["https#1"]["sni"]) == ("https", ["a.example"])
    assert routes["https#2"]["sni"] == ["b.example"] and routes["https#2"]["alpn"] == ["h2"]
    assert [b["address"] for b in routes["https#2"]["backends"]] == [f"{HOST}:9", f"{HOST}:10"]
    # The open connection's bytes count while it is open.
    ssh = routes["ssh"]
    assert (ssh["active"], ssh["total"]) == (1, 1)
    assert ssh["bytes_in"] == ssh["bytes_out"] == len(payload)
    assert ssh["backends"] == [{"address": f"{HOST}:{s.echo_backend}", "up": True, "active": 1}]

    (rejection,) = doc["rejections"]
    assert rejection | {"at": 0} == {
        "at": 0,
        "transport": "tcp",
        "client": f"{HOST}:{refused_port}",
        "route": None,
        "code": 0,
        "reason": "max_connections_per_ip reached",
    }
    assert abs(rejection["at"] - doc["now"]) < 10
    (remote,) = doc["remotes"]
    assert remote["remote"] == HOST and remote["active"] == 1

    history = doc["history"]
    assert (history["interval_s"], history["size"]) == (1, 300)
    samples = history["samples"]
    assert samples and samples[-1]["seq"] == history["seq"]
    assert sum(sample["connections"] for sample in samples) > 0
    assert sum(sample["bytes_in"] for sample in samples) > 0
    assert samples[-1]["open_connections"] == 1


async def test_since_returns_only_new_samples() -> None:
    async with serving(token=None) as s:
        for _ in range(3):
            s.admin.sampler.sample()
        first = (await fetch(s.port, "/dashboard.json")).json()["history"]
        seq = first["seq"]
        assert seq >= 2 and [x["seq"] for x in first["samples"]][-1] == seq
        s.admin.sampler.sample()
        later = (await fetch(s.port, f"/dashboard.json?since={seq}")).json()["history"]
        nothing = (await fetch(s.port, f"/dashboard.json?since={later['seq']}")).json()
        garbage = (await fetch(s.port, "/dashboard.json?since=x1")).json()["history"]
    assert [x["seq"] for x in later["samples"]] == list(range(seq + 1, later["seq"] + 1))
    assert nothing["history"]["samples"] == []
    assert len(garbage["samples"]) >= len(first["samples"])  # read as since=0


async def test_the_page_is_self_contained_and_locked_down() -> None:
    async with serving(token=None) as s:
        page = await fetch(s.port, "/")
    assert page.status == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    text = page.body.decode()
    # Nothing loaded from anywhere: no src, no stylesheet link, no url(), no @import.
    assert not re.search(r"\bsrc\s*=|<link[^>]+stylesheet|url\(|@import", text)
    assert text.count("<script>") == 1
    policy = page.headers["content-security-policy"]
    script = text.split("<script>", 1)[1].split("</script>", 1)[0]
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in policy
    assert policy.startswith("default-src 'none';") and "connect-src 'self'" in policy
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["cache-control"] == "no-store"


async def test_token_cookie_flow_over_http() -> None:
    async with serving() as s:
        bare = await fetch(s.port, "/")
        bare_json = await fetch(s.port, "/dashboard.json")
        wrong = await fetch(s.port, "/?token=wrong")
        cookie = await login(s.port)
        kept = await fetch(s.port, f"/?since=3&token={TOKEN}")
        page = await fetch(s.port, "/", Cookie=cookie)
        data = await fetch(s.port, "/dashboard.json", Cookie=cookie)
        status = await fetch(s.port, "/status", Cookie=f"a=b; {cookie}")
        bearer = await fetch(s.port, "/dashboard.json", Authorization=f"Bearer {TOKEN}")
        forged = await fetch(s.port, "/", Cookie=f"refractium_admin={TOKEN}")
        reload = await fetch(s.port, "/reload", "POST", Cookie=cookie)

    assert bare.status == 401 and bare.headers["content-type"] == "text/html; charset=utf-8"
    assert b"?token=" in bare.body and b"Authorization: Bearer" in bare.body
    assert bare_json.status == 401
    assert bare_json.json() == {"error": "missing or wrong bearer token"}
    assert wrong.status == 401 and "set-cookie" not in wrong.headers
    assert kept.status == 303 and kept.headers["location"] == "/?since=3"
    assert page.status == 200 and b"<title>Refractium</title>" in page.body
    assert data.status == 200 and data.json()["routes"][0]["id"] == "http"
    assert status.status == 200 and bearer.status == 200
    assert forged.status == 401
    # The cookie opens pages, not the reload.
    assert reload.status == 401

"""The access log through the real command: a line per connection and UDP flow, as users read it.

Each test runs ``refractium run`` with ``[log] access = true`` and real
clients (curl, openssl, dig, raw sockets), then reads the line the
connection left: which route and backend, how it ended and why, and bytes
equal to what each side sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from refractium.protocols.base import Match
from refractium.protocols.tls import TlsProbe
from tests.kit.backends import HOST, free_port, http_backend, run, tls_backend
from tests.kit.clients import close, open_nodelay, read_all
from tests.kit.dnsserver import dns_server
from tests.kit.proxy import RunningProxy, running_proxy

ACCESS = "refractium.access: "
DENY = "tests.kit.hookmods:DenyRoute"
# key=value, the value bare or in JSON string quotes.
FIELD = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)')
NAMES = [
    "session",
    "transport",
    "client",
    "listener",
    "protocol",
    "route",
    "sni",
    "alpn",
    "ja4",
    "backend",
    "outcome",
    "reason",
    "bytes_in",
    "bytes_out",
    "identify_ms",
    "connect_ms",
    "duration_ms",
]


def parse_text(line: str) -> dict[str, str]:
    """An access line in text, as a dict of its fields (quoted values unquoted)."""
    body = line.split(ACCESS, 1)[1]
    fields = {k: json.loads(v) if v.startswith('"') else v for k, v in FIELD.findall(body)}
    assert list(fields) == NAMES, line
    return fields


def access_lines(proxy: RunningProxy) -> list[dict[str, Any]]:
    """Every access line the proxy wrote so far (text or JSON), parsed."""
    found: list[dict[str, Any]] = []
    for line in proxy.stderr_lines:
        if ACCESS in line:
            found.append(parse_text(line))
        elif line.startswith("{") and '"logger": "refractium.access"' in line:
            entry = json.loads(line)
            assert list(entry) == ["time", "level", "logger", *NAMES], line
            found.append(entry)
    return found


async def line_for(proxy: RunningProxy, **wanted: Any) -> dict[str, Any]:
    """The first access line whose fields include ``wanted`` (waits up to 5 s)."""
    async with asyncio.timeout(5):
        while True:
            for entry in access_lines(proxy):
                if all(entry.get(k) == v for k, v in wanted.items()):
                    return entry
            await asyncio.sleep(0.05)


def config(*routes: str, log: str = "", server: str = "") -> str:
    return (
        f'[server]\nbind = "{HOST}"\nport = 0\n{server}\n'
        f"[log]\naccess = true\n{log}\n" + "".join(routes)
    )


def route(name: str, to: str, *lines: str) -> str:
    body = "".join(f"{line}\n" for line in lines)
    return f'[[protocols]]\nname = "{name}"\nforward_to = "{to}"\n{body}\n'


def number(text: str) -> float:
    value = float(text)
    assert value >= 0
    return value


async def test_http_line_counts_what_each_side_sent() -> None:
    async with (
        http_backend("web") as web,
        running_proxy("run", config=config(route("http", web.address))) as proxy,
    ):
        done = await run(
            [
                "curl",
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{size_request} %{size_header} %{size_download} %{local_port}",
                f"http://{HOST}:{proxy.port}/page",
            ]
        )
        sent, header, body, port = (int(x) for x in done.out.split())
        line = await line_for(proxy, route="http")
    assert re.fullmatch(r"[0-9a-f]{16}", line["session"])
    assert line["transport"] == "tcp"
    assert line["client"] == f"{HOST}:{port}"
    assert line["listener"] == f"{HOST}:{proxy.port}"
    assert (line["protocol"], line["backend"]) == ("http", web.address)
    assert (line["sni"], line["alpn"], line["ja4"], line["reason"]) == ("-", "-", "-", "-")
    assert line["outcome"] == "relayed"
    assert int(line["bytes_in"]) == sent == len(web.received[0])
    assert int(line["bytes_out"]) == header + body
    identify, connect, total = (
        number(line[k]) for k in ("identify_ms", "connect_ms", "duration_ms")
    )
    assert identify + connect <= total < 5000


async def hello_of(client: list[str], port: int) -> bytes:
    """The first bytes ``client`` (its command, aimed at ``port``) sends a plain TCP server."""
    got: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    async def take(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.read(65536)
        if not got.done():
            got.set_result(data)
        writer.close()

    server = await asyncio.start_server(take, HOST, port)
    async with server:
        await run(client)
        return await asyncio.wait_for(got, 5)


def ja4_of(hello: bytes) -> str:
    match = TlsProbe().probe(hello)
    assert isinstance(match, Match) and match.ja4 is not None
    return match.ja4


def curl_tls(port: int, ca: Path | None = None) -> list[str]:
    verify = ["--cacert", str(ca)] if ca else ["-k"]
    return [
        "curl",
        "-s",
        "--max-time",
        "5",
        *verify,
        "--resolve",
        f"a.example:{port}:{HOST}",
        f"https://a.example:{port}/",
    ]


async def test_tls_line_in_json_has_sni_alpn_and_the_clients_ja4() -> None:
    async with (
        tls_backend("a", ["a.example"], alpn=["http/1.1"]) as tls,
        running_proxy(
            "run",
            "--log-format",
            "json",
            config=config(route("tls", tls.address, 'sni = "a.example"')),
        ) as proxy,
    ):
        done = await run(curl_tls(proxy.port, tls.ca_file))
        assert done.out == "a sni=a.example alpn=http/1.1\n"
        line = await line_for(proxy, route="tls")
        # The same curl, run again against a plain socket: its hello's fingerprint.
        other = free_port()
        expected = ja4_of(await hello_of(curl_tls(other), other))
    assert line["level"] == "info" and line["logger"] == "refractium.access"
    assert (line["sni"], line["alpn"]) == ("a.example", "h2,http/1.1")
    assert line["ja4"] == expected
    assert re.fullmatch(r"t1[23]d\d{4}h2_[0-9a-f]{12}_[0-9a-f]{12}", expected)
    assert (line["outcome"], line["reason"], line["backend"]) == ("relayed", None, tls.address)
    assert isinstance(line["bytes_in"], int) and line["bytes_in"] > 500
    assert isinstance(line["duration_ms"], float)


async def test_unidentified_garbage() -> None:
    async with (
        http_backend("web") as web,
        running_proxy("run", config=config(route("http", web.address))) as proxy,
    ):
        reader, writer = await open_nodelay(proxy.port)
        writer.write(b"\x00\x01garbage\r\n")
        assert await read_all(reader) == b""
        await close(writer)
        line = await line_for(proxy, outcome="unidentified")
    assert (line["protocol"], line["route"], line["backend"]) == ("-", "-", "-")
    assert line["reason"] == "no route matched"
    assert (line["bytes_in"], line["bytes_out"], line["connect_ms"]) == ("0", "0", "-")
    assert web.accepted == 0


async def test_a_rejection_by_an_endpoint_hook_gives_its_reason(tmp_path: Path) -> None:
    async with (
        http_backend("web") as web,
        running_proxy(
            "run",
            config=config(
                route("http", web.address),
                server=f"[endpoint]\nhooks = [{{ use = {DENY!r}, route = 'http' }}]",
            ),
        ) as proxy,
    ):
        done = await run(
            ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", f"http://{HOST}:{proxy.port}/"]
        )
        assert done.out == "403"
        line = await line_for(proxy, outcome="rejected")
    assert (line["protocol"], line["route"], line["backend"]) == ("http", "http", "-")
    assert line["reason"] == "route http"
    assert web.accepted == 0


async def test_a_dns_flow_over_udp(tmp_path: Path) -> None:
    async with (
        dns_server("192.0.2.53") as dns,
        running_proxy(
            "run",
            config=config(
                route("dns", f"{HOST}:{dns.port}", 'transport = "udp"'),
                server="udp_session_timeout_s = 0.5",
            ),
            ready=re.compile(r"listening on udp (\S+):(\d+)"),
        ) as proxy,
    ):
        done = await run(
            ["dig", f"@{HOST}", "-p", str(proxy.port), "+qr", "+time=3", "+tries=1", "www.example"]
        )
        assert "192.0.2.53" in done.out
        query = int(re.search(r"QUERY SIZE: (\d+)", done.out).group(1))  # type: ignore[union-attr]
        reply = int(re.search(r"MSG SIZE\s+rcvd: (\d+)", done.out).group(1))  # type: ignore[union-attr]
        line = await line_for(proxy, transport="udp")
    assert (line["protocol"], line["route"], line["outcome"]) == ("dns", "dns", "relayed")
    assert line["backend"] == f"{HOST}:{dns.port}"
    assert line["listener"] == f"{HOST}:{proxy.port}"
    assert (int(line["bytes_in"]), int(line["bytes_out"])) == (query, reply)


async def test_the_client_a_trusted_proxy_names() -> None:
    async with (
        http_backend("web") as web,
        running_proxy(
            "run",
            config=config(
                route("http", web.address),
                server=f'accept_proxy_protocol = true\ntrusted_proxies = ["{HOST}/32"]',
            ),
        ) as proxy,
    ):
        reader, writer = await open_nodelay(proxy.port)
        request = b"GET / HTTP/1.0\r\n\r\n"
        writer.write(b"PROXY TCP4 192.0.2.7 192.0.2.1 5555 443\r\n" + request)
        assert (await read_all(reader)).endswith(b"web\n")
        await close(writer)
        line = await line_for(proxy, route="http")
    assert line["client"] == "192.0.2.7:5555"
    assert line["listener"] == f"{HOST}:{proxy.port}"  # the proxy's own socket
    assert int(line["bytes_in"]) == len(request)  # the header is not the client's data


@contextlib.asynccontextmanager
async def admin_of(proxy: RunningProxy) -> AsyncIterator[str]:
    match = await proxy.wait_for(r"admin API listening on (http://\S+)")
    yield match.group(1).rstrip("/")


async def test_status_and_metrics_tell_three_https_routes_apart() -> None:
    async with (
        tls_backend("a", ["a.example"]) as a,
        tls_backend("b", ["b.example"]) as b,
        tls_backend("c", ["c.example"]) as c,
        running_proxy(
            "run",
            config=config(
                route("https", a.address, 'sni = "a.example"'),
                route("https", b.address, 'sni = "b.example"'),
                route("https", c.address, 'id = "catch-all"'),
            )
            + f'\n[admin]\nbind = "{HOST}:{free_port()}"\n',
        ) as proxy,
        admin_of(proxy) as admin,
    ):
        done = await run(
            [
                "curl",
                "-s",
                "--cacert",
                str(b.ca_file),
                "--resolve",
                f"b.example:{proxy.port}:{HOST}",
                f"https://b.example:{proxy.port}/",
            ]
        )
        assert done.out.startswith("b sni=b.example")
        await line_for(proxy, route="https#2")
        status = json.loads((await run(["curl", "-s", f"{admin}/status"])).out)
        metrics = (await run(["curl", "-s", f"{admin}/metrics"])).out
    assert [(r["id"], r["name"], r["sni"]) for r in status["routes"]] == [
        ("https#1", "https", ["a.example"]),
        ("https#2", "https", ["b.example"]),
        ("catch-all", "https", []),
    ]
    assert [r["backends"][0]["address"] for r in status["routes"]] == [
        a.address,
        b.address,
        c.address,
    ]
    routed = dict(re.findall(r'refractium_routed_total\{route="([^"]+)"\} (\S+)', metrics))
    assert routed == {"https#2": "1.0"}
    closed = re.findall(
        r'refractium_connections_total\{outcome="relayed",route="([^"]+)"\}', metrics
    )
    assert closed == ["https#2"]


async def test_a_ja4_route_sends_curl_one_way_and_openssl_the_other(tmp_path: Path) -> None:
    curl_port = free_port()
    curl_ja4 = ja4_of(await hello_of(curl_tls(curl_port), curl_port))
    async with (
        tls_backend("curl", ["a.example"]) as for_curl,
        tls_backend("others", ["a.example"]) as for_others,
        running_proxy(
            "run",
            config=config(
                route("tls", for_curl.address, f'ja4 = ["{curl_ja4}"]'),
                route("tls", for_others.address),
            ),
        ) as proxy,
    ):
        by_curl = await run(curl_tls(proxy.port, for_curl.ca_file))
        by_openssl = await run(
            [
                "openssl",
                "s_client",
                "-quiet",
                "-connect",
                f"{HOST}:{proxy.port}",
                "-servername",
                "a.example",
            ],
            input=b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n",
        )
        curl_line = await line_for(proxy, route="tls#1")
        openssl_line = await line_for(proxy, route="tls#2")
    assert by_curl.out.startswith("curl sni=a.example")
    assert b"others sni=a.example" in by_openssl.stdout
    assert curl_line["ja4"] == curl_ja4
    assert openssl_line["ja4"] != curl_ja4 and openssl_line["ja4"].startswith("t13d")
    assert (for_curl.handshakes, for_others.handshakes) == (1, 1)


async def test_no_access_line_without_the_setting() -> None:
    async with (
        http_backend("web") as web,
        running_proxy(
            "run",
            "--log-level",
            "debug",
            config=f'[server]\nbind = "{HOST}"\nport = 0\n' + route("http", web.address),
        ) as proxy,
    ):
        done = await run(["curl", "-s", f"http://{HOST}:{proxy.port}/"])
        assert done.out == "web\n"
        await asyncio.sleep(0.8)  # longer than the access log's flush interval
    assert not any(ACCESS in line for line in proxy.stderr_lines)

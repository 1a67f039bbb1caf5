"""Identification end to end: real clients through the proxy to real servers.

Every route is reached by a real client: curl, openssl s_client, ssh-keyscan,
and hand-driven clients that send their first flight one byte every 5 ms.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.kit.backends import banner_backend, echo_backend, http_backend, run, tls_backend
from tests.kit.clients import exchange, open_nodelay, openssl_get, read_all, send, tls_request
from tests.kit.proxy import LOCAL_TCP, running_proxy
from tests.kit.sshd import sshd_backend

BYTE_DELAY = 0.005
SSH_CLIENT_BANNER = b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n"


async def test_zero_config_http_and_real_sshd_on_one_port() -> None:
    async with (
        http_backend("web") as web,
        sshd_backend() as sshd,
        running_proxy(
            *LOCAL_TCP,
            "-f",
            f"http={web.address}",
            "-f",
            f"ssh={sshd.address}",
        ) as proxy,
    ):
        curl = await run(["curl", "-s", "--max-time", "10", f"http://127.0.0.1:{proxy.port}/"])
        assert (curl.returncode, curl.stdout) == (0, b"web\n")
        scan = await run(
            ["ssh-keyscan", "-T", "10", "-t", "ed25519", "-p", str(proxy.port), "127.0.0.1"]
        )
        assert scan.returncode == 0, scan.stderr
        assert sshd.host_key in scan.stdout.decode(), scan.stdout


async def test_sni_routes_with_curl_and_openssl() -> None:
    async with (
        tls_backend("A", ["a.example"]) as a,
        tls_backend("B", ["b.example"]) as b,
        tls_backend("W", ["x.wild.example", "deep.x.wild.example"]) as w,
    ):
        config = f"""
[[protocols]]
name = "https"
sni = "a.example"
forward_to = "{a.address}"

[[protocols]]
name = "https"
sni = ["B.Example"]
forward_to = "{b.address}"

[[protocols]]
name = "tls"
sni = ["*.wild.example"]
forward_to = "{w.address}"
"""
        async with running_proxy(*LOCAL_TCP, config=config) as proxy:
            for name, backend, tag in (("a.example", a, "A"), ("b.example", b, "B")):
                curl = await run(
                    [
                        "curl",
                        "-s",
                        "--max-time",
                        "10",
                        "--cacert",
                        str(backend.ca_file),
                        "--resolve",
                        f"{name}:{proxy.port}:127.0.0.1",
                        f"https://{name}:{proxy.port}/",
                    ]
                )
                assert curl.returncode == 0, curl.stderr
                assert curl.stdout.decode().startswith(f"{tag} sni={name} "), curl.stdout
            # Mixed case SNI (sent as typed by openssl) and a two-level wildcard match.
            for server_name, tag in (
                ("A.EXAMPLE", "A"),
                ("b.Example", "B"),
                ("deep.x.wild.example", "W"),
            ):
                reply = await openssl_get(proxy.port, server_name)
                assert f"{tag} sni=".encode() in reply.stdout, (server_name, reply)
            assert (a.accepted, b.accepted, w.accepted) == (2, 2, 1)


async def test_alpn_routes_with_openssl() -> None:
    async with (
        tls_backend("H2", ["alpn.example"], alpn=["h2"]) as h2,
        tls_backend("H1", ["alpn.example"], alpn=["http/1.1"]) as h1,
    ):
        config = f"""
[[protocols]]
name = "tls"
alpn = ["h2"]
forward_to = "{h2.address}"

[[protocols]]
name = "tls"
alpn = "http/1.1"
forward_to = "{h1.address}"
"""
        async with running_proxy(*LOCAL_TCP, config=config) as proxy:
            for alpn, tag in (("h2", b"H2 "), ("http/1.1", b"H1 ")):
                reply = await openssl_get(proxy.port, "alpn.example", alpn)
                assert tag in reply.stdout, (alpn, reply)
                assert f"alpn={alpn}".encode() in reply.stdout
        assert (h2.accepted, h1.accepted) == (1, 1)


@pytest.mark.parametrize("byte_delay", [None, BYTE_DELAY], ids=["whole", "byte-by-byte"])
async def test_every_probe_reaches_its_route(byte_delay: float | None) -> None:
    async with (
        http_backend("web") as web,
        tls_backend("TLS", ["tls.example"]) as tls,
        sshd_backend() as sshd,
        echo_backend() as patterns,
        echo_backend() as regex,
    ):
        config = f"""
[server]
peek_timeout_ms = 60000

[[protocols]]
name = "http"
forward_to = "{web.address}"

[[protocols]]
name = "tls"
forward_to = "{tls.address}"

[[protocols]]
name = "ssh"
forward_to = "{sshd.address}"

[[protocols]]
name = "mine"
patterns = ["\\\\x01\\\\x02\\\\x03", "MY_PROTO_V1"]
forward_to = "{patterns.address}"

[[protocols]]
name = "hello"
regex = '^HELLO [0-9]+\\n'
forward_to = "{regex.address}"
"""
        async with running_proxy(*LOCAL_TCP, config=config) as proxy:
            port = proxy.port
            request = b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"
            assert await exchange(port, request, byte_delay=byte_delay) == web_reply("web")
            preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
            assert await exchange(port, preface, byte_delay=byte_delay) == web_reply("web")
            assert web.received[0] == request, "the backend got the first bytes exactly"
            answer = await tls_request(port, "tls.example", byte_delay=byte_delay)
            assert answer.endswith(b"TLS sni=tls.example alpn=None\n"), answer
            reader, writer = await open_nodelay(port)
            await send(writer, SSH_CLIENT_BANNER, byte_delay=byte_delay)
            async with asyncio.timeout(10):
                assert (await reader.readline()).startswith(b"SSH-2.0-OpenSSH")
            writer.close()
            for first in (b"\x01\x02\x03binary", b"MY_PROTO_V1 hi"):
                assert await exchange(port, first, byte_delay=byte_delay) == first
            assert await exchange(port, b"HELLO 42\nthere", byte_delay=byte_delay) == (
                b"HELLO 42\nthere"
            )
        assert web.accepted == 2 and tls.handshakes == 1
        assert patterns.received == [b"\x01\x02\x03binary", b"MY_PROTO_V1 hi"]
        assert regex.received == [b"HELLO 42\nthere"]


def web_reply(tag: str) -> bytes:
    body = f"{tag}\n".encode()
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n"
        + f"Content-Length: {len(body)}\r\n".encode()
        + b"Connection: close\r\n\r\n"
        + body
    )


async def test_silent_client_reaches_on_timeout_route() -> None:
    async with (
        banner_backend(b"220 speaks first\r\n") as banner,
        http_backend("web") as web,
    ):
        config = f"""
[server]
peek_timeout_ms = 300
on_timeout = "ftpish"

[[protocols]]
name = "http"
forward_to = "{web.address}"

[[protocols]]
name = "ftpish"
patterns = ["USER "]
forward_to = "{banner.address}"
"""
        async with running_proxy(*LOCAL_TCP, config=config) as proxy:
            reader, writer = await open_nodelay(proxy.port)
            async with asyncio.timeout(10):
                assert await reader.readline() == b"220 speaks first\r\n"
            writer.close()
        assert banner.accepted == 1 and web.accepted == 0


async def test_zero_config_ssh_is_the_default_on_timeout_route() -> None:
    async with (
        sshd_backend() as sshd,
        http_backend("web") as web,
        running_proxy(
            *LOCAL_TCP,
            "-f",
            f"http={web.address}",
            "-f",
            f"ssh={sshd.address}",
        ) as proxy,
    ):
        reader, writer = await open_nodelay(proxy.port)
        # sshd speaks first: a client that only listens gets its banner
        # once peek_timeout_ms (3 s by default) has passed.
        async with asyncio.timeout(10):
            assert (await reader.readline()).startswith(b"SSH-2.0-OpenSSH")
        writer.close()


async def test_garbage_goes_to_fallback_or_is_closed() -> None:
    async with http_backend("web") as web, echo_backend() as fallback:
        routes = f'[[protocols]]\nname = "http"\nforward_to = "{web.address}"\n'
        with_fallback = f'[server]\nfallback_tcp = "{fallback.address}"\n' + routes
        async with running_proxy(*LOCAL_TCP, config=with_fallback) as p:
            assert await exchange(p.port, b"\x00\xffgarbage") == b"\x00\xffgarbage"
        async with running_proxy(*LOCAL_TCP, config=routes) as p:
            reader, writer = await open_nodelay(p.port)
            writer.write(b"\x00\xffgarbage")
            assert await read_all(reader) == b""  # closed, nothing sent back
            writer.close()
        assert fallback.accepted == 1 and web.accepted == 0


async def test_ipv6_and_ipv4_listeners_together() -> None:
    async with (
        http_backend("web") as web,
        running_proxy("tcp", "-b", "::1,127.0.0.1", "-p", "0", "-f", f"http={web.address}") as p,
    ):
        await p.wait_for(rf"listening on tcp 127\.0\.0\.1:{p.port}\b")  # the same port on both
        for url in (f"http://[::1]:{p.port}/", f"http://127.0.0.1:{p.port}/"):
            curl = await run(["curl", "-s", "-g", "--max-time", "10", url])
            assert (curl.returncode, curl.stdout) == (0, b"web\n"), url

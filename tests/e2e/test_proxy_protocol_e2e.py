"""PROXY protocol end to end: nginx reads ours; ours reads a trusted upstream's."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.kit.backends import echo_backend, free_port
from tests.kit.proxy import running_proxy

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


@contextlib.asynccontextmanager
async def nginx_proxy_protocol() -> AsyncIterator[int]:
    """Debian's nginx listening with ``proxy_protocol``, answering what the header said."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="refractium-nginx-") as tmp:
        conf = Path(tmp) / "nginx.conf"
        conf.write_text(
            f"""
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {tmp}; proxy_temp_path {tmp}; fastcgi_temp_path {tmp};
    uwsgi_temp_path {tmp}; scgi_temp_path {tmp};
    server {{
        listen 127.0.0.1:{port} proxy_protocol;
        location / {{ return 200 "$proxy_protocol_addr $proxy_protocol_port\\n"; }}
    }}
}}
"""
        )
        proc = await asyncio.create_subprocess_exec(NGINX, "-c", str(conf), "-p", tmp)
        try:
            async with asyncio.timeout(10):
                while True:
                    try:
                        _, writer = await asyncio.open_connection("127.0.0.1", port)
                        writer.close()
                        break
                    except OSError:
                        await asyncio.sleep(0.05)
            yield port
        finally:
            proc.terminate()
            await proc.wait()


async def get_via(host: str, port: int) -> tuple[str, tuple[str, int]]:
    """One HTTP request from ``host``; returns the body and our own address."""
    reader, writer = await asyncio.open_connection(host, port)
    me = writer.get_extra_info("sockname")
    writer.write(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    async with asyncio.timeout(10):
        reply = await reader.read()
    writer.close()
    return reply.split(b"\r\n\r\n", 1)[1].decode().strip(), (me[0], me[1])


@pytest.mark.parametrize("version", [1, 2])
async def test_nginx_reads_the_real_client_address(version: int) -> None:
    async with nginx_proxy_protocol() as nginx:
        config = f"""
[[protocols]]
name = "http"
proxy_protocol = {version}
forward_to = "127.0.0.1:{nginx}"
"""
        async with running_proxy("tcp", "-b", "127.0.0.1,::1", "-p", "0", config=config) as p:
            await p.wait_for(r"listening on tcp \[::1\]")  # the second listener, just after
            for host in ("127.0.0.1", "::1"):
                body, (ip, port) = await get_via(host, p.port)
                assert body == f"{ip} {port}", (host, body)


async def test_trusted_upstream_header_sets_the_client_for_limits_and_backends() -> None:
    async with echo_backend() as echo:
        config = f"""
[server]
accept_proxy_protocol = true
trusted_proxies = ["127.0.0.1/32"]
max_connections_per_ip = 2

[[protocols]]
name = "mine"
patterns = ["HELLO"]
proxy_protocol = 1
forward_to = "{echo.address}"
"""
        async with running_proxy("tcp", "-b", "127.0.0.1", "-p", "0", config=config) as p:

            async def via_upstream(client: str, v2: bool = False) -> tuple[bytes, object]:
                from refractium.wire.proxy_protocol import encode_v1, encode_v2

                encode = encode_v2 if v2 else encode_v1
                reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
                writer.write(encode((client, 40000), ("192.0.2.1", 443)) + b"HELLO\n")
                async with asyncio.timeout(5):
                    try:
                        line = await reader.readline()
                    except ConnectionResetError:
                        line = b""
                return line, writer

            # The backend sees the client named by the upstream (v1 and v2 in), not 127.0.0.1.
            first, w1 = await via_upstream("203.0.113.7")
            assert first == b"PROXY TCP4 203.0.113.7 192.0.2.1 40000 443\r\n"
            second, w2 = await via_upstream("203.0.113.7", v2=True)
            assert second.startswith(b"PROXY TCP4 203.0.113.7 ")
            # max_connections_per_ip counts 203.0.113.7, not the upstream's address.
            third, w3 = await via_upstream("203.0.113.7")
            assert third == b""
            await p.wait_for(r"refused .*203\.0\.113\.7: max_connections_per_ip reached")
            other, w4 = await via_upstream("203.0.113.8")
            assert other.startswith(b"PROXY TCP4 203.0.113.8 ")
            for writer in (w1, w2, w3, w4):
                writer.close()  # type: ignore[attr-defined]

            # A trusted upstream must send a header.
            reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
            writer.write(b"HELLO without header\n")
            async with asyncio.timeout(5):
                with contextlib.suppress(ConnectionResetError):
                    assert await reader.read() == b""
            writer.close()
            await p.wait_for("no valid PROXY header from a trusted proxy")


async def test_untrusted_sources_may_not_send_a_header() -> None:
    async with echo_backend() as echo:
        config = f"""
[server]
accept_proxy_protocol = true
trusted_proxies = ["10.0.0.0/8"]

[[protocols]]
name = "mine"
patterns = ["HELLO"]
forward_to = "{echo.address}"
"""
        async with running_proxy("tcp", "-b", "127.0.0.1", "-p", "0", config=config) as p:
            reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
            writer.write(b"PROXY TCP4 203.0.113.9 192.0.2.1 1 2\r\nHELLO\n")
            async with asyncio.timeout(5):
                with contextlib.suppress(ConnectionResetError):
                    assert await reader.read() == b""
            writer.close()
            await p.wait_for("a PROXY header from an untrusted address")
            # Plain traffic from the same untrusted address is served as usual.
            reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
            writer.write(b"HELLO plain\n")
            async with asyncio.timeout(5):
                assert await reader.readline() == b"HELLO plain\n"
            writer.close()
        assert echo.accepted == 1

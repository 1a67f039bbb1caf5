"""The pcapng writer through the proxy: tshark decodes HTTP and TLS from the file."""

from __future__ import annotations

from pathlib import Path

from tests.kit.backends import http_backend, run, tls_backend
from tests.kit.clients import openssl_get
from tests.kit.proxy import LOCAL_TCP, running_proxy


async def tshark(path: Path, display_filter: str, field: str) -> list[str]:
    done = await run(["tshark", "-r", str(path), "-Y", display_filter, "-T", "fields", "-e", field])
    assert done.returncode == 0, done.stderr
    return done.stdout.decode().split()


async def test_tshark_decodes_http_uri_and_tls_sni(tmp_path: Path) -> None:
    capture = tmp_path / "capture.pcapng"
    pcap = f'{{ use = "refractium.hooks.pcap:PcapWriter", path = "{capture}" }}'
    async with http_backend("web") as web, tls_backend("T", ["capture.example"]) as tls:
        config = f"""
[[protocols]]
name = "http"
overflow = "block"
hooks = [{pcap}]
forward_to = "{web.address}"

[[protocols]]
name = "tls"
overflow = "block"
hooks = [{pcap}]
forward_to = "{tls.address}"
"""
        async with running_proxy(*LOCAL_TCP, config=config) as proxy:
            curl = await run(["curl", "-s", f"http://127.0.0.1:{proxy.port}/captured/path?q=1"])
            assert curl.stdout == b"web\n"
            reply = await openssl_get(proxy.port, "capture.example")
            assert b"T sni=capture.example" in reply.stdout
            assert await proxy.stop() == 0  # closes the capture file
    assert await tshark(capture, "http.request", "http.request.uri") == ["/captured/path?q=1"]
    sni = await tshark(capture, "tls.handshake.type == 1", "tls.handshake.extensions_server_name")
    assert sni == ["capture.example"]

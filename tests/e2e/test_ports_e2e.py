"""Several listen ports, routes served on some of them, and only the sockets that are needed."""

from __future__ import annotations

import socket

from tests.kit.backends import free_port, http_backend, run
from tests.kit.proxy import running_proxy

HOST = "127.0.0.1"


async def curl(port: int) -> str:
    return (await run(["curl", "-s", "--max-time", "5", f"http://{HOST}:{port}/"])).out


async def test_a_list_of_ports_serves_each_and_a_route_only_where_it_says() -> None:
    p1, p2 = free_port(), free_port()
    async with http_backend("web") as web, http_backend("admin") as admin:
        config = f"""
[server]
bind = "{HOST}"
port = [{p1}, {p2}]

[[protocols]]
name = "http"
patterns = ["GET /"]
forward_to = "{admin.address}"
ports = [{p2}]

[[protocols]]
name = "http"
forward_to = "{web.address}"
"""
        async with running_proxy("run", config=config) as proxy:
            await proxy.wait_for(rf"listening on tcp 127\.0\.0\.1:{p2}\b")
            assert proxy.port == p1
            # On P2 the port's own route wins (a pattern route, earlier in the file);
            # on P1 that route does not exist, and the plain http route answers.
            assert await curl(p2) == "admin\n"
            assert await curl(p1) == "web\n"
        assert admin.accepted == 1 and web.accepted == 1


async def test_a_tcp_only_file_leaves_the_udp_port_free() -> None:
    port = free_port()
    async with http_backend("web") as web:
        config = f"""
[server]
bind = "{HOST}"
port = {port}

[[protocols]]
name = "http"
forward_to = "{web.address}"
"""
        async with running_proxy("run", config=config) as proxy:
            assert await curl(proxy.port) == "web\n"
            assert "listening on udp" not in proxy.stderr
            # An HTTP/3 server could take UDP on the same port.
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as h3:
                h3.bind((HOST, port))


async def test_a_route_naming_a_port_not_listened_on_is_a_config_error() -> None:
    async with http_backend("web") as web:
        config = f"""
[server]
port = [8080]

[[protocols]]
name = "http"
forward_to = "{web.address}"
ports = [9090]
"""
        import tempfile
        from pathlib import Path

        from tests.kit.proxy import run_cli

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "refractium.toml"
            path.write_text(config)
            result = await run_cli("check", "-c", str(path))
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"refractium: {path}: protocols[0].ports: 9090 is not a listen port (server.port: 8080)"
    )


async def test_p_may_repeat() -> None:
    p1, p2 = free_port(), free_port()
    async with http_backend("web") as web:
        args = ("tcp", "-b", HOST, "-p", str(p1), "-p", str(p2), "-f", f"http={web.address}")
        async with running_proxy(*args) as proxy:
            await proxy.wait_for(rf"listening on tcp 127\.0\.0\.1:{p2}\b")
            assert await curl(p1) == "web\n"
            assert await curl(p2) == "web\n"

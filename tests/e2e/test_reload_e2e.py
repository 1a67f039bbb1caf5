"""SIGHUP reloads the route table; a bad file keeps the running one."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from tests.kit.backends import free_port, http_backend, run
from tests.kit.proxy import LOCAL_TCP, running_proxy


async def curl(port: int) -> bytes:
    done = await run(["curl", "-s", "--max-time", "10", f"http://127.0.0.1:{port}/"])
    assert done.returncode == 0, done.stderr
    return done.stdout


async def test_sighup_swaps_routes_and_keeps_them_on_a_bad_file(tmp_path: Path) -> None:
    path = tmp_path / "refractium.toml"
    async with http_backend("one") as one, http_backend("two") as two:
        route = '[[protocols]]\nname = "http"\nforward_to = "{}"\n'
        path.write_text(route.format(one.address))
        async with running_proxy(*LOCAL_TCP, "-c", str(path), "--log-level", "info") as proxy:
            assert await curl(proxy.port) == b"one\n"
            path.write_text(route.format(two.address))
            proxy.send_signal(signal.SIGHUP)
            await proxy.wait_for("routes reloaded")
            assert await curl(proxy.port) == b"two\n"
            # Command-line overrides (-b/-p) survive the reload: no listener change.
            assert "listener change" not in proxy.stderr

            path.write_text('[[protocols]]\nname = "http"\nforward_to = []\n')
            proxy.send_signal(signal.SIGHUP)
            line = await proxy.wait_for("reload failed")
            assert "protocols[0].forward_to: empty pool" in line.string
            assert await curl(proxy.port) == b"two\n"
            assert await proxy.stop() == 0


async def test_file_change_reloads_within_3_seconds(tmp_path: Path) -> None:
    path = tmp_path / "refractium.toml"
    async with http_backend("one") as one, http_backend("two") as two:
        head = '[server]\nhot_reload = true\n[[protocols]]\nname = "http"\n'
        path.write_text(head + f'forward_to = "{one.address}"\n')
        async with running_proxy(*LOCAL_TCP, "-c", str(path)) as proxy:
            await proxy.wait_for("watching .* for changes")
            assert await curl(proxy.port) == b"one\n"
            # A connection routed before the change keeps its backend.
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            writer.write(b"GET /early HTTP/1.1\r\n")
            await asyncio.sleep(0.2)

            # Replace the file the way editors do: write aside, rename over.
            aside = tmp_path / "new.toml"
            aside.write_text(head + f'forward_to = "{two.address}"\n')
            aside.replace(path)
            started = asyncio.get_running_loop().time()
            await proxy.wait_for("routes reloaded", timeout=3)
            assert asyncio.get_running_loop().time() - started < 3
            assert await curl(proxy.port) == b"two\n"

            writer.write(b"Host: x\r\n\r\n")
            async with asyncio.timeout(10):
                assert (await reader.read()).endswith(b"one\n")
            writer.close()

            path.write_text(head + "forward_to = [\n")
            line = await proxy.wait_for("reload failed", timeout=3)
            assert "invalid TOML" in line.string
            assert await curl(proxy.port) == b"two\n"


async def test_a_listener_change_is_reported_not_applied(tmp_path: Path) -> None:
    path = tmp_path / "refractium.toml"
    first, second = free_port(), free_port()
    async with http_backend("one") as one:
        text = '[server]\nbind = "127.0.0.1"\nport = {}\n[[protocols]]\nname = "http"\n'
        text += f'forward_to = "{one.address}"\n'
        path.write_text(text.format(first))
        async with running_proxy("tcp", "-c", str(path)) as proxy:
            assert proxy.port == first
            path.write_text(text.format(second))
            proxy.send_signal(signal.SIGHUP)
            await proxy.wait_for(
                f"listener change .* needs a restart; still on 127.0.0.1 port {first}"
            )
            assert await curl(first) == b"one\n"

"""SIGHUP reloads the route table; a bad file keeps the running one."""

from __future__ import annotations

import signal
from pathlib import Path

from backends import http_backend, run
from proxy import LOCAL_TCP, running_proxy


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

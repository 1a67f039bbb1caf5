"""A config file deleted while running: the reload says it cannot be read; the routes stay."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.kit.backends import http_backend, run
from tests.kit.proxy import running_proxy

CANNOT_READ = "cannot read: No such file or directory"


async def curl(port: int) -> bytes:
    done = await run(["curl", "-s", "--max-time", "10", f"http://127.0.0.1:{port}/"])
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("implicit", [False, True], ids=["-c", "implicit"])
@pytest.mark.parametrize("hot_reload", [False, True], ids=["sighup", "watcher"])
async def test_deleted_file_keeps_the_running_routes(
    tmp_path: Path, implicit: bool, hot_reload: bool
) -> None:
    path = tmp_path / "refractium.toml"
    options = [] if implicit else ["-c", str(path)]
    # The file as the proxy names it: as given with -c, else the implicit name.
    named = "refractium.toml" if implicit else str(path)
    async with http_backend("one") as one:
        path.write_text(
            f"[server]\nhot_reload = {str(hot_reload).lower()}\n"
            f'[[protocols]]\nname = "http"\nforward_to = "{one.address}"\n'
        )
        argv = ("run", "-b", "127.0.0.1", "-p", "0", *options)
        async with running_proxy(*argv, cwd=tmp_path) as proxy:
            if hot_reload:
                await proxy.wait_for("watching .* for changes")
            assert await curl(proxy.port) == b"one\n"
            path.unlink()
            if not hot_reload:
                proxy.send_signal(signal.SIGHUP)
            line = await proxy.wait_for("reload failed", timeout=5)
            assert line.string.endswith(
                f"reload failed, keeping the running routes: {named}: {CANNOT_READ}"
            )
            assert await curl(proxy.port) == b"one\n"
            assert "no routes" not in proxy.stderr
            assert await proxy.stop() == 0

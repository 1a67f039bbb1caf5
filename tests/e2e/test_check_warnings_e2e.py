"""``refractium check`` warns about what a valid file probably did not mean; ``--strict`` fails.

Each case: ``check`` passes with the warning on stderr, ``check --strict``
exits 1 with the same line; ``run`` logs it at WARNING when it starts.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.kit.proxy import LOCAL_TCP, run_cli, running_proxy
from tests.unit.routing.test_lint import WARNED


def route(name: str, *lines: str, to: str = "127.0.0.1:9") -> str:
    body = "".join(f"{line}\n" for line in lines)
    return f'[[protocols]]\nname = "{name}"\nforward_to = "{to}"\n{body}'


# Every case the unit tests of routing/lint.py check, through the real command.
CASES = WARNED


@pytest.mark.parametrize(("toml", "warning"), CASES)
async def test_check_warns_and_strict_fails(tmp_path: Path, toml: str, warning: str) -> None:
    config = tmp_path / "refractium.toml"
    config.write_text(toml)
    code, stdout, stderr = await run_cli("check", "-c", str(config))
    assert (code, stderr) == (0, f"warning: {warning}\n")
    assert stdout.splitlines()[-1] == "config OK, 1 warning"
    code, stdout, stderr = await run_cli("check", "--strict", "-c", str(config))
    assert code == 1
    assert stderr.splitlines() == [f"warning: {warning}", "refractium: check --strict: 1 warning"]
    assert "config OK" not in stdout


async def test_the_starter_file_passes_strict(tmp_path: Path) -> None:
    assert (await run_cli("init", cwd=tmp_path)).returncode == 0
    code, stdout, stderr = await run_cli("check", "--strict", cwd=tmp_path)
    assert (code, stderr) == (0, "")
    assert stdout.splitlines()[-1] == "config OK"


async def test_run_logs_the_warnings_at_start() -> None:
    args = ("-f", "http=127.0.0.1:9", "-f", "http=127.0.0.1:10", "-f", "anyprot=127.0.0.1:11")
    async with running_proxy(*LOCAL_TCP, *args) as proxy:
        assert await proxy.stop() == 0
    # -f NAME twice makes one route with a pool: nothing is shadowed, anyprot is last.
    assert "WARNING" not in proxy.stderr
    async with running_proxy(
        *LOCAL_TCP, config=route("anyprot") + route("ssh", to="127.0.0.1:22")
    ) as proxy:
        await proxy.wait_for(
            r"WARNING refractium\.cli\.commands: protocols\[0\] \(anyprot\): matches every "
            r"client, so the routes after it never match: protocols\[1\] \(ssh\)"
        )

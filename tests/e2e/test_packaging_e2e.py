"""What ships for operators: the systemd units and the container image's files.

``systemd-analyze verify`` checks the units as systemd would load them (with
ExecStart pointing at the refractium under test, since /usr/bin/refractium
is where a package puts it, not where the tests run).
"""

from __future__ import annotations

import ast
import re
import shutil
import sys
from pathlib import Path

import pytest

from tests.kit.backends import run
from tests.kit.proxy import run_cli

ROOT = Path(__file__).resolve().parents[2]
PACKAGING = ROOT / "packaging"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd is not installed")
async def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    here = str(Path(sys.executable).parent / "refractium")
    for name in ("refractium.service", "refractium.socket"):
        text = (PACKAGING / name).read_text()
        (tmp_path / name).write_text(text.replace("/usr/bin/refractium", here))
    done = await run(
        [
            "systemd-analyze",
            "verify",
            str(tmp_path / "refractium.service"),
            str(tmp_path / "refractium.socket"),
        ]
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, b"", b"")


def test_service_unit_is_notify_and_reloads_with_sighup() -> None:
    unit = (PACKAGING / "refractium.service").read_text().splitlines()
    for line in (
        "Type=notify",
        "ExecStart=/usr/bin/refractium run -c /etc/refractium/refractium.toml",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
        "NoNewPrivileges=yes",
    ):
        assert line in unit


async def test_container_config_is_valid() -> None:
    done = await run_cli("check", "-c", str(PACKAGING / "container.toml"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.endswith("config OK\n")


def test_dockerfile_healthcheck_is_python_asking_the_admin_status() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    match = re.search(r'^    CMD \["python", "-c", "(.*)"\]$', dockerfile, re.MULTILINE)
    assert match is not None
    ast.parse(match.group(1))
    assert "http://127.0.0.1:9901/status" in match.group(1)
    assert 'bind = "127.0.0.1:9901"' in (PACKAGING / "container.toml").read_text()
    assert re.search(r"^USER 10001:10001$", dockerfile, re.MULTILINE)
    assert re.search(r"^STOPSIGNAL SIGTERM$", dockerfile, re.MULTILINE)

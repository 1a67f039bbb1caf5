"""``refractium check`` validates as ``run`` would and changes nothing on the machine."""

from __future__ import annotations

from pathlib import Path

from tests.kit.proxy import run_cli

MARKER_HOOK = '''
from pathlib import Path


class Marker:
    """A packet hook whose constructor leaves a file behind."""

    name = "marker"

    def __init__(self, path: str) -> None:
        Path(path).write_text("built")

    def on_packet(self, ctx, direction, packet):
        return None
'''


async def test_check_builds_no_hook_and_leaves_a_running_capture_alone(tmp_path: Path) -> None:
    capture = tmp_path / "live.pcapng"
    capture.write_bytes(b"\x0a\x0d\x0d\x0a" + b"a capture a running proxy is writing")
    before = capture.read_bytes()
    (tmp_path / "markerhook.py").write_text(MARKER_HOOK)
    marker = tmp_path / "built.txt"
    config = tmp_path / "refractium.toml"
    config.write_text(
        f"""
[[protocols]]
name = "http"
forward_to = "127.0.0.1:9"
hooks = [
  {{ use = "refractium.hooks.pcap:PcapWriter", path = "{capture}" }},
  {{ use = "markerhook:Marker", path = "{marker}" }},
]
"""
    )
    result = await run_cli("check", "-c", str(config), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.rstrip().endswith("config OK")
    assert capture.read_bytes() == before
    assert not marker.exists(), "check built a hook"


async def test_check_still_reports_a_hook_that_would_not_build(tmp_path: Path) -> None:
    (tmp_path / "markerhook.py").write_text(MARKER_HOOK)
    config = tmp_path / "refractium.toml"
    config.write_text(
        """
[[protocols]]
name = "http"
forward_to = "127.0.0.1:9"
hooks = [{ use = "markerhook:Marker", file = "x" }]
"""
    )
    result = await run_cli("check", "-c", str(config), cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith(
        f"refractium: {config}: protocols[0].hooks[0]: markerhook:Marker"
    )
    assert "Traceback" not in result.stderr

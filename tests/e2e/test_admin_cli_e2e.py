"""The admin API as an operator meets it: `refractium` with an [admin] table, curl."""

from __future__ import annotations

import json
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.kit.backends import free_port, http_backend, run
from tests.kit.proxy import LOCAL_TCP, run_cli, running_proxy

HOST = "127.0.0.1"


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a /metrics page, by (name, sorted labels)."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return out


async def curl(url: str, *options: str) -> tuple[int, str]:
    result = await run(["curl", "-s", "-w", "\n%{http_code}", *options, url])
    body, _, status = result.out.rpartition("\n")
    return int(status), body


async def test_metrics_and_remotes_move_with_traffic_behind_a_token() -> None:
    admin_port = free_port()
    async with http_backend("web") as web:
        config = f"""
[admin]
bind = "{HOST}:{admin_port}"
token = "s3cret"

[endpoint]
hooks = ["refractium.remotes:RemoteMap"]

[[protocols]]
name = "http"
forward_to = "{web.address}"
"""
        async with running_proxy(*LOCAL_TCP, config=config) as proxy:
            admin = f"http://{HOST}:{admin_port}"
            auth = ("-H", "Authorization: Bearer s3cret")
            assert (await curl(f"{admin}/metrics"))[0] == 401
            assert (await curl(f"{admin}/metrics", "-H", "Authorization: Bearer nope"))[0] == 401

            status, before = await curl(f"{admin}/metrics", *auth)
            assert status == 200
            for _ in range(3):
                assert (await run(["curl", "-s", f"http://{HOST}:{proxy.port}/"])).out == "web\n"
            status, after = await curl(f"{admin}/metrics", *auth)
            assert status == 200
            old, new = samples(before), samples(after)
            accepted = ("refractium_connections_accepted_total", ())
            assert new[accepted] - old.get(accepted, 0) == 3
            relayed = ("refractium_connections_total", (("outcome", "relayed"), ("route", "http")))
            assert new[relayed] == 3
            up = ("refractium_backend_up", (("backend", web.address), ("transport", "tcp")))
            assert new[up] == 1
            assert new["refractium_identify_seconds_count", ()] == 3

            status, body = await curl(f"{admin}/remotes", *auth)
            assert status == 200
            (remote,) = json.loads(body)["remotes"]
            assert remote["remote"] == HOST
            assert (remote["total"], remote["active"]) == (3, 0)
            # One client: its bytes are all the proxy relayed.
            assert remote["bytes_in"] == new["refractium_bytes_total", (("direction", "in"),)] > 0
            assert remote["bytes_out"] == new["refractium_bytes_total", (("direction", "out"),)]
            # Timed finely (uvloop's loop.time() is cached per turn, in milliseconds).
            assert 0 < remote["connect_ms"]["min"] <= remote["connect_ms"]["max"]
            assert new["refractium_identify_seconds_sum", ()] > 0

            status, body = await curl(f"{admin}/status", *auth)
            assert status == 200
            (route,) = json.loads(body)["routes"]
            assert route["name"] == "http"
            assert route["backends"] == [{"address": web.address, "up": True, "active": 0}]


async def test_the_admin_api_listens_on_loopback_unless_told_otherwise(tmp_path: Path) -> None:
    path = tmp_path / "refractium.toml"
    path.write_text('[admin]\n[[protocols]]\nname = "http"\nforward_to = "127.0.0.1:9"\n')
    result = await run_cli("check", "-c", str(path))
    assert result.returncode == 0, result.stderr
    assert "admin:        127.0.0.1:9901\n" in result.stdout


async def test_an_admin_port_in_use_is_a_one_line_error(tmp_path: Path) -> None:
    async with http_backend("web") as web:
        path = tmp_path / "refractium.toml"
        path.write_text(
            f'[admin]\nbind = "{web.address}"\n'
            f'[[protocols]]\nname = "http"\nforward_to = "{web.address}"\n'
        )
        result = await run_cli("tcp", "-c", str(path), "-b", HOST, "-p", "0")
        assert result.returncode == 1
        assert result.stderr.strip().splitlines()[-1] == (
            f"refractium: admin.bind {web.address}: address already in use"
        )


async def test_remotes_answers_with_admin_on_and_no_hook_configured() -> None:
    """[admin] alone keeps a RemoteMap: /remotes always answers."""
    admin_port = free_port()
    async with http_backend("web") as web:
        config = f"""
[admin]
bind = "{HOST}:{admin_port}"

[[protocols]]
name = "http"
forward_to = "{web.address}"
"""
        async with running_proxy(*LOCAL_TCP, config=config) as proxy:
            assert (await run(["curl", "-s", f"http://{HOST}:{proxy.port}/"])).out == "web\n"
            status, body = await curl(f"http://{HOST}:{admin_port}/remotes")
    assert status == 200
    (remote,) = json.loads(body)["remotes"]
    assert remote["remote"] == HOST

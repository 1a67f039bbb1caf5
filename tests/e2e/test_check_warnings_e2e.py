"""``refractium check`` warns about what a valid file probably did not mean; ``--strict`` fails.

Each case: ``check`` passes with the warning on stderr, ``check --strict``
exits 1 with the same line; ``run`` logs it at WARNING when it starts.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.kit.proxy import LOCAL_TCP, run_cli, running_proxy


def route(name: str, *lines: str, to: str = "127.0.0.1:9") -> str:
    body = "".join(f"{line}\n" for line in lines)
    return f'[[protocols]]\nname = "{name}"\nforward_to = "{to}"\n{body}'


CASES = [
    pytest.param(
        route("http", 'sni = ["example.com"]'),
        "protocols[0] (http): sni never matches: http carries no SNI",
        id="sni-on-http",
    ),
    pytest.param(
        route("ssh", 'alpn = ["h2"]'),
        "protocols[0] (ssh): alpn never matches: ssh carries no ALPN",
        id="alpn-on-ssh",
    ),
    pytest.param(
        route("quic", 'transport = "tcp"'),
        "protocols[0] (quic): never matches: transport is tcp, but quic runs over udp only",
        id="udp-only-over-tcp",
    ),
    pytest.param(
        route("https", 'sni = ["*.example.org"]')
        + route("tls", 'sni = ["*.example.org"]', to="127.0.0.1:10"),
        "protocols[1] (tls): never matches: protocols[0] (https) comes first with the same "
        "protocol and the same or wider filters",
        id="shadowed",
    ),
    pytest.param(
        route("anyprot") + route("ssh"),
        "protocols[0] (anyprot): matches every client, so the routes after it never match: "
        "protocols[1] (ssh); put anyprot last",
        id="anyprot-first",
    ),
    pytest.param(
        route("mine", "regex = 'HELLO'"),
        "protocols[0] (mine): regex 'HELLO' is not anchored: it never rules a client out, so "
        "other clients may wait for more bytes until peek_timeout_ms; start it with ^",
        id="unanchored-regex",
    ),
    pytest.param(
        "[server]\nport = [8080, 8443]\n" + route("http", to="127.0.0.1:8443"),
        "protocols[0] (http): forwards to 127.0.0.1:8443, the proxy's own listener "
        "0.0.0.0:8443: connections would loop",
        id="own-listener",
    ),
    pytest.param(
        'fallback_tcp = "localhost:8080"\n' + route("ssh"),
        "server.fallback_tcp: forwards to localhost:8080, the proxy's own listener "
        "0.0.0.0:8080: connections would loop",
        id="fallback-own-listener",
    ),
    pytest.param(
        "[server]\naccept_proxy_protocol = true\n" + route("http"),
        "server.accept_proxy_protocol: set, but server.trusted_proxies is empty: no upstream "
        "may send a PROXY header, so it has no effect",
        id="untrusted-proxy-protocol",
    ),
    pytest.param(
        route("http", 'overflow = "block"'),
        "protocols[0] (http): overflow is set but the route has no hooks",
        id="overflow-without-hooks",
    ),
]


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

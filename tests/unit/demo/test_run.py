"""The demo's printed commands name an address a client can connect to."""

from __future__ import annotations

from pathlib import Path

import pytest

from refractium.demo.backends import DemoBackends
from refractium.demo.run import instructions


def printed(bind: str) -> str:
    backends = DemoBackends(
        http=(bind, 40001), tls=(bind, 40002), ssh=(bind, 40003), tls_ca_pem=b""
    )
    return instructions(bind, 8080, Path("/tmp/ca.pem"), backends, 8081)


def commands(bind: str) -> list[str]:
    return [line[4:] for line in printed(bind).splitlines() if line.startswith("    ")]


@pytest.mark.parametrize(
    ("bind", "address", "where"),
    [
        ("127.0.0.1", "127.0.0.1", "127.0.0.1:8080"),
        ("192.0.2.7", "192.0.2.7", "192.0.2.7:8080"),
        ("0.0.0.0", "127.0.0.1", "127.0.0.1:8080"),
        ("::1", "::1", "[::1]:8080"),
        ("::", "::1", "[::1]:8080"),
    ],
)
def test_commands_use_a_reachable_address_in_each_tool_s_syntax(
    bind: str, address: str, where: str
) -> None:
    http, https, s_client, nc, bash_banner, bash_silent = commands(bind)
    assert http == f"curl http://{where}/"
    assert f" --resolve demo.refractium.test:8080:{where.rsplit(':', 1)[0]} " in https
    assert s_client.startswith(f"openssl s_client -quiet -connect {where} ")
    assert nc == f"printf 'SSH-2.0-me\\r\\n' | nc -N {address} 8080"
    assert bash_banner.startswith(f"bash -c 'exec 3<>/dev/tcp/{address}/8080; ")
    assert bash_silent == f"bash -c 'exec 3<>/dev/tcp/{address}/8080; head -n 1 <&3'"
    dashboard = where.rsplit(":", 1)[0] + ":8081"
    assert f"\nThe dashboard, live: http://{dashboard}/\n" in printed(bind)

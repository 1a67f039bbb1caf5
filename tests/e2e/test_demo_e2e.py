"""`refractium demo` as a newcomer runs it: the printed commands work."""

from __future__ import annotations

import re
import shlex

from tests.kit.backends import free_port, run
from tests.kit.proxy import running_proxy


async def test_demo_commands_reach_each_backend() -> None:
    async with running_proxy("demo", "-p", str(free_port())) as demo:
        await demo.wait_for(r"Stop with Ctrl-C", stdout=True)
        printed = "\n".join(demo.stdout_lines)
        assert f"127.0.0.1:{demo.port}" in printed
        commands = {
            label: line.split(label, 1)[1].strip()
            for line in printed.splitlines()
            for label in ("HTTP", "TLS")
            if line.strip().startswith(label)
        }
        http = await run([*shlex.split(commands["HTTP"]), "-s", "--max-time", "10"])
        assert http.returncode == 0 and b"demo HTTP backend" in http.stdout
        tls = await run([*shlex.split(commands["TLS"]), "-s", "--max-time", "10"])
        assert tls.returncode == 0, tls.stderr
        assert b"demo TLS backend" in tls.stdout and b"sni: demo.refractium.test" in tls.stdout
        ssh = await run(["nc", "-q", "1", "127.0.0.1", str(demo.port)], input=b"SSH-2.0-me\r\n")
        assert ssh.stdout.startswith(b"SSH-2.0-RefractiumDemo"), ssh
        assert re.search(r"backend, which speaks first", printed)
        assert await demo.stop() == 0

"""A real OpenSSH server for end-to-end tests, with a throw-away host key and user key."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import os
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from tests.kit.backends import HOST, free_port, run
from tests.kit.processes import stop_process

SSHD = "/usr/sbin/sshd"


@dataclass(eq=False)
class SshdBackend:
    """A running :func:`sshd_backend`.

    ``host_key_pub`` is the public key file's text (``"ssh-ed25519 AAAA... comment\\n"``);
    ``host_key`` is just ``"ssh-ed25519 AAAA..."``, which is what ``ssh-keyscan`` prints
    after the host. ``client_key`` is a private key authorized to log in as ``user``.
    """

    port: int
    host_key_pub: str
    host_key: str
    client_key: Path
    user: str
    directory: Path
    proc: asyncio.subprocess.Process
    log_lines: list[str]
    host: str = HOST

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def ssh_command(self, *remote: str, port: int | None = None, host: str = HOST) -> list[str]:
        """argv for a non-interactive ``ssh`` login (to ``port``, e.g. the proxy's)."""
        return [
            "ssh",
            "-F",
            "/dev/null",
            "-i",
            str(self.client_key),
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
            "-o",
            "ConnectTimeout=10",
            "-p",
            str(self.port if port is None else port),
            f"{self.user}@{host}",
            *remote,
        ]

    def keyscan_command(self, port: int | None = None, host: str = HOST) -> list[str]:
        """argv for ``ssh-keyscan`` of the ed25519 key (to ``port``, e.g. the proxy's)."""
        return ["ssh-keyscan", "-T", "10", "-t", "ed25519", "-p", str(port or self.port), host]


def _sshd_config(directory: Path, port: int, user: str) -> str:
    lines = [
        f"ListenAddress {HOST}",
        f"Port {port}",
        f"HostKey {directory / 'host_ed25519'}",
        f"PidFile {directory / 'sshd.pid'}",
        f"AuthorizedKeysFile {directory / 'authorized_keys'}",
        f"AllowUsers {user}",
        "UsePAM no",
        "StrictModes no",
        "PermitRootLogin prohibit-password",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "UseDNS no",
        "PrintMotd no",
        "MaxStartups 200:30:400",
        "LoginGraceTime 30",
        "LogLevel INFO",
    ]
    return "\n".join(lines) + "\n"


async def _collect_lines(stream: asyncio.StreamReader, sink: list[str]) -> None:
    while line := await stream.readline():
        sink.append(line.decode("utf-8", "replace").rstrip("\r\n"))


@contextlib.asynccontextmanager
async def sshd_backend() -> AsyncIterator[SshdBackend]:
    """A real OpenSSH server (``/usr/sbin/sshd -D -e``) on 127.0.0.1.

    Yields once sshd logged ``Server listening``. The port is picked by binding port 0
    and closing, so a collision is possible: startup is retried on bind failures.
    """
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # privilege separation dir
    user = getpass.getuser()
    with tempfile.TemporaryDirectory(prefix="refractium-sshd-") as tmp:
        directory = Path(tmp)
        for name, comment in (("host_ed25519", "refractium-test-host"), ("client", "client")):
            keygen = await run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", name],
                cwd=directory,
            )
            assert keygen.returncode == 0, keygen.err
        host_key_pub = (directory / "host_ed25519.pub").read_text()
        (directory / "authorized_keys").write_text((directory / "client.pub").read_text())
        for attempt in range(5):
            port = free_port()
            config = directory / "sshd_config"
            config.write_text(_sshd_config(directory, port, user))
            proc = await asyncio.create_subprocess_exec(
                SSHD,
                "-D",
                "-e",
                "-f",
                str(config),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
            )
            log_lines: list[str] = []
            assert proc.stderr is not None
            reader = asyncio.get_running_loop().create_task(_collect_lines(proc.stderr, log_lines))
            try:
                ready = await _wait_sshd(proc, log_lines, port)
            except BaseException:
                await stop_process(proc, group=True)
                reader.cancel()
                raise
            if not ready:
                await stop_process(proc, group=True)
                with contextlib.suppress(asyncio.CancelledError):
                    await reader
                log = "\n".join(log_lines)
                if "Address already in use" in log and attempt < 4:
                    continue
                raise AssertionError(f"sshd did not start (exit {proc.returncode}):\n{log}")
            break
        info = SshdBackend(
            port=port,
            host_key_pub=host_key_pub,
            host_key=" ".join(host_key_pub.split()[:2]),
            client_key=directory / "client",
            user=user,
            directory=directory,
            proc=proc,
            log_lines=log_lines,
        )
        try:
            yield info
        finally:
            await stop_process(proc, group=True)
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader


async def _wait_sshd(proc: asyncio.subprocess.Process, log: list[str], port: int) -> bool:
    """Wait until sshd listens on ``port``; False if it exited first."""
    needle = f"Server listening on {HOST} port {port}"
    async with asyncio.timeout(15):
        while True:
            if any(needle in line for line in log):
                return True
            if proc.returncode is not None:
                await asyncio.sleep(0.05)  # let the reader collect the last lines
                return False
            try:
                async with asyncio.timeout(0.05):
                    await proc.wait()
            except TimeoutError:
                pass

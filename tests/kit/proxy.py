"""Start the ``refractium`` CLI as a subprocess for end-to-end tests.

* :func:`running_proxy` runs a long-lived proxy and yields a :class:`RunningProxy`
  once it logged ``listening on tcp HOST:PORT``.
* :func:`run_cli` runs a one-shot command (``check``, ``init``...).

Both run ``sys.executable -m refractium``, so the package under test is the one
installed in the interpreter running pytest.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
import tempfile
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import NamedTuple

from tests.kit.backends import run

LISTEN_RE = re.compile(r"listening on tcp (\S+):(\d+)")

#: ``refractium tcp`` on loopback, any free port: the start of most test command lines.
LOCAL_TCP = ("tcp", "-b", "127.0.0.1", "-p", "0")
START_TIMEOUT = 15.0
_LINE_LIMIT = 1 << 20


def _environment(env: Mapping[str, str] | None) -> dict[str, str]:
    merged = dict(os.environ)
    merged["PYTHONUNBUFFERED"] = "1"
    merged["NO_COLOR"] = "1"
    if env:
        merged.update(env)
    return merged


class RunningProxy:
    """A proxy subprocess and what it has printed so far.

    ``stderr_lines``/``stdout_lines`` keep growing while background reader tasks
    consume the pipes; use :meth:`wait_for` to wait for a line.
    """

    def __init__(self, proc: asyncio.subprocess.Process, argv: list[str]) -> None:
        self.proc = proc
        self.argv = argv
        self.stderr_lines: list[str] = []
        self.stdout_lines: list[str] = []
        self.host = ""
        self.port = 0
        #: every ``(host, port)`` from a "listening on tcp" line, in order
        self.listeners: list[tuple[str, int]] = []
        self._changed = asyncio.Condition()
        self._stderr_done = False
        self._readers: list[asyncio.Task[None]] = []
        loop = asyncio.get_running_loop()
        assert proc.stderr is not None
        assert proc.stdout is not None
        self._readers.append(
            loop.create_task(self._read(proc.stderr, self.stderr_lines, stderr=True))
        )
        self._readers.append(
            loop.create_task(self._read(proc.stdout, self.stdout_lines, stderr=False))
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def stderr(self) -> str:
        return "\n".join(self.stderr_lines)

    async def _read(self, stream: asyncio.StreamReader, sink: list[str], stderr: bool) -> None:
        try:
            while True:
                try:
                    raw = await stream.readline()
                except ValueError:  # a line longer than the limit: take a piece
                    raw = await stream.read(_LINE_LIMIT)
                if not raw:
                    break
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                async with self._changed:
                    sink.append(line)
                    if stderr:
                        for match in LISTEN_RE.finditer(line):
                            self.listeners.append((match.group(1), int(match.group(2))))
                    self._changed.notify_all()
        finally:
            if stderr:
                async with self._changed:
                    self._stderr_done = True
                    self._changed.notify_all()

    async def wait_for(
        self,
        pattern: str | re.Pattern[str],
        timeout: float = 5.0,
        start: int = 0,
        stdout: bool = False,
    ) -> re.Match[str]:
        """Wait for a line (from index ``start``) matching ``pattern`` (``re.search``).

        Raises AssertionError with the output when it does not come within ``timeout``
        or the process closes its stderr (i.e. exits) first.
        """
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        lines = self.stdout_lines if stdout else self.stderr_lines
        index = start
        try:
            async with asyncio.timeout(timeout), self._changed:
                while True:
                    while index < len(lines):
                        match = regex.search(lines[index])
                        if match:
                            return match
                        index += 1
                    if self._stderr_done:
                        with contextlib.suppress(TimeoutError):
                            async with asyncio.timeout(2):
                                await self.proc.wait()
                        raise AssertionError(
                            f"refractium exited (code {self.proc.returncode}) before printing "
                            f"a line matching {regex.pattern!r}\n{self._describe()}"
                        )
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(
                f"no line matching {regex.pattern!r} within {timeout} s\n{self._describe()}"
            ) from None

    def _describe(self) -> str:
        stdout = "\n".join(self.stdout_lines)
        return f"argv: {self.argv}\n--- stderr ---\n{self.stderr}\n--- stdout ---\n{stdout}"

    def send_signal(self, sig: int) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)

    async def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        """Send ``sig`` (if still running), wait for the exit and return the exit code.

        Kills the process and raises AssertionError when it does not exit in time.
        """
        self.send_signal(sig)
        try:
            async with asyncio.timeout(timeout):
                code = await self.proc.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()
            await self._finish_readers()
            raise AssertionError(
                f"refractium did not exit within {timeout} s of signal {sig}\n{self._describe()}"
            ) from None
        await self._finish_readers()
        return code

    async def _finish_readers(self) -> None:
        # The pipes reach EOF when the process exits (unless a child inherited them).
        _, pending = await asyncio.wait(self._readers, timeout=2)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)


@contextlib.asynccontextmanager
async def running_proxy(
    *args: str,
    config: str | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = START_TIMEOUT,
    cwd: str | os.PathLike[str] | None = None,
    ready: re.Pattern[str] | None = None,
) -> AsyncIterator[RunningProxy]:
    """Run ``python -m refractium *args [-c CONFIG]`` until the block exits.

    ``config`` is TOML text written to a temporary file passed as ``-c FILE`` (last).
    ``env`` is merged over the current environment. Yields once stderr shows
    ``listening on tcp HOST:PORT`` (``.host``/``.port`` are the first such line).
    On exit the process gets SIGTERM (then SIGKILL after 5 s) if still running; if
    the block raised, the proxy's stderr is written to our stderr for the report.
    """
    with tempfile.TemporaryDirectory(prefix="refractium-proxy-") as tmp:
        argv = [sys.executable, "-m", "refractium", *args]
        if config is not None:
            path = Path(tmp) / "refractium.toml"
            path.write_text(config)
            argv += ["-c", str(path)]
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=_environment(env),
            cwd=cwd,
            limit=_LINE_LIMIT,
        )
        proxy = RunningProxy(proc, argv)
        started = failed = False
        try:
            # `ready`: another line with the host and port, e.g. UDP's for `refractium udp`.
            match = await proxy.wait_for(ready or LISTEN_RE, timeout=timeout)
            proxy.host, proxy.port = match.group(1), int(match.group(2))
            started = failed = True
            yield proxy
            failed = False
        finally:
            if proc.returncode is None:
                with contextlib.suppress(AssertionError):
                    await proxy.stop(signal.SIGTERM, timeout=5)
            else:
                await proxy._finish_readers()
            if started and failed:  # the test failed: show what the proxy said
                sys.stderr.write(f"refractium output:\n{proxy._describe()}\n")


class CliResult(NamedTuple):
    returncode: int
    stdout: str
    stderr: str


async def run_cli(
    *args: str,
    input: str | bytes | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    timeout: float = 20.0,
) -> CliResult:
    """Run ``python -m refractium *args`` to completion; output decoded as UTF-8."""
    data = input.encode() if isinstance(input, str) else input
    done = await run(
        [sys.executable, "-m", "refractium", *args],
        timeout=timeout,
        input=data,
        env=_environment(env),
        cwd=cwd,
    )
    out, err = (b.decode("utf-8", "replace") for b in (done.stdout, done.stderr))
    return CliResult(done.returncode, out, err)

"""The supervisor of ``workers = N > 1``: starts N worker processes and keeps them running.

The supervisor holds no listener and relays nothing. Each worker is a fresh
interpreter running the same command with ``--worker INDEX:PID:FD`` (no
fork of a running event loop); it reads the same file, opens the listeners
itself with ``SO_REUSEPORT`` and writes a line to its ready pipe once it
listens. The kernel spreads TCP connections over the workers' listeners
and keeps each UDP 4-tuple on one of them.

* A worker that dies is started again after a back-off (0.1 s doubling to
  10 s; back to 0.1 s after a worker lived 10 s), logged and counted. A
  worker that fails before it ever listened at start stops everything
  (exit 1): it said why on the shared stderr.
* SIGHUP, or a change of the file when ``hot_reload`` is on (watched here
  only): the file is validated once, here; a bad file is logged and no
  worker hears of it; a good one is followed by SIGHUP to every worker,
  which re-reads it (each worker then holds the same file the supervisor
  checked, and its hooks and limits stay its own).
* SIGTERM/SIGINT: forwarded to every worker, which drains within
  ``shutdown_grace_ms``; once all have exited the supervisor exits 0. A
  second signal kills the workers still draining.
* The pid file and systemd's messages (READY, RELOADING, STOPPING, STATUS)
  come from here only; workers get neither ``NOTIFY_SOCKET`` nor
  ``LISTEN_*``. SIGUSR1 reopens the log here and in every worker.
* The supervisor keeps the identity it was started with: a replacement
  worker must bind the ports again (below 1024 that needs the privilege),
  and the kernel lets a socket join a ``SO_REUSEPORT`` group only under the
  same user as the sockets already in it. Workers drop to ``server.user``
  after binding, as a single process does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from refractium.config import Config
from refractium.engine import systemd
from refractium.engine.serve import remove_pidfile, write_pidfile
from refractium.engine.watch import watch_file
from refractium.engine.worker import WorkerLink
from refractium.errors import ConfigError, RefractiumError
from refractium.util import logs
from refractium.util.tasks import spawn

log = logging.getLogger(__name__)

__all__ = ["Backoff", "Supervisor", "describe_exit"]

# Variables a worker must not see: systemd speaks to the supervisor only.
_SUPERVISOR_ONLY = ("NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES")


@dataclass(slots=True)
class Backoff:
    """How long to wait before starting a worker again: doubling, capped, forgiven.

    A worker that lived ``reset_after_s`` or longer is not crashing in a
    loop: its replacement starts after ``initial_s`` again.
    """

    initial_s: float = 0.1
    maximum_s: float = 10.0
    reset_after_s: float = 10.0
    _next_s: float = field(default=0.0, init=False)

    def delay(self, lived_s: float) -> float:
        """The wait before the next start, for a worker that ran ``lived_s`` seconds."""
        if lived_s >= self.reset_after_s or self._next_s == 0.0:
            self._next_s = self.initial_s
        delay = self._next_s
        self._next_s = min(self._next_s * 2, self.maximum_s)
        return delay


def describe_exit(returncode: int) -> str:
    """``killed by SIGKILL`` or ``exit status 1``, from a subprocess return code."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit status {returncode}"


class _Worker:
    """One worker slot: the process in it now, and its restart history."""

    __slots__ = ("backoff", "index", "proc", "ready", "started")

    def __init__(self, index: int) -> None:
        self.index = index
        self.proc: asyncio.subprocess.Process | None = None
        self.backoff = Backoff()
        self.started = 0.0
        # Set once the first process of this slot listened.
        self.ready = asyncio.Event()


class Supervisor:
    """Runs ``count`` workers until a stop signal; see the module's text."""

    def __init__(
        self,
        config: Config,
        command: Callable[[WorkerLink], Sequence[str]],
        validate: Callable[[], Config],
        *,
        pidfile: str | None = None,
    ) -> None:
        """
        Args:
            config: the validated configuration (its ``server.workers`` is the count).
            command: the argv that starts the worker ``link`` describes.
            validate: load and check the file as ``check`` does; raises
                ConfigError or RefractiumError when it is bad.
            pidfile: write the supervisor's pid here once every worker listens.
        """
        self._config = config
        self._command = command
        self._validate = validate
        self._pidfile = pidfile
        self._workers = [_Worker(index) for index in range(1, config.server.workers + 1)]
        self._stopping = asyncio.Event()
        self._failed: str | None = None
        # Set whenever a worker became ready, failed, or a stop came: start-up looks again.
        self._news = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        #: how many times a worker was started again
        self.restarts = 0

    @property
    def pids(self) -> list[int]:
        """The process ids of the workers running now."""
        return [w.proc.pid for w in self._workers if w.proc and w.proc.returncode is None]

    async def run(self) -> int:
        """Start the workers, keep them up until a stop signal; the exit status.

        Raises:
            RefractiumError: a worker could not start (its own error is on stderr).
        """
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop, sig)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        loop.add_signal_handler(signal.SIGUSR1, self._reopen_logs)
        written = False
        watching = asyncio.Event()
        try:
            log.info("starting %d workers", len(self._workers))
            for worker in self._workers:
                spawn(self._keep(worker), name=f"worker-{worker.index}", owner=self._tasks)
            if not await self._started():
                return await self._wind_down(1)
            if self._pidfile is not None:
                write_pidfile(self._pidfile)
                written = True
            path = self._config.source
            if self._config.server.hot_reload and path is not None and path != "builder":
                spawn(watch_file(path, self.reload, watching), name="watch", owner=self._tasks)
            log.info("%d workers listening (pids %s)", len(self._workers), self._pid_list())
            if systemd.notify(f"READY=1\n{self.status_line()}"):
                spawn(self._report_status(), name="status", owner=self._tasks)
            await self._stopping.wait()
            return await self._wind_down(0)
        finally:
            watching.set()
            for task in self._tasks:
                task.cancel()
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1):
                loop.remove_signal_handler(sig)
            if written and self._pidfile is not None:
                remove_pidfile(self._pidfile)
            log.info("stopped")

    async def _started(self) -> bool:
        """Wait until every worker listens (True) or one failed at start (False)."""
        while not (self._failed or self._stopping.is_set()):
            if all(w.ready.is_set() for w in self._workers):
                return True
            await self._news.wait()
            self._news.clear()
        if self._failed is not None:
            log.error("%s: stopping", self._failed)
            self._halt()
            return False
        return True

    async def _wind_down(self, status: int) -> int:
        """Wait for every worker to exit (they were signalled); return ``status``."""
        keepers = [task for task in self._tasks if task.get_name().startswith("worker-")]
        if keepers:
            await asyncio.wait(keepers)
        return status

    # -- one worker slot --------------------------------------------------

    async def _keep(self, worker: _Worker) -> None:
        """Run ``worker``'s process, and start it again each time it dies."""
        while not self._stopping.is_set():
            proc, ready_fd = await self._start(worker)
            ready = spawn(self._wait_ready(worker, ready_fd), name="ready", owner=self._tasks)
            code = await proc.wait()
            lived = time.monotonic() - worker.started
            ready.cancel()
            if self._stopping.is_set():
                exit_text = describe_exit(code)
                log.info("worker %d (pid %d) exited: %s", worker.index, proc.pid, exit_text)
                return
            if not worker.ready.is_set():
                # Never listened at start: a port in use, a bad hook... not worth retrying.
                self._failed = f"worker {worker.index} (pid {proc.pid}) failed to start: " + (
                    describe_exit(code)
                )
                self._news.set()
                return
            delay = worker.backoff.delay(lived)
            self.restarts += 1
            log.warning(
                "worker %d (pid %d) died: %s; restarting in %.1f s (%d restart%s so far)",
                worker.index,
                proc.pid,
                describe_exit(code),
                delay,
                self.restarts,
                "" if self.restarts == 1 else "s",
            )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._stopping.wait()

    async def _start(self, worker: _Worker) -> tuple[asyncio.subprocess.Process, int]:
        read_fd, write_fd = os.pipe()
        link = WorkerLink(worker.index, os.getpid(), write_fd)
        env = {k: v for k, v in os.environ.items() if k not in _SUPERVISOR_ONLY}
        try:
            proc = await asyncio.create_subprocess_exec(
                *self._command(link),
                stdin=subprocess.DEVNULL,
                pass_fds=(write_fd,),
                env=env,
            )
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)  # the worker holds its end; EOF here means it is gone
        worker.proc = proc
        worker.started = time.monotonic()
        log.info("worker %d (pid %d) started", worker.index, proc.pid)
        return proc, read_fd

    async def _wait_ready(self, worker: _Worker, fd: int) -> None:
        """Read the worker's ready line; EOF first means it exited before listening."""
        loop = asyncio.get_running_loop()
        said: asyncio.Future[bool] = loop.create_future()

        def readable() -> None:
            try:
                data = os.read(fd, 64)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not said.done():
                said.set_result(bool(data))

        os.set_blocking(fd, False)
        loop.add_reader(fd, readable)
        try:
            if await said:
                if worker.ready.is_set():
                    log.info("worker %d (pid %d) listening", worker.index, self._pid_of(worker))
                worker.ready.set()
                self._news.set()
        finally:
            loop.remove_reader(fd)
            os.close(fd)

    @staticmethod
    def _pid_of(worker: _Worker) -> int:
        return worker.proc.pid if worker.proc is not None else 0

    # -- signals ----------------------------------------------------------

    def _stop(self, sig: signal.Signals) -> None:
        if self._stopping.is_set():
            log.info("%s received again: killing %d worker(s) now", sig.name, len(self.pids))
            self._signal_all(signal.SIGKILL)
            return
        log.info("%s received: stopping %d worker(s)", sig.name, len(self.pids))
        self._halt()

    def _halt(self) -> None:
        """Stop every worker (each drains) and restart none."""
        systemd.notify("STOPPING=1")
        self._stopping.set()
        self._news.set()
        self._signal_all(signal.SIGTERM)

    def reload(self) -> None:
        """Validate the file once; if good, have every worker re-read it."""
        systemd.notify(systemd.reloading_message())
        try:
            self._config = self._validate()
        except (ConfigError, RefractiumError) as exc:
            log.error("reload failed, keeping the running routes in every worker: %s", exc)
        else:
            if self._config.server.workers != len(self._workers):
                log.warning(
                    "reload: server.workers changed to %d; a restart applies it (%d running)",
                    self._config.server.workers,
                    len(self._workers),
                )
            log.info("reload: file is valid; telling %d worker(s)", len(self.pids))
            self._signal_all(signal.SIGHUP)
        systemd.notify(f"READY=1\n{self.status_line()}")

    def _reopen_logs(self) -> None:
        logs.reopen()
        self._signal_all(signal.SIGUSR1)

    def _signal_all(self, sig: signal.Signals) -> None:
        for worker in self._workers:
            proc = worker.proc
            if proc is not None and proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(sig)

    # -- systemd ----------------------------------------------------------

    def status_line(self) -> str:
        """systemd's ``STATUS=`` line for the supervisor."""
        return f"STATUS={len(self.pids)} of {len(self._workers)} workers running, " + (
            f"{self.restarts} restarts"
        )

    def _pid_list(self) -> str:
        return ", ".join(str(pid) for pid in self.pids)

    async def _report_status(self) -> None:
        last = self.status_line()
        while True:
            await asyncio.sleep(5.0)
            line = self.status_line()
            if line != last:
                systemd.notify(line)
                last = line

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
* Limits hold for the instance: the supervisor creates the shared-memory
  tables of :mod:`refractium.shared` (open connections per client, the
  allow list of :mod:`refractium.state`) and hands them to every worker; when
  a worker dies its counts are zeroed before its replacement starts, so no
  count stays stuck.
* ``[admin]`` is served here, once for the instance
  (:class:`~refractium.admin.instance.InstanceView`): before each request
  and once a second, every worker is asked for its figures over a socket of
  its own, and they are merged. ``POST /reload`` reloads every worker.
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
import socket
import subprocess
import time
from collections.abc import Callable, Sequence

from refractium import __version__, native
from refractium.abuse.guard import Guard, Stores
from refractium.admin.figures import Figures
from refractium.config import Config
from refractium.config.model import OnError, StateBackend
from refractium.engine import systemd
from refractium.engine.instance_admin import InstanceAdmin
from refractium.engine.serve import remove_pidfile, write_pidfile
from refractium.engine.share import STATUS_BYTES, new_instance_id
from refractium.engine.slot import WorkerSlot, describe_exit
from refractium.engine.watch import watch_file
from refractium.engine.worker import WorkerLink
from refractium.errors import ConfigError, RefractiumError
from refractium.fleet.link import RedisLink
from refractium.fleet.sync import FleetSync
from refractium.routing import Route
from refractium.shared.allows import SharedAllows
from refractium.shared.bans import SharedBans
from refractium.shared.buckets import SharedBuckets
from refractium.shared.counts import SharedCounts
from refractium.shared.deadlines import SharedDeadlines
from refractium.shared.memory import SharedMemory
from refractium.shared.offences import SharedOffences
from refractium.util import logs
from refractium.util.tasks import spawn

log = logging.getLogger(__name__)

__all__ = ["Supervisor"]

# Variables a worker must not see: systemd speaks to the supervisor only.
_SUPERVISOR_ONLY = ("NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES")
#: Client addresses the allow list of ``refractium.state`` holds at once.
ALLOW_CAPACITY = 16384
#: Bans in force at once (offences, the API, hooks); beyond, the one ending first goes.
BANS_CAPACITY = 4096
#: How often the workers' word on Redis is brought up to date.
STATE_STATUS_S = 0.25

#: What the supervisor validates at start and at each reload: the
#: configuration and its routes (raises ConfigError, RefractiumError).
Validate = Callable[[], tuple[Config, tuple[Route, ...]]]


class Supervisor:
    """Runs ``count`` workers until a stop signal; see the module's text."""

    def __init__(
        self,
        checked: tuple[Config, tuple[Route, ...]],
        command: Callable[[WorkerLink], Sequence[str]],
        validate: Validate,
        *,
        pidfile: str | None = None,
    ) -> None:
        """
        Args:
            checked: the validated configuration (its ``server.workers`` is
                the count) and its routes.
            command: the argv that starts the worker ``link`` describes.
            validate: load and check the file as ``check`` does; raises
                ConfigError or RefractiumError when it is bad.
            pidfile: write the supervisor's pid here once every worker listens.
        """
        config, self.routes = checked
        self._config = config
        self._command = command
        self._validate = validate
        self._pidfile = pidfile
        self._workers = [WorkerSlot(index) for index in range(1, config.server.workers + 1)]
        server = config.server
        # Room for twice the connections the instance may hold, each from its own address.
        self.counts = SharedCounts.create(server.workers, 2 * server.max_connections)
        self.allows = SharedDeadlines.create(ALLOW_CAPACITY)
        # [limits]: sized once, from the file at start (a reload does not resize them);
        # twice max_clients, as a key must sit near its hash (pages untouched cost nothing).
        clients = 2 * config.limits.max_clients
        self.buckets = SharedBuckets.create(clients)
        self.offences = SharedOffences.create(clients)
        self.bans = SharedBans.create(BANS_CAPACITY)
        # The supervisor's own view: /bans, and the metrics of the tables.
        self.guard = Guard(config.limits, Stores(self.buckets, self.offences, self.bans))
        # 1 while the fleet's Redis answers (written here, read by the workers), and the name.
        self.status = SharedMemory.create(STATUS_BYTES, "refractium-status")
        # The instance's name in the fleet: in its messages, and in the rate counts its
        # workers add to (each with a link of its own; see refractium.fleet.rates).
        self.instance_id = new_instance_id(self.status)
        self._tables: tuple[tuple[str, int], ...] = (
            ("counts", self.counts.fd),
            ("allows", self.allows.fd),
            ("buckets", self.buckets.fd),
            ("offences", self.offences.fd),
            ("bans", self.bans.fd),
            ("status", self.status.fd),
        )
        self._fleet: FleetSync | None = None
        self._admin = InstanceAdmin(self) if config.admin.bind is not None else None
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
            log.info("refractium %s (%s) started", __version__, native.kind())
            log.info("starting %d workers", len(self._workers))
            for worker in self._workers:
                spawn(self._keep(worker), name=f"worker-{worker.index}", owner=self._tasks)
            if not await self._started():
                return await self._wind_down(1)
            if self._admin is not None:
                try:
                    await self._admin.start()
                except RefractiumError:
                    self._halt()
                    await self._wind_down(1)
                    raise
            if self._pidfile is not None:
                write_pidfile(self._pidfile)
                written = True
            path = self._config.source
            if self._config.server.hot_reload and path is not None and path != "builder":
                spawn(watch_file(path, self.reload, watching), name="watch", owner=self._tasks)
            log.info("%d workers listening (pids %s)", len(self._workers), self._pid_list())
            self._start_fleet()
            if systemd.notify(f"READY=1\n{self.status_line()}"):
                spawn(self._report_status(), name="status", owner=self._tasks)
            await self._stopping.wait()
            return await self._wind_down(0)
        finally:
            watching.set()
            if self._admin is not None:
                await self._admin.close()
            for task in self._tasks:
                task.cancel()
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1):
                loop.remove_signal_handler(sig)
            if written and self._pidfile is not None:
                remove_pidfile(self._pidfile)
            for worker in self._workers:
                worker.close_channel()
            if self._fleet is not None:
                await self._fleet.close()
            for table in (self.counts, self.allows, self.buckets, self.offences, self.bans):
                table.close()
            self.status.close()
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

    async def _keep(self, worker: WorkerSlot) -> None:
        """Run ``worker``'s process, and start it again each time it dies."""
        while not self._stopping.is_set():
            proc, ready_fd = await self._start(worker)
            ready = spawn(self._wait_ready(worker, ready_fd), name="ready", owner=self._tasks)
            code = await proc.wait()
            lived = time.monotonic() - worker.started
            ready.cancel()
            self._gone(worker, proc.pid)
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

    def _start_fleet(self) -> None:
        """``[state] backend = "redis"``: the instance's bans and allows kept in step here."""
        state = self._config.state
        if state.backend is not StateBackend.REDIS:
            return
        link = RedisLink(state.url, state.prefix)
        self._fleet = FleetSync(link, self.bans, SharedAllows(self.allows), origin=self.instance_id)
        self.guard.follow_state(lambda: link.up, state.on_error is OnError.CLOSED)
        self._fleet.start()
        spawn(self._tell_state(link), name="state-status", owner=self._tasks)

    async def _tell_state(self, link: RedisLink) -> None:
        """Keep the workers' word on Redis current (they refuse by it with on_error closed)."""
        words = self.status.words
        while True:
            words[0] = int(link.up)
            await asyncio.sleep(STATE_STATUS_S)

    def _gone(self, worker: WorkerSlot, pid: int) -> None:
        """A worker process exited: release what it held, keep what it counted."""
        # Before a replacement can start: its connections are closed, so is their count.
        self.counts.zero_column(worker.index - 1)
        worker.close_channel()
        if self._admin is not None:
            self._admin.view.worker_gone(pid)

    async def _start(self, worker: WorkerSlot) -> tuple[asyncio.subprocess.Process, int]:
        read_fd, write_fd = os.pipe()
        ours, theirs = socket.socketpair()
        link = WorkerLink(worker.index, os.getpid(), write_fd, theirs.fileno(), self._tables)
        env = {k: v for k, v in os.environ.items() if k not in _SUPERVISOR_ONLY}
        try:
            proc = await asyncio.create_subprocess_exec(
                *self._command(link),
                stdin=subprocess.DEVNULL,
                pass_fds=(write_fd, theirs.fileno(), *(fd for _, fd in self._tables)),
                env=env,
            )
        except BaseException:
            os.close(read_fd)
            ours.close()
            raise
        finally:
            os.close(write_fd)  # the worker holds its end; EOF here means it is gone
            theirs.close()
        worker.channel = await asyncio.open_connection(sock=ours)
        worker.proc = proc
        worker.started = time.monotonic()
        log.info("worker %d (pid %d) started", worker.index, proc.pid)
        return proc, read_fd

    async def _wait_ready(self, worker: WorkerSlot, fd: int) -> None:
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
    def _pid_of(worker: WorkerSlot) -> int:
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
        """Validate the file once; if good, have every worker re-read it (errors logged)."""
        try:
            self.reload_checked()
        except (ConfigError, RefractiumError) as exc:
            log.error("reload failed, keeping the running routes in every worker: %s", exc)

    def reload_checked(self) -> tuple[Route, ...]:
        """Validate the file once; if good, have every worker re-read it; the new routes.

        Raises:
            ConfigError, RefractiumError: the file is bad; no worker heard of it.
        """
        systemd.notify(systemd.reloading_message())
        try:
            self._config, self.routes = self._validate()
        finally:
            systemd.notify(f"READY=1\n{self.status_line()}")
        self.guard.configure(self._config.limits)
        if self._config.server.workers != len(self._workers):
            log.warning(
                "reload: server.workers changed to %d; a restart applies it (%d running)",
                self._config.server.workers,
                len(self._workers),
            )
        log.info("reload: file is valid; telling %d worker(s)", len(self.pids))
        self._signal_all(signal.SIGHUP)
        return self.routes

    async def figures(self) -> dict[int, Figures]:
        """Every running worker's figures now, by pid (those that answered)."""
        answers = await asyncio.gather(*(worker.figures() for worker in self._workers))
        return {pid: figures for pid, figures in answers if figures is not None}

    @property
    def config(self) -> Config:
        """The configuration last validated."""
        return self._config

    def workers_status(self) -> list[dict[str, object]]:
        """One row per worker slot, for ``/status``."""
        return [
            {
                "index": w.index,
                "pid": w.proc.pid if w.proc is not None and w.proc.returncode is None else None,
                "running": w.proc is not None and w.proc.returncode is None,
            }
            for w in self._workers
        ]

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

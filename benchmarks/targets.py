"""What the benchmarks measure: the targets (direct, Refractium, HAProxy, sslh)
and the backends behind them, each started on a free loopback port.

Every process inherits the harness's CPU affinity (``run.py`` pins itself to
one CPU before starting anything), so client, proxy and backend share a core.
"""

from __future__ import annotations

import contextlib
import os
import random
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from abc import ABC, abstractmethod
from pathlib import Path

HERE = Path(__file__).resolve().parent
HOST = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- small helpers -----------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def connection_budget() -> int:
    """How many relayed connections the open-file limit allows (two descriptors each)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return max(1000, (soft - 100) // 2)


def is_listening(port: int) -> bool:
    """Whether something listens on 127.0.0.1:port (from /proc/net/tcp, no connection made)."""
    want = f"0100007F:{port:04X}"
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            if fields[1] == want and fields[3] == "0A":
                return True
    return False


def wait_listening(port: int, proc: subprocess.Popen[bytes] | None, what: str) -> None:
    deadline = time.monotonic() + 15
    while not is_listening(port):
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before listening")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} does not listen on {HOST}:{port}")
        time.sleep(0.02)


def descendants(pid: int) -> list[int]:
    """``pid`` and its live descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, ()))
    return out


def cpu_seconds(pids: list[int]) -> float:
    """CPU time of ``pids`` and their descendants, in seconds.

    Live threads: the nanosecond run time from /proc/PID/task/TID/schedstat
    (utime + stime in /proc/PID/stat only tick at 1/CLK_TCK = 10 ms); children
    already reaped: cutime + cstime from /proc/PID/stat.
    """
    total = 0.0
    for root in pids:
        for pid in descendants(root):
            try:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                # fields[0] is field 3 (state); cutime and cstime are fields 16 and 17.
                total += (int(fields[13]) + int(fields[14])) / CLK_TCK
                for tid in os.listdir(f"/proc/{pid}/task"):
                    with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                        total += int(f.read().split()[0]) / 1e9
            except (OSError, ValueError):
                continue
    return total


def rss_kib(pids: list[int]) -> int:
    """Summed VmRSS of ``pids`` and their descendants, KiB."""
    total = 0
    for root in pids:
        for pid in descendants(root):
            try:
                with open(f"/proc/{pid}/status") as f:
                    for line in f:
                        if line.startswith("VmRSS:"):
                            total += int(line.split()[1])
            except OSError:
                continue
    return total


def stop_process(proc: subprocess.Popen[bytes] | None, grace: float = 5.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def log_problems(path: Path, patterns: tuple[str, ...]) -> list[str]:
    """Lines of a log file that mention any of ``patterns`` (case-insensitive)."""
    if not path.exists():
        return []
    lines = path.read_text(errors="replace").splitlines()
    return [ln for ln in lines if any(p in ln.lower() for p in patterns)]


# -- backends ----------------------------------------------------------------


class Backend:
    """A Python backend from backends.py in its own process."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.count = 0  # the hold backend's open connections
        self._reader: threading.Thread | None = None

    def start(self) -> Backend:
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "backends.py"), self.kind, str(self.port)],
            stdout=subprocess.PIPE,
        )
        if self.kind == "hold":
            self._reader = threading.Thread(target=self._read_counts, daemon=True)
            self._reader.start()
        wait_listening(self.port, self.proc, f"{self.kind} backend")
        return self

    def _read_counts(self) -> None:
        assert self.proc is not None
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.count = int(line)

    def stop(self) -> None:
        stop_process(self.proc)

    def __enter__(self) -> Backend:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


NGINX_CONF = """\
daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
worker_rlimit_nofile 65536;
events {{ worker_connections 16384; multi_accept on; }}
http {{
    access_log off;
    keepalive_timeout 0;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    server {{
        listen {host}:{port} backlog=4096;
        location / {{ return 200 "ok\\n"; }}
    }}
}}
"""


class Nginx:
    """nginx in one process (no master) answering a 3-byte body to every request."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.dir = Path(tempfile.mkdtemp(prefix="bench-nginx-"))

    @staticmethod
    def binary() -> str | None:
        return shutil.which("nginx") or next(
            (p for p in ("/usr/sbin/nginx",) if os.access(p, os.X_OK)), None
        )

    def start(self) -> Nginx:
        exe = self.binary()
        assert exe is not None
        conf = self.dir / "nginx.conf"
        conf.write_text(NGINX_CONF.format(dir=self.dir, host=HOST, port=self.port))
        self.proc = subprocess.Popen(
            [exe, "-p", str(self.dir), "-e", str(self.dir / "error.log"), "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_listening(self.port, self.proc, "nginx")
        return self

    def stop(self) -> None:
        stop_process(self.proc)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Nginx:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Tagger:
    """A thread answering one fixed line to every connection: the route check.

    Targets send their non-HTTP routes (SSH, TLS) here, so a smoke test can
    tell that an SSH banner was routed away from the HTTP backend.
    """

    def __init__(self, tag: bytes) -> None:
        self.tag = tag
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((HOST, 0))
        self.sock.listen(64)
        self.port: int = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn, contextlib.suppress(OSError):
                conn.settimeout(2)
                conn.recv(4096)
                conn.sendall(self.tag)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()

    def __enter__(self) -> Tagger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- targets -----------------------------------------------------------------


class Target(ABC):
    """Something clients connect to that reaches the HTTP backend."""

    name: str  # short key, used in JSON and --targets
    label: str  # column heading

    def __init__(self) -> None:
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.dir: Path | None = None

    def unavailable(self) -> str | None:
        """Why this target cannot run here, or None."""
        return None

    @abstractmethod
    def launch(self, http_port: int, other_port: int) -> None:
        """Start in front of HTTP on ``http_port`` and everything else on ``other_port``."""

    def start(self, http_port: int, other_port: int) -> Target:
        self.dir = Path(tempfile.mkdtemp(prefix=f"bench-{self.name}-"))
        self.launch(http_port, other_port)
        return self

    def pids(self) -> list[int]:
        """The proxy's processes (CPU time and memory are read from these)."""
        return [] if self.proc is None else [self.proc.pid]

    def problems(self) -> list[str]:
        """Warnings or errors the target logged."""
        if self.dir is None:
            return []
        return log_problems(
            self.dir / "stderr.log", ("warn", "error", "alert", "traceback", "exception")
        )

    def stop(self) -> list[str]:
        """Stop; return the problems it logged."""
        if self.proc is not None and self.proc.poll() is not None:
            crashed = f"{self.label} had exited with status {self.proc.returncode}"
        else:
            crashed = ""
        # Read the log before the signal: what a proxy says while stopping
        # (e.g. refusing connections still in its accept queue) is not a finding.
        problems = self.problems() + ([crashed] if crashed else [])
        stop_process(self.proc)
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
        self.proc = None
        return problems

    def _spawn(self, cmd: list[str], env: dict[str, str] | None = None) -> None:
        assert self.dir is not None
        self.port = self.port or free_port()
        with open(self.dir / "stderr.log", "wb") as err:
            self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=env)
        wait_listening(self.port, self.proc, self.label)


class Direct(Target):
    name = "direct"
    label = "direct"

    def launch(self, http_port: int, other_port: int) -> None:
        self.port = http_port


REFRACTIUM_CONF = """\
[server]
bind = "{host}"
port = {port}
max_connections = {maxconn}
max_connections_per_ip = 0
hot_reload = false
shutdown_grace_ms = 1000
{extra}

[[protocols]]
name = "http"
forward_to = "{host}:{http}"

[[protocols]]
name = "ssh"
forward_to = "{host}:{other}"

[[protocols]]
name = "tls"
forward_to = "{host}:{other}"
"""


#: Networks in the deny file of a ``limits`` target: none of them is the client's.
DENY_ENTRIES = 10_000


def limits_table(directory: Path) -> str:
    """``[limits]`` with every check on and nothing refused: a rate no client reaches,
    bans armed, and a deny file of :data:`DENY_ENTRIES` networks in 10.0.0.0/8."""
    rng = random.Random(7)
    lines = []
    for n in range(DENY_ENTRIES):
        a, b, c = rng.randrange(256), rng.randrange(256), rng.randrange(256)
        lines.append(f"10.{a}.{b}.0/24" if n % 2 else f"10.{a}.{b}.{c}")
    path = directory / "deny.txt"
    path.write_text("\n".join(lines) + "\n")
    return f'\n[limits]\nconnection_rate = "1000000/s"\nban_after = 1000\ndeny_file = "{path}"\n'


REDIS_SERVER = shutil.which("redis-server")


def redis_state(port: int) -> str:
    """``[state]`` on the Redis at ``port``: bans, allows and rates kept with a fleet."""
    return f'\n[state]\nbackend = "redis"\nurl = "redis://{HOST}:{port}/0"\nprefix = "bench:"\n'


class Refractium(Target):
    """The proxy of this tree, or (``source``) the one in another tree's ``src``.

    A baseline tree runs in the same suite as this one, so before/after
    ratios come from one run on one machine state (``run.py --baseline``).
    """

    def __init__(
        self,
        loop: str,
        source: Path | None = None,
        *,
        idle_timeout_s: float = 0.0,
        access_log: bool = False,
        workers: int = 1,
        limits: bool = False,
        redis: bool = False,
        pure: bool = False,
    ) -> None:
        super().__init__()
        # [limits] as ``limits`` sets it, and [state] backend = "redis" on a
        # redis-server of its own (started and stopped with it, on the same CPU).
        self.redis = redis
        self.redis_proc: subprocess.Popen[bytes] | None = None
        self.loop = loop
        self.source = source
        self.idle_timeout_s = idle_timeout_s
        self.access_log = access_log
        self.limits = limits
        # REFRACTIUM_PURE=1: the pure-Python modules of a compiled install.
        self.pure = pure
        self.workers = workers  # > 1: a supervisor and this many workers (`-w N`)
        kind = (
            "base"
            if source is not None
            else "idle"
            if idle_timeout_s
            else "access"
            if access_log
            else "redis"
            if redis
            else "limits"
            if limits
            else "pure"
            if pure
            else ""
        )
        self.name = f"refractium-{loop}-{kind}" if kind else f"refractium-{loop}"
        self.label = f"{kind or 'refr'}-{loop}"
        if workers != 1:
            self.name += f"-w{workers}"
            self.label += f"-w{workers}"

    def unavailable(self) -> str | None:
        if self.redis and REDIS_SERVER is None:
            return "redis-server is not installed"
        if self.loop == "uvloop":
            try:
                import uvloop  # noqa: F401
            except ImportError:
                return "uvloop is not installed"
        return None

    def launch(self, http_port: int, other_port: int) -> None:
        assert self.dir is not None
        self.port = free_port()
        conf = self.dir / "refractium.toml"
        extra = f"idle_timeout_s = {self.idle_timeout_s}" if self.idle_timeout_s else ""
        if self.access_log:
            # Its own table, after [server]'s keys: the access lines go to a file.
            extra += f'\n[log]\naccess = true\nfile = "{self.dir / "access.log"}"\n'
        if self.limits or self.redis:
            extra += limits_table(self.dir)
        if self.redis:
            assert REDIS_SERVER is not None
            redis_port = free_port()
            argv = [REDIS_SERVER, "--port", str(redis_port), "--bind", HOST]
            argv += ["--save", "", "--appendonly", "no"]
            self.redis_proc = subprocess.Popen(
                argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            wait_listening(redis_port, self.redis_proc, "redis-server")
            extra += redis_state(redis_port)
        conf.write_text(
            REFRACTIUM_CONF.format(
                host=HOST,
                port=self.port,
                http=http_port,
                other=other_port,
                maxconn=connection_budget(),
                extra=extra,
            )
        )
        self._spawn(
            [
                sys.executable,
                "-m",
                "refractium",
                "tcp",
                "-c",
                str(conf),
                "--loop",
                self.loop,
                "--log-level",
                "warning",
                *(["-w", str(self.workers)] if self.workers != 1 else []),
            ],
            env=self._environment(),
        )

    def _environment(self) -> dict[str, str] | None:
        env = {}
        if self.source is not None:
            env["PYTHONPATH"] = str(self.source)
        if self.pure:
            env["REFRACTIUM_PURE"] = "1"
        return {**os.environ, **env} if env else None

    def stop(self) -> list[str]:
        problems = super().stop()
        stop_process(self.redis_proc)
        self.redis_proc = None
        return problems


HAPROXY_CONF = """\
global
    maxconn {maxconn}
    nbthread {nbthread}

defaults
    mode tcp
    timeout connect 5s
    timeout client 10m
    timeout server 10m

frontend mux
    bind {host}:{port}
    maxconn {maxconn}
    tcp-request inspect-delay 5s
    acl is_http req.payload(0,8) -m reg ^(GET|HEAD|POST|PUT|DELETE|OPTIONS|PATCH|CONNECT|TRACE)\\x20
    acl is_ssh req.payload(0,4) -m str SSH-
    tcp-request content accept if is_http
    tcp-request content accept if is_ssh
    tcp-request content accept if {{ req.ssl_hello_type 1 }}
    use_backend http_be if is_http
    default_backend other_be

backend http_be
    server http1 {host}:{http}

backend other_be
    server other1 {host}:{other}
"""


class HAProxy(Target):
    name = "haproxy"
    label = "haproxy"

    def __init__(self, nbthread: int = 1) -> None:
        super().__init__()
        self.nbthread = nbthread
        if nbthread != 1:
            self.name = self.label = f"haproxy-t{nbthread}"

    def unavailable(self) -> str | None:
        return None if self.exe() else "haproxy is not installed"

    @staticmethod
    def exe() -> str | None:
        return shutil.which("haproxy") or (
            "/usr/sbin/haproxy" if os.access("/usr/sbin/haproxy", os.X_OK) else None
        )

    def launch(self, http_port: int, other_port: int) -> None:
        assert self.dir is not None
        self.port = free_port()
        maxconn = connection_budget()
        conf = self.dir / "haproxy.cfg"
        conf.write_text(
            HAPROXY_CONF.format(
                host=HOST,
                port=self.port,
                http=http_port,
                other=other_port,
                maxconn=maxconn,
                nbthread=self.nbthread,
            )
        )
        exe = self.exe()
        assert exe is not None
        self._spawn([exe, "-db", "-f", str(conf)])

    def problems(self) -> list[str]:
        # HAProxy prints NOTICE lines at start; keep only warnings and alerts.
        return [p for p in super().problems() if "NOTICE" not in p]


class Sslh(Target):
    """sslh-select: one process, select(2), so fewer than ~500 connections at a time."""

    name = "sslh"

    def __init__(self) -> None:
        super().__init__()
        exe = self.exe()
        self.label = os.path.basename(exe) if exe else "sslh"
        # sslh-select uses select(2): FD_SETSIZE is 1024 and each connection takes two.
        self.max_connections = 100_000 if self.label == "sslh-ev" else 450

    @staticmethod
    def exe() -> str | None:
        for name in ("sslh-ev", "sslh-select"):
            found = shutil.which(name) or (
                f"/usr/sbin/{name}" if os.access(f"/usr/sbin/{name}", os.X_OK) else None
            )
            if found:
                return found
        return None

    def unavailable(self) -> str | None:
        return None if self.exe() else "neither sslh-ev nor sslh-select is installed"

    def launch(self, http_port: int, other_port: int) -> None:
        exe = self.exe()
        assert exe is not None
        self.port = free_port()
        self._spawn(
            [
                exe,
                "-f",
                "-n",
                "-p",
                f"{HOST}:{self.port}",
                "--http",
                f"{HOST}:{http_port}",
                "--ssh",
                f"{HOST}:{other_port}",
                "--tls",
                f"{HOST}:{other_port}",
            ]
        )

    def problems(self) -> list[str]:
        # sslh logs every connection on stderr in the foreground; keep the rest.
        return [p for p in super().problems() if "connection from" not in p]


def all_targets() -> list[Target]:
    return [Direct(), Refractium("uvloop"), Refractium("asyncio"), HAProxy(), Sslh()]

"""Workers: Refractium with N worker processes against HAProxy with N threads.

    python benchmarks/workers.py [--workers 1,2,4,8,16] [--seconds S] [--rounds R]
                                 [--json out.json] [--quick] [--source SRC]

For each N of ``--workers``: Refractium started with ``-w N`` (a supervisor and
N workers, each with its own SO_REUSEPORT listener; ``-w 1`` is one process)
and HAProxy with ``nbthread N``; plus the direct connection (client to
backend). Figures, each the median of ``--rounds`` rounds, the targets
interleaved within a round:

- connections/s: short connections (connect, ``GET /``, a 3-byte answer, the
  server closes) from ``--clients`` load generators in parallel (wrk -t1, else
  ab, else the Python client of loadgen.py), ``--concurrency`` each, against
  nginx (``--backends`` processes);
- proxy CPU µs per connection over those runs (supervisor and workers summed,
  from /proc), and the client's and the backend's beside it: on a small
  machine they share the cores with the proxy;
- bulk MiB/s: ``--streams`` parallel transfers of ``--bulk-mib`` MiB each,
  half upload, half download, through the Python bulk backend;
- the RSS of each worker and of the supervisor after the connection runs;
- scaling efficiency: conn/s at N / (N x conn/s at 1).

Nothing is pinned: the workers must be free to use every core. See README.md,
"Workers: one to N cores".
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import loadgen
from run import TAG, check_other_route, machine, raise_file_limit, smoke_bulk, smoke_http10
from targets import (
    CLK_TCK,
    HOST,
    NGINX_CONF,
    Backend,
    Direct,
    HAProxy,
    Nginx,
    Refractium,
    Tagger,
    Target,
    cpu_seconds,
    descendants,
    wait_listening,
)
from workers_report import CPUS, Results, Settings, report

MIB = 1 << 20
GIB = 1 << 30


QUICK = {"rounds": 1, "seconds": 1.0, "warmup": 0.5, "bulk_mib": 64}


# -- processes -------------------------------------------------------------------


class NginxN(Nginx):
    """nginx with ``processes`` workers sharing the port (SO_REUSEPORT), so the
    backend is not what limits a machine with many cores."""

    def __init__(self, processes: int) -> None:
        super().__init__()
        self.processes = processes

    def start(self) -> NginxN:
        if self.processes == 1:
            super().start()
            return self
        conf = NGINX_CONF.replace(
            "master_process off;\nworker_processes 1;",
            f"worker_processes {self.processes};",
        ).replace("backlog=4096;", "backlog=4096 reuseport;")
        exe = self.binary()
        assert exe is not None
        path = self.dir / "nginx.conf"
        path.write_text(conf.format(dir=self.dir, host=HOST, port=self.port))
        self.proc = subprocess.Popen(
            [exe, "-p", str(self.dir), "-e", str(self.dir / "error.log"), "-c", str(path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_sockets(self.port, self.processes, "nginx")
        return self


def listening_sockets(port: int) -> int:
    """How many sockets listen on 127.0.0.1:port (one per SO_REUSEPORT member)."""
    want = f"0100007F:{port:04X}"
    with open("/proc/net/tcp") as f:
        next(f)
        return sum(1 for line in f if (fields := line.split())[1] == want and fields[3] == "0A")


def wait_sockets(port: int, count: int, what: str, timeout: float = 30.0) -> None:
    """Wait until ``count`` sockets listen on ``port``: every worker is serving."""
    wait_listening(port, None, what)
    deadline = time.monotonic() + timeout
    while (seen := listening_sockets(port)) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: {seen} of {count} listeners on {HOST}:{port}")
        time.sleep(0.05)


def own_kib(pid: int, pss: bool = False) -> int:
    """VmRSS of one process (not its children), or its PSS (the pages it shares with
    other processes divided among them), KiB; 0 once it is gone."""
    path, key = (f"/proc/{pid}/smaps_rollup", "Pss:") if pss else (f"/proc/{pid}/status", "VmRSS:")
    with contextlib.suppress(OSError), open(path) as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1])
    return 0


def machine_busy() -> float:
    """CPU seconds every core spent busy since boot (/proc/stat), to tell what else ran."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def children_cpu() -> float:
    """CPU seconds of this process's reaped children: the load generators."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Entry:
    """One target of the run: kind ``direct``, ``refractium`` or ``haproxy`` at ``n``."""

    kind: str
    n: int
    target: Target

    @property
    def key(self) -> str:
        return self.target.name


def make_entries(s: Settings, source: Path | None) -> list[Entry]:
    entries = [Entry("direct", 0, Direct())]
    for n in s.workers:
        refr = Refractium(s.loop, source, workers=n)
        refr.name, refr.label = f"refractium-w{n}", f"refr-w{n}"
        entries.append(Entry("refractium", n, refr))
    for n in s.workers:
        haproxy = HAProxy(nbthread=n)
        haproxy.name, haproxy.label = f"haproxy-t{n}", f"haproxy-t{n}"
        entries.append(Entry("haproxy", n, haproxy))
    return entries


# -- the run ---------------------------------------------------------------------


class Bench:
    def __init__(self, s: Settings, entries: list[Entry]) -> None:
        self.s = s
        self.entries = entries
        self.r = Results()

    @contextlib.contextmanager
    def running(
        self, phase: str, http_port: int, other_port: int, smoke: Callable[[Target], None]
    ) -> Iterator[list[Entry]]:
        """Start every target, wait for all its listeners, smoke-test; yield those that passed."""
        up: list[Entry] = []
        try:
            for entry in self.entries:
                target = entry.target
                try:
                    target.start(http_port, other_port)
                    if entry.kind == "refractium":
                        wait_sockets(target.port, entry.n, target.label)
                    smoke(target)
                    if entry.kind != "direct":
                        check_other_route(target)
                except Exception as exc:
                    self.r.problem(f"{target.label}: {phase}: not measured: {exc}")
                    self._stop(phase, target)
                    continue
                up.append(entry)
            yield up
        finally:
            for entry in up:
                self._stop(phase, entry.target)

    def _stop(self, phase: str, target: Target) -> None:
        for line in target.stop():
            self.r.problem(f"{target.label}: {phase}: {line}")

    def connrate_once(self, port: int, seconds: float) -> loadgen.RateResult:
        """``clients`` load generators at once; their connections and rates summed."""
        s = self.s

        def one(_: int) -> loadgen.RateResult:
            return loadgen.run_connrate(self.r.tool, HOST, port, seconds, s.concurrency)

        with concurrent.futures.ThreadPoolExecutor(s.clients) as pool:
            results = list(pool.map(one, range(s.clients)))
        return loadgen.RateResult(
            connections=sum(x.connections for x in results),
            errors=sum(x.errors for x in results),
            # The summed rate over the longest run: each ran `seconds` from about the same start.
            seconds=max(x.seconds for x in results),
            tool=self.r.tool,
        )

    def connrate(self) -> None:
        s, r = self.s, self.r
        r.tool = loadgen.conn_tool()
        back: NginxN | Backend = NginxN(s.backends) if Nginx.binary() else Backend("reply")
        if isinstance(back, Backend):
            r.problem("connrate: nginx is not installed; the Python reply backend is much slower")
        with (
            Tagger(TAG) as tagger,
            back,
            self.running("connrate", back.port, tagger.port, smoke_http10) as up,
        ):
            assert back.proc is not None
            for entry in up:  # warm-up: imports, caches, TIME_WAIT like the measured runs
                with contextlib.suppress(Exception):
                    self.connrate_once(entry.target.port, s.warmup)
            for rnd in range(s.rounds):
                # Interleaved, and rotated so no target is always first after a pause.
                order = up[rnd % len(up) :] + up[: rnd % len(up)]
                for entry in order:
                    target = entry.target
                    proxy0, back0, client0, busy0 = (
                        cpu_seconds(target.pids()),
                        cpu_seconds([back.proc.pid]),
                        children_cpu(),
                        machine_busy(),
                    )
                    try:
                        res = self.connrate_once(target.port, s.seconds)
                    except Exception as exc:
                        r.problem(f"{target.label}: connrate: {exc}")
                        continue
                    proxy = cpu_seconds(target.pids()) - proxy0
                    backend_cpu = cpu_seconds([back.proc.pid]) - back0
                    client = children_cpu() - client0
                    # What else kept the cores busy meanwhile (other work on a shared machine).
                    others = machine_busy() - busy0 - proxy - backend_cpu - client
                    r.add("others_cores", "all", max(0.0, others) / res.seconds)
                    r.add("conn_per_s", entry.key, res.per_second)
                    r.add("errors", entry.key, res.errors)
                    if res.connections:
                        per = 1e6 / res.connections
                        if entry.kind != "direct":
                            r.add("proxy_us_per_conn", entry.key, proxy * per)
                        r.add("client_us_per_conn", entry.key, client * per)
                        r.add("backend_us_per_conn", entry.key, backend_cpu * per)
                        r.add("cores_busy", entry.key, (proxy + client + backend_cpu) / res.seconds)
                    print(
                        f"  round {rnd + 1} {target.label:>14}: {res.per_second:8,.0f} conn/s"
                        f"  errors {res.errors}",
                        file=sys.stderr,
                    )
            for entry in up:
                self.memory(entry)

    def memory(self, entry: Entry) -> None:
        """RSS of each worker and of the supervisor, or of the one process."""
        if entry.kind == "direct" or entry.target.proc is None:
            return
        pid = entry.target.proc.pid
        if entry.kind == "refractium" and entry.n > 1:
            workers = [p for p in descendants(pid) if p != pid]
            self.r.rss_kib[entry.key] = {
                "supervisor": own_kib(pid),
                "workers": [own_kib(p) for p in workers],
                "supervisor_pss": own_kib(pid, pss=True),
                "workers_pss": [own_kib(p, pss=True) for p in workers],
            }
        else:
            self.r.rss_kib[entry.key] = {
                "supervisor": None,
                "workers": [own_kib(pid)],
                "supervisor_pss": None,
                "workers_pss": [own_kib(pid, pss=True)],
            }

    def bulk(self) -> None:
        s, r = self.s, self.r
        nbytes = s.bulk_mib * MIB
        directions = [("up", "down")[i % 2] for i in range(s.streams)]

        def one(direction: str, port: int) -> dict[str, float]:
            return loadgen.run_python("bulk", HOST, port, direction, nbytes)

        with (
            Tagger(TAG) as tagger,
            Backend("bulk") as back,
            self.running("bulk", back.port, tagger.port, smoke_bulk) as up,
        ):
            for rnd in range(s.rounds):
                order = up[rnd % len(up) :] + up[: rnd % len(up)]
                for entry in order:
                    target = entry.target
                    before = cpu_seconds(target.pids())
                    try:
                        with concurrent.futures.ThreadPoolExecutor(s.streams) as pool:
                            runs = list(pool.map(one, directions, [target.port] * s.streams))
                    except Exception as exc:
                        r.problem(f"{target.label}: bulk: {exc}")
                        continue
                    used = cpu_seconds(target.pids()) - before
                    moved = sum(x["bytes"] for x in runs)
                    # All streams start together; the slowest one's time is the batch's.
                    mibs = moved / MIB / max(x["seconds"] for x in runs)
                    r.add("bulk_mib_per_s", entry.key, mibs)
                    if entry.kind != "direct":
                        r.add("bulk_cpu_s_per_gib", entry.key, used / (moved / GIB))
                    print(
                        f"  round {rnd + 1} {target.label:>14}: {mibs:8,.0f} MiB/s",
                        file=sys.stderr,
                    )


# -- main ------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    d = Settings()
    p.add_argument(
        "--workers", default="1,2", help="comma-separated worker/thread counts (default 1,2)"
    )
    p.add_argument("--rounds", type=int, help=f"rounds, median taken (default {d.rounds})")
    p.add_argument("--seconds", type=float, help=f"per connection-rate run (default {d.seconds})")
    p.add_argument("--clients", type=int, help=f"load generators in parallel ({d.clients} here)")
    p.add_argument("--concurrency", type=int, help=f"per load generator ({d.concurrency})")
    p.add_argument("--backends", type=int, help=f"nginx worker processes ({d.backends} here)")
    p.add_argument("--streams", type=int, help=f"parallel bulk transfers ({d.streams})")
    p.add_argument("--bulk-mib", type=int, help=f"MiB per bulk transfer ({d.bulk_mib})")
    p.add_argument("--loop", choices=("uvloop", "asyncio"), help="Refractium's event loop")
    p.add_argument("--source", type=Path, help="run the proxy of another tree's src/")
    p.add_argument("--only", default="", help="connrate or bulk (default both)")
    p.add_argument("--quick", action="store_true", help="one round, shorter runs")
    p.add_argument("--json", type=Path, help="also write every sample here")
    return p.parse_args(argv)


def settings_from(args: argparse.Namespace) -> Settings:
    values: dict[str, Any] = asdict(Settings())
    if args.quick:
        values.update(QUICK)
    values["workers"] = tuple(int(x) for x in args.workers.split(",") if x)
    for name in ("rounds", "seconds", "clients", "concurrency", "backends", "streams", "loop"):
        if getattr(args, name) is not None:
            values[name] = getattr(args, name)
    if args.bulk_mib is not None:
        values["bulk_mib"] = args.bulk_mib
    return Settings(**values)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    s = settings_from(args)
    phases = [x for x in args.only.split(",") if x] or ["connrate", "bulk"]
    if set(phases) - {"connrate", "bulk"}:
        raise SystemExit("--only: connrate and/or bulk")
    source = args.source.resolve() if args.source else None
    if source is not None and not (source / "refractium" / "__init__.py").is_file():
        raise SystemExit(f"--source: {source} has no refractium package")
    raise_file_limit()
    bench = Bench(s, [])
    for entry in make_entries(s, source):
        why = entry.target.unavailable()
        if why:
            bench.r.problem(f"{entry.target.label}: skipped: {why}")
        else:
            bench.entries.append(entry)
    print(
        f"{CPUS} CPUs, nothing pinned; targets: "
        + ", ".join(e.target.label for e in bench.entries),
        file=sys.stderr,
    )
    started = time.monotonic()
    for phase in phases:
        getattr(bench, phase)()
    table, derived = report(s, bench.r)
    print()
    print(
        f"Workers: Refractium -w N ({s.loop}) and HAProxy nbthread N, {CPUS} CPUs, unpinned; "
        f"medians of {s.rounds} round(s), targets interleaved"
    )
    print()
    print(table)
    if bench.r.problems:
        print("\nproblems")
        for line in dict.fromkeys(bench.r.problems):
            print(f"  {line}")
    print(f"\ntotal {time.monotonic() - started:.0f} s")
    if args.json:
        data = {
            "settings": asdict(s),
            "machine": machine(),
            "tool": bench.r.tool,
            "source": str(source) if source else None,
            "samples": bench.r.samples,
            "rss_kib": bench.r.rss_kib,
            "derived": derived,
            "problems": bench.r.problems,
        }
        args.json.write_text(json.dumps(data, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

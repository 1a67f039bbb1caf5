"""Refractium's benchmark suite: one run, on loopback, against a direct connection,
HAProxy and sslh, all pinned to one CPU.

    python benchmarks/run.py [--quick] [--only NAME[,NAME...]] [--targets T[,T...]]
                             [--json out.json] [--cpu N] [--baseline SRC] [--idle]
                             [--access] [--limits] [--redis] [--pure]

Sections (``--only``): bulk, connrate, rtt, idle, ident. Targets
(``--targets``): direct, refractium-uvloop, refractium-asyncio, haproxy, sslh
(direct is always measured: every ratio is against it). ``--baseline SRC`` adds
refractium-uvloop-base and refractium-asyncio-base: the proxy of another tree's
``src`` (e.g. a ``git worktree`` of an older commit), measured in the same run;
``--idle`` adds refractium-uvloop-idle and -asyncio-idle, with idle_timeout_s set;
``--access`` adds refractium-uvloop-access and -asyncio-access, with the access
log on (written to a file); ``--limits`` adds refractium-uvloop-limits and
-asyncio-limits, with ``[limits]`` on (a rate, bans armed, a deny file of
10,000 networks) and nothing refused; ``--redis`` adds refractium-uvloop-redis,
the same ``[limits]`` with ``[state] backend = "redis"`` on a redis-server of its
own (so rates are exchanged with a fleet), and refractium-uvloop-limits beside it;
``--pure`` (or naming them in ``--targets``) adds refractium-uvloop-pure and
-asyncio-pure: the same install with REFRACTIUM_PURE=1, its pure-Python modules
where the others run the compiled ones.
See README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import socket
import ssl
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import loadgen
from targets import (
    HOST,
    Backend,
    Direct,
    Nginx,
    Refractium,
    Tagger,
    Target,
    all_targets,
    cpu_seconds,
    rss_kib,
)

SECTIONS = ("bulk", "connrate", "rtt", "idle", "ident")
GIB = 1 << 30
TAG = b"other-backend\n"


@dataclass(frozen=True)
class Settings:
    bulk_bytes: int = GIB
    reps: int = 5
    conn_seconds: float = 2.0  # wrk takes whole seconds
    conn_reps: int = 5
    conn_concurrency: int = 32
    conn_warmup: float = 1.0
    rtt_seconds: float = 1.5
    rtt_size: int = 64
    idle_connections: int = 2000
    ident_batch: int = 50
    ident_rounds: int = 4000


QUICK = Settings(
    bulk_bytes=256 << 20,
    reps=1,
    conn_seconds=1.0,
    conn_reps=1,
    rtt_seconds=1.0,
    idle_connections=500,
    ident_rounds=1000,
)


@dataclass
class Figure:
    """One measured quantity for every target: samples, and the median."""

    title: str
    unit: str
    higher_is_better: bool
    ratio_to: str = "direct"  # the target every ratio is taken against
    samples: dict[str, list[float]] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)

    def add(self, target: str, value: float) -> None:
        self.samples.setdefault(target, []).append(value)

    def median(self, target: str) -> float | None:
        values = self.samples.get(target)
        return statistics.median(values) if values else None


class Suite:
    def __init__(self, settings: Settings, targets: list[Target], quick: bool) -> None:
        self.s = settings
        self.targets = targets
        self.quick = quick
        self.figures: dict[str, Figure] = {}
        self.problems: dict[str, list[str]] = {}
        self.ident_stats: dict[str, dict[str, float]] = {}
        self.ident_routes: dict[str, str] = {}
        self.tool = ""
        self.described: list[str] = []  # what each section ran, for the report

    def describe(self, line: str) -> None:
        self.described.append(line)
        print(line, file=sys.stderr)

    def figure(self, key: str, title: str, unit: str, higher: bool, ratio_to: str) -> Figure:
        if key not in self.figures:
            self.figures[key] = Figure(title, unit, higher, ratio_to)
        return self.figures[key]

    def problem(self, who: str, what: str) -> None:
        self.problems.setdefault(who, []).append(what)
        print(f"  ! {who}: {what}", file=sys.stderr)

    # -- targets ----------------------------------------------------------

    @contextlib.contextmanager
    def running(
        self, section: str, http_port: int, other_port: int, smoke: Callable[[Target], None]
    ) -> Iterator[list[Target]]:
        """Start every target in front of the backends, smoke-test, yield those that passed."""
        up: list[Target] = []
        try:
            for target in self.targets:
                try:
                    target.start(http_port, other_port)
                    smoke(target)
                    if not isinstance(target, Direct):
                        check_other_route(target)
                except Exception as exc:
                    self.problem(target.name, f"{section}: not measured: {exc}")
                    self.collect(section, target)
                    continue
                up.append(target)
            yield up
        finally:
            for target in up:
                self.collect(section, target)

    def collect(self, section: str, target: Target) -> None:
        for line in target.stop():
            self.problem(target.name, f"{section}: {line}")

    # -- sections ---------------------------------------------------------

    def bulk(self) -> None:
        s = self.s
        mib = s.bulk_bytes >> 20
        self.describe(f"bulk: {mib} MiB each way per run, {s.reps} run(s) per target")
        figs = {
            d: (
                self.figure(f"{d}_gbps", f"{d}load Gbit/s", "Gbit/s", True, "direct"),
                self.figure(f"{d}_cpu", f"  proxy CPU s/GiB {d}", "s/GiB", False, "haproxy"),
            )
            for d in ("up", "down")
        }
        with (
            Tagger(TAG) as tagger,
            Backend("bulk") as backend,
            self.running("bulk", backend.port, tagger.port, smoke_bulk) as up,
        ):
            for _ in range(s.reps):
                for target in up:
                    for direction, (speed, cpu) in figs.items():
                        before = cpu_seconds(target.pids())
                        try:
                            res = loadgen.run_python(
                                "bulk", HOST, target.port, direction, s.bulk_bytes
                            )
                        except Exception as exc:
                            self.problem(target.name, f"bulk {direction}: {exc}")
                            continue
                        used = cpu_seconds(target.pids()) - before
                        speed.add(target.name, res["bytes"] * 8 / res["seconds"] / 1e9)
                        if target.pids():
                            cpu.add(target.name, used / (res["bytes"] / GIB))

    def connrate(self) -> None:
        s = self.s
        self.tool = tool = loadgen.conn_tool()
        backend: Nginx | Backend = Nginx() if Nginx.binary() else Backend("reply")
        what = "nginx" if isinstance(backend, Nginx) else "Python reply backend (slow!)"
        self.describe(
            f"connrate: {tool} -c{s.conn_concurrency} (Connection: close), "
            f"{s.conn_seconds:g} s per run, {s.conn_reps} run(s) per target, backend {what}"
        )
        rate = self.figure("conn_per_s", "connections/s", "conn/s", True, "direct")
        cpu = self.figure("conn_cpu_us", "  proxy CPU µs/connection", "µs", False, "haproxy")
        errors: dict[str, int] = {}
        with (
            Tagger(TAG) as tagger,
            backend,
            self.running("connrate", backend.port, tagger.port, smoke_http10) as up,
        ):
            for target in up:  # warm-up (and TIME_WAIT state like in the measured runs)
                with contextlib.suppress(Exception):
                    loadgen.run_connrate(tool, HOST, target.port, s.conn_warmup, s.conn_concurrency)
            for _ in range(s.conn_reps):
                for target in up:
                    before = cpu_seconds(target.pids())
                    try:
                        res = loadgen.run_connrate(
                            tool, HOST, target.port, s.conn_seconds, s.conn_concurrency
                        )
                    except Exception as exc:
                        self.problem(target.name, f"connrate: {exc}")
                        continue
                    used = cpu_seconds(target.pids()) - before
                    errors[target.name] = errors.get(target.name, 0) + res.errors
                    rate.add(target.name, res.per_second)
                    if target.pids() and res.connections:
                        cpu.add(target.name, used / res.connections * 1e6)
        for name, count in errors.items():
            if count:
                rate.notes[name] = f"{count} errors"
                self.problem(name, f"connrate: {count} failed connections ({tool})")

    def rtt(self) -> None:
        s = self.s
        self.describe(
            f"rtt: {s.rtt_size}-byte ping-pong, {s.rtt_seconds:g} s per run, "
            f"{s.reps} run(s) per target"
        )
        rate = self.figure("rtt_per_s", "round trips/s", "rt/s", True, "direct")
        cpu = self.figure("rtt_cpu_us", "  proxy CPU µs/round trip", "µs", False, "haproxy")
        with (
            Tagger(TAG) as tagger,
            Backend("echo") as backend,
            self.running("rtt", backend.port, tagger.port, smoke_echo) as up,
        ):
            for _ in range(s.reps):
                for target in up:
                    before = cpu_seconds(target.pids())
                    try:
                        res = loadgen.run_python(
                            "rtt", HOST, target.port, s.rtt_seconds, s.rtt_size
                        )
                    except Exception as exc:
                        self.problem(target.name, f"rtt: {exc}")
                        continue
                    used = cpu_seconds(target.pids()) - before
                    rate.add(target.name, res["round_trips"] / res["seconds"])
                    if target.pids():
                        # The CPU window also holds the 200 warm-up round trips.
                        cpu.add(target.name, used / (res["round_trips"] + 200) * 1e6)

    def idle(self) -> None:
        s = self.s
        self.describe(f"idle: {s.idle_connections} identified idle connections per target")
        mem = self.figure("idle_kib", "proxy KiB/idle connection", "KiB", False, "haproxy")
        with (
            Tagger(TAG) as tagger,
            Backend("hold") as backend,
            self.running("idle", backend.port, tagger.port, smoke_nothing) as up,
        ):
            for target in up:
                if not target.pids():
                    continue
                n = min(s.idle_connections, getattr(target, "max_connections", 10**9))
                try:
                    kib = idle_memory(target, backend, n)
                except Exception as exc:
                    self.problem(target.name, f"idle: {exc}")
                    continue
                mem.add(target.name, kib)
                if n != s.idle_connections:
                    mem.notes[target.name] = f"N={n}"

    def ident(self) -> None:
        s = self.s
        self.describe(
            f"ident: decide() timed in batches of {s.ident_batch}, {s.ident_rounds} batches"
        )
        self.ident_stats, self.ident_routes = identification(s.ident_batch, s.ident_rounds)

    # -- report -----------------------------------------------------------

    def table(self) -> str:
        names = [t.name for t in self.targets]
        rows: list[list[str]] = [["figure", *(t.label for t in self.targets)]]
        notes: list[str] = []
        for fig in self.figures.values():
            base = fig.median(fig.ratio_to)
            title = f"{fig.title} [x {fig.ratio_to}]" if fig.ratio_to != "direct" else fig.title
            row = [title]
            for name in names:
                value = fig.median(name)
                if value is None:
                    row.append("-")
                    continue
                cell = fmt(value)
                if base and name != fig.ratio_to:
                    cell += f" ({value / base:.2f}x)"
                if name in fig.notes:
                    cell += "*"
                    notes.append(f"* {fig.title.strip()}, {name}: {fig.notes[name]}")
                row.append(cell)
            rows.append(row)
        first = max(len(r[0]) for r in rows) + 1
        width = max(len(c) for r in rows for c in r[1:]) + 2
        lines = [r[0].ljust(first) + "".join(c.rjust(width) for c in r[1:]) for r in rows]
        lines += notes
        if self.ident_stats:
            lines.append("")
            lines.append("identification: tables.tcp.decide(first bytes, False), ns per call")
            lines.append(f"{'input':<40}{'route':>18}{'median':>10}{'p99':>10}")
            for label, stat in self.ident_stats.items():
                route = self.ident_routes.get(label, "")
                lines.append(
                    f"{label:<40}{route:>18}{stat['median_ns']:>10.0f}{stat['p99_ns']:>10.0f}"
                )
        return "\n".join(lines)

    def goals(self) -> list[str]:
        """The project's targets, checked against this run's figures."""
        out = []
        f = self.figures

        def med(key: str, target: str) -> float | None:
            return f[key].median(target) if key in f else None

        for ref in ("refractium-uvloop", "refractium-asyncio"):
            checks: list[tuple[str, float | None, float | None, Callable[[float, float], bool]]]
            checks = []
            for d in ("up", "down"):
                checks.append(
                    (
                        f"{d}load >= haproxy",
                        med(f"{d}_gbps", ref),
                        med(f"{d}_gbps", "haproxy"),
                        lambda a, b: a >= b,
                    )
                )
                checks.append(
                    (
                        f"CPU/GiB {d} <= haproxy",
                        med(f"{d}_cpu", ref),
                        med(f"{d}_cpu", "haproxy"),
                        lambda a, b: a <= b,
                    )
                )
            checks.append(
                (
                    "conn/s >= 0.8x haproxy",
                    med("conn_per_s", ref),
                    med("conn_per_s", "haproxy"),
                    lambda a, b: a >= 0.8 * b,
                )
            )
            checks.append(("KiB/idle conn <= 8", med("idle_kib", ref), 8.0, lambda a, b: a <= b))
            for label, value, bound, ok in checks:
                if value is None or bound is None:
                    continue
                verdict = "ok  " if ok(value, bound) else "MISS"
                out.append(f"{verdict} {ref}: {label}: {fmt(value)} vs {fmt(bound)}")
        for label, stat in self.ident_stats.items():
            verdict = "ok  " if stat["median_ns"] < 5000 else "MISS"
            out.append(
                f"{verdict} identification median < 5 µs: {label}: {stat['median_ns']:.0f} ns"
            )
        return out

    def as_json(self) -> dict[str, Any]:
        return {
            "settings": asdict(self.s),
            "quick": self.quick,
            "machine": machine(),
            "connrate_tool": self.tool,
            "targets": {t.name: t.label for t in self.targets},
            "figures": {
                key: {
                    "title": fig.title.strip(),
                    "unit": fig.unit,
                    "higher_is_better": fig.higher_is_better,
                    "ratio_to": fig.ratio_to,
                    "median": {n: fig.median(n) for n in fig.samples},
                    "samples": fig.samples,
                    "notes": fig.notes,
                }
                for key, fig in self.figures.items()
            },
            "identification": {
                k: {**v, "route": self.ident_routes.get(k, "")} for k, v in self.ident_stats.items()
            },
            "goals": self.goals(),
            "problems": self.problems,
        }


def fmt(value: float) -> str:
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def machine() -> dict[str, Any]:
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "affinity": sorted(os.sched_getaffinity(0)),
    }


# -- smoke tests: does the target route this backend's requests? ----------------


def _exchange(port: int, send: bytes, *, until_eof: bool = True, want: int = 0) -> bytes:
    with socket.create_connection((HOST, port), timeout=5) as sock:
        sock.sendall(send)
        got = b""
        while until_eof or len(got) < want:
            data = sock.recv(65536)
            if not data:
                break
            got += data
        return got


def smoke_bulk(target: Target) -> None:
    got = _exchange(target.port, b"GET /down/16 HTTP/1.1\r\nHost: bench\r\n\r\n")
    if got != bytes(16):
        raise RuntimeError(f"HTTP smoke request: expected 16 zero bytes, got {got[:80]!r}")


def smoke_http10(target: Target) -> None:
    got = _exchange(target.port, b"GET / HTTP/1.0\r\nHost: bench\r\n\r\n")
    if not (got.startswith(b"HTTP/1.") and b" 200 " in got[:16] and got.endswith(b"ok\n")):
        raise RuntimeError(f"HTTP smoke request: unexpected reply {got[:80]!r}")


def smoke_echo(target: Target) -> None:
    got = _exchange(target.port, b"GET /echo HTTP/1.1\r\n\r\nping", until_eof=False, want=4)
    if got != b"ping":
        raise RuntimeError(f"echo smoke request: expected b'ping', got {got[:80]!r}")


def smoke_nothing(target: Target) -> None:
    """The idle section checks routing itself (the backend counts connections)."""


def check_other_route(target: Target) -> None:
    """An SSH banner must reach the other backend, not the HTTP one."""
    got = _exchange(target.port, b"SSH-2.0-OpenSSH_9.6\r\n", until_eof=False, want=len(TAG))
    if got != TAG:
        raise RuntimeError(f"SSH banner not routed to the SSH backend: got {got[:80]!r}")


# -- idle memory ---------------------------------------------------------------


IDLE_HEAD = b"GET / HTTP/1.1\r\nHost: x\r\n"  # no blank line: the backend keeps waiting


def wait_count(backend: Backend, want: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while backend.count != want:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the backend holds {backend.count} connections, expected {want}")
        time.sleep(0.01)


def idle_memory(target: Target, backend: Backend, n: int) -> float:
    """KiB of proxy RSS per identified, dialled, idle connection."""
    base = backend.count
    # One connection first: routing check, and any lazy start-up cost.
    with socket.create_connection((HOST, target.port)) as sock:
        sock.sendall(IDLE_HEAD)
        wait_count(backend, base + 1)
    wait_count(backend, base)
    time.sleep(0.3)
    before = rss_kib(target.pids())
    socks: list[socket.socket] = []
    try:
        while len(socks) < n:
            # Small batches: sslh listens with a backlog of 50, and a full
            # accept queue drops SYNs (a one-second retransmission each).
            for _ in range(min(40, n - len(socks))):
                sock = socket.create_connection((HOST, target.port))
                socks.append(sock)
                sock.sendall(IDLE_HEAD)
            wait_count(backend, base + len(socks))
        time.sleep(0.5)
        after = rss_kib(target.pids())
        if backend.count != base + n:
            raise RuntimeError(f"the backend lost connections: {backend.count - base} of {n}")
    finally:
        for sock in socks:
            sock.close()
    wait_count(backend, base)
    return (after - before) / n


# -- identification ------------------------------------------------------------


def client_hello(server_name: str) -> bytes:
    """A real ClientHello (SNI, ALPN h2 and http/1.1) from this Python's ssl module."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    conn = ctx.wrap_bio(incoming, outgoing, server_hostname=server_name)
    with contextlib.suppress(ssl.SSLWantReadError):
        conn.do_handshake()
    return outgoing.read()


def identification(batch: int, rounds: int) -> tuple[dict[str, dict[str, float]], dict[str, str]]:
    from refractium.config import parse_config
    from refractium.routing import NEED_MORE, build_tables

    protocols: list[dict[str, Any]] = [
        {"name": "http", "forward_to": "127.0.0.1:8080"},
        {"name": "ssh", "forward_to": "127.0.0.1:22"},
        {"name": "https", "sni": ["www.example.com"], "forward_to": "127.0.0.1:8443"},
        {"name": "https", "sni": ["api.example.com"], "forward_to": "127.0.0.1:8444"},
        {"name": "https", "sni": ["*.example.org"], "forward_to": "127.0.0.1:8445"},
        {
            "name": "myproto",
            "patterns": ["\\x01\\x02\\x03", "MY_PROTO_V1"],
            "forward_to": "127.0.0.1:7000",
        },
    ]
    tables = build_tables(parse_config({"protocols": protocols}, source="bench"))
    decide = tables.tcp.decide
    inputs = {
        "HTTP GET (curl-like, 78 B)": b"GET /index.html HTTP/1.1\r\nHost: www.example.com\r\n"
        b"User-Agent: curl/8.5.0\r\nAccept: */*\r\n\r\n",
        "TLS hello sni=api.example.com": client_hello("api.example.com"),
        "TLS hello sni=a.b.example.org": client_hello("a.b.example.org"),
        "SSH banner": b"SSH-2.0-OpenSSH_9.6p1 Ubuntu-3ubuntu13\r\n",
    }
    expect = {
        "HTTP GET (curl-like, 78 B)": ("http", "127.0.0.1:8080"),
        "TLS hello sni=api.example.com": ("https", "127.0.0.1:8444"),
        "TLS hello sni=a.b.example.org": ("https", "127.0.0.1:8445"),
        "SSH banner": ("ssh", "127.0.0.1:22"),
    }
    routes: dict[str, str] = {}
    for label, data in list(inputs.items()):
        decision = decide(data, False)
        route = None if decision is NEED_MORE else decision[0]  # type: ignore[index]
        got = (route.name, str(route.pool.members[0])) if route else None
        if got != expect[label]:
            raise RuntimeError(f"identification of {label}: expected {expect[label]}, got {got}")
        routes[label] = f"{got[0]} {got[1].rsplit(':', 1)[1]}"
        if "TLS" in label:
            inputs[label.replace("sni=", f"({len(data)} B) sni=")] = inputs.pop(label)
            routes[label.replace("sni=", f"({len(data)} B) sni=")] = routes.pop(label)

    def timed(items: list[bytes]) -> dict[str, float]:
        per_call: list[float] = []
        perf = time.perf_counter_ns
        for _ in range(rounds):
            start = perf()
            for data in items:
                decide(data, False)
            per_call.append((perf() - start) / len(items))
        per_call.sort()
        return {
            "median_ns": statistics.median(per_call),
            "p99_ns": per_call[min(len(per_call) - 1, int(len(per_call) * 0.99))],
            "calls": rounds * len(items),
        }

    stats = {label: timed([data] * batch) for label, data in inputs.items()}
    mix = list(inputs.values())
    stats["mix"] = timed((mix * (batch // len(mix) + 1))[:batch])
    routes["mix"] = "all of the above"
    return stats, routes


# -- main ----------------------------------------------------------------------


def raise_file_limit() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 65536
    for limits in ((want, max(hard, want)), (hard, hard)):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, limits)
            return
        except (ValueError, OSError):
            continue


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smaller, single runs (under a minute)")
    p.add_argument("--only", default="", help=f"comma-separated sections: {', '.join(SECTIONS)}")
    p.add_argument("--targets", default="", help="comma-separated targets (direct is implied)")
    p.add_argument("--json", type=Path, help="also write every sample to this file")
    p.add_argument("--cpu", type=int, default=0, help="the CPU everything is pinned to")
    p.add_argument("--reps", type=int, help="runs per figure (median taken)")
    p.add_argument("--baseline", type=Path, help="another tree's src/ to measure beside this one")
    p.add_argument(
        "--idle",
        action="store_true",
        help="also refractium-uvloop-idle and -asyncio-idle: idle_timeout_s = 600 set",
    )
    p.add_argument(
        "--limits",
        action="store_true",
        help="also refractium-uvloop-limits and -asyncio-limits: [limits] on, nothing refused",
    )
    p.add_argument(
        "--redis",
        action="store_true",
        help="also refractium-uvloop-redis and -limits: [limits] on, [state] in Redis or not",
    )
    p.add_argument(
        "--access",
        action="store_true",
        help="also refractium-uvloop-access and -asyncio-access: [log] access = true, to a file",
    )
    p.add_argument(
        "--pure",
        action="store_true",
        help="also refractium-uvloop-pure and -asyncio-pure: REFRACTIUM_PURE=1 (not compiled)",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sections = [x for x in args.only.split(",") if x] or list(SECTIONS)
    for name in sections:
        if name not in SECTIONS:
            raise SystemExit(f"--only: unknown section {name!r} (choose from {SECTIONS})")
    settings = QUICK if args.quick else Settings()
    if args.reps:
        settings = Settings(**{**asdict(settings), "reps": args.reps, "conn_reps": args.reps})

    os.sched_setaffinity(0, {args.cpu})  # inherited by every process started below
    raise_file_limit()

    targets = all_targets()
    if args.baseline is not None:
        source = args.baseline.resolve()
        if not (source / "refractium" / "__init__.py").is_file():
            raise SystemExit(f"--baseline: {source} has no refractium package")
        targets += [Refractium("uvloop", source), Refractium("asyncio", source)]
    if args.idle:
        targets += [Refractium(loop, idle_timeout_s=600) for loop in ("uvloop", "asyncio")]
    if args.access:
        targets += [Refractium(loop, access_log=True) for loop in ("uvloop", "asyncio")]
    if args.limits:
        targets += [Refractium(loop, limits=True) for loop in ("uvloop", "asyncio")]
    if args.redis:
        if not args.limits:
            targets.append(Refractium("uvloop", limits=True))
        targets.append(Refractium("uvloop", redis=True))
    if args.pure or "-pure" in args.targets:
        targets += [Refractium(loop, pure=True) for loop in ("uvloop", "asyncio")]
    if args.targets:
        wanted = {"direct", *args.targets.split(",")}
        unknown = wanted - {t.name for t in targets}
        if unknown:
            raise SystemExit(f"--targets: unknown {sorted(unknown)}")
        targets = [t for t in targets if t.name in wanted]
    suite = Suite(settings, [], args.quick)
    for target in targets:
        why = target.unavailable()
        if why:
            suite.problem(target.name, f"skipped: {why}")
        else:
            suite.targets.append(target)

    started = time.monotonic()
    print(
        f"pinned to CPU {args.cpu}; targets: {', '.join(t.label for t in suite.targets)}",
        file=sys.stderr,
    )
    for name in sections:
        t0 = time.monotonic()
        getattr(suite, name)()
        print(f"  ({time.monotonic() - t0:.1f} s)", file=sys.stderr)

    print()
    mode = "quick" if args.quick else "full"
    print(f"Refractium benchmarks ({mode}; client, proxy and backend pinned to CPU {args.cpu})")
    for line in suite.described:
        print(f"  {line}")
    print(
        "  cells: median; in parentheses the ratio to the same figure of the column\n"
        "  named in [x ...] (direct when none), measured in this run"
    )
    print()
    print(suite.table())
    goals = suite.goals()
    if goals:
        print("\ngoals")
        print("\n".join(goals))
    if suite.problems:
        print("\nproblems")
        for who, items in suite.problems.items():
            for item in dict.fromkeys(items):
                print(f"  {who}: {item}")
    print(f"\ntotal {time.monotonic() - started:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(suite.as_json(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

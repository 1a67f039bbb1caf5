"""Pools and health: what they cost, and how fast they react.

    python benchmarks/pool.py [--reps 5] [--seconds 3] [--cpu 0]

1. Connections per second through Refractium to one backend, and to a pool
   of three (round robin, active health checks on), in one run, runs
   interleaved, everything pinned to one CPU. The pool and health machinery
   should cost under 5 %.
2. Time from a backend's death to its removal (the "down" log line), and
   from its return to its reuse ("up again"), against interval x fall and
   interval x rise.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from loadgen import conn_tool, run_connrate
from targets import Nginx, cpu_seconds, free_port, stop_process, wait_listening

HOST = "127.0.0.1"
INTERVAL_MS, RISE, FALL = 500, 2, 3


class Proxy:
    """``refractium tcp`` on a free port with a config; its stderr kept line by line."""

    def __init__(self, config: str) -> None:
        self.port = free_port()
        self.dir = tempfile.TemporaryDirectory(prefix="bench-pool-")
        path = Path(self.dir.name) / "refractium.toml"
        path.write_text(f"[server]\nmax_connections_per_ip = 0\nhot_reload = false\n{config}")
        self.lines: list[tuple[float, str]] = []
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "refractium",
                "tcp",
                "-b",
                HOST,
                "-p",
                str(self.port),
                "-c",
                str(path),
            ],
            stderr=subprocess.PIPE,
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()
        wait_listening(self.port, self.proc, "refractium")

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append((time.monotonic(), line.rstrip()))

    def wait_line(self, pattern: str, after: float, timeout: float = 30) -> float:
        """When the first line matching ``pattern`` logged after ``after`` was read."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for when, line in list(self.lines):
                if when >= after and re.search(pattern, line):
                    return when
            time.sleep(0.005)
        raise TimeoutError(pattern)

    def stop(self) -> None:
        stop_process(self.proc)
        self.dir.cleanup()


def route(*ports: int, checks: bool) -> str:
    members = ", ".join(f'"{HOST}:{p}"' for p in ports)
    text = f'[[protocols]]\nname = "http"\nforward_to = [{members}]\n'
    if checks:
        text += f"health_check = {{ interval_ms = {INTERVAL_MS}, rise = {RISE}, fall = {FALL} }}\n"
    return text


def connection_rates(reps: int, seconds: float) -> None:
    tool = conn_tool()
    with Nginx() as a, Nginx() as b, Nginx() as c:
        setups = {
            "one backend": route(a.port, checks=False),
            # The same nginx three times: the proxy's pool and health work,
            # without three backend processes competing for the one CPU.
            "pool of 3 (one nginx), health checks": route(a.port, a.port, a.port, checks=True),
            "pool of 3 nginx, health checks": route(a.port, b.port, c.port, checks=True),
        }
        rates: dict[str, list[float]] = {name: [] for name in setups}
        cpu_us: dict[str, list[float]] = {name: [] for name in setups}
        for _ in range(reps):
            for name, config in setups.items():
                proxy = Proxy(config)
                try:
                    run_connrate(tool, HOST, proxy.port, 1, 32)  # warm-up
                    before = cpu_seconds([proxy.proc.pid])
                    result = run_connrate(tool, HOST, proxy.port, seconds, 32)
                    used = cpu_seconds([proxy.proc.pid]) - before
                    rates[name].append(result.connections / result.seconds)
                    cpu_us[name].append(used / max(result.connections, 1) * 1e6)
                finally:
                    proxy.stop()
    base = statistics.median(rates["one backend"])
    base_cpu = statistics.median(cpu_us["one backend"])
    print(f"connections/s ({tool} -c32, Connection: close, nginx backends; median of {reps})")
    for name, values in rates.items():
        median = statistics.median(values)
        cpu = statistics.median(cpu_us[name])
        print(
            f"  {name:38s} {median:9,.0f}/s ({median / base:.3f}x)"
            f"  proxy CPU {cpu:6.1f} us/conn ({cpu / base_cpu:.3f}x)"
        )


class Backend:
    """A tiny accept-and-close TCP backend that can die and come back on one port."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sock: socket.socket | None = None

    def start(self) -> None:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((HOST, self.port))
        sock.listen(128)
        self.sock = sock
        threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            conn.close()

    def stop(self) -> None:
        if self.sock is not None:
            # shutdown() first: close() alone leaves the socket listening
            # while the accept thread is blocked on it.
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)
            self.sock.close()
            self.sock = None


def health_reaction(reps: int) -> None:
    backend = Backend(free_port())
    other = Backend(free_port())
    backend.start()
    other.start()
    proxy = Proxy(route(backend.port, other.port, checks=True))
    down, up = [], []
    try:
        time.sleep(1)
        for _ in range(reps):
            died = time.monotonic()
            backend.stop()
            down.append(proxy.wait_line(rf"backend {HOST}:{backend.port} down", died) - died)
            time.sleep(0.3)
            back = time.monotonic()
            backend.start()
            up.append(proxy.wait_line(rf"backend {HOST}:{backend.port} up again", back) - back)
            time.sleep(0.3)
    finally:
        proxy.stop()
        backend.stop()
        other.stop()
    print(f"health checks: interval {INTERVAL_MS} ms, fall {FALL}, rise {RISE}; {reps} cycles")
    print(
        f"  death -> removal: median {statistics.median(down) * 1000:6.0f} ms "
        f"(max {max(down) * 1000:.0f}; interval x fall = {INTERVAL_MS * FALL} ms)"
    )
    print(
        f"  return -> reuse:  median {statistics.median(up) * 1000:6.0f} ms "
        f"(max {max(up) * 1000:.0f}; interval x rise = {INTERVAL_MS * RISE} ms)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3)
    parser.add_argument("--cpu", type=int, default=0)
    args = parser.parse_args()
    os.sched_setaffinity(0, {args.cpu})  # children (proxy, nginx, wrk) inherit it
    signal.signal(signal.SIGINT, signal.default_int_handler)
    connection_rates(args.reps, args.seconds)
    health_reaction(args.reps)


if __name__ == "__main__":
    main()

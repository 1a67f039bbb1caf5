"""What one no-op packet hook costs: throughput and connections per second.

    python benchmarks/hooks.py [--reps 5] [--cpu 0] [--gib 1]

Refractium with no hook on the HTTP route, with one plain no-op hook (the
base ``ProtocolHook``, whose ``on_packet`` returns at once: called in the
relay's callback) and with one coroutine no-op hook (fed through the
connection's hook task and its queue), in one run, runs interleaved,
everything pinned to one CPU. The hook path should keep at least 0.9 of the
no-hook throughput. "drops" counts the proxy's "hook queue full" warnings
(rate-limited: one per connection and second at most).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from loadgen import conn_tool, run_connrate, run_python
from pool import HOST, Proxy
from targets import Backend, Nginx, cpu_seconds

HOOKS = {
    "no hook": "",
    "plain no-op": "refractium.hooks.api:ProtocolHook",
    "async no-op": "noop_hooks:AsyncNoOp",
}


def config(port: int, hook: str) -> str:
    hooks = f'hooks = ["{hook}"]\n' if hook else ""
    return f'[[protocols]]\nname = "http"\nforward_to = "{HOST}:{port}"\n{hooks}'


def measure(reps: int, nbytes: int, seconds: float) -> None:
    tool = conn_tool()
    bulk: dict[str, dict[str, list[float]]] = {n: {"up": [], "down": []} for n in HOOKS}
    cpu: dict[str, list[float]] = {n: [] for n in HOOKS}
    rates: dict[str, list[float]] = {n: [] for n in HOOKS}
    drops = dict.fromkeys(HOOKS, 0)
    with Backend("bulk") as backend, Nginx() as nginx:
        for _ in range(reps):
            for name, hook in HOOKS.items():
                proxy = Proxy(config(backend.port, hook))
                try:
                    for direction in ("up", "down"):
                        before = cpu_seconds([proxy.proc.pid])
                        r = run_python("bulk", HOST, proxy.port, direction, nbytes)
                        used = cpu_seconds([proxy.proc.pid]) - before
                        bulk[name][direction].append(r["bytes"] * 8 / r["seconds"] / 1e9)
                        cpu[name].append(used / (nbytes / (1 << 30)))
                finally:
                    proxy.stop()
                drops[name] += sum("hook queue full" in line for _, line in proxy.lines)
                proxy = Proxy(config(nginx.port, hook))
                try:
                    run_connrate(tool, HOST, proxy.port, 1, 32)  # warm-up
                    result = run_connrate(tool, HOST, proxy.port, seconds, 32)
                    rates[name].append(result.connections / result.seconds)
                finally:
                    proxy.stop()
    print(f"one no-op packet hook vs none (median of {reps}; {nbytes >> 20} MiB per bulk run)")
    base = {k: statistics.median(v) for k, v in bulk["no hook"].items()}
    base_rate = statistics.median(rates["no hook"])
    base_cpu = statistics.median(cpu["no hook"])
    for name in HOOKS:
        up = statistics.median(bulk[name]["up"])
        down = statistics.median(bulk[name]["down"])
        rate = statistics.median(rates[name])
        c = statistics.median(cpu[name])
        print(
            f"  {name:12s} up {up:5.1f} Gbit/s ({up / base['up']:.2f}x)"
            f"  down {down:5.1f} Gbit/s ({down / base['down']:.2f}x)"
            f"  CPU {c:.3f} s/GiB ({c / base_cpu:.2f}x)"
            f"  {rate:8,.0f} conn/s ({rate / base_rate:.2f}x)"
            f"  drops {drops[name]}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--cpu", type=int, default=0)
    parser.add_argument("--gib", type=float, default=1.0)
    parser.add_argument("--seconds", type=float, default=3)
    args = parser.parse_args()
    os.sched_setaffinity(0, {args.cpu})
    # The proxies import noop_hooks from here.
    here = str(Path(__file__).resolve().parent)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")]))
    measure(args.reps, int(args.gib * (1 << 30)), args.seconds)


if __name__ == "__main__":
    main()

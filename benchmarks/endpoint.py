"""What endpoint hooks cost: connections per second with three no-op hooks.

    python benchmarks/endpoint.py [--reps 5] [--cpu 0] [--seconds 3]

Refractium with no endpoint hook, with three plain no-op endpoint hooks,
with three coroutine no-op endpoint hooks (each overriding all four methods:
on_incoming, before_connect, after_handshake on both sides, on_close), and
with the one RemoteMap that ``[admin]`` keeps by default, in
one run, runs interleaved, everything pinned to one CPU. Short HTTP
connections to nginx through the proxy; the figure is connections per
second and the proxy's CPU time per connection. The cost should stay under
10 %.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from loadgen import conn_tool, run_connrate
from pool import HOST, Proxy
from targets import Nginx, cpu_seconds

SETUPS: dict[str, tuple[str, ...]] = {
    "no hook": (),
    "3 plain no-op": ("noop_hooks:SyncNoOpEndpoint",) * 3,
    "3 async no-op": ("noop_hooks:AsyncNoOpEndpoint",) * 3,
    "RemoteMap": ("refractium.remotes:RemoteMap",),
}


def config(port: int, hooks: tuple[str, ...]) -> str:
    names = ", ".join(f'"{hook}"' for hook in hooks)
    endpoint = f"[endpoint]\nhooks = [{names}]\n" if hooks else ""
    return f'{endpoint}[[protocols]]\nname = "http"\nforward_to = "{HOST}:{port}"\n'


def measure(reps: int, seconds: float) -> None:
    tool = conn_tool()
    rates: dict[str, list[float]] = {name: [] for name in SETUPS}
    cpu: dict[str, list[float]] = {name: [] for name in SETUPS}
    with Nginx() as nginx:
        for _ in range(reps):
            for name, hooks in SETUPS.items():
                proxy = Proxy(config(nginx.port, hooks))
                try:
                    run_connrate(tool, HOST, proxy.port, 1, 32)  # warm-up
                    before = cpu_seconds([proxy.proc.pid])
                    result = run_connrate(tool, HOST, proxy.port, seconds, 32)
                    used = cpu_seconds([proxy.proc.pid]) - before
                    rates[name].append(result.connections / result.seconds)
                    cpu[name].append(used / max(result.connections, 1) * 1e6)
                finally:
                    proxy.stop()
    print(f"endpoint hooks vs none (median of {reps}; {tool} for {seconds:g} s)")
    base_rate = statistics.median(rates["no hook"])
    base_cpu = statistics.median(cpu["no hook"])
    for name in SETUPS:
        rate = statistics.median(rates[name])
        us = statistics.median(cpu[name])
        print(
            f"  {name:14s} {rate:8,.0f} conn/s ({rate / base_rate:.2f}x)"
            f"  proxy CPU {us:6.1f} us/conn ({us / base_cpu:.2f}x)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--cpu", type=int, default=0)
    parser.add_argument("--seconds", type=float, default=3)
    args = parser.parse_args()
    os.sched_setaffinity(0, {args.cpu})
    # The proxies import noop_hooks from here.
    here = str(Path(__file__).resolve().parent)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")]))
    measure(args.reps, args.seconds)


if __name__ == "__main__":
    main()

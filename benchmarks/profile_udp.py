"""Where a relayed datagram's time goes in the proxy: the budget behind udp.py's echoes/s.

    python benchmarks/profile_udp.py [--seconds 6] [--loop uvloop] [--rate 2000] [--source SRC]

Runs udp.py's set-up (a uvloop echo backend, ``refractium udp`` with one
route to it, a client keeping 32 datagrams of 512 bytes in flight on one
flow), everything pinned to one CPU as udp.py pins it, and meanwhile:

* reads the CPU (user and kernel) and the context switches of the proxy
  and of the echo backend from /proc: per echo, the proxy moves two
  datagrams (client to backend, backend to client), the backend one;
* counts the proxy's system calls per echo (``strace -c``, in a run of its
  own: strace slows everything it watches, the counts stay right);
* samples it with ``perf`` (run on the other CPUs) and splits the samples
  by the code they are in: the kernel, uvloop, the interpreter (our Python
  code, and asyncio's when it is the loop), libc. (py-spy ``--native``
  stops the process to sample it, which lands nearly every sample on a
  system call's return: it cannot split this load.)

Prints the budget in µs per echo. Needs perf and strace for the splits.
``--source``: profile another tree's ``src`` instead (a before figure).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from udp import CLIENT, Echo, Proxy, exchange

SIZE, WINDOW = 512, 32


def other_cpus() -> None:
    mine = os.sched_getaffinity(0)
    others = set(range(os.cpu_count() or 1)) - mine
    os.sched_setaffinity(0, others or mine)


def counters(pid: int) -> tuple[float, float, int, int]:
    """(user s, system s, voluntary, involuntary context switches) of ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    status = Path(f"/proc/{pid}/status").read_text()
    vol = re.search(r"^voluntary_ctxt_switches:\s+(\d+)", status, re.M)
    invol = re.search(r"^nonvoluntary_ctxt_switches:\s+(\d+)", status, re.M)
    assert vol is not None
    assert invol is not None
    return int(fields[11]) / tick, int(fields[12]) / tick, int(vol[1]), int(invol[1])


def client(port: int, seconds: float) -> subprocess.Popen[str]:
    argv = [sys.executable, "-c", CLIENT, str(port), str(seconds), str(SIZE), str(WINDOW)]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)


def echoes(proc: subprocess.Popen[str]) -> int:
    out, _ = proc.communicate()
    return int(json.loads(out)["echoes"])


def run(seconds: float, loop: str, rate: int, source: Path | None) -> None:
    with Echo() as echo, tempfile.TemporaryDirectory() as tmp:
        proxy = Proxy(echo.port, loop, source)
        pid = proxy.proc.pid
        try:
            exchange(proxy.port, 0.5, SIZE, WINDOW)  # warm: the flow exists
            # CPU and switches, measured with nothing else watching.
            before = counters(pid), counters(echo.proc.pid)
            count = echoes(client(proxy.port, seconds))
            after = counters(pid), counters(echo.proc.pid)
            calls = strace(pid, proxy.port, Path(tmp) / "strace.txt")
            # Then sampled (perf, from another CPU) for the split of the CPU by code.
            load = client(proxy.port, seconds)
            time.sleep(0.5)
            shares = sample(pid, max(1, int(seconds) - 2), rate, Path(tmp) / "perf.data")
            echoes(load)
        finally:
            proxy.stop()
    per = 1e6 / count
    (pu, ps, pv, pi), (eu, es, _, _) = (
        tuple(b - a for a, b in zip(start, end, strict=True))
        for start, end in zip(before, after, strict=True)
    )
    print(f"{count / seconds:,.0f} echoes/s through refractium ({loop}), all on one CPU")
    print(
        f"  proxy CPU per echo: {(pu + ps) * per:5.2f} µs = user {pu * per:5.2f} "
        f"+ kernel {ps * per:5.2f}; context switches per echo: "
        f"{pv / count:.3f} waits, {pi / count:.3f} preempted"
    )
    print(f"  echo backend CPU per echo: user {eu * per:5.2f} + kernel {es * per:5.2f} µs")
    if calls:
        named = [f"{name} {n:.2f}" for name, n in calls.items() if n >= 0.005]
        print("  system calls per echo: " + ", ".join(named))
    cpu = (pu + ps) * per
    if shares:
        print("  CPU per echo by code (perf samples):")
        for name, share in shares.items():
            print(f"    {name:44s} {cpu * share:5.2f} µs  ({100 * share:4.1f} %)")


def sample(pid: int, seconds: int, rate: int, out: Path) -> dict[str, float]:
    """The share of ``pid``'s samples in each kind of code: {} without perf."""
    if shutil.which("perf") is None:
        return {}
    record = ["perf", "record", "-F", str(rate), "-o", str(out), "-p", str(pid)]
    done = subprocess.run(
        [*record, "--", "sleep", str(seconds)], capture_output=True, preexec_fn=other_cpus
    )
    if done.returncode != 0:
        return {}
    report = ["perf", "report", "-i", str(out), "--sort", "dso", "--stdio"]
    text = subprocess.run(report, capture_output=True, text=True).stdout
    shares: dict[str, float] = {}
    for line in text.splitlines():
        found = re.match(r"\s*([\d.]+)%\s+(\S+)", line)
        if found:
            name = kind(found[2])
            shares[name] = shares.get(name, 0.0) + float(found[1]) / 100
    return dict(sorted(shares.items(), key=lambda item: -item[1]))


def kind(dso: str) -> str:
    """What a shared object's samples are: the kernel, the loop, the interpreter, libc."""
    if "kernel" in dso:
        return "kernel (system calls, loopback delivery)"
    if dso.startswith("loop.cpython"):
        return "uvloop (libuv and its Cython)"
    if "python" in dso:
        return "interpreter (our code; asyncio's own)"
    if dso.startswith("libc"):
        return "libc (wrappers, uvloop's address text)"
    return "other (" + dso + ")"


def strace(pid: int, port: int, out: Path) -> dict[str, float]:
    """System calls per echo of ``pid`` under a client's load: {} without strace."""
    if shutil.which("strace") is None:
        return {}
    argv = ["strace", "-c", "-f", "-p", str(pid), "-o", str(out)]
    tracer = subprocess.Popen(argv, stderr=subprocess.DEVNULL)
    time.sleep(0.5)  # attached (the calls of an idle loop meanwhile: a few epoll_wait)
    count = echoes(client(port, 2))
    tracer.send_signal(signal.SIGINT)
    tracer.wait()
    calls = {}
    for line in out.read_text().splitlines():
        fields = line.split()
        if len(fields) >= 5 and fields[0][0].isdigit() and fields[-1] != "total":
            calls[fields[-1]] = int(fields[3]) / count
    return dict(sorted(calls.items(), key=lambda item: -item[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--loop", default="uvloop", choices=("uvloop", "asyncio"))
    parser.add_argument("--rate", type=int, default=2000)
    parser.add_argument("--cpu", type=int, default=0)
    parser.add_argument("--source", type=Path, help="another tree's src/ to profile")
    args = parser.parse_args()
    os.sched_setaffinity(0, {args.cpu})
    run(args.seconds, args.loop, args.rate, args.source)


if __name__ == "__main__":
    main()

"""Where a short connection's time goes in the proxy: the budget behind connections/s.

    python benchmarks/profile_conn.py [--seconds 8] [--loop uvloop] [--rate 2000] [--one-cpu]
                                      [--src DIR]

Starts nginx and ``refractium tcp`` (one HTTP route), pins the proxy to
CPU 0 and nginx and wrk to CPU 1 (so the proxy's figures are its own), runs
``wrk -c32`` with ``Connection: close`` for ``--seconds`` and, meanwhile:

* reads the proxy's user and system CPU from /proc: the CPU per connection,
  split between our process's code (user) and the kernel (system);
* samples it with ``py-spy --native`` at ``--rate`` Hz and sorts every
  sample's user-space time by the innermost frame that names a step of a
  connection: accept, peek and identify, decide, dial, relay, close, the
  access log and limits, or the event loop's own work (uvloop, libc, the
  interpreter) when no frame of ours is on the stack; samples inside libc's
  system-call wrappers count as the kernel's, and those waiting in
  ``epoll_wait`` (idle) are left out.

Prints the budget in µs per connection. Needs wrk, nginx and py-spy.
``--src`` profiles another tree's ``src`` (e.g. a ``git worktree`` of an
older commit) for a before/after; ``REFRACTIUM_PURE=1`` in the environment
profiles the pure-Python package where a compiled one is installed.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from targets import HOST, Nginx, free_port, wait_listening

ROOT = Path(__file__).resolve().parents[1]

# (step, a pattern on "function (file)" of a frame); the first that matches
# the innermost frame of ours names the step. Order matters: specific first.
STEPS = (
    ("access log, stats", r"relay/access\.py|util/accesslog|relay/stats\.py"),
    ("limits, guard", r"relay/limits\.py|abuse/|shared/"),
    ("endpoint hooks", r"relay/gate\.py|endpoint/"),
    ("identify (probes, route)", r"protocols/|routing/|_decide|_peek\b|_peek "),
    ("dial (plan, connect)", r"relay/dial\.py|_dial|_connect|_open\b|_open |_make_backend"),
    ("relay (data both ways)", r"relay/pipe\.py|backend_up|data_received|halfclose"),
    ("accept (connection_made)", r"connection_made|relay/context\.py|__init__ \(.*connection\.py"),
    ("close (lost, release)", r"connection_lost|release|_closed|close"),
    ("other refractium", r"refractium/"),
)
OURS = re.compile(r"refractium/")
# Frames of ours that only start the loop: below them, the loop runs everything.
ENTRY = re.compile(r"refractium/(engine/serve\.py|cli/|__main__\.py)|runpy")


# Innermost native frames that wait for events: the process is idle there.
IDLE = {"epoll_pwait", "epoll_wait", "select", "poll"}
# libc's system-call wrappers: the time under them is the kernel's.
SYSCALLS = {
    "syscall",
    "write",
    "writev",
    "read",
    "readv",
    "recv",
    "send",
    "sendmsg",
    "recvmsg",
    "connect",
    "accept",
    "accept4",
    "shutdown",
    "close",
    "socket",
    "setsockopt",
    "getsockopt",
    "getsockname",
    "getpeername",
    "epoll_ctl",
    "ioctl",
    "fcntl",
}


def classify(stack: list[str]) -> str | None:
    """The step of a sample: a system call, the innermost frame of ours, or the loop.

    None for a sample taken while the loop waits for events (idle).
    """
    leaf = stack[-1].split(" (")[0]
    if leaf in IDLE:
        return None
    if leaf in SYSCALLS or leaf.startswith("__libc_"):
        return "system calls (in the kernel)"
    for frame in reversed(stack):
        if OURS.search(frame) and not ENTRY.search(frame):
            for step, pattern in STEPS:
                if re.search(pattern, frame):
                    return step
            return "other refractium"
    return "event loop, interpreter (no frame of ours)"


def run(seconds: float, loop: str, rate: int, one_cpu: bool, src: Path) -> None:
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if shutil.which("wrk") is None or not Path(spy).exists():
        raise SystemExit("wrk and py-spy are needed")
    with Nginx() as nginx, tempfile.TemporaryDirectory() as tmp:
        assert nginx.proc is not None
        # --one-cpu: everything on CPU 0, as run.py pins it: the proxy is saturated.
        others = "0" if one_cpu else "1"
        pin = ["taskset", "-a", "-p", "-c", others, str(nginx.proc.pid)]
        subprocess.run(pin, check=False, capture_output=True)
        port = free_port()
        conf = Path(tmp) / "p.toml"
        conf.write_text(
            f'[server]\nbind = "{HOST}"\nport = {port}\nmax_connections = 20000\n'
            f"max_connections_per_ip = 0\nhot_reload = false\n"
            f'[[protocols]]\nname = "http"\nforward_to = "{HOST}:{nginx.port}"\n'
        )
        proxy = subprocess.Popen(
            [
                "taskset",
                "-c",
                "0",
                sys.executable,
                "-m",
                "refractium",
                "tcp",
                "-c",
                str(conf),
                "--loop",
                loop,
                "--log-level",
                "warning",
            ],
            env={**os.environ, "PYTHONPATH": str(src)},
        )
        try:
            wait_listening(port, proxy, "refractium")
            url = f"http://{HOST}:{port}/"
            client = ["taskset", "-c", others, "wrk", "-t1", "-c32"]
            warm = [*client, "-d1s", "-H", "Connection: close"]
            subprocess.run([*warm, url], check=True, capture_output=True)
            # Measured without the sampler, which stops the process to read it.
            cpu0 = cpu_split(proxy.pid)
            load = [*warm[:6], f"-d{int(seconds)}s", *warm[7:], url]
            out = subprocess.run(
                load,
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            cpu1 = cpu_split(proxy.pid)
            # Then sampled, under the same load, for the split of the user time.
            wrk = subprocess.Popen(load, stdout=subprocess.DEVNULL)
            time.sleep(0.5)
            raw = Path(tmp) / "raw.txt"
            subprocess.run(
                [
                    spy,
                    "record",
                    "--native",
                    "-r",
                    str(rate),
                    "-d",
                    str(max(1, int(seconds) - 2)),
                    "-p",
                    str(proxy.pid),
                    "-f",
                    "raw",
                    "-o",
                    str(raw),
                ],
                check=True,
                capture_output=True,
            )
            wrk.wait()
            stacks = raw.read_text().splitlines()
            if os.environ.get("PROFILE_KEEP"):
                Path(os.environ["PROFILE_KEEP"]).write_text(raw.read_text())
        finally:
            proxy.terminate()
            proxy.wait(10)
    requests = re.search(r"(\d+) requests in", out)
    assert requests, out
    connections = int(requests.group(1))
    user, system = cpu1[0] - cpu0[0], cpu1[1] - cpu0[1]
    per = 1e6 / connections
    print(
        f"{connections:,} connections in {seconds:g} s, {connections / seconds:,.0f}/s "
        f"({'all on CPU 0' if one_cpu else 'the proxy alone on CPU 0'}, {loop})"
    )
    print(
        f"  proxy CPU per connection: {(user + system) * per:6.1f} µs "
        f"= user {user * per:5.1f} + kernel {system * per:5.1f}"
    )
    steps: collections.Counter[str] = collections.Counter()
    idle = 0
    for line in stacks:
        stack, _, count = line.rpartition(" ")
        step = classify(stack.split(";"))
        if step is None:
            idle += int(count)
        else:
            steps[step] += int(count)
    busy = sum(steps.values())
    # The busy samples share the process's CPU time, user and kernel alike.
    cpu = (user + system) * per
    print(f"  busy samples: {busy:,} of {busy + idle:,} at {rate} Hz; CPU per connection by step:")
    for step, n in steps.most_common():
        print(f"    {step:44s} {cpu * n / busy:6.1f} µs  ({100 * n / busy:4.1f} %)")
    leaves: collections.Counter[str] = collections.Counter()
    for line in stacks:
        stack, _, count = line.rpartition(" ")
        leaf = stack.split(";")[-1]
        if leaf.split(" (")[0] not in IDLE:
            leaves[leaf] += int(count)
    print("  the 15 busiest innermost frames:")
    for leaf, n in leaves.most_common(15):
        print(f"    {cpu * n / busy:6.1f} µs  {leaf[:90]}")


def cpu_split(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--loop", default="uvloop", choices=("uvloop", "asyncio"))
    parser.add_argument("--rate", type=int, default=2000)
    parser.add_argument(
        "--one-cpu",
        action="store_true",
        help="wrk and nginx on CPU 0 with the proxy (as run.py pins them): a saturated proxy",
    )
    parser.add_argument(
        "--src", type=Path, default=ROOT / "src", help="the tree whose proxy is profiled"
    )
    args = parser.parse_args()
    run(args.seconds, args.loop, args.rate, args.one_cpu, args.src.resolve())


if __name__ == "__main__":
    main()

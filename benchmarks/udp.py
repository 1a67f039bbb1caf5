"""UDP: datagrams per second through the proxy against a direct exchange.

    python benchmarks/udp.py [--reps 5] [--cpu 0] [--seconds 3] [--size 512] [--window 32]
                             [--baseline SRC]

A UDP echo backend (its own process, uvloop) and a client process that
keeps ``window`` datagrams of ``size`` bytes in flight on one flow, counting
the echoes for ``seconds``. Measured direct to the backend and through
``refractium udp`` (uvloop and asyncio), interleaved, in one run, everything
pinned to one CPU; the figure is echoed datagrams per second (each one
crosses the proxy twice) and the ratio to direct. ``--baseline SRC`` adds
the proxy of another tree's ``src`` (both loops), measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
HOST = "127.0.0.1"

ECHO = """
import asyncio, sys, uvloop
class Echo(asyncio.DatagramProtocol):
    def connection_made(self, t): self.t = t
    def datagram_received(self, d, a): self.t.sendto(d, a)
async def main():
    loop = asyncio.get_running_loop()
    t, _ = await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", 0))
    print(t.get_extra_info("sockname")[1], flush=True)
    await asyncio.Event().wait()
uvloop.run(main())
"""

CLIENT = """
import json, socket, sys, time
port, seconds = int(sys.argv[1]), float(sys.argv[2])
size, window = int(sys.argv[3]), int(sys.argv[4])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 21)
s.connect(("127.0.0.1", port))
s.settimeout(2)
data = b"PING" + bytes(size - 4)
s.send(data); s.recv(65535)  # the flow exists before the clock starts
got = lost = 0
start = time.perf_counter()
end = start + seconds
while time.perf_counter() < end:
    for _ in range(window):
        s.send(data)
    for _ in range(window):
        try:
            s.recv(65535)
            got += 1
        except TimeoutError:
            lost += 1
            break
print(json.dumps({"echoes": got, "lost": lost, "seconds": time.perf_counter() - start}))
"""


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


class Echo:
    def __enter__(self) -> Echo:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", ECHO], stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline())
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.kill()
        self.proc.wait()


class Proxy:
    """``refractium udp``, one patterns route to the echo backend (``source``: another tree's)."""

    def __init__(self, backend: int, loop: str, source: Path | None = None) -> None:
        self.port = free_udp_port()
        self.dir = tempfile.TemporaryDirectory(prefix="bench-udp-")
        config = Path(self.dir.name) / "refractium.toml"
        config.write_text(
            "[server]\nhot_reload = false\n"
            f'[[protocols]]\nname = "echo"\npatterns = ["PING"]\nforward_to = "{HOST}:{backend}"\n'
        )
        argv = [sys.executable, "-m", "refractium", "udp", "-b", HOST, "-p", str(self.port)]
        self.proc = subprocess.Popen(
            [*argv, "--loop", loop, "-c", str(config)],
            stderr=subprocess.PIPE,
            text=True,
            env=None if source is None else {**os.environ, "PYTHONPATH": str(source)},
        )
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            if "listening on udp" in line:
                break
        else:
            raise RuntimeError("refractium udp did not start")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait()
        self.dir.cleanup()


def exchange(port: int, seconds: float, size: int, window: int) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", CLIENT, str(port), str(seconds), str(size), str(window)],
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, float] = json.loads(out.stdout)
    return result


def measure(reps: int, seconds: float, size: int, window: int, baseline: Path | None) -> None:
    setups = ["direct", "refr-uvloop", "refr-asyncio"]
    if baseline is not None:
        setups += ["base-uvloop", "base-asyncio"]
    rates: dict[str, list[float]] = {name: [] for name in setups}
    lost: dict[str, int] = dict.fromkeys(setups, 0)
    with Echo() as echo:
        for _ in range(reps):
            for name in setups:
                kind, _, loop = name.partition("-")
                source = baseline if kind == "base" else None
                proxy = None if name == "direct" else Proxy(echo.port, loop, source)
                try:
                    r = exchange(proxy.port if proxy else echo.port, seconds, size, window)
                finally:
                    if proxy is not None:
                        proxy.stop()
                rates[name].append(r["echoes"] / r["seconds"])
                lost[name] += int(r["lost"])
    print(
        f"UDP echo, {size}-byte datagrams, {window} in flight, one flow "
        f"(median of {reps} x {seconds:g} s)"
    )
    base = statistics.median(rates["direct"])
    for name in setups:
        rate = statistics.median(rates[name])
        print(f"  {name:13s} {rate:9,.0f} echoes/s ({rate / base:.2f}x)  timeouts {lost[name]}")


def quic_identification() -> None:
    """Microseconds to identify one QUIC flow from aioquic's first Initial datagram."""
    try:
        from aioquic.quic.configuration import QuicConfiguration
        from aioquic.quic.connection import QuicConnection
    except ImportError:
        print("QUIC identification: aioquic is not installed (pip install aioquic)")
        return
    from refractium.protocols.quic import QuicProbe

    probe = QuicProbe()
    config = QuicConfiguration(is_client=True, server_name="a.example", alpn_protocols=["h3"])
    datagrams = []
    for _ in range(50):  # different connection IDs: nothing cached from one to the next
        conn = QuicConnection(configuration=config)
        conn.connect((HOST, 443), now=time.time())
        datagrams.append([d for d, _ in conn.datagrams_to_send(now=time.time())])
    for first in datagrams:
        result = probe.probe_datagrams(first)
        assert getattr(result, "sni", None) == "a.example", result
    rounds = 40
    start = time.perf_counter()
    for _ in range(rounds):
        for first in datagrams:
            probe.probe_datagrams(first)
    per = (time.perf_counter() - start) / (rounds * len(datagrams)) * 1e6
    print(f"QUIC Initial identification (decrypt + ClientHello): {per:.1f} us per flow")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--cpu", type=int, default=0)
    parser.add_argument("--seconds", type=float, default=3)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--window", type=int, default=32)
    parser.add_argument(
        "--baseline", type=Path, help="another tree's src/ to measure beside this one"
    )
    args = parser.parse_args()
    baseline = None
    if args.baseline is not None:
        baseline = args.baseline.resolve()
        if not (baseline / "refractium" / "__init__.py").is_file():
            raise SystemExit(f"--baseline: {baseline} has no refractium package")
    os.sched_setaffinity(0, {args.cpu})
    quic_identification()
    measure(args.reps, args.seconds, args.size, args.window, baseline)


if __name__ == "__main__":
    main()

"""Load generators: Python clients run in their own process, and wrappers for wrk / ab.

The Python clients are run as ``python benchmarks/loadgen.py KIND ...`` so
they never share an interpreter (or a GIL) with the harness; each prints one
JSON object on stdout. Kinds:

``bulk HOST PORT up|down BYTES``
    One connection, blocking socket, 1 MiB ``sendall`` / ``recv_into``.
    Sends an HTTP-looking head first (``GET /up/BYTES`` or ``GET /down/BYTES``) so
    every proxy routes it as HTTP; the timer starts before that head and stops
    when the backend has acknowledged all bytes (upload: its byte-count
    reply) or when the last byte arrived (download).
``rtt HOST PORT SECONDS SIZE``
    One connection (TCP_NODELAY), ``GET /echo`` head, then SIZE-byte
    ping-pongs for SECONDS; every echo is checked.
``connrate HOST PORT SECONDS CONCURRENCY``
    Short connections with a non-blocking selector client (the fallback
    when neither wrk nor ab is installed): connect, ``GET / HTTP/1.0``, read
    the reply until the server closes.
"""

from __future__ import annotations

import errno
import json
import re
import selectors
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass

CHUNK = 1 << 20
SOCKBUF = 4 << 20


def _connect(host: str, port: int) -> socket.socket:
    sock = socket.create_connection((host, port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKBUF)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKBUF)
    return sock


def bulk(host: str, port: int, direction: str, nbytes: int) -> dict[str, float]:
    """Move ``nbytes`` one way through one connection; return bytes and seconds."""
    block = memoryview(bytes(CHUNK))
    start = time.perf_counter()
    with _connect(host, port) as sock:
        if direction == "up":
            sock.sendall(b"GET /up/%d HTTP/1.1\r\nHost: bench\r\n\r\n" % nbytes)
            left = nbytes
            while left >= CHUNK:
                sock.sendall(block)
                left -= CHUNK
            if left:
                sock.sendall(block[:left])
            reply = b""
            while not reply.endswith(b"\n") and (data := sock.recv(256)):
                reply += data
            elapsed = time.perf_counter() - start
            got = int(reply.strip() or b"-1")
        else:
            sock.sendall(b"GET /down/%d HTTP/1.1\r\nHost: bench\r\n\r\n" % nbytes)
            buf = memoryview(bytearray(CHUNK))
            got = 0
            while n := sock.recv_into(buf):
                got += n
            elapsed = time.perf_counter() - start
    if got != nbytes:
        raise SystemExit(f"bulk {direction}: expected {nbytes} bytes, the other end saw {got}")
    return {"bytes": nbytes, "seconds": elapsed}


def rtt(host: str, port: int, seconds: float, size: int) -> dict[str, float]:
    """Ping-pong ``size`` bytes on one connection for ``seconds``."""
    msg = bytes(range(256)) * (size // 256 + 1)
    msg = msg[:size]
    buf = bytearray(size)
    view = memoryview(buf)
    with socket.create_connection((host, port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(b"GET /echo HTTP/1.1\r\nHost: bench\r\n\r\n")

        def once() -> None:
            sock.sendall(msg)
            got = 0
            while got < size:
                n = sock.recv_into(view[got:])
                if not n:
                    raise SystemExit("rtt: connection closed by the other end")
                got += n
            if buf != msg:
                raise SystemExit("rtt: echo does not match")

        for _ in range(200):  # warm-up: identification, dial, caches
            once()
        count = 0
        start = time.perf_counter()
        deadline = start + seconds
        while True:
            for _ in range(100):
                once()
            count += 100
            now = time.perf_counter()
            if now >= deadline:
                break
    return {"round_trips": count, "seconds": now - start}


def connrate(host: str, port: int, seconds: float, concurrency: int) -> dict[str, float]:
    """Short HTTP/1.0 connections, ``concurrency`` at a time, for ``seconds``."""
    request = b"GET / HTTP/1.0\r\nHost: bench\r\n\r\n"
    sel = selectors.DefaultSelector()
    done = errors = 0
    open_ = 0
    addr = (host, port)

    def start_one() -> None:
        nonlocal open_, errors
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        rc = sock.connect_ex(addr)
        if rc not in (0, errno.EINPROGRESS):
            errors += 1
            sock.close()
            return
        sel.register(sock, selectors.EVENT_WRITE, [b""])
        open_ += 1

    begin = time.perf_counter()
    deadline = begin + seconds
    for _ in range(concurrency):
        start_one()
    while open_:
        running = time.perf_counter() < deadline
        for key, events in sel.select(1.0):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            finished = ok = False
            try:
                if events & selectors.EVENT_WRITE:
                    sock.send(request)
                    sel.modify(sock, selectors.EVENT_READ, key.data)
                    continue
                data = sock.recv(65536)
                if data:
                    key.data[0] += data
                    continue
                finished = True
                ok = key.data[0].startswith(b"HTTP/1.")
            except OSError:
                finished = True
            if finished:
                sel.unregister(sock)
                sock.close()
                open_ -= 1
                if ok:
                    done += 1
                else:
                    errors += 1
                if running:
                    start_one()
    return {"connections": done, "errors": errors, "seconds": time.perf_counter() - begin}


# -- C load generators, driven from the harness ------------------------------


@dataclass
class RateResult:
    connections: int
    errors: int
    seconds: float
    tool: str

    @property
    def per_second(self) -> float:
        return self.connections / self.seconds if self.seconds else 0.0


def conn_tool() -> str:
    """The connection-rate client to use: wrk, else ab, else the Python one."""
    for tool in ("wrk", "ab"):
        if shutil.which(tool):
            return tool
    return "python"


def run_connrate(tool: str, host: str, port: int, seconds: float, concurrency: int) -> RateResult:
    """One connection-rate run with ``tool``; errors counts failed/odd replies."""
    url = f"http://{host}:{port}/"
    if tool == "wrk":
        # wrk takes whole seconds only.
        whole = max(1, round(seconds))
        cmd = ["wrk", "-t1", f"-c{concurrency}", f"-d{whole}s", "-H", "Connection: close", url]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30).stdout
        m = re.search(r"(\d+) requests in ([\d.]+)(m?s)", out)
        if not m:
            raise RuntimeError(f"cannot parse wrk output:\n{out}")
        secs = float(m.group(2)) / (1000 if m.group(3) == "ms" else 1)
        errors = sum(int(x) for x in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
        bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        errors += int(bad.group(1)) if bad else 0
        return RateResult(int(m.group(1)), errors, secs, tool)
    if tool == "ab":
        cmd = ["ab", "-q", "-r", "-t", str(seconds), "-n", "100000000", "-c", str(concurrency)]
        out = subprocess.run(
            [*cmd, url], capture_output=True, text=True, timeout=seconds + 30
        ).stdout
        done = re.search(r"Complete requests:\s+(\d+)", out)
        failed = re.search(r"Failed requests:\s+(\d+)", out)
        taken = re.search(r"Time taken for tests:\s+([\d.]+)", out)
        if not (done and failed and taken):
            raise RuntimeError(f"cannot parse ab output:\n{out}")
        non2xx = re.search(r"Non-2xx responses:\s+(\d+)", out)
        errors = int(failed.group(1)) + (int(non2xx.group(1)) if non2xx else 0)
        return RateResult(int(done.group(1)), errors, float(taken.group(1)), tool)
    res = run_python("connrate", host, port, seconds, concurrency)
    return RateResult(int(res["connections"]), int(res["errors"]), res["seconds"], "python")


def run_python(kind: str, *args: object, timeout: float = 300) -> dict[str, float]:
    """Run one Python client in its own process; return its JSON result."""
    cmd = [sys.executable, __file__, kind, *map(str, args)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"loadgen {kind} failed: {proc.stderr.strip()[-500:]}")
    result: dict[str, float] = json.loads(proc.stdout)
    return result


def main() -> None:
    kind, host, port, *rest = sys.argv[1:]
    if kind == "bulk":
        result = bulk(host, int(port), rest[0], int(rest[1]))
    elif kind == "rtt":
        result = rtt(host, int(port), float(rest[0]), int(rest[1]))
    elif kind == "connrate":
        result = connrate(host, int(port), float(rest[0]), int(rest[1]))
    else:
        raise SystemExit(f"unknown load kind {kind!r}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()

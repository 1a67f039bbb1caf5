"""State shared by the workers of one instance: three designs, measured.

    python benchmarks/shared_state.py [--option shm|supervisor|cbpf] [--seconds 2]

``shm``: a table of per-IP counters in a file under /dev/shm, mapped by every
worker: 64 stripes of 256 open-addressing slots, one fcntl byte-range lock
per stripe and one for the global count, one count column per worker (a
dead worker's column is zeroed by the supervisor). Prints admit+release cost
from 1, 2 and 4 processes, a contention check, and the cost of a death.

``supervisor``: the supervisor holds the counts; each worker asks it over a
unix socket (one round trip per admit, a one-way message per release).
Prints the round trip seen from a worker's event loop and the supervisor's
CPU per admit.

``cbpf``: a classic BPF program on the SO_REUSEPORT group that sends each
client address to one worker. Prints where the program's data starts, the
spread of 64 loopback source addresses over 2 workers, whether each lands
on the same worker every time, and what a worker restart does to the map.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import ctypes
import fcntl
import mmap
import multiprocessing as mp
import os
import random
import select
import signal
import socket
import statistics
import sys
import tempfile
import time
import zlib
from collections import Counter, deque
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, cast

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from refractium.relay.limits import ConnectionLimits

FORK = mp.get_context("fork")

# --- option 1: the shared-memory table -------------------------------------------------

WORKERS_MAX = 8  # count columns per slot: one per worker index
STRIPES = 64  # one lock each; an address's whole probe chain stays in its stripe
SLOTS = 256  # per stripe (a power of two): 16,384 addresses with open connections
KEY_WORDS = 4  # 16-byte key: IPv6, or IPv4 mapped into ::ffff:0:0/96
SLOT_WORDS = KEY_WORDS + WORKERS_MAX
HEADER_WORDS = WORKERS_MAX  # the per-worker totals of open connections
TABLE_BYTES = 4 * (HEADER_WORDS + STRIPES * SLOTS * SLOT_WORDS)
EMPTY = bytes(16)  # "::" never connects, so it marks a slot never used
GLOBAL_LOCK = 0  # lock byte 0 guards the global check; byte 1 + s guards stripe s


class FcntlLocks:
    """Byte-range locks on the table's file: the kernel drops them when the holder dies."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def acquire(self, n: int) -> None:
        fcntl.lockf(self.fd, fcntl.LOCK_EX, 1, n)

    def release(self, n: int) -> None:
        fcntl.lockf(self.fd, fcntl.LOCK_UN, 1, n)


class SemLocks:
    """POSIX semaphores (multiprocessing.Lock), for the comparison: a dead holder keeps them."""

    def __init__(self) -> None:
        self.locks = [FORK.Lock() for _ in range(STRIPES + 1)]

    def acquire(self, n: int) -> None:
        self.locks[n].acquire()

    def release(self, n: int) -> None:
        self.locks[n].release()


Locks = FcntlLocks | SemLocks


def new_table() -> str:
    fd, path = tempfile.mkstemp(prefix="refractium-bench-", dir="/dev/shm")
    os.ftruncate(fd, TABLE_BYTES)
    os.close(fd)
    return path


class Table:
    """One process's view of the table; ``me`` is its count column (the worker index)."""

    def __init__(self, path: str, me: int, sem: SemLocks | None = None) -> None:
        self.fd = os.open(path, os.O_RDWR)
        self.mm = mmap.mmap(self.fd, TABLE_BYTES)
        self.words = memoryview(self.mm).cast("I")
        self.me = me
        self.locks: Locks = sem if sem is not None else FcntlLocks(self.fd)
        self.seen_max = (0, 0)  # the highest per-IP and global counts seen after an admit

    def admit(self, key: bytes, max_total: int, max_per_ip: int, check: bool = False) -> int:
        """Count one connection from ``key``: its slot (kept for release), or -1 if refused."""
        h = zlib.crc32(key)
        stripe = h & (STRIPES - 1)
        words, me, locks = self.words, self.me, self.locks
        locks.acquire(1 + stripe)
        try:
            slot = self._slot(stripe, (h >> 6) & (SLOTS - 1), key)
            if slot < 0:
                return -1  # the stripe is full of open connections: sized too small
            counts = slot + KEY_WORDS
            if sum(words[counts : counts + WORKERS_MAX]) >= max_per_ip:
                return -1
            # Exact global cap: the check and the increment under one lock.
            locks.acquire(GLOBAL_LOCK)
            try:
                if sum(words[0:WORKERS_MAX]) >= max_total:
                    return -1
                words[me] += 1
                if check:
                    total = sum(words[0:WORKERS_MAX])
            finally:
                locks.release(GLOBAL_LOCK)
            words[counts + me] += 1
            if check:
                per_ip = sum(words[counts : counts + WORKERS_MAX])
                self.seen_max = (max(self.seen_max[0], per_ip), max(self.seen_max[1], total))
            return slot
        finally:
            locks.release(1 + stripe)

    def release(self, slot: int) -> None:
        """Forget one connection: no lock, as only this process writes its column."""
        self.words[slot + KEY_WORDS + self.me] -= 1
        self.words[self.me] -= 1

    def _slot(self, stripe: int, start: int, key: bytes) -> int:
        """The key's slot in its stripe, claimed if new; -1 if the stripe is full."""
        mm, words = self.mm, self.words
        base = HEADER_WORDS + stripe * SLOTS * SLOT_WORDS
        reuse = -1  # the first slot whose counts are all zero: a stale key, reusable
        for i in range(SLOTS):
            idx = base + ((start + i) & (SLOTS - 1)) * SLOT_WORDS
            off = idx * 4
            k = mm[off : off + 16]
            if k == key:
                return idx
            if k == EMPTY:
                # The key is not here. Stale slots just before a never-used one end
                # no live chain, so they become never-used again: chains stay short
                # under a stream of new addresses.
                j = i - 1
                while j >= 0:
                    sidx = base + ((start + j) & (SLOTS - 1)) * SLOT_WORDS
                    if any(words[sidx + KEY_WORDS : sidx + SLOT_WORDS]):
                        break
                    mm[sidx * 4 : sidx * 4 + 16] = EMPTY
                    j -= 1
                if reuse < 0:
                    reuse = idx
                mm[reuse * 4 : reuse * 4 + 16] = key
                return reuse
            if reuse < 0 and not any(words[idx + KEY_WORDS : idx + SLOT_WORDS]):
                reuse = idx
        if reuse >= 0:
            mm[reuse * 4 : reuse * 4 + 16] = key
        return reuse

    def zero_column(self, column: int) -> None:
        """The supervisor's part when a worker dies: its counts, every slot, at once."""
        words = self.words
        n = STRIPES * SLOTS
        words[HEADER_WORDS + KEY_WORDS + column :: SLOT_WORDS] = array.array("I", bytes(4 * n))
        words[column] = 0

    def open_counts(self) -> tuple[int, int]:
        """(the global count, the sum of every per-IP count)."""
        return sum(self.words[0:WORKERS_MAX]), sum(
            sum(self.words[HEADER_WORDS + KEY_WORDS + c :: SLOT_WORDS]) for c in range(WORKERS_MAX)
        )


def v4key(n: int) -> bytes:
    return b"\0" * 10 + b"\xff\xff" + n.to_bytes(4, "big")


def pct(samples: list[int], p: float) -> float:
    samples.sort()
    return samples[min(len(samples) - 1, int(len(samples) * p))]


def _shm_timer(
    path: str, me: int, sem: SemLocks | None, n: int, start: Callable[[], None], out: Connection
) -> None:
    rnd = random.Random(me)
    # New addresses all the time (a stream from the whole IPv4 space), so the
    # slot search, stale-slot reuse and clean-up are all in the figure.
    keys = [v4key(rnd.getrandbits(32) | 1) for _ in range(n)]
    table = Table(path, me, sem)
    clock = time.perf_counter_ns
    times = []
    start()
    for key in keys:
        t0 = clock()
        slot = table.admit(key, 1 << 30, 50)
        table.release(slot)
        times.append(clock() - t0)
    out.send(times)


def _local_times(n: int) -> list[int]:
    rnd = random.Random(0)
    ips = [f"10.{rnd.randrange(256)}.{rnd.randrange(256)}.{rnd.randrange(256)}" for _ in range(n)]
    limits = ConnectionLimits()
    clock = time.perf_counter_ns
    times = []
    for ip in ips:
        t0 = clock()
        limits.admit(ip, 1 << 30, 50)
        limits.release(ip)
        times.append(clock() - t0)
    return times


def shm_costs(ops: int) -> None:
    clock = time.perf_counter_ns
    overhead = statistics.median([-clock() + clock() for _ in range(10000)])
    local = _local_times(ops)
    path = new_table()
    fd = os.open(path, os.O_RDWR)
    t0 = clock()
    for _ in range(ops):
        fcntl.lockf(fd, fcntl.LOCK_EX, 1, 1)
        fcntl.lockf(fd, fcntl.LOCK_UN, 1, 1)
    pair = (clock() - t0) / ops
    os.close(fd)
    os.unlink(path)
    print(f"timer overhead {overhead:.0f} ns (included below); one fcntl lock+unlock {pair:.0f} ns")
    print(
        f"  per-worker dict (relay.limits)  median {statistics.median(local):6.0f} ns"
        f"  p99 {pct(local, 0.99):7.0f} ns"
    )
    for kind in ("fcntl", "sem"):
        for procs in (1, 2, 4):
            path = new_table()
            sem = SemLocks() if kind == "sem" else None
            barrier = FORK.Barrier(procs)
            pipes = [FORK.Pipe(duplex=False) for _ in range(procs)]
            workers = [
                FORK.Process(target=_shm_timer, args=(path, i, sem, ops, barrier.wait, pipes[i][1]))
                for i in range(procs)
            ]
            for w in workers:
                w.start()
            times = [t for r, _ in pipes for t in r.recv()]
            for w in workers:
                w.join()
            left = Table(path, 0).open_counts()
            os.unlink(path)
            print(
                f"  shm, {kind:5} locks, {procs} process{'es' if procs > 1 else '  '}"
                f"  median {statistics.median(times):6.0f} ns  p99 {pct(times, 0.99):7.0f} ns"
                f"  p99.9 {pct(times, 0.999):7.0f} ns  (open after: {left})"
            )


def _contender(path: str, me: int, seconds: float, out: Connection) -> None:
    """Admit and release at random on 4 addresses, per-IP cap 5, global cap 12."""
    rnd = random.Random(me)
    keys = [v4key(0x0A000001 + i) for i in range(4)]
    table = Table(path, me)
    held: list[int] = []
    admitted = refused = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if held and (len(held) >= 8 or rnd.random() < 0.5):
            table.release(held.pop(rnd.randrange(len(held))))
        else:
            slot = table.admit(rnd.choice(keys), 12, 5, check=True)
            if slot < 0:
                refused += 1
            else:
                admitted += 1
                held.append(slot)
    for slot in held:
        table.release(slot)
    out.send((admitted, refused, table.seen_max))


def _holder(path: str, me: int, ready: Callable[[], None]) -> None:
    """Takes 3 connections per address, then keeps admitting and releasing until killed."""
    table = Table(path, me)
    for i in range(4):
        for _ in range(3):
            table.admit(v4key(0x0A000001 + i), 1000, 50)
    ready()
    rnd = random.Random(me)
    while True:
        slot = table.admit(v4key(0x0A000001 + rnd.randrange(4)), 1000, 50)
        table.release(slot)


def _sem_holder(sem: Any, held: Callable[[], None]) -> None:
    sem.acquire()
    held()
    time.sleep(60)


def shm_correctness(seconds: float) -> None:
    path = new_table()
    pipes = [FORK.Pipe(duplex=False) for _ in range(4)]
    procs = [
        FORK.Process(target=_contender, args=(path, i, seconds, pipes[i][1])) for i in range(4)
    ]
    for p in procs:
        p.start()
    results = [r.recv() for r, _ in pipes]
    for p in procs:
        p.join()
    admitted = sum(r[0] for r in results)
    refused = sum(r[1] for r in results)
    per_ip = max(r[2][0] for r in results)
    total = max(r[2][1] for r in results)
    print(
        f"contention: 4 processes x {seconds:g} s on 4 addresses, caps 5 per IP and 12 in all:"
        f" {admitted:,} admitted, {refused:,} refused; highest per-IP count seen {per_ip},"
        f" highest global {total}; open after: {Table(path, 0).open_counts()}"
    )
    # A worker killed at a random moment (perhaps holding a lock, perhaps between
    # its two increments) leaves counts in its column only; the supervisor zeroes it.
    ready = FORK.Event()
    victim = FORK.Process(target=_holder, args=(path, 5, ready.set))
    victim.start()
    ready.wait()
    time.sleep(0.2)
    os.kill(victim.pid or 0, signal.SIGKILL)
    victim.join()
    table = Table(path, 0)
    stuck = table.open_counts()
    t0 = time.perf_counter_ns()
    table.locks.acquire(1 + zlib.crc32(v4key(0x0A000001)) % STRIPES)
    table.locks.release(1 + zlib.crc32(v4key(0x0A000001)) % STRIPES)
    wait_ns = time.perf_counter_ns() - t0
    zero = []
    for _ in range(20):
        t0 = time.perf_counter_ns()
        table.zero_column(5)
        zero.append(time.perf_counter_ns() - t0)
    print(
        f"death: SIGKILLed holder left {stuck} open; its locks were free at once"
        f" ({wait_ns / 1000:.0f} us to take one); zeroing its column over"
        f" {STRIPES * SLOTS:,} slots: median {statistics.median(zero) / 1000:.0f} us;"
        f" open after: {table.open_counts()}"
    )
    os.unlink(path)
    # The same death with a POSIX semaphore held: nobody can take it again.
    sem = FORK.Lock()
    held = FORK.Event()
    holder = FORK.Process(target=_sem_holder, args=(sem, held.set))
    holder.start()
    held.wait()
    os.kill(holder.pid or 0, signal.SIGKILL)
    holder.join()
    print(
        f"  a semaphore held by a SIGKILLed process, acquire(timeout=1): {sem.acquire(timeout=1)}"
    )


# --- option 2: the supervisor holds the counts -------------------------------------------

ADMIT, RELEASE = 1, 2
MSG = 17  # op byte + 16-byte key


class StateServer(asyncio.Protocol):
    counts: dict[bytes, int] = {}  # noqa: RUF012 - one table for every worker's connection
    total = 0
    admits = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.buf = b""

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data
        cut = len(buf) - len(buf) % MSG
        replies = bytearray()
        counts = self.counts
        for off in range(0, cut, MSG):
            key = buf[off + 1 : off + MSG]
            if buf[off] == ADMIT:
                StateServer.admits += 1
                held = counts.get(key, 0)
                if held >= 50 or StateServer.total >= 1 << 30:
                    replies.append(0)
                else:
                    counts[key] = held + 1
                    StateServer.total += 1
                    replies.append(1)
            else:
                StateServer.total -= 1
                held = counts[key] - 1
                if held:
                    counts[key] = held
                else:
                    del counts[key]
        self.buf = buf[cut:]
        if replies:  # one write per read: replies to a batch of admits go together
            self.transport.write(replies)


class StateClient(asyncio.Protocol):
    def __init__(self) -> None:
        self.waiting: deque[asyncio.Future[bool]] = deque()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        for b in data:  # replies come in the order of the requests
            self.waiting.popleft().set_result(b == 1)

    def admit(self, key: bytes) -> asyncio.Future[bool]:
        fut = asyncio.get_running_loop().create_future()
        self.waiting.append(fut)
        self.transport.write(b"\x01" + key)
        return fut

    def release(self, key: bytes) -> None:
        self.transport.write(b"\x02" + key)


def _run(coro: Callable[[], object]) -> None:
    try:
        import uvloop

        uvloop.run(coro())  # type: ignore[arg-type]
    except ImportError:
        asyncio.run(coro())  # type: ignore[arg-type]


def _supervisor(path: str, ready: Callable[[], None], out: Connection) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_unix_server(StateServer, path)
        ready()
        await loop.run_in_executor(None, out.poll, None)  # "start"
        out.recv()
        cpu0 = time.process_time()
        admits0 = StateServer.admits
        await loop.run_in_executor(None, out.poll, None)  # "stop"
        out.recv()
        out.send((time.process_time() - cpu0, StateServer.admits - admits0, StateServer.total))
        server.close()

    _run(main)


def _asker(path: str, me: int, inflight: int, seconds: float, out: Connection) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        _, client = await loop.create_unix_connection(StateClient, path)
        times: list[int] = []
        clock = time.perf_counter_ns
        end = time.monotonic() + seconds

        async def one(n: int) -> None:
            rnd = random.Random(me * 1000 + n)
            while time.monotonic() < end:
                key = v4key(rnd.getrandbits(32) | 1)
                t0 = clock()
                if await client.admit(key):
                    times.append(clock() - t0)
                    client.release(key)
                await asyncio.sleep(0)  # the loop's other work between connections

        cpu0 = time.process_time()
        await asyncio.gather(*(one(n) for n in range(inflight)))
        out.send((times, time.process_time() - cpu0))

    _run(main)


def supervisor_costs(seconds: float) -> None:
    for workers, inflight in ((1, 1), (2, 1), (2, 32)):
        path = os.path.join(tempfile.mkdtemp(), "state.sock")
        ready = FORK.Event()
        ctl_here, ctl_there = FORK.Pipe()
        sup = FORK.Process(target=_supervisor, args=(path, ready.set, ctl_there), daemon=True)
        sup.start()
        ready.wait()
        pipes = [FORK.Pipe(duplex=False) for _ in range(workers)]
        askers = [
            FORK.Process(target=_asker, args=(path, i, inflight, seconds, pipes[i][1]), daemon=True)
            for i in range(workers)
        ]
        ctl_here.send("start")
        for a in askers:
            a.start()
        if not all(r.poll(seconds + 10) for r, _ in pipes):
            raise SystemExit("a worker did not report")
        results = [r.recv() for r, _ in pipes]
        ctl_here.send("stop")
        sup_cpu, admits, still_open = ctl_here.recv()
        for p in [*askers, sup]:
            p.join()
        times = [t for r in results for t in r[0]]
        worker_cpu = sum(r[1] for r in results)
        print(
            f"  {workers} worker{'s' if workers > 1 else ' '} x {inflight:2} in flight:"
            f" {admits / seconds:9,.0f} admits/s  round trip median"
            f" {statistics.median(times) / 1000:6.1f} us  p99 {pct(times, 0.99) / 1000:6.1f} us;"
            f" supervisor CPU {sup_cpu / admits * 1e9:5.0f} ns/admit,"
            f" worker CPU {worker_cpu / admits * 1e9:5.0f} ns/admit; open after: {still_open}"
        )
        os.unlink(path)
        os.rmdir(os.path.dirname(path))


# --- option 3: a classic BPF program on the reuseport group -------------------------------

SO_ATTACH_REUSEPORT_CBPF = 51
SKF_AD_OFF = -0x1000
SKF_AD_PROTOCOL = 0
SKF_NET_OFF = -0x100000
# Opcodes (linux/filter.h): class | size | mode, class | op | source.
LD_W_ABS, LD_H_ABS, LD_W_LEN = 0x20, 0x28, 0x80
ALU_MUL_K, ALU_RSH_K, ALU_MOD_K, ALU_XOR_X = 0x24, 0x74, 0x94, 0xAC
JEQ_K, TAX, RET_A, RET_K = 0x15, 0x07, 0x16, 0x06


class SockFilter(ctypes.Structure):
    _fields_ = (
        ("code", ctypes.c_uint16),
        ("jt", ctypes.c_uint8),
        ("jf", ctypes.c_uint8),
        ("k", ctypes.c_uint32),
    )


class SockFprog(ctypes.Structure):
    _fields_ = (
        ("len", ctypes.c_uint16),
        ("filter", ctypes.POINTER(SockFilter)),
    )


def attach(sock: socket.socket, program: list[tuple[int, int, int, int]]) -> None:
    insns = (SockFilter * len(program))(
        *(SockFilter(c, t, f, k & 0xFFFFFFFF) for c, t, f, k in program)
    )
    prog = SockFprog(len(program), insns)
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, bytes(prog))


def by_source(workers: int) -> list[tuple[int, int, int, int]]:
    """Hash the source address (IPv4: all of it; IPv6: its /64), return hash % workers."""
    return [
        (LD_H_ABS, 0, 0, SKF_AD_OFF + SKF_AD_PROTOCOL),  # the EtherType
        (JEQ_K, 0, 2, 0x0800),
        (LD_W_ABS, 0, 0, SKF_NET_OFF + 12),  # IPv4 source, from the network header
        (0x05, 0, 0, 3),  # ja +3: to the mixing
        (LD_W_ABS, 0, 0, SKF_NET_OFF + 8),  # IPv6 source, first word ...
        (TAX, 0, 0, 0),
        (LD_W_ABS, 0, 0, SKF_NET_OFF + 12),  # ... xor the second: the /64
        (ALU_XOR_X, 0, 0, 0),  # (the ja lands here; X is 0 on the IPv4 path)
        (ALU_MUL_K, 0, 0, 2654435761),  # Knuth's multiplicative hash
        (ALU_RSH_K, 0, 0, 16),
        (ALU_MOD_K, 0, 0, workers),
        (RET_A, 0, 0, 0),
    ]


def src_hash(address: int, workers: int) -> int:
    """What ``by_source`` returns for an IPv4 source, computed in Python."""
    return (((address * 2654435761) & 0xFFFFFFFF) >> 16) % workers


def _v6_offsets() -> bool:
    """``return [SKF_NET_OFF + 20]``: the last word of an IPv6 source; ::1 must pick socket 1."""
    port = free_port()
    group = [_listener(port, "::1") for _ in range(2)]
    attach(group[0], [(LD_W_ABS, 0, 0, SKF_NET_OFF + 20), (RET_A, 0, 0, 0)])
    picked = []
    for _ in range(8):
        with socket.create_connection(("::1", port)):
            readable, _, _ = select.select(group, [], [], 1)
            picked += [group.index(r) for r in readable]
            for r in readable:
                r.accept()[0].close()
    for g in group:
        g.close()
    return picked == [1] * 8


def _acceptor(socks: list[socket.socket], me: int, out: Connection) -> None:
    # Close the copies of the other workers' listeners this fork inherited, or
    # a "dead" worker's listener would stay in the group.
    for i, s in enumerate(socks):
        if i != me:
            s.close()
    sock = socks[me]
    while True:
        conn, peer = sock.accept()
        out.send((me, peer[0]))
        conn.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _listener(port: int, host: str = "127.0.0.1") -> socket.socket:
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind((host, port))
    s.listen(128)
    return s


def _land(port: int, source: str, results: Connection) -> int:
    c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    c.bind((source, 0))
    c.connect(("127.0.0.1", port))
    if not results.poll(2):
        raise SystemExit(f"no worker accepted the connection from {source}")
    me, peer = results.recv()
    c.close()
    assert peer == source, (peer, source)
    return int(me)


def cbpf_demo() -> None:
    # Where the data starts: "return skb->len" on UDP datagrams of 0, 1 and 2
    # bytes. If the program saw the IP header, len would be 28+ (out of range:
    # the kernel's own hash picks). Two sockets in one process suffice here.
    port = free_port()
    udp = []
    for _ in range(2):
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        u.bind(("127.0.0.1", port))
        udp.append(u)
    attach(udp[0], [(LD_W_LEN, 0, 0, 0), (RET_A, 0, 0, 0)])
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for size in (0, 1, 0, 1):
        tx.sendto(b"x" * size, ("127.0.0.1", port))
        readable, _, _ = select.select(udp, [], [], 1)
        got = [udp.index(r) for r in readable]
        for r in readable:
            r.recv(64)
        print(f"  'return skb->len', UDP payload of {size} byte(s): socket {got}", end=";")
    print("\n  => the program's data starts after the UDP header (the payload)")
    print(
        f"  IPv6 source word at SKF_NET_OFF + 20 read for ::1 (8 of 8 on socket 1): {_v6_offsets()}"
    )

    results, sink = FORK.Pipe(duplex=False)
    port = free_port()
    sockets = [_listener(port) for _ in range(2)]
    attach(sockets[0], [(LD_W_LEN, 0, 0, 0), (ALU_MOD_K, 0, 0, 2), (RET_A, 0, 0, 0)])
    workers = [
        FORK.Process(target=_acceptor, args=(sockets, i, sink), daemon=True)
        for i in range(len(sockets))
    ]
    for w in workers:
        w.start()
    syn = Counter(_land(port, f"127.0.0.{i}", results) for i in range(1, 17))
    print(
        f"  'return skb->len % 2' on TCP, 16 sources: workers {dict(syn)} (a SYN carries no data)"
    )

    attach(sockets[0], by_source(2))
    sources = [f"127.0.0.{i}" for i in range(1, 65)]
    first = {s: _land(port, s, results) for s in sources}
    stable = all(_land(port, s, results) == first[s] for s in sources for _ in range(3))
    agrees = all(first[s] == src_hash(0x7F000000 + i, 2) for i, s in enumerate(sources, 1))
    spread = Counter(first.values())
    print(
        f"source hash, 2 workers, 64 sources (127.0.0.1-64) x 4 connections each:"
        f" spread {dict(sorted(spread.items()))}, each source always on its worker: {stable},"
        f" each on the worker the hash computed here names: {agrees}"
    )
    for n in (2, 3, 4):
        # The spread the same hash gives for more workers.
        counts = Counter(src_hash(0x7F000000 + i, n) for i in range(1, 65))
        randoms = Counter(src_hash(random.Random(i).getrandbits(32), n) for i in range(4096))
        print(
            f"  hash % {n}: 64 loopback sources {sorted(counts.values())},"
            f" 4096 random addresses {sorted(randoms.values())}"
        )

    # A restart: worker 0 goes (its socket closes), a new one joins the group.
    workers[0].kill()
    workers[0].join()
    sockets[0].close()
    during = Counter(_land(port, s, results) for s in sources)
    sockets[0] = _listener(port)
    again = FORK.Process(target=_acceptor, args=(sockets, 0, sink), daemon=True)
    again.start()
    after = {s: _land(port, s, results) for s in sources}
    moved = sum(after[s] != first[s] for s in sources)
    print(
        f"restart of worker 0: while it is gone {dict(during)};"
        f" after it rejoins, {moved} of 64 sources moved to the other worker"
    )
    again.kill()
    workers[1].kill()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--option", choices=("shm", "supervisor", "cbpf"), action="append")
    ap.add_argument("--seconds", type=float, default=2.0, help="per supervisor or contention run")
    ap.add_argument("--ops", type=int, default=100_000, help="admit+release per process (shm)")
    args = ap.parse_args()
    options = args.option or ["shm", "supervisor", "cbpf"]
    if "shm" in options:
        print("== shm: per-IP table in /dev/shm, striped locks, a count column per worker")
        shm_costs(args.ops)
        shm_correctness(args.seconds)
    if "supervisor" in options:
        print("== supervisor: the counts in the supervisor, asked over a unix socket")
        supervisor_costs(args.seconds)
    if "cbpf" in options:
        print("== cbpf: SO_ATTACH_REUSEPORT_CBPF, source address hash % workers")
        cbpf_demo()


if __name__ == "__main__":
    main()

"""Time the protocol probes on realistic first bytes.

Run with ``python benchmarks/bench_probes.py``. For every probe and every
input (an HTTP GET, a ~500-byte TLS 1.3 ClientHello with SNI and ALPN
h2/http1.1 from this Python's ssl module, an SSH banner) it times batches of
calls with ``time.perf_counter_ns`` and prints the median ns per call, plus
the bare ClientHello parser and the same hello fragmented over three records.
"""

from __future__ import annotations

import contextlib
import itertools
import ssl
import statistics
import time
from collections.abc import Callable

from refractium.protocols import BUILTIN, CustomProbe
from refractium.protocols.clienthello import parse_client_hello, parse_handshake

BATCH = 1_000
ROUNDS = 200


def client_hello() -> bytes:
    """A real ClientHello, as the first flight of an ssl.SSLObject."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    conn = ctx.wrap_bio(incoming, outgoing, server_hostname="www.example.com")
    with contextlib.suppress(ssl.SSLWantReadError):
        conn.do_handshake()
    return outgoing.read()


def three_records(stream: bytes) -> bytes:
    """Re-frame a single-record hello into three handshake records."""
    body = stream[5 : 5 + int.from_bytes(stream[3:5], "big")]
    cuts = (0, 100, 300, len(body))
    return b"".join(
        b"\x16" + stream[1:3] + (b - a).to_bytes(2, "big") + body[a:b]
        for a, b in itertools.pairwise(cuts)
    )


def median_ns(fn: Callable[[bytes], object], data: bytes) -> float:
    """Median over ROUNDS batches of the mean time of one call in a batch."""
    per_call: list[float] = []
    for _ in range(ROUNDS):
        start = time.perf_counter_ns()
        for _ in range(BATCH):
            fn(data)
        per_call.append((time.perf_counter_ns() - start) / BATCH)
    return statistics.median(per_call)


def main() -> None:
    hello = client_hello()
    inputs = {
        "http GET": b"GET /index.html HTTP/1.1\r\nHost: www.example.com\r\n"
        b"User-Agent: curl/8.5.0\r\nAccept: */*\r\n\r\n",
        f"TLS hello ({len(hello)} B)": hello,
        "SSH banner": b"SSH-2.0-OpenSSH_9.6p1 Ubuntu-3ubuntu13\r\n",
    }
    probes: dict[str, Callable[[bytes], object]] = {
        name: probe.probe for name, probe in BUILTIN.items()
    }
    probes["custom pattern"] = CustomProbe("c1", (b"\x00\x0e8",)).probe
    probes["custom ^regex"] = CustomProbe("c2", regex=r"^HELLO [0-9]+").probe

    width = max(len(k) for k in inputs) + 2
    print(f"median ns per call ({ROUNDS} rounds x {BATCH} calls)\n")
    print("probe".ljust(16) + "".join(k.rjust(width) for k in inputs))
    for name, fn in probes.items():
        row = "".join(f"{median_ns(fn, data):>{width}.0f}" for data in inputs.values())
        print(name.ljust(16) + row)

    print()
    fragmented = three_records(hello)
    parsers: dict[str, tuple[Callable[[bytes], object], bytes]] = {
        "parse_client_hello (1 record)": (parse_client_hello, hello),
        "parse_client_hello (3 records)": (parse_client_hello, fragmented),
        "parse_handshake (bare message)": (parse_handshake, hello[5:]),
        "tls probe, hello cut in half": (BUILTIN["tls"].probe, hello[: len(hello) // 2]),
    }
    for label, (fn, data) in parsers.items():
        print(f"{label:<34}{median_ns(fn, data):>8.0f} ns")


if __name__ == "__main__":
    main()

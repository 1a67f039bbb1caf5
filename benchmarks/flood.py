"""A flood from many source addresses: the limiter's memory stays under its cap.

    python benchmarks/flood.py [--addresses 100000] [--max-clients 0,10000,100000]

For each ``max_clients`` (0: no ``[limits]``, the baseline): starts
``refractium tcp`` with ``[limits]`` (a rate per client, bans armed) behind
a trusted PROXY protocol sender (this script), opens one connection per
distinct source address (random addresses of 10.0.0.0/8, presented in a
PROXY v1 header), each sending one HTTP request the backend answers, and
reports the proxy's RSS before and after, the clients the limiter forgot to
stay under its cap (``limiter_evictions``), and connections per second. The
addresses are all new, so every one takes a bucket: without a cap the
tables would grow with the flood.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from targets import HOST, free_port, rss_kib

ROOT = Path(__file__).resolve().parents[1]


async def backend(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with_data = await reader.readuntil(b"\r\n\r\n")
    if with_data:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n")
    await writer.drain()
    writer.close()


async def one(port: int, source: str) -> bool:
    try:
        reader, writer = await asyncio.open_connection(HOST, port)
    except OSError:
        return False
    try:
        writer.write(
            f"PROXY TCP4 {source} 127.0.0.1 40000 {port}\r\n".encode()
            + b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        answer = await reader.read()
        return answer.endswith(b"ok\n")
    except OSError:
        return False
    finally:
        writer.close()


def metric(text: str, name: str) -> float:
    match = re.search(rf"^{name} ([0-9.e+]+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


async def scrape(port: int) -> str:
    reader, writer = await asyncio.open_connection(HOST, port)
    writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    text = (await reader.read()).decode()
    writer.close()
    return text


async def flood(addresses: int, max_clients: int, concurrency: int) -> dict[str, float]:
    server = await asyncio.start_server(backend, HOST, 0)
    http = server.sockets[0].getsockname()[1]
    port, admin = free_port(), free_port()
    # 1/h with a burst of 10: every client's bucket stays less than full for
    # long after its connection, so forgetting one to make room is counted.
    limits = (
        '[limits]\nconnection_rate = "1/h"\nconnection_burst = 10\nban_after = 1000\n'
        f"max_clients = {max_clients}\n"
        if max_clients
        else ""
    )
    with tempfile.TemporaryDirectory() as tmp:
        conf = Path(tmp) / "flood.toml"
        conf.write_text(
            f'[server]\nbind = "{HOST}"\nport = {port}\nmax_connections = 20000\n'
            f"max_connections_per_ip = 0\naccept_proxy_protocol = true\n"
            f'trusted_proxies = ["127.0.0.1"]\n'
            f'[admin]\nbind = "{HOST}:{admin}"\n'
            # The admin API's own RemoteMap would keep 100,000 remotes: a small one.
            '[endpoint]\nhooks = [{ use = "refractium.remotes:RemoteMap", max_remotes = 1000 }]\n'
            + limits
            + f'[[protocols]]\nname = "http"\nforward_to = "{HOST}:{http}"\n'
        )
        proc = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "refractium", "tcp", "-c", str(conf), "--log-level", "error"),
            env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
        )
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    await scrape(admin)
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.1)
            before = rss_kib([proc.pid])
            rng = random.Random(max_clients)
            sources = {
                f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}"
                for _ in range(addresses * 2)
            }
            chosen = list(sources)[:addresses]
            limit = asyncio.Semaphore(concurrency)

            async def bounded(source: str) -> bool:
                async with limit:
                    return await one(port, source)

            start = time.monotonic()
            ok = sum(await asyncio.gather(*(bounded(s) for s in chosen)))
            elapsed = time.monotonic() - start
            after = rss_kib([proc.pid])
            text = await scrape(admin)
        finally:
            proc.terminate()
            await proc.wait()
            server.close()
    return {
        "max_clients": max_clients,
        "addresses": len(chosen),
        "served": ok,
        "conn_per_s": ok / elapsed,
        "rss_before_mib": before / 1024,
        "rss_after_mib": after / 1024,
        "evictions": metric(text, "refractium_limiter_evictions_total"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--addresses", type=int, default=100_000)
    parser.add_argument(
        "--max-clients", default="0,10000,100000", help="0: no [limits] at all (the baseline)"
    )
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    print(
        f"{'max_clients':>11} {'addresses':>9} {'served':>7} {'conn/s':>7} "
        f"{'RSS before':>10} {'RSS after':>9} {'growth':>7} {'forgotten':>9}"
    )
    for cap in (int(n) for n in args.max_clients.split(",")):
        r = asyncio.run(flood(args.addresses, cap, args.concurrency))
        print(
            f"{cap:>11,} {r['addresses']:>9,.0f} {r['served']:>7,.0f} {r['conn_per_s']:>7,.0f} "
            f"{r['rss_before_mib']:>7.1f} MiB {r['rss_after_mib']:>5.1f} MiB "
            f"{r['rss_after_mib'] - r['rss_before_mib']:>4.1f} MiB {r['evictions']:>9,.0f}"
        )


if __name__ == "__main__":
    main()

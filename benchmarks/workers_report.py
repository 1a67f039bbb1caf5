"""The figures of workers.py: its settings, the samples of a run, and the tables.

Kept apart from the runs themselves (``workers.py``) so each file reads on its own:
this one turns medians into the printed tables and the derived figures of the JSON
(ratios, scaling efficiency, the CPU-per-connection check).
"""

from __future__ import annotations

import os
import statistics
import sys
from dataclasses import dataclass, field
from typing import Any

from run import fmt

CPUS = os.cpu_count() or 1


@dataclass(frozen=True)
class Settings:
    workers: tuple[int, ...] = (1, 2)
    rounds: int = 5
    seconds: float = 2.0  # per connection-rate run (wrk takes whole seconds)
    warmup: float = 1.0
    clients: int = max(1, CPUS // 2)  # load generator processes, run in parallel
    concurrency: int = 32  # connections in flight per load generator
    backends: int = max(1, CPUS // 4)  # nginx worker processes
    streams: int = 4  # parallel bulk transfers
    bulk_mib: int = 256  # per transfer
    loop: str = "uvloop"


@dataclass
class Results:
    samples: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    rss_kib: dict[str, dict[str, Any]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    tool: str = ""

    def add(self, figure: str, key: str, value: float) -> None:
        self.samples.setdefault(figure, {}).setdefault(key, []).append(value)

    def median(self, figure: str, key: str) -> float | None:
        values = self.samples.get(figure, {}).get(key)
        return statistics.median(values) if values else None

    def problem(self, text: str) -> None:
        self.problems.append(text)
        print(f"  ! {text}", file=sys.stderr)


# -- the report ------------------------------------------------------------------


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}" if a is not None and b else "-"


def cell(value: float | None) -> str:
    return fmt(value) if value is not None else "-"


def report(s: Settings, r: Results) -> tuple[str, dict[str, Any]]:
    """The tables of the phases that ran, and the figures derived from the medians (for JSON)."""
    derived: dict[str, Any] = {"per_n": {n: {} for n in s.workers}}
    parts = [
        part
        for part in (
            conn_report(s, r, derived),
            bulk_report(s, r, derived),
            memory_report(s, r),
        )
        if part
    ]
    errors = {k: int(sum(v)) for k, v in r.samples.get("errors", {}).items() if sum(v)}
    if errors:
        parts.append(["failed connections: " + ", ".join(f"{k} {v}" for k, v in errors.items())])
    return "\n\n".join("\n".join(part) for part in parts), derived


def conn_report(s: Settings, r: Results, derived: dict[str, Any]) -> list[str]:
    """Connections/s, scaling efficiency, CPU per connection."""
    if "conn_per_s" not in r.samples:
        return []
    med = r.median
    out: list[str] = []
    direct_rate = med("conn_per_s", "direct")
    refr1 = med("conn_per_s", "refractium-w1")
    ha1 = med("conn_per_s", "haproxy-t1")
    cpu1 = med("proxy_us_per_conn", "refractium-w1")

    out.append(
        f"connections/s ({r.tool} x {s.clients}, -c{s.concurrency} each, {s.seconds:g} s runs; "
        f"direct {cell(direct_rate)})"
    )
    out.append(
        f"{'N':>3} {'refractium':>11} {'x direct':>9} {'x haproxy':>10} {'efficiency':>11}"
        f" {'haproxy':>9} {'x direct':>9} {'efficiency':>11}"
    )
    for n in s.workers:
        rate, ha = med("conn_per_s", f"refractium-w{n}"), med("conn_per_s", f"haproxy-t{n}")
        eff = rate / (n * refr1) if rate is not None and refr1 else None
        ha_eff = ha / (n * ha1) if ha is not None and ha1 else None
        derived["per_n"][n].update(
            refractium_conn_per_s=rate,
            haproxy_conn_per_s=ha,
            refractium_x_direct=rate / direct_rate if rate and direct_rate else None,
            refractium_x_haproxy=rate / ha if rate and ha else None,
            refractium_efficiency=eff,
            haproxy_efficiency=ha_eff,
        )
        out.append(
            f"{n:>3} {cell(rate):>11} {ratio(rate, direct_rate):>9} {ratio(rate, ha):>10}"
            f" {ratio(eff, 1.0):>11} {cell(ha):>9} {ratio(ha, direct_rate):>9}"
            f" {ratio(ha_eff, 1.0):>11}"
        )

    out.append("")
    out.append("CPU µs per connection (proxy: supervisor and workers summed; client, backend)")
    out.append(
        f"{'N':>3} {'refractium':>11} {'x N=1':>6} {'client':>7} {'backend':>8} {'cores':>6}"
        f" {'haproxy':>9} {'client':>7} {'backend':>8} {'cores':>6}"
    )
    for n in s.workers:
        rk, hk = f"refractium-w{n}", f"haproxy-t{n}"
        cpu = med("proxy_us_per_conn", rk)
        derived["per_n"][n]["refractium_cpu_us_per_conn"] = cpu
        derived["per_n"][n]["haproxy_cpu_us_per_conn"] = med("proxy_us_per_conn", hk)
        derived["per_n"][n]["refractium_cpu_x_n1"] = cpu / cpu1 if cpu and cpu1 else None
        out.append(
            f"{n:>3} {cell(cpu):>11} {ratio(cpu, cpu1):>6}"
            f" {cell(med('client_us_per_conn', rk)):>7} {cell(med('backend_us_per_conn', rk)):>8}"
            f" {cell(med('cores_busy', rk)):>6} {cell(med('proxy_us_per_conn', hk)):>9}"
            f" {cell(med('client_us_per_conn', hk)):>7} {cell(med('backend_us_per_conn', hk)):>8}"
            f" {cell(med('cores_busy', hk)):>6}"
        )
    out.append(
        f"  direct: client {cell(med('client_us_per_conn', 'direct'))}, backend "
        f"{cell(med('backend_us_per_conn', 'direct'))} µs/conn, "
        f"{cell(med('cores_busy', 'direct'))} cores busy (of {CPUS})"
    )
    others = r.samples.get("others_cores", {}).get("all")
    if others:
        out.append(
            f"  other processes on the machine during the runs: median "
            f"{statistics.median(others):.2f} cores, highest {max(others):.2f}"
        )
        if statistics.median(others) > 0.1 * CPUS:
            out.append("  (the machine was busy with other work: run again when it is quiet)")
    cpu2 = med("proxy_us_per_conn", "refractium-w2")
    if cpu1 and cpu2:
        growth = cpu2 / cpu1
        verdict = "ok" if growth <= 1.10 else "OVER the 1.10 limit"
        out.append(f"  refractium CPU per connection, N=2 / N=1: {growth:.2f} ({verdict})")
        derived["cpu_growth_n2_over_n1"] = growth
    return out


def bulk_report(s: Settings, r: Results, derived: dict[str, Any]) -> list[str]:
    """Bulk MiB/s and the proxy's CPU per GiB."""
    if "bulk_mib_per_s" not in r.samples:
        return []
    med = r.median
    out: list[str] = []
    direct_bulk = med("bulk_mib_per_s", "direct")
    half = s.streams // 2
    out.append(
        f"bulk MiB/s ({s.streams} x {s.bulk_mib} MiB in parallel, {s.streams - half} up and "
        f"{half} down; direct {cell(direct_bulk)})"
    )
    out.append(
        f"{'N':>3} {'refractium':>11} {'x direct':>9} {'x haproxy':>10} {'CPU s/GiB':>10}"
        f" {'haproxy':>9} {'x direct':>9} {'CPU s/GiB':>10}"
    )
    for n in s.workers:
        rk, hk = f"refractium-w{n}", f"haproxy-t{n}"
        mibs, ha = med("bulk_mib_per_s", rk), med("bulk_mib_per_s", hk)
        derived["per_n"][n]["refractium_bulk_mib_per_s"] = mibs
        derived["per_n"][n]["haproxy_bulk_mib_per_s"] = ha
        out.append(
            f"{n:>3} {cell(mibs):>11} {ratio(mibs, direct_bulk):>9} {ratio(mibs, ha):>10}"
            f" {cell(med('bulk_cpu_s_per_gib', rk)):>10} {cell(ha):>9}"
            f" {ratio(ha, direct_bulk):>9} {cell(med('bulk_cpu_s_per_gib', hk)):>10}"
        )
    return out


def memory_report(s: Settings, r: Results) -> list[str]:
    """RSS of each worker, of the supervisor, and of HAProxy."""
    if not r.rss_kib:
        return []
    out = [
        "memory after the connection runs, MiB (RSS counts the shared interpreter and "
        "libraries in every process; PSS divides them)"
    ]
    out.append(
        f"{'N':>3} {'worker RSS':>12} {'worker PSS':>12} {'supervisor RSS':>15} {'PSS':>6}"
        f" {'total PSS':>10} {'haproxy RSS':>12}"
    )

    def span(kib: list[int]) -> str:
        low, high = min(kib) / 1024, max(kib) / 1024
        return f"{low:.1f}" if f"{low:.1f}" == f"{high:.1f}" else f"{low:.1f}-{high:.1f}"

    for n in s.workers:
        mem = r.rss_kib.get(f"refractium-w{n}")
        ha_mem = r.rss_kib.get(f"haproxy-t{n}")
        ha_rss = f"{ha_mem['workers'][0] / 1024:.1f}" if ha_mem else "-"
        if not mem or not mem["workers"]:
            out.append(f"{n:>3} {'-':>12} {'-':>12} {'-':>15} {'-':>6} {'-':>10} {ha_rss:>12}")
            continue
        sup, sup_pss = mem["supervisor"], mem["supervisor_pss"]
        total = (sum(mem["workers_pss"]) + (sup_pss or 0)) / 1024
        out.append(
            f"{n:>3} {span(mem['workers']):>12} {span(mem['workers_pss']):>12}"
            f" {f'{sup / 1024:.1f}' if sup else '-':>15}"
            f" {f'{sup_pss / 1024:.1f}' if sup_pss else '-':>6} {total:>10.1f} {ha_rss:>12}"
        )
    return out

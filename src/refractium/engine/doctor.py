"""What ``refractium doctor`` checks: is this host ready for the transparent routes?

A transparent dial binds to the client's address (IP_TRANSPARENT), which
needs CAP_NET_ADMIN; the backend's replies, addressed to the client, reach
the proxy only when the packets of transparent sockets are marked on the
way in and the mark is routed to a table that delivers everything locally;
a backend on 127.0.0.0/8 also needs ``route_localnet``. Each check reads the
host (``/proc``, ``ip``, ``nft``/``iptables-save``) and changes nothing; a
missing piece comes with the commands that put it in place.

The checks are functions of what a :class:`Host` reads, so that they can be
tried on any text; :class:`LiveHost` reads this machine.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from refractium.config import Config, RouteConfig

__all__ = ["Check", "Host", "LiveHost", "checks", "report", "transparent_routes"]

CAP_NET_ADMIN = 12
_DEFAULT_MARK = "1"
_DEFAULT_TABLE = "100"
# Where `ip` and the firewall tools live when PATH (a user's) lacks sbin.
_SBIN = ("/usr/sbin", "/sbin")


@dataclass(frozen=True, slots=True)
class Check:
    """One line of the report: what was checked, whether it is in place, how to fix it."""

    name: str
    ok: bool
    detail: str
    fix: tuple[str, ...] = ()


class Host(Protocol):
    """What the checks read: files and the output of read-only commands."""

    def read(self, path: str) -> str | None:
        """The file's text, or None when it cannot be read."""

    def run(self, argv: Sequence[str]) -> str | None:
        """The command's standard output, or None when it is missing or fails."""


class LiveHost:
    """This machine, read through /proc and read-only commands."""

    def read(self, path: str) -> str | None:
        try:
            with open(path, encoding="ascii") as file:
                return file.read()
        except OSError:
            return None

    def run(self, argv: Sequence[str]) -> str | None:
        search = os.pathsep.join([os.environ.get("PATH", os.defpath), *_SBIN])
        program = shutil.which(argv[0], path=search)
        if program is None:
            return None
        try:
            done = subprocess.run(
                [program, *argv[1:]],
                capture_output=True,
                text=True,
                timeout=10,
                env={**os.environ, "LC_ALL": "C"},
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout if done.returncode == 0 else None


def transparent_routes(config: Config) -> tuple[RouteConfig, ...]:
    """The routes with ``transparent = true``, in file order."""
    return tuple(route for route in config.protocols if route.transparent)


def _families(config: Config) -> tuple[int, ...]:
    # An IPv6 listener is IPv6-only: IPv6 clients exist only where one is bound.
    v6 = any(":" in bind for bind in config.server.bind)
    v4 = any(":" not in bind for bind in config.server.bind)
    return tuple(version for version, wanted in ((4, v4), (6, v6)) if wanted)


def capability(host: Host) -> Check:
    """CAP_NET_ADMIN in the effective set (bit 12 of CapEff in /proc/self/status)."""
    status = host.read("/proc/self/status") or ""
    match = re.search(r"^CapEff:\s*([0-9a-fA-F]+)", status, re.MULTILINE)
    if match and int(match.group(1), 16) >> CAP_NET_ADMIN & 1:
        return Check("CAP_NET_ADMIN", True, "this process has it")
    return Check(
        "CAP_NET_ADMIN",
        False,
        "this process lacks it: setting IP_TRANSPARENT will fail",
        (
            "run refractium as root, or give it the capability:",
            "  systemd unit: AmbientCapabilities=CAP_NET_ADMIN",
            "  container: docker run --cap-add NET_ADMIN ...",
        ),
    )


def _marked_tables(rules: str) -> list[tuple[str, str]]:
    """(mark, table) of each ``ip rule`` that routes a fwmark to a table."""
    found = []
    for line in rules.splitlines():
        match = re.search(r"\bfwmark (\S+?)(?:/\S+)? lookup (\S+)", line)
        if match:
            found.append((match.group(1), match.group(2)))
    return found


def _delivers_locally(routes: str, version: int) -> bool:
    everything = ("default", "0.0.0.0/0" if version == 4 else "::/0")
    for line in routes.splitlines():
        words = line.split()
        whole = words[:2] in (["local", everything[0]], ["local", everything[1]])
        if whole and "dev" in words and words[words.index("dev") + 1 :][:1] == ["lo"]:
            return True
    return False


def policy_routing(host: Host, version: int) -> tuple[Check, str]:
    """Whether a fwmark rule leads to a table routing everything to ``lo``; and its mark."""
    name = f"policy routing (IPv{version})"
    flag = f"-{version}"
    everything = "0.0.0.0/0" if version == 4 else "::/0"
    rules = host.run(["ip", flag, "rule", "show"])
    if rules is None:
        return Check(name, False, "cannot run 'ip rule show' (is iproute2 installed?)"), ""
    marked = _marked_tables(rules)
    for mark, table in marked:
        routes = host.run(["ip", flag, "route", "show", "table", table])
        if routes is not None and _delivers_locally(routes, version):
            detail = f"fwmark {mark} looks up table {table}, which delivers locally"
            return Check(name, True, detail), mark
    route = f"ip {flag} route add local {everything} dev lo table "
    if marked:
        mark, table = marked[0]
        detail = f"fwmark {mark} looks up table {table}, which lacks 'local {everything} dev lo'"
        return Check(name, False, detail, (route + table,)), mark
    detail = f"no 'ip {flag} rule' sends marked packets to a table that delivers locally"
    fix = (f"ip {flag} rule add fwmark {_DEFAULT_MARK} lookup {_DEFAULT_TABLE}", route + "100")
    return Check(name, False, detail, fix), ""


def _nft_marks(ruleset: str, version: int) -> bool:
    # A rule counts for the families its table sees: inet sees both.
    families = ("ip", "inet") if version == 4 else ("ip6", "inet")
    family = ""
    for line in ruleset.splitlines():
        words = line.split()
        if words[:1] == ["table"] and len(words) > 1:
            family = words[1]
        elif "socket transparent" in line and "mark set" in line and family in families:
            return True
    return False


def _iptables_marks(rules: str) -> bool:
    return any(
        "-m socket" in line and "--transparent" in line and "MARK" in line
        for line in rules.splitlines()
    )


def packet_mark(host: Host, version: int, mark: str) -> Check:
    """Whether incoming packets of transparent sockets get a mark (nft or iptables)."""
    name = f"packet mark (IPv{version})"
    ruleset = host.run(["nft", "list", "ruleset"])
    if ruleset is not None and _nft_marks(ruleset, version):
        return Check(name, True, "nft marks the packets of transparent sockets")
    save = "iptables-save" if version == 4 else "ip6tables-save"
    mangle = host.run([save, "-t", "mangle"])
    if mangle is not None and _iptables_marks(mangle):
        return Check(name, True, f"{save}: mangle PREROUTING marks transparent sockets")
    mark = mark or _DEFAULT_MARK
    family = "ip" if version == 4 else "ip6"
    iptables = "iptables" if version == 4 else "ip6tables"
    fix = (
        f"nft add table {family} refractium",
        f"nft 'add chain {family} refractium prerouting "
        "{ type filter hook prerouting priority mangle; }'",
        f"nft add rule {family} refractium prerouting "
        f"meta l4proto tcp socket transparent 1 meta mark set {mark}",
        f"or: {iptables} -t mangle -A PREROUTING -p tcp -m socket --transparent "
        f"-j MARK --set-mark {mark}",
    )
    unread = " (the ruleset could not be read)" if ruleset is None and mangle is None else ""
    return Check(name, False, f"no rule marks the packets of transparent sockets{unread}", fix)


def _loopback_backends(route: RouteConfig) -> list[str]:
    found = []
    for address in route.forward_to:
        try:
            ip = ipaddress.ip_address(address.host)
        except ValueError:
            continue  # a name: resolved at dial time, not checked here
        if ip.version == 4 and ip.is_loopback:
            found.append(str(address))
    return found


def route_localnet(host: Host, route: RouteConfig) -> Check | None:
    """For a route with a backend on 127.0.0.0/8: ``route_localnet`` is on (None: no such)."""
    backends = _loopback_backends(route)
    if not backends:
        return None
    name = f"route_localnet (route {route.name})"
    where = "/proc/sys/net/ipv4/conf/{}/route_localnet"
    if any((host.read(where.format(dev)) or "").strip() == "1" for dev in ("all", "lo")):
        return Check(name, True, "net.ipv4.conf.all.route_localnet is on")
    detail = f"backend {', '.join(backends)} is on 127.0.0.0/8 and route_localnet is off"
    return Check(name, False, detail, ("sysctl -w net.ipv4.conf.all.route_localnet=1",))


def checks(config: Config, host: Host) -> list[Check]:
    """Every check the transparent routes of ``config`` need (none: no such route)."""
    routes = transparent_routes(config)
    if not routes:
        return []
    found = [capability(host)]
    for version in _families(config):
        routing, mark = policy_routing(host, version)
        found += [routing, packet_mark(host, version, mark)]
    for route in routes:
        localnet = route_localnet(host, route)
        if localnet is not None:
            found.append(localnet)
    return found


def report(config: Config, host: Host) -> tuple[str, int]:
    """The doctor's text and exit status: 1 while something is missing."""
    routes = transparent_routes(config)
    if not routes:
        return "no route has transparent = true: nothing to check", 0
    lines = [f"transparent routes: {', '.join(route.name for route in routes)}"]
    found = checks(config, host)
    for check in found:
        lines.append(f"{'ok' if check.ok else 'missing':<8} {check.name}: {check.detail}")
        lines += [
            f"{'fix:' if i == 0 else '':>13} {command}" for i, command in enumerate(check.fix)
        ]
    missing = sum(not check.ok for check in found)
    lines.append(f"doctor: {missing} missing" if missing else "doctor: all in place")
    return "\n".join(lines), 1 if missing else 0

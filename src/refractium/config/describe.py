"""The configuration as text, for ``refractium check``: listeners, each port's routes, the
route table, the rest.

Pure: it formats a validated :class:`~refractium.config.model.Config` and
reads nothing else.
"""

from __future__ import annotations

from collections.abc import Sequence

from refractium.addr import format_host
from refractium.config.model import (
    Config,
    LimitsConfig,
    Offence,
    RouteConfig,
    StateBackend,
    StateConfig,
    route_transport,
)

__all__ = ["describe"]


def describe(config: Config) -> str:
    """The configuration as `refractium check` prints it: listeners, routes, the rest."""
    server = config.server
    any_port = " (any free port)" if server.port == (0,) else ""
    listen = ", ".join(
        f"{format_host(host)}:{port}" for host in server.bind for port in server.port
    )
    lines = [f"config:       {config.source or '(none)'}", f"listen:       {listen}{any_port}"]
    lines += _ports(config)
    lines.append("")
    if config.protocols:
        header = ("#", "id", "name", "transport", "balance", "match", "options", "forward to")
        lines += _table([header, *(_route_row(route) for route in config.protocols)])
    else:
        lines.append("routes:       none")
    timeout_route = config.timeout_route
    if timeout_route is not None and server.on_timeout is None:
        timeout_route += " (default)"
    admin = config.admin
    lines += [
        "",
        f"fallback tcp: {server.fallback_tcp or 'none'}",
        f"fallback udp: {server.fallback_udp or 'none'}",
        f"on timeout:   {timeout_route or 'none'}",
        f"admin:        {admin.bind or 'off'}{' (token required)' if admin.token else ''}",
        f"workers:      {server.workers}{' (one process)' if server.workers == 1 else ''}",
        f"endpoint:     {', '.join(h.use for h in config.endpoint.hooks) or 'no hooks'}",
    ]
    if config.limits != LimitsConfig():
        lines.append(f"limits:       {_limits(config.limits)}")
    if config.state != StateConfig():
        lines.append(f"state:        {_state(config.state)}")
    return "\n".join(lines)


def _limits(limits: LimitsConfig) -> str:
    """``[limits]`` on one line: the rate, the lists, the bans, in that order."""
    groups = f"per /{limits.group_v4} /{limits.group_v6}"
    parts = []
    rate = limits.connection_rate
    if rate is not None:
        parts.append(f"rate {rate.text} burst {rate.burst} {groups}")
    lists = [f"deny {len(limits.deny)}"] if limits.deny else []
    lists += [f"allow {len(limits.allow)}"] if limits.allow else []
    lists += [f"deny_file {limits.deny_file}"] if limits.deny_file else []
    if lists:
        parts.append(", ".join(lists))
    if limits.ban_after:
        # The groups once: with the rate when there is one.
        who = "" if rate is not None else f" {groups}"
        ban = (
            f"ban{who} after {limits.ban_after} in {limits.ban_window_s:g} s"
            f" for {limits.ban_for_s:g} s"
        )
        if limits.offences != frozenset(Offence):
            named = [o.value for o in Offence if o in limits.offences]
            ban += f" ({', '.join(named) or 'no offence'})"
        parts.append(ban)
    else:
        parts.append("no ban")
    if limits.max_clients != LimitsConfig().max_clients:
        parts.append(f"{limits.max_clients} clients kept")
    return "; ".join(parts)


def _state(state: StateConfig) -> str:
    """``[state]`` on one line, any password in the url hidden."""
    if state.backend is StateBackend.MEMORY:
        return "memory"
    url = _without_password(state.url)
    return f"{state.backend} {url} prefix {state.prefix!r} on_error {state.on_error}"


def _without_password(url: str) -> str:
    """``redis://user:secret@host`` as ``redis://user:***@host``: check output gets pasted."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    user = userinfo.partition(":")[0]
    return f"{scheme}{sep}{user}:***@{host}"


def _ports(config: Config) -> list[str]:
    """Which routes each listen port serves, when that is not simply all of them on one port.

    A route naming ``ports`` is served on those only; the others on every port.
    """
    ports = config.server.port
    if len(ports) < 2 and not any(route.ports for route in config.protocols):
        return []
    lines = []
    for port in ports:
        served = [
            f"{route.index} {route.name}"
            for route in config.protocols
            if not route.ports or port in route.ports
        ]
        lines.append(f"{f'port {port}:':<14}{', '.join(served) or 'no routes'}")
    return lines


def _route_row(route: RouteConfig) -> tuple[str, ...]:
    match = [f"sni={','.join(route.sni)}"] if route.sni else []
    match += [f"alpn={','.join(route.alpn)}"] if route.alpn else []
    match += [f"ja4={','.join(route.ja4)}"] if route.ja4 else []
    match += [f"patterns={len(route.patterns)}"] if route.patterns else []
    match += [f"regex={route.regex!r}"] if route.regex is not None else []
    options = [f"proxy_protocol=v{route.proxy_protocol}"] if route.proxy_protocol else []
    options += [f"hooks={len(route.hooks)}"] if route.hooks else []
    options += ["health_check"] if route.health_check else []
    rate = route.connection_rate
    options += [f"connection_rate={rate.text}"] if rate is not None else []
    transport = route_transport(route)
    return (
        str(route.index),
        route.id or route.name,
        route.name,
        "?" if transport is None else transport.value,
        route.balance.value,
        " ".join(match) or "-",
        " ".join(options) or "-",
        ", ".join(str(address) for address in route.forward_to),
    )


def _table(rows: Sequence[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]

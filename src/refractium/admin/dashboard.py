"""The dashboard: one self-contained page on ``GET /`` and the JSON it polls.

The page (``static/dashboard.html``, package data) carries its styles and
script inline and loads nothing else: it works on a machine without
internet, and its Content-Security-Policy forbids it to fetch from any other
origin. Once a second its script asks ``GET /dashboard.json?since=SEQ`` for
the figures and the history samples it has not seen yet, and draws the
charts itself (inline SVG).

:func:`document` builds that JSON from the engine (routes, backends,
counters, the latest :class:`~refractium.admin.history.Sampler` reading) and
the RemoteMap; the data path does nothing for it. Route ids, SNI names,
client addresses and reasons reach the page as JSON and are inserted as
text, never as markup.
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import time
from functools import cache
from importlib import resources
from typing import Any

from refractium.abuse.guard import Guard
from refractium.admin.history import HISTORY_SAMPLES, SAMPLE_INTERVAL_S, Sampler
from refractium.admin.status import status
from refractium.admin.view import EngineView, served_stats
from refractium.endpoint.remotes import RemoteMap
from refractium.relay.stats import Refused

#: Remotes shown, the busiest first.
TOP_REMOTES = 10
#: Refusals shown, the newest first.
RECENT_REJECTIONS = 50
#: How long one reading of the RemoteMap is reused (it sorts every remote).
REMOTES_TTL_S = 1.0

HTML = "text/html; charset=utf-8"


@cache
def page() -> tuple[bytes, str]:
    """The page's bytes and the Content-Security-Policy that goes with them."""
    text = resources.files("refractium.admin").joinpath("static/dashboard.html").read_text("utf-8")
    # The one inline script is allowed by its hash, and nothing else runs.
    start = text.index("<script>") + len("<script>")
    script = text[start : text.index("</script>", start)]
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    policy = (
        "default-src 'none'; "
        f"script-src 'sha256-{digest}'; "
        "style-src 'unsafe-inline'; "
        "img-src data:; "
        "connect-src 'self'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
    return text.encode(), policy


def unauthorized_page() -> bytes:
    """The 401 page: how to pass the token."""
    return b"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Refractium: token needed</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
:root{color-scheme:light dark;font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}
body{max-width:38rem;margin:12vh auto;padding:0 1.5rem;line-height:1.5}
h1{font-size:1.4rem}code{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;
background:rgba(127,127,127,.15);padding:.1em .35em;border-radius:4px}
</style></head><body>
<h1>This dashboard needs the admin token</h1>
<p>The proxy's <code>[admin] token</code> is set. Open this page once with the token in
the address, <code>?token=YOUR-TOKEN</code>: the browser keeps it in a cookie and the
address loses it. Programs send <code>Authorization: Bearer YOUR-TOKEN</code> instead.</p>
<p>A token that was given but refused is wrong: check the configuration file.</p>
</body></html>
"""


class RemotesCache:
    """The top remotes of the RemoteMap, read at most once per :data:`REMOTES_TTL_S`."""

    def __init__(self) -> None:
        self._at = -REMOTES_TTL_S
        self._rows: list[dict[str, Any]] = []

    def top(self, remote_map: RemoteMap, now: float) -> list[dict[str, Any]]:
        if now - self._at >= REMOTES_TTL_S:
            self._at = now
            # Busiest first: open connections, then all seen.
            self._rows = heapq.nlargest(
                TOP_REMOTES, remote_map.snapshot(), key=lambda r: (r["active"], r["total"])
            )
        return self._rows


def document(
    engine: EngineView,
    sampler: Sampler,
    remote_map: RemoteMap | None,
    remotes: RemotesCache,
    uptime_s: float,
    since: int = 0,
) -> dict[str, Any]:
    """What the page shows, with the history samples after ``since``."""
    tcp, udp = served_stats(engine)
    load = sampler.load
    routes = []
    for route, row in zip(engine.routes, status(engine, uptime_s)["routes"], strict=True):
        ident = route.id
        active = bytes_in = bytes_out = total = 0
        for transport, stats in (("tcp", tcp), ("udp", udp)):
            live = load.get((transport, ident))
            if live is not None:
                active += live.active
                bytes_in += live.bytes_in
                bytes_out += live.bytes_out
            if stats is not None:
                total += stats.routed.get(ident, 0)
                bytes_in += stats.route_bytes_in.get(ident, 0)
                bytes_out += stats.route_bytes_out.get(ident, 0)
        config = route.config
        row["ja4"] = list(config.ja4) if config is not None else []
        row.update(active=active, total=total, bytes_in=bytes_in, bytes_out=bytes_out)
        routes.append(row)
    refused: list[Refused] = []
    for stats in (tcp, udp):
        if stats is not None:
            refused.extend(stats.recent)
    recent = heapq.nlargest(RECENT_REJECTIONS, refused, key=lambda r: r.at)
    history = sampler.history
    return {
        "now": round(time.time(), 3),
        "uptime_s": round(uptime_s, 3),
        "config": engine.config_source,
        "serving": {"tcp": tcp is not None, "udp": udp is not None},
        "open_connections": engine.open_connections,
        "open_flows": engine.open_flows,
        "totals": {
            "connections": tcp.accepted if tcp is not None else 0,
            "flows": udp.flows if udp is not None else 0,
        },
        "history": {
            "interval_s": SAMPLE_INTERVAL_S,
            "size": HISTORY_SAMPLES,
            "seq": history.seq,
            "samples": [rate.as_json() for rate in history.since(since)],
        },
        "routes": routes,
        "remotes": remotes.top(remote_map, time.monotonic()) if remote_map is not None else None,
        "rejections": [r._asdict() for r in recent],
        **_bans(engine.guard),
    }


#: Bans the page lists at most (soonest to expire first).
SHOWN_BANS = 50


def _bans(guard: Guard) -> dict[str, Any]:
    """The bans panel's rows, when ``[limits]`` is on or a ban is in force (else no panel)."""
    bans = guard.bans()
    if not (guard.active or bans):
        return {}
    rows = [{"remote": b.address, "reason": b.reason, "until": b.expires} for b in bans]
    return {"bans": rows[:SHOWN_BANS]}

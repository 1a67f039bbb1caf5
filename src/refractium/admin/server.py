"""The admin HTTP API: dashboard, metrics, status, remotes and reload on a separate listener.

A small HTTP/1.1 server on an asyncio Protocol, parsed by h11 (no hand-made
HTTP parsing), for operators and Prometheus rather than for the public:

``GET /``
    The live dashboard (:mod:`refractium.admin.dashboard`), one self-contained page.
``GET /dashboard.json``
    What the page polls: figures, routes, remotes, refusals, and the history
    samples after ``?since=SEQ`` (:mod:`refractium.admin.history`).
``GET /metrics``
    Prometheus text exposition of :class:`refractium.admin.metrics.EngineCollector`.
``GET /status``
    Routes, their backends (up, active connections), open connections.
``GET /remotes``
    What a ``refractium.remotes:RemoteMap`` endpoint hook has seen: the
    first one configured, else the admin server's own, which the engine
    adds to its endpoint hooks whenever ``[admin]`` is on.
``POST /reload``
    Re-read the configuration file and swap the route table.
``GET /bans``, ``POST /bans``, ``DELETE /bans/ADDRESS``
    The bans of ``[limits]`` (:mod:`refractium.admin.bans`).

With ``[admin] token`` every request needs it (:mod:`refractium.admin.auth`):
a bearer header, or for GET requests the cookie a ``?token=`` visit sets.

Every handler is synchronous (it reads counters or swaps a table), so a
request is answered in the ``data_received`` call that completes it and a
connection never has two requests in flight (a supervisor's ``before``, which
asks its workers for their figures, is awaited first). The connection itself,
h11 and the bounds that keep a misbehaving client cheap are in
:mod:`refractium.admin.http`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any
from urllib.parse import unquote

import h11
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.registry import Collector

from refractium.addr import format_host
from refractium.admin import bans, dashboard
from refractium.admin.auth import Access, Auth, Target
from refractium.admin.history import Sampler
from refractium.admin.http import (
    AdminConnection,
    Reply,
    error_reply,
    json_reply,
)
from refractium.admin.metrics import EngineCollector
from refractium.admin.status import status
from refractium.admin.view import EngineView
from refractium.endpoint.remotes import RemoteMap
from refractium.errors import ConfigError, RefractiumError
from refractium.relay.listen import listen_error

log = logging.getLogger(__name__)

NO_REMOTE_MAP = (
    'no RemoteMap endpoint hook is configured (add "refractium.remotes:RemoteMap" '
    "to [endpoint] hooks)"
)


#: An endpoint: the request's target and body in, the whole answer out.
Handler = Callable[[Target, bytes], Reply]


class AdminServer:
    """The admin listener of one engine."""

    def __init__(
        self,
        engine: EngineView,
        host: str,
        port: int,
        token: str | None = None,
        *,
        before: Callable[[], Coroutine[Any, Any, None]] | None = None,
        collectors: Sequence[Collector] = (),
        extra_status: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        """
        Args:
            engine: what the endpoints read.
            host, port: where to listen (port 0: any free port).
            token: the bearer token every request needs, if set.
            before: awaited before each request is answered (a supervisor
                asks its workers for fresh figures); must not raise.
            collectors: more metrics for ``/metrics`` (a supervisor's own).
            extra_status: more keys for ``/status`` (a supervisor's workers).
        """
        self._engine = engine
        self.before = before
        self._extra_status = extra_status
        self.tasks: set[asyncio.Task[Any]] = set()  # the ``before`` calls running
        # Served on /remotes when no RemoteMap is configured; the engine adds
        # it to its endpoint hooks (see endpoint_hooks), so /remotes answers.
        self.remote_map = RemoteMap()
        self._host = host
        self._port = port
        self._auth = Auth(token)
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(EngineCollector(engine))
        for collector in collectors:
            self._registry.register(collector)
        self._server: asyncio.Server | None = None
        self._connections: set[AdminConnection] = set()
        self._started = time.monotonic()
        # The dashboard's history: sampled while the listener is up.
        self.sampler = Sampler(engine)
        self._remotes_cache = dashboard.RemotesCache()
        # path -> method -> its handler; a path ending in "/" takes what follows too
        self._routes: dict[bytes, dict[bytes, Handler]] = {
            b"/": {b"GET": self._dashboard},
            b"/dashboard.json": {b"GET": self._dashboard_json},
            b"/metrics": {b"GET": self._metrics},
            b"/status": {b"GET": self._status},
            b"/remotes": {b"GET": self._remotes},
            b"/reload": {b"POST": self._reload},
            b"/bans": {b"GET": self._bans, b"POST": self._ban},
            b"/bans/": {b"DELETE": self._unban},
        }

    def endpoint_hooks(self, configured: tuple[object, ...]) -> tuple[object, ...]:
        """The endpoint hooks the admin API needs besides ``configured``: a
        RemoteMap for ``/remotes``, unless one is configured already."""
        if _first_remote_map(configured) is not None:
            return ()
        return (self.remote_map,)

    async def start(self) -> tuple[str, int]:
        """Listen; return the real ``(host, port)`` (port 0 picks a free one).

        Raises:
            RefractiumError: the address cannot be listened on, in one line
                such as ``admin.bind 127.0.0.1:9901: address already in use``.
        """
        if self._server is not None:
            raise RefractiumError("the admin listener is already running")
        loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_server(
                lambda: AdminConnection(self), self._host, self._port, reuse_address=True
            )
        except OSError as exc:
            raise RefractiumError(
                f"admin.bind {listen_error(self._host, self._port, exc)}"
            ) from None
        self._started = time.monotonic()
        self.sampler.start()
        address = self.address
        assert address is not None
        log.info("admin API listening on http://%s:%d", format_host(address[0]), address[1])
        return address

    @property
    def address(self) -> tuple[str, int] | None:
        """Where the listener is (its first socket), or None when not listening."""
        if self._server is None or not self._server.sockets:
            return None
        name = self._server.sockets[0].getsockname()
        return (name[0], name[1])

    async def close(self) -> None:
        """Stop listening and close the open admin connections."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        await self.sampler.stop()
        for conn in list(self._connections):
            conn.shutdown()
        await server.wait_closed()
        # Let the transports' connection_lost callbacks run before returning.
        await asyncio.sleep(0)

    # -- requests (called by AdminConnection) -------------------------------

    def opened(self, conn: AdminConnection) -> None:
        self._connections.add(conn)

    def closed(self, conn: AdminConnection) -> None:
        self._connections.discard(conn)

    def handle(self, request: h11.Request, body: bytes = b"") -> Reply:
        """The answer to a complete request and its body."""
        target = Target.parse(request.target)
        path = target.path
        access = self._auth.check(request, target)
        if access is Access.SET_COOKIE:
            # Take the token out of the address (and the history) at once.
            headers = (
                ("Location", target.without_token()),
                ("Set-Cookie", self._auth.set_cookie()),
                ("Cache-Control", "no-store"),
            )
            return Reply(303, b"", "text/plain; charset=utf-8", headers)
        if access is Access.DENIED:
            challenge = (("WWW-Authenticate", "Bearer"), ("Cache-Control", "no-store"))
            if path == b"/":
                return Reply(401, dashboard.unauthorized_page(), dashboard.HTML, challenge)
            return error_reply(401, "missing or wrong bearer token", challenge[:1])
        methods = self._routes.get(path)
        if methods is None and path.startswith(b"/bans/") and len(path) > 6:
            methods = self._routes[b"/bans/"]
        if methods is None:
            return error_reply(404, f"no such endpoint: {path.decode('ascii', 'replace')}")
        handler = methods.get(request.method)
        if handler is None:
            allowed = ", ".join(method.decode() for method in methods)
            return error_reply(405, f"use {allowed}", (("Allow", allowed),))
        try:
            return handler(target, body)
        except Exception:  # a bug of ours, not the client's: say so, keep serving
            log.error("admin %s %s failed", request.method.decode(), path.decode(), exc_info=True)
            return error_reply(500, "internal error (see the proxy's log)")

    # -- endpoints ----------------------------------------------------------

    def _dashboard(self, target: Target, body: bytes) -> Reply:
        body, policy = dashboard.page()
        headers = (
            ("Content-Security-Policy", policy),
            ("Cache-Control", "no-store"),
            ("X-Content-Type-Options", "nosniff"),
            ("Referrer-Policy", "no-referrer"),
        )
        return Reply(200, body, dashboard.HTML, headers)

    def _dashboard_json(self, target: Target, body: bytes) -> Reply:
        since = target.param("since")
        document = dashboard.document(
            self._engine,
            self.sampler,
            _first_remote_map(self._engine.endpoint_hooks),
            self._remotes_cache,
            time.monotonic() - self._started,
            int(since) if since is not None and since.isascii() and since.isdigit() else 0,
        )
        return json_reply(200, document, (("Cache-Control", "no-store"),))

    def _metrics(self, target: Target, body: bytes) -> Reply:
        return Reply(200, generate_latest(self._registry), CONTENT_TYPE_LATEST)

    def _status(self, target: Target, body: bytes) -> Reply:
        document = status(self._engine, time.monotonic() - self._started)
        if self._extra_status is not None:
            document.update(self._extra_status())
        return json_reply(200, document)

    def _remotes(self, target: Target, body: bytes) -> Reply:
        remote_map = _first_remote_map(self._engine.endpoint_hooks)
        if remote_map is None:
            return error_reply(404, NO_REMOTE_MAP)
        return json_reply(200, {"remotes": remote_map.snapshot()})

    def _reload(self, target: Target, body: bytes) -> Reply:
        try:
            self._engine.reload_routes()
        except ConfigError as exc:
            log.warning("admin reload failed, keeping the running routes: %s", exc)
            return error_reply(400, str(exc))
        except RefractiumError as exc:
            # Not the file's fault: there is none to re-read (a builder engine).
            log.warning("admin reload refused: %s", exc)
            return error_reply(409, str(exc))
        return json_reply(200, {"reloaded": True, "routes": len(self._engine.routes)})

    def _bans(self, target: Target, body: bytes) -> Reply:
        return json_reply(200, bans.listing(self._engine.guard))

    def _ban(self, target: Target, body: bytes) -> Reply:
        try:
            made = bans.post(self._engine.guard, body, self._engine.guard.limits.ban_for_s)
        except bans.BanRequestError as exc:
            return error_reply(400, str(exc))
        return json_reply(200, made)

    def _unban(self, target: Target, body: bytes) -> Reply:
        quoted = target.path[len(b"/bans/") :].decode("latin-1")
        try:
            lifted = bans.lift(self._engine.guard, quoted)
        except bans.BanRequestError as exc:
            return error_reply(400, str(exc))
        if not lifted:
            return error_reply(404, f"no ban of {unquote(quoted)}")
        return json_reply(200, {"lifted": unquote(quoted)})


def _first_remote_map(hooks: tuple[object, ...]) -> RemoteMap | None:
    return next((hook for hook in hooks if isinstance(hook, RemoteMap)), None)

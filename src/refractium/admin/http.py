"""The admin API's HTTP/1.1 connection: h11 in, whole answers out.

One :class:`AdminConnection` per client of the admin listener
(:mod:`refractium.admin.server` decides what each request gets). Bounds keep
a misbehaving client cheap: request heads of :data:`MAX_HEAD_BYTES`, bodies
of :data:`MAX_BODY_BYTES` (else 413), and :data:`READ_TIMEOUT_S` for each
request to arrive and for the previous answer to be read.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Protocol, cast

import h11

from refractium.addr import format_host
from refractium.util.tasks import spawn

log = logging.getLogger("refractium.admin.server")

__all__ = [
    "JSON",
    "MAX_BODY_BYTES",
    "MAX_HEAD_BYTES",
    "READ_TIMEOUT_S",
    "AdminConnection",
    "Reply",
    "Served",
    "error_reply",
    "json_reply",
]

#: Largest request body accepted (413 beyond); ``POST /bans`` reads a small one.
MAX_BODY_BYTES = 64 * 1024
#: Largest request line plus headers (h11 answers 431 beyond).
MAX_HEAD_BYTES = 16 * 1024
#: Time a client has to send each request, or to read the previous answer.
READ_TIMEOUT_S = 10.0

JSON = "application/json"


@dataclass(frozen=True, slots=True)
class Reply:
    """An HTTP response to send whole."""

    status: int
    body: bytes
    content_type: str = JSON
    headers: tuple[tuple[str, str], ...] = ()


def json_reply(status: int, payload: Any, headers: tuple[tuple[str, str], ...] = ()) -> Reply:
    """``payload`` as compact JSON plus a newline (so ``curl`` output ends its line)."""
    # default=str: a hook's snapshot holding an IP object or a datetime still
    # renders instead of turning the whole answer into a 500.
    text = json.dumps(payload, separators=(",", ":"), default=str)
    return Reply(status, text.encode() + b"\n", JSON, headers)


def error_reply(status: int, message: str, headers: tuple[tuple[str, str], ...] = ()) -> Reply:
    return json_reply(status, {"error": message}, headers)


class Served(Protocol):
    """What a connection needs of the admin server."""

    before: Callable[[], Coroutine[Any, Any, None]] | None
    tasks: set[asyncio.Task[Any]]

    def opened(self, conn: AdminConnection) -> None: ...

    def closed(self, conn: AdminConnection) -> None: ...

    def handle(self, request: h11.Request, body: bytes = b"") -> Reply: ...


class AdminConnection(asyncio.Protocol):
    """One client of the admin API: h11 in, whole responses out."""

    def __init__(self, server: Served) -> None:
        self._server = server
        self._loop = asyncio.get_running_loop()
        self._h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
        self._transport: asyncio.Transport | None = None
        self._peer = "?"
        self._timer: asyncio.TimerHandle | None = None
        self._request: h11.Request | None = None
        self._body = bytearray()
        self._write_paused = False
        self._closing = False
        # Set while the server's ``before`` runs for the request just read.
        self._waiting = False

    # -- asyncio callbacks --------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport: no isinstance.
        self._transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        if peer:
            self._peer = f"{format_host(peer[0])}:{peer[1]}"
        self._server.opened(self)
        self._arm_timer()

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        self._h11.receive_data(data)
        self._process()

    def eof_received(self) -> bool:
        if not self._closing:
            self._h11.receive_data(b"")
            self._process()
        return False  # let the transport close itself

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._transport = None
        self._closing = True
        self._server.closed(self)

    def pause_writing(self) -> None:
        # The client is not reading its answers: stop reading its requests.
        self._write_paused = True
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._transport is not None:
            self._transport.resume_reading()  # when closing: to see the peer's FIN
            self._process()  # requests h11 already holds

    # -- closing --------------------------------------------------------------

    def close(self) -> None:
        """End the connection once the last answer is out (a lingering close).

        A peer may still be sending (a refused body, pipelined requests): a
        plain close would answer that with a reset, which can destroy our
        response in its receive buffer before it is read. So only our side
        is shut (FIN); what still arrives is discarded until the peer's own
        FIN closes the transport, or :data:`READ_TIMEOUT_S` cuts it.
        """
        transport = self._transport
        if transport is None or self._closing:
            return
        self._closing = True
        if transport.can_write_eof():
            transport.write_eof()
        else:
            transport.close()
        self._arm_timer()

    def shutdown(self) -> None:
        """Close now (the server is stopping): politely if nothing is left to send."""
        transport = self._transport
        if transport is None:
            return
        self._closing = True
        if transport.get_write_buffer_size():
            transport.abort()
        else:
            transport.close()

    def _timed_out(self) -> None:
        self._timer = None
        transport = self._transport
        if transport is None:
            return
        log.debug("admin %s: timed out", self._peer)
        if self._closing:
            transport.abort()  # the peer neither reads nor closes
        else:
            self.shutdown()

    def _arm_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_later(READ_TIMEOUT_S, self._timed_out)

    # -- HTTP -----------------------------------------------------------------

    def _process(self) -> None:
        """Handle every event h11 can give from what has been received."""
        while not (self._write_paused or self._closing or self._waiting):
            try:
                event = self._h11.next_event()
            except h11.RemoteProtocolError as exc:
                self._bad_request(exc)
                return
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return
            if isinstance(event, h11.Request):
                self._on_request(event)
            elif isinstance(event, h11.Data):
                self._on_body(event.data)
            elif isinstance(event, h11.EndOfMessage):
                self._on_end()
            elif isinstance(event, h11.ConnectionClosed):
                self.close()

    def _on_request(self, request: h11.Request) -> None:
        self._request = request
        self._body = bytearray()
        for name, value in request.headers:
            # h11 has checked it is digits; refuse before the body arrives.
            if name == b"content-length" and int(value) > MAX_BODY_BYTES:
                self._refuse(413, "request body too large")
                return

    def _on_body(self, data: bytes) -> None:
        if len(self._body) + len(data) > MAX_BODY_BYTES:  # chunked: no length up front
            self._refuse(413, "request body too large")
            return
        self._body += data

    def _on_end(self) -> None:
        request = self._request
        assert request is not None
        before = self._server.before
        if before is None:
            self._answer(request)
            return
        # Answer once ``before`` is done; meanwhile read no further request.
        self._waiting = True
        task = spawn(before(), name="admin-before", owner=self._server.tasks)
        task.add_done_callback(lambda _: self._answer_late(request))

    def _answer_late(self, request: h11.Request) -> None:
        self._waiting = False
        if self._closing:
            return
        self._answer(request)
        self._process()  # a pipelined request h11 already holds

    def _answer(self, request: h11.Request) -> None:
        self._send(request, self._server.handle(request, bytes(self._body)))
        if self._h11.our_state is h11.DONE and self._h11.their_state is h11.DONE:
            self._h11.start_next_cycle()
            self._request = None
            self._arm_timer()  # the next request gets its own time
        else:  # Connection: close, or HTTP/1.0
            self.close()

    def _refuse(self, status: int, message: str) -> None:
        """Answer before the request is complete, then close (it cannot be reused)."""
        if self._request is not None:
            self._send(self._request, error_reply(status, message), close=True)
        self.close()

    def _bad_request(self, exc: h11.RemoteProtocolError) -> None:
        # A client's mistake: one debug line, no traceback.
        log.debug("admin %s: bad request: %s", self._peer, exc)
        if self._h11.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            self._write(error_reply(exc.error_status_hint, f"bad request: {exc}"), close=True)
        self.close()

    def _send(self, request: h11.Request, reply: Reply, *, close: bool = False) -> None:
        log.debug(
            "admin %s %s %s -> %d",
            self._peer,
            request.method.decode("ascii", "replace"),
            request.target.decode("ascii", "replace"),
            reply.status,
        )
        self._write(reply, close=close)

    def _write(self, reply: Reply, *, close: bool) -> None:
        headers = [
            ("Content-Type", reply.content_type),
            ("Content-Length", str(len(reply.body))),
            *reply.headers,
        ]
        if close:
            headers.append(("Connection", "close"))
        try:
            reason = HTTPStatus(reply.status).phrase.encode()
        except ValueError:
            reason = b""
        response = h11.Response(status_code=reply.status, headers=headers, reason=reason)
        data = b"".join(
            self._h11.send(event) or b""
            for event in (response, h11.Data(data=reply.body), h11.EndOfMessage())
        )
        if self._transport is not None:
            self._transport.write(data)

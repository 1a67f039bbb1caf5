"""Mirror: copy each connection's traffic to another address, best effort.

```toml
hooks = [{ use = "refractium.hooks.mirror:Mirror", to = "10.0.0.9:9000", directions = "inbound" }]
```

Every mirrored connection gets its own TCP connection to ``to``, opened on
its first packet, which carries the bytes of the chosen directions
concatenated in the order the proxy read them. What the mirror sends back is
read and discarded.

The mirror can never slow the proxied connection down: :meth:`Mirror.on_packet`
does not wait for anything. It hands bytes to the mirror connection's
transport, or buffers them while that connection is being set up, up to
``max_buffer`` bytes per session. Past that, and when the mirror cannot be
reached, bytes are dropped and counted.

A mirrored stream is always an exact *prefix* of the real one: once bytes
of a session have to be dropped, nothing more of that session is sent, and
its mirror connection is closed after what was already buffered. A stream
with a silent hole in it would be misread by whatever consumes the mirror
(an IDS, a shadow server); a stream that stops early is visibly incomplete.

When connecting fails, new sessions are not mirrored for a while (1 s,
doubling up to 30 s while it keeps failing), so that a mirror that is down
costs neither a connection attempt nor a buffer per new connection.
"""

from __future__ import annotations

import asyncio
import logging
import time
from enum import Enum
from typing import Any, cast

from refractium.addr import AddressError, parse_address
from refractium.hooks.api import Direction, HookContext, ProtocolHook
from refractium.util.logs import RateLimitedLog
from refractium.util.tasks import spawn

log = logging.getLogger(__name__)
events = RateLimitedLog(log)

DIRECTIONS: dict[str, frozenset[Direction]] = {
    "inbound": frozenset({Direction.INBOUND}),
    "outbound": frozenset({Direction.OUTBOUND}),
    "both": frozenset(Direction),
}

#: How long new sessions skip a mirror after it failed to connect, at first...
BACKOFF_MIN_S = 1.0
#: ...and at most, doubling while it keeps failing.
BACKOFF_MAX_S = 30.0


class _State(Enum):
    CONNECTING = "connecting"
    OPEN = "open"
    CLOSED = "closed"  # never connected, or the connection is gone


class _MirrorStream(asyncio.Protocol):
    """One session's mirror connection, and the bytes waiting for it.

    ``accepting`` says whether packets are still taken: it goes False at
    the session's end and at the first byte dropped, after which the
    connection is closed once the buffered bytes are written.
    """

    __slots__ = (
        "accepting",
        "failed",
        "hook",
        "linger",
        "pending",
        "pending_size",
        "session_id",
        "state",
        "task",
        "transport",
    )

    def __init__(self, hook: Mirror, session_id: int) -> None:
        self.hook = hook
        self.session_id = session_id
        self.state = _State.CONNECTING
        self.accepting = True
        self.failed = False  # counted in hook.failed_sessions
        self.pending: list[bytes] = []
        self.pending_size = 0
        self.transport: asyncio.Transport | None = None
        self.task: asyncio.Task[None] | None = None
        self.linger: asyncio.TimerHandle | None = None

    # -- called by the hook (from the event loop) ------------------------------------

    def send(self, packet: bytes) -> None:
        """Mirror ``packet``, or drop it; never waits."""
        hook = self.hook
        size = len(packet)
        if not self.accepting:
            hook.dropped_bytes += size
            return
        if self.state is _State.OPEN:
            transport = cast(asyncio.Transport, self.transport)
            if transport.get_write_buffer_size() + size > hook.max_buffer:
                hook.dropped_bytes += size
                self._give_up("mirror %s is not keeping up: stopped mirroring session %016x")
                return
            transport.write(packet)
            hook.mirrored_bytes += size
            return
        # CONNECTING (CLOSED implies not accepting).
        if self.pending_size + size > hook.max_buffer:
            hook.dropped_bytes += size
            self._give_up("mirror %s is slow to connect: stopped mirroring session %016x")
            return
        self.pending.append(bytes(packet))  # bytes(): never alias a reused buffer
        self.pending_size += size

    def end(self) -> None:
        """The session is over: close after the buffered bytes (or when connected)."""
        self.accepting = False
        if self.state is _State.OPEN:
            self._finish()

    def abort(self) -> None:
        """Shutdown: drop everything now, connected or not."""
        self.accepting = False
        self._drop_pending()
        if self.task is not None:
            self.task.cancel()
        if self.linger is not None:
            self.linger.cancel()
            self.linger = None
        if self.transport is not None:
            self.transport.abort()

    async def connect(self, host: str, port: int, timeout: float) -> None:
        """The session's connect task: success lands in :meth:`connection_made`."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                await loop.create_connection(lambda: self, host, port)
        except Exception as exc:  # any failure (not a cancel) must end CONNECTING, or it leaks
            # OPEN: connected just before the timeout hit, and create_connection
            # closed the transport again: connection_lost tells the story.
            if self.state is _State.CONNECTING:
                if isinstance(exc, TimeoutError):
                    reason = f"timed out after {timeout * 1000:.0f} ms"
                elif isinstance(exc, OSError):
                    reason = str(exc)
                else:
                    reason = f"{type(exc).__name__}: {exc}"
                self._connect_failed(reason)

    # -- asyncio.Protocol --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.state = _State.OPEN
        self.hook._connected()
        if self.pending:
            data = b"".join(self.pending)
            self.pending.clear()
            self.pending_size = 0
            self.transport.write(data)
            self.hook.mirrored_bytes += len(data)
        if not self.accepting:  # the session ended, or overflowed, while connecting
            self._finish()

    def data_received(self, data: bytes) -> None:
        """The mirror's replies are nobody's business: discard them."""

    def eof_received(self) -> bool:
        # Keep writing: a receiver may well shut its sending side at once.
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.state = _State.CLOSED
        self.transport = None
        if self.linger is not None:
            self.linger.cancel()
            self.linger = None
        self.hook._live.discard(self)
        if self.accepting:  # not our doing: the mirror closed or reset it
            self.accepting = False
            self._mark_failed()
            events.log(
                logging.WARNING,
                f"mirror-lost:{self.hook.target}",
                "mirror %s closed the connection (%s): stopped mirroring session %016x",
                self.hook.target,
                exc or "end of stream",
                self.session_id,
            )

    # -- internals ---------------------------------------------------------------------

    def _give_up(self, message: str) -> None:
        self.accepting = False
        self._mark_failed()
        events.log(
            logging.WARNING,
            f"mirror-slow:{self.hook.target}",
            message + " (max_buffer %d bytes)",
            self.hook.target,
            self.session_id,
            self.hook.max_buffer,
        )
        if self.state is _State.OPEN:
            self._finish()

    def _finish(self) -> None:
        """Close once the transport has written its buffer; abort if that takes too long."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        transport.close()
        # A mirror that stopped reading would keep the socket (and its
        # buffer) forever: give it close_timeout to take the rest.
        loop = asyncio.get_running_loop()
        self.linger = loop.call_later(self.hook.close_timeout, self._linger_expired)

    def _linger_expired(self) -> None:
        self.linger = None
        if self.transport is not None:
            self.transport.abort()

    def _connect_failed(self, reason: str) -> None:
        self.state = _State.CLOSED
        self.accepting = False
        self._drop_pending()
        self._mark_failed()
        self.hook._live.discard(self)
        backoff = self.hook._connect_failed()
        events.log(
            logging.WARNING,
            f"mirror-connect:{self.hook.target}",
            "mirror %s: cannot connect (%s): not mirroring session %016x; "
            "new sessions skip it for %.0f s",
            self.hook.target,
            reason,
            self.session_id,
            backoff,
        )

    def _drop_pending(self) -> None:
        self.hook.dropped_bytes += self.pending_size
        self.pending.clear()
        self.pending_size = 0

    def _mark_failed(self) -> None:
        if not self.failed:
            self.failed = True
            self.hook.failed_sessions += 1


class Mirror(ProtocolHook):
    """Copy the traffic of each connection to ``to``, never slowing it down.

    Args:
        to: where to send the copies, ``host:port``.
        directions: ``"inbound"`` (client to backend), ``"outbound"``
            (backend to client) or ``"both"``, concatenated in order.
        max_buffer: bytes a session may have waiting for its mirror
            connection (while connecting, or unsent in its transport) before
            the rest of that session is dropped.
        connect_timeout_ms: how long connecting to the mirror may take.
        close_timeout_ms: how long a closed mirror connection may take to
            write what is buffered before it is aborted.

    Counters (plain attributes, only ever growing):

    * ``sessions``: sessions that had packets to mirror;
    * ``mirrored_bytes``: bytes handed to a mirror connection;
    * ``dropped_bytes``: bytes of the chosen directions that were not;
    * ``failed_sessions``: sessions whose mirror stream is incomplete
      (mirror unreachable, too slow, or closed the connection).

    ``mirrored_bytes + dropped_bytes`` is every byte offered once the
    sessions are closed. Bytes handed over can still be lost if the mirror
    connection is aborted with data unsent (``close_timeout_ms``, shutdown).

    Raises:
        TypeError, ValueError: a bad argument.
    """

    name = "mirror"

    def __init__(
        self,
        to: str,
        *,
        directions: str = "both",
        max_buffer: int = 1 << 20,
        connect_timeout_ms: int = 1000,
        close_timeout_ms: int = 5000,
    ) -> None:
        if not isinstance(to, str):
            raise TypeError(f"to must be a 'host:port' string, not {to!r}")
        try:
            self.target = parse_address(to)
        except AddressError as exc:
            raise ValueError(f"to = {to!r}: {exc.reason}") from None
        if directions not in DIRECTIONS:
            raise ValueError(
                f"directions must be 'inbound', 'outbound' or 'both', not {directions!r}"
            )
        self.directions = directions
        self._directions = DIRECTIONS[directions]
        self.max_buffer = _count("max_buffer", max_buffer, minimum=1)
        self.connect_timeout = _count("connect_timeout_ms", connect_timeout_ms, minimum=1) / 1000
        self.close_timeout = _count("close_timeout_ms", close_timeout_ms, minimum=1) / 1000

        self.sessions = 0
        self.mirrored_bytes = 0
        self.dropped_bytes = 0
        self.failed_sessions = 0

        self._sessions: dict[int, _MirrorStream] = {}  # open sessions by id
        self._live: set[_MirrorStream] = set()  # streams with a connect task or a socket
        self._tasks: set[asyncio.Task[Any]] = set()
        self._backoff = 0.0
        self._skip_until = 0.0  # time.monotonic(): not per loop, the hook may outlive one
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- the hook -------------------------------------------------------------------

    def on_packet(self, ctx: HookContext, direction: Direction, packet: bytes) -> None:
        """Mirror ``packet`` if its direction is chosen.

        A plain method, deliberately: it has nothing to await, which makes
        "never waits on the mirror" structural. It must run on the event
        loop's thread, as the dispatcher's hook tasks do.
        """
        if direction not in self._directions:
            return
        stream = self._sessions.get(ctx.session_id)
        if stream is None:
            if self._closed:
                self.dropped_bytes += len(packet)
                return
            stream = self._sessions[ctx.session_id] = self._open(ctx.session_id)
        stream.send(packet)

    def on_close(self, ctx: HookContext) -> None:
        stream = self._sessions.pop(ctx.session_id, None)
        if stream is not None:
            stream.end()

    def _open(self, session_id: int) -> _MirrorStream:
        self.sessions += 1
        stream = _MirrorStream(self, session_id)
        now = time.monotonic()
        if now < self._skip_until:
            # Down a moment ago: don't pay a connect attempt and a buffer
            # per new connection. The session stays known, so that its
            # later packets are dropped too rather than start a connection.
            stream.state = _State.CLOSED
            stream.accepting = False
            stream._mark_failed()
            events.log(
                logging.WARNING,
                f"mirror-down:{self.target}",
                "mirror %s is down: not mirroring session %016x (next try in %.1f s)",
                self.target,
                session_id,
                self._skip_until - now,
            )
            return stream
        # Kept for close() from another thread; the hook may outlive a loop.
        self._loop = asyncio.get_running_loop()
        self._live.add(stream)
        stream.task = spawn(
            stream.connect(self.target.host, self.target.port, self.connect_timeout),
            name=f"mirror-connect-{session_id:016x}",
            owner=self._tasks,
        )
        return stream

    def _connected(self) -> None:
        self._backoff = 0.0
        self._skip_until = 0.0

    def _connect_failed(self) -> float:
        """Start or lengthen the pause for new sessions; returns its length."""
        self._backoff = min(BACKOFF_MAX_S, self._backoff * 2 or BACKOFF_MIN_S)
        self._skip_until = time.monotonic() + self._backoff
        return self._backoff

    # -- for the integrator -------------------------------------------------------

    @property
    def active_sessions(self) -> int:
        """Sessions seen and not yet closed."""
        return len(self._sessions)

    @property
    def open_connections(self) -> int:
        """Mirror connections connecting, open or closing (ended sessions' included)."""
        return len(self._live)

    def stats(self) -> dict[str, int]:
        """The counters, by name."""
        return {
            "sessions": self.sessions,
            "mirrored_bytes": self.mirrored_bytes,
            "dropped_bytes": self.dropped_bytes,
            "failed_sessions": self.failed_sessions,
            "active_sessions": self.active_sessions,
            "open_connections": self.open_connections,
        }

    def close(self) -> None:
        """Shutdown: abort every mirror connection and connect attempt at once.

        Sessions that go on sending are no longer mirrored (their bytes count
        as dropped). From another thread than the event loop's, the aborts
        are handed to the loop (transports are not thread-safe); prefer
        :meth:`aclose` on the loop, which also waits for the tasks to end.
        """
        self._closed = True
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is not loop:
                loop.call_soon_threadsafe(self._abort_all)
                return
        self._abort_all()

    def _abort_all(self) -> None:
        for stream in {*self._sessions.values(), *self._live}:
            stream.abort()
        self._sessions.clear()
        self._live.clear()

    async def aclose(self) -> None:
        """:meth:`close`, then wait for the cancelled connect tasks to end."""
        self.close()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def __repr__(self) -> str:
        return f"Mirror(to={str(self.target)!r}, directions={self.directions!r})"


def _count(key: str, value: object, *, minimum: int) -> int:
    # bool is an int to Python but never what a config author meant.
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{key} must be a whole number, not {value!r}")
    if value < minimum:
        raise ValueError(f"{key} must be at least {minimum}, not {value}")
    return value

"""TrafficLogger: a packet hook that writes one JSON line per packet.

```toml
hooks = [{ use = "refractium.hooks.logger:TrafficLogger", path = "traffic.jsonl", preview = 64 }]
```

Each packet gives a line such as::

    {"time": "2024-05-01T12:00:00.123Z", "session": "00c0ffee00c0ffee",
     "client": "192.0.2.7:40000", "backend": "127.0.0.1:8080", "protocol": "http",
     "sni": null, "direction": "inbound", "size": 78, "preview": "GET / HTTP/1.1\\r\\n"}

and the end of a connection a ``{"event": "close", ...}`` line with the
packet and byte totals of each direction. ``preview`` bytes of each packet
are shown as text with non-printable bytes escaped (``\\r``, ``\\x00``), or
as hex with ``preview_format = "hex"``; the default 0 leaves the key out.

The hook runs on the event loop, so it never touches the file itself: lines
go through a queue to a writer thread, which writes and flushes them in
batches. :meth:`TrafficLogger.close` (called at shutdown by the hook cache)
writes what is queued and stops the thread.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import sys
import threading
import time
import weakref
from datetime import UTC, datetime
from typing import Any, NamedTuple, TextIO

from refractium.addr import format_host
from refractium.hooks.api import Direction, HookContext, ProtocolHook
from refractium.util.logs import RateLimitedLog

log = logging.getLogger(__name__)

PREVIEW_FORMATS = ("text", "hex")

#: Lines the writer thread takes off the queue per write (and flush).
_BATCH = 512


class _Line(NamedTuple):
    """One line to write, formatted by the writer thread rather than the loop."""

    time: float
    event: str | None
    head: dict[str, Any]  # the session's fields: shared by its lines, never mutated
    tail: dict[str, Any]  # this line's own fields
    preview: bytes | None


# None asks the writer thread to stop; an Event to signal once it got that far.
_Item = _Line | threading.Event | None


def _iso_time(stamp: float) -> str:
    """``2024-05-01T12:00:00.123Z``."""
    text = datetime.fromtimestamp(stamp, UTC).isoformat(timespec="milliseconds")
    return text.removesuffix("+00:00") + "Z"


def _host_port(addr: tuple[str, int] | None) -> str | None:
    return None if addr is None else f"{format_host(addr[0])}:{addr[1]}"


def escape_preview(data: bytes) -> str:
    """``data`` as text, each byte one character, non-printables escaped.

    Printable ASCII is kept; ``\\``, control bytes and bytes >= 0x7f become
    Python-style escapes (``\\\\``, ``\\r``, ``\\x00``, ``\\xff``), so the text
    is ASCII and one escape always stands for one byte.
    """
    return data.decode("latin-1").encode("unicode_escape").decode("ascii")


class _Writer:
    """The queue and the thread that writes a logger's lines.

    Kept apart from :class:`TrafficLogger` so the thread holds no reference
    to the hook: a forgotten hook can be collected, and its finaliser then
    stops this writer.
    """

    def __init__(self, stream: TextIO, *, owns_stream: bool, hex_preview: bool, max_pending: int):
        self._stream = stream
        self._owns_stream = owns_stream
        self._hex = hex_preview
        self._max_pending = max_pending
        self._queue: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # start and close may race (close runs at exit too)
        self._closed = False
        # Each counter is written by one thread only (queued by the producer,
        # handled by the writer), so their difference is a safe queue length.
        self.queued = 0
        self.handled = 0
        self.dropped = 0
        self.write_errors = 0
        self._events = RateLimitedLog(log)

    @property
    def pending(self) -> int:
        return self.queued - self.handled

    def put(self, line: _Line, *, force: bool = False) -> None:
        """Queue ``line`` unless closed or (without ``force``) the queue is full."""
        if self._closed:
            self.dropped += 1
            return
        if not force and self.pending >= self._max_pending:
            # A stalled output (a full disk, a stderr pipe nobody reads) must
            # not grow memory without bound: drop and say so.
            self.dropped += 1
            self._events.log(
                logging.WARNING,
                "traffic-logger-full",
                "traffic logger: %d lines waiting for the output; dropping lines",
                self.pending,
            )
            return
        if self._thread is None:
            self._start()
        self.queued += 1
        self._queue.put(line)

    def _start(self) -> None:
        # Started on the first line, not in __init__, so that merely loading
        # a configuration (a check, a reload that is rejected) starts nothing.
        with self._lock:
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(
                    target=self._run, name="refractium-traffic-logger", daemon=True
                )
                self._thread.start()

    def flush(self, timeout: float | None = None) -> bool:
        """Block until every line queued so far is written; False on timeout."""
        with self._lock:
            thread = self._thread
            if thread is None or not thread.is_alive():
                return True
            if self._closed:
                # The stop request is queued already; an Event after it would
                # never be seen. The thread ends once everything is written.
                done = None
            else:
                done = threading.Event()
                self._queue.put(done)
        if done is None:
            thread.join(timeout)
            return not thread.is_alive()
        return done.wait(timeout)

    def close(self, timeout: float | None = 5.0) -> None:
        """Write what is queued, stop the thread, close an owned file."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            thread = self._thread
            if thread is not None:
                self._queue.put(None)
        if thread is not None:
            # A stuck output must not hang shutdown forever: the thread is a
            # daemon, and closes the file itself if it ever gets there.
            thread.join(timeout)
        else:
            self._close_stream()

    def _run(self) -> None:
        get, get_nowait = self._queue.get, self._queue.get_nowait
        stopping = False
        while not stopping:
            batch = [get()]
            while len(batch) < _BATCH:
                try:
                    batch.append(get_nowait())
                except queue.Empty:
                    break
            texts: list[str] = []
            waiters: list[threading.Event] = []
            for item in batch:
                if item is None:
                    stopping = True
                elif isinstance(item, threading.Event):
                    waiters.append(item)
                else:
                    texts.append(self._format(item))
            if texts:
                self._write("".join(texts))
                self.handled += len(texts)
            # Set only after the write, so flush() means "on the output".
            for waiter in waiters:
                waiter.set()
        self._close_stream()

    def _format(self, line: _Line) -> str:
        entry: dict[str, Any] = {"time": _iso_time(line.time)}
        if line.event is not None:
            entry["event"] = line.event
        entry.update(line.head)
        entry.update(line.tail)
        if line.preview is not None:
            entry["preview"] = line.preview.hex() if self._hex else escape_preview(line.preview)
        # ensure_ascii: a strange SNI can never make the text unencodable.
        return json.dumps(entry) + "\n"

    def _write(self, text: str) -> None:
        try:
            self._stream.write(text)
            self._stream.flush()
        except (OSError, ValueError) as exc:  # ValueError: the stream was closed under us
            self.write_errors += 1
            self._events.log(
                logging.WARNING, "traffic-logger-write", "traffic logger: write failed: %s", exc
            )

    def _close_stream(self) -> None:
        if self._owns_stream:
            try:
                self._stream.close()
            except OSError as exc:
                log.warning("traffic logger: closing the file failed: %s", exc)
        else:
            with contextlib.suppress(OSError, ValueError):  # not ours: just flush it
                self._stream.flush()


class _Session:
    """One connection's fields and running totals."""

    __slots__ = ("head", "inbound_bytes", "inbound_packets", "outbound_bytes", "outbound_packets")

    def __init__(self, head: dict[str, Any]) -> None:
        self.head = head
        self.inbound_packets = 0
        self.inbound_bytes = 0
        self.outbound_packets = 0
        self.outbound_bytes = 0


class TrafficLogger(ProtocolHook):
    """Write one JSON line per packet, and one per closed connection.

    Args:
        path: the file to append to (created if missing); None or ``"-"``
            for standard error.
        preview: how many leading bytes of each packet to show (0: none).
        preview_format: ``"text"`` (escaped) or ``"hex"``.
        max_pending: lines that may wait for a slow output before packet
            lines are dropped (counted in :attr:`dropped_lines`); close
            lines are never dropped for this.

    Raises:
        TypeError, ValueError: a bad argument, or a file that cannot be opened.
    """

    name = "logger"

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        preview: int = 0,
        preview_format: str = "text",
        max_pending: int = 100_000,
    ) -> None:
        if path is not None and not isinstance(path, str | os.PathLike):
            raise TypeError(f"path must be a file name, not {path!r}")
        if path is not None and not os.fspath(path):
            raise ValueError("path must not be empty (leave it out for standard error)")
        self.preview = _count("preview", preview, minimum=0)
        if preview_format not in PREVIEW_FORMATS:
            raise ValueError(f"preview_format must be 'text' or 'hex', not {preview_format!r}")
        self.preview_format = preview_format
        max_pending = _count("max_pending", max_pending, minimum=1)
        stream, owns = self._open(path)
        #: The file written to, None for standard error.
        self.path: str | None = os.fspath(path) if owns and path is not None else None
        self._writer = _Writer(
            stream, owns_stream=owns, hex_preview=preview_format == "hex", max_pending=max_pending
        )
        # Stops the thread if the hook is dropped without close(), and at
        # interpreter exit, so queued lines reach the file either way.
        self._finalizer = weakref.finalize(self, self._writer.close)
        self._sessions: dict[int, _Session] = {}

    @staticmethod
    def _open(path: str | os.PathLike[str] | None) -> tuple[TextIO, bool]:
        if path is None or os.fspath(path) == "-":
            if sys.stderr is None:  # pythonw and some service wrappers
                raise ValueError("there is no standard error here: give a path")
            return sys.stderr, False
        try:
            # Opened now, not in the thread, so a bad path fails at load time.
            # Append: a restart must not truncate yesterday's log.
            return open(path, "a", buffering=1, encoding="utf-8", newline="\n"), True
        except OSError as exc:
            raise ValueError(
                f"cannot open {os.fspath(path)!r} for appending: {exc.strerror or exc}"
            ) from None

    # -- the hook -----------------------------------------------------------------

    def on_packet(self, ctx: HookContext, direction: Direction, packet: bytes) -> None:
        session = self._sessions.get(ctx.session_id)
        if session is None:
            session = self._sessions[ctx.session_id] = _Session(_head(ctx))
        size = len(packet)
        if direction is Direction.INBOUND:
            session.inbound_packets += 1
            session.inbound_bytes += size
        else:
            session.outbound_packets += 1
            session.outbound_bytes += size
        # bytes(): the slice must not alias a buffer the relay may reuse.
        preview = bytes(packet[: self.preview]) if self.preview else None
        tail = {"direction": direction.value, "size": size}
        self._writer.put(_Line(time.time(), None, session.head, tail, preview))

    def on_close(self, ctx: HookContext) -> None:
        session = self._sessions.pop(ctx.session_id, None)
        if session is None:  # a connection that carried no packet
            session = _Session(_head(ctx))
        tail = {
            "inbound_packets": session.inbound_packets,
            "inbound_bytes": session.inbound_bytes,
            "outbound_packets": session.outbound_packets,
            "outbound_bytes": session.outbound_bytes,
        }
        # force: the totals matter more than packet lines, and there is at
        # most one per connection, so they cannot run away.
        self._writer.put(_Line(time.time(), "close", session.head, tail, None), force=True)

    # -- for the integrator -------------------------------------------------------

    def flush(self, timeout: float | None = 5.0) -> bool:
        """Block until every line so far is written; False if ``timeout`` ran out.

        Blocking: call it from a thread (``asyncio.to_thread``) or a test,
        not from the event loop on a live proxy.
        """
        return self._writer.flush(timeout)

    def close(self, timeout: float | None = 5.0) -> None:
        """Write the queued lines, stop the writer thread and close the file.

        Waits up to ``timeout`` seconds for a slow output. Idempotent; lines
        given after it are dropped (counted in :attr:`dropped_lines`).
        """
        self._writer.close(timeout)
        self._finalizer.detach()

    @property
    def lines(self) -> int:
        """Lines accepted for writing so far."""
        return self._writer.queued

    @property
    def dropped_lines(self) -> int:
        """Lines not written because the output fell behind or the hook was closed."""
        return self._writer.dropped

    @property
    def write_errors(self) -> int:
        """Batches of lines the output refused (a full disk...)."""
        return self._writer.write_errors

    @property
    def active_sessions(self) -> int:
        """Connections seen and not yet closed."""
        return len(self._sessions)

    def stats(self) -> dict[str, int]:
        """The counters above, by name."""
        return {
            "lines": self.lines,
            "dropped_lines": self.dropped_lines,
            "pending_lines": self._writer.pending,
            "write_errors": self.write_errors,
            "active_sessions": self.active_sessions,
        }

    def __repr__(self) -> str:
        return f"TrafficLogger(path={self.path!r}, preview={self.preview})"


def _head(ctx: HookContext) -> dict[str, Any]:
    return {
        "session": f"{ctx.session_id:016x}",
        "client": _host_port(ctx.client_addr),
        "backend": _host_port(ctx.backend_addr),
        "protocol": ctx.protocol,
        "sni": ctx.sni,
    }


def _count(key: str, value: object, *, minimum: int) -> int:
    # bool is an int to Python but never what a config author meant.
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{key} must be a whole number, not {value!r}")
    if value < minimum:
        raise ValueError(f"{key} must be at least {minimum}, not {value}")
    return value

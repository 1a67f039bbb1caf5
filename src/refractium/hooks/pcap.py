"""A packet hook that writes what it sees to a pcapng file Wireshark can decode.

:class:`PcapWriter` rebuilds each connection as a TCP conversation between
the client's and the backend's address (:mod:`refractium.hooks.frames`:
Ethernet + IPv4 or IPv6 + TCP, a handshake, one segment per chunk, a FIN
exchange) and writes the frames as pcapng blocks
(:mod:`refractium.hooks.pcapng`), so Wireshark's TCP reassembly, and with
it its HTTP, TLS, SSH... dissectors, work on the capture as on a real one::

    [[protocols]]
    name = "http"
    hooks = [{ use = "refractium.hooks.pcap:PcapWriter", path = "cap.pcapng" }]

The timestamps are when the hook was given each chunk (after the proxy
relayed it), not when it was on the wire.

An existing capture is never truncated: each writer appends a section of its
own (a Section Header Block and an Interface Description Block, then its
frames), and Wireshark and tshark read every section of a file. Building a
writer touches nothing; the file is opened when the first connection
reaches the hook.

Writing happens in a thread of the hook's own, fed by a queue: ``on_packet``
only takes the time and queues the chunk, so the event loop never waits on
the disk. Call :meth:`PcapWriter.close` at shutdown (or use the writer as a
context manager) so the last frames reach the file; the writer also flushes
at the end of every connection, and once a second while traffic flows.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import queue
import threading
import time
import weakref
from typing import BinaryIO, NamedTuple, TypeAlias

from refractium.hooks.api import Direction, HookContext, ProtocolHook
from refractium.hooks.frames import (
    ACK,
    FIN,
    MAX_SEGMENT,
    PSH,
    SYN,
    SYN_OPTIONS,
    Session,
    describe,
    endpoints,
)
from refractium.hooks.pcapng import (
    Existing,
    enhanced_packet,
    examine,
    interface_description,
    section_header,
)
from refractium.util.logs import RateLimitedLog

__all__ = ["MAX_SEGMENT", "PcapWriter"]

log = logging.getLogger(__name__)
events = RateLimitedLog(log)

#: How long written frames may sit in the file buffer while traffic flows.
FLUSH_INTERVAL_S = 1.0


def _open_capture(path: str, snaplen: int) -> BinaryIO:
    """Open ``path`` to append a section: the headers written, the file positioned after.

    A pcapng file cut inside a block (its writer was killed) is renamed
    aside first, so that what it holds stays readable and so does the new
    section.

    Raises:
        OSError: the file cannot be opened, renamed or written.
        ValueError: ``path`` holds something that is not pcapng.
    """
    existing = examine(path)
    if existing is Existing.FOREIGN:
        raise ValueError(f"{path} is not a pcapng file: left as it is")
    if existing is Existing.DAMAGED:
        aside = _free_name(path, "damaged")
        os.rename(path, aside)
        log.warning("pcap: %s ends inside a block; kept as %s, starting a new file", path, aside)
    file = open(path, "ab", buffering=1 << 16)  # noqa: SIM115 (the writer thread closes it)
    try:
        file.write(section_header() + interface_description(snaplen))
        file.flush()
    except BaseException:
        file.close()
        raise
    return file


def _free_name(path: str, label: str) -> str:
    """``cap-LABEL.pcapng`` beside ``path``, or ``cap-LABEL-2.pcapng``... whichever is free."""
    root, ext = os.path.splitext(path)
    candidate, number = f"{root}-{label}{ext}", 1
    while os.path.lexists(candidate):
        number += 1
        candidate = f"{root}-{label}-{number}{ext}"
    return candidate


# --------------------------------------------------------------------------- the writer thread


class _Chunk(NamedTuple):
    """A chunk to write; ``data`` None: ``size`` bytes the hook could not keep."""

    timestamp_ns: int
    ctx: HookContext
    inbound: bool
    data: bytes | None
    size: int


class _End(NamedTuple):
    timestamp_ns: int
    ctx: HookContext


# What the hook queues: a chunk, a connection's end, a flush to wait for, or
# None to stop.
_Item: TypeAlias = _Chunk | _End | threading.Event | None


class _Sink:
    """The writer thread's side: turns queued chunks into frames in the file.

    Only the thread touches the file and the sessions, so neither needs a
    lock; the one shared number, the bytes still queued, has its own.
    """

    def __init__(self, path: str, snaplen: int) -> None:
        self.file: BinaryIO | None = None
        self.path = path
        self.snaplen = snaplen
        self.queue: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        self.pending = 0
        self.pending_lock = threading.Lock()
        self.sessions: dict[int, Session] = {}
        self.failed = False
        self.dirty = False
        self.last_flush = time.monotonic()
        # Its own: RateLimitedLog is not thread-safe, and the hook's is the loop's.
        self.events = RateLimitedLog(log)

    def run(self) -> None:
        try:
            self.file = _open_capture(self.path, self.snaplen)
        except (OSError, ValueError):
            self.fail()
        get = self.queue.get
        while True:
            try:
                item = get(timeout=FLUSH_INTERVAL_S if self.dirty else None)
            except queue.Empty:
                self.flush()
                continue
            if item is None:
                break
            if isinstance(item, threading.Event):
                self.flush()
                item.set()
                continue
            try:
                if isinstance(item, _Chunk):
                    self.chunk(item)
                else:
                    self.end(item)
                    self.flush()  # a finished connection is readable at once
            except Exception:
                # A bug here must not end the thread: close() would then
                # return with frames unwritten and the queue would only grow.
                self.events.log(logging.ERROR, "pcap-bug", "pcap: frame not written", exc_info=True)
            if self.dirty and time.monotonic() - self.last_flush >= FLUSH_INTERVAL_S:
                self.flush()
        self.flush()
        if self.file is not None:
            try:
                self.file.close()
            except OSError:
                self.fail()

    def session(self, timestamp_ns: int, ctx: HookContext) -> Session:
        session = self.sessions.get(ctx.session_id)
        if session is None:
            client, backend = endpoints(ctx)
            session = self.sessions[ctx.session_id] = Session(client, backend, ctx.session_id)
            self.write(timestamp_ns, session.frame(True, SYN, options=SYN_OPTIONS), describe(ctx))
            self.write(timestamp_ns, session.frame(False, SYN | ACK, options=SYN_OPTIONS))
            self.write(timestamp_ns, session.frame(True, ACK))
        return session

    def chunk(self, item: _Chunk) -> None:
        try:
            self.segments(item)
        finally:
            if item.data is not None:
                with self.pending_lock:
                    self.pending -= item.size

    def segments(self, item: _Chunk) -> None:
        session = self.session(item.timestamp_ns, item.ctx)
        side = 0 if item.inbound else 1
        if item.data is None:
            # Not kept (the queue was full): skip its bytes, so Wireshark
            # shows "previous segment not captured" rather than splicing the
            # stream together wrongly.
            session.next_seq[side] = (session.next_seq[side] + item.size) & 0xFFFFFFFF
            return
        data = item.data
        for start in range(0, len(data), MAX_SEGMENT):
            payload = data[start : start + MAX_SEGMENT]
            last = start + MAX_SEGMENT >= len(data)
            flags = PSH | ACK if last else ACK
            self.write(item.timestamp_ns, session.frame(item.inbound, flags, payload))

    def end(self, item: _End) -> None:
        session = self.session(item.timestamp_ns, item.ctx)
        del self.sessions[item.ctx.session_id]
        # Who closed first is not known here; the client is as good a guess as any.
        self.write(item.timestamp_ns, session.frame(True, FIN | ACK))
        self.write(item.timestamp_ns, session.frame(False, FIN | ACK))
        self.write(item.timestamp_ns, session.frame(True, ACK))

    def write(self, timestamp_ns: int, frame: bytes, comment: str = "") -> None:
        if self.failed or self.file is None:
            return
        try:
            self.file.write(enhanced_packet(timestamp_ns, frame, self.snaplen, comment))
        except (OSError, ValueError):
            self.fail()
        self.dirty = True

    def flush(self) -> None:
        self.last_flush = time.monotonic()
        if not self.dirty or self.failed or self.file is None:
            return
        self.dirty = False
        try:
            self.file.flush()
        except (OSError, ValueError):
            self.fail()

    def fail(self) -> None:
        # Once, not per frame: the capture is over (the disk is full, the file
        # system went away), but the proxy goes on and the queue keeps draining.
        if not self.failed:
            self.failed = True
            log.error("pcap: writing %s failed; capture stopped", self.path, exc_info=True)


def _cannot(what: str, code: int, path: str) -> OSError:
    """``FileNotFoundError: [Errno 2] pcap: cannot create capture file: ...: 'PATH'``."""
    return OSError(code, f"pcap: cannot {what} capture file: {os.strerror(code)}", path)


def _stop(sink: _Sink, thread: threading.Thread) -> None:
    """Stop the writer thread after it has written everything queued."""
    sink.queue.put(None)
    thread.join()


# --------------------------------------------------------------------------- the hook


class PcapWriter(ProtocolHook):
    """Write every connection of its routes to the pcapng file ``path``.

    Building a writer changes nothing on disk: the file is opened when the
    first connection reaches the hook. An existing capture is appended to,
    never truncated: this writer's frames go in a new pcapng section after
    the ones already there (Wireshark and tshark read every section). A
    capture cut inside a block, as a killed writer leaves it, is renamed
    aside to ``NAME-damaged.pcapng`` and a new file started.

    Args:
        path: the file to write; created, or appended to.
        snaplen: keep at most this many bytes of each frame (0: all of it).
            Frames are at most 65569 bytes, so the default keeps everything;
            a smaller value loses payload, and with it Wireshark's decoding.
        max_pending: bytes of chunks that may wait for the writer thread;
            past that (the disk is slower than the traffic), chunks are
            counted in :attr:`dropped_bytes` and left out of the capture,
            where Wireshark shows them as segments not captured.

    Raises:
        ValueError: an empty ``path``, an out-of-range ``snaplen`` or
            ``max_pending``, or a ``path`` that holds something other than
            pcapng (it is left as it is).
        OSError: ``path`` is a directory, or its directory does not exist.
            Other failures (a full disk) come later: they are logged and
            stop the capture, not the proxy.

    Call :meth:`close` (or :meth:`aclose`) once the proxy has stopped: it
    writes what is still queued and ends the writer thread. A writer that is
    never closed is closed when it is garbage-collected or at interpreter
    exit, as long as the interpreter exits normally.
    """

    name = "pcap"

    def __init__(
        self,
        path: str | os.PathLike[str],
        snaplen: int = 262144,
        max_pending: int = 64 << 20,
    ) -> None:
        if not isinstance(path, str | os.PathLike) or not os.fspath(path):
            raise ValueError(f"pcap: path must be a non-empty file name, got {path!r}")
        for label, value, top in (
            ("snaplen", snaplen, 0xFFFFFFFF),
            ("max_pending", max_pending, None),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"pcap: {label} must be a non-negative integer, got {value!r}")
            if top is not None and value > top:
                raise ValueError(f"pcap: {label} must be at most {top}, got {value!r}")
        self.path = os.fspath(path)
        self.snaplen = snaplen
        self.max_pending = max_pending
        #: Chunks (and their bytes) left out because the writer fell behind.
        self.dropped_packets = 0
        self.dropped_bytes = 0
        self._closed = False
        self._check_path()
        self._sink = _Sink(self.path, snaplen)
        # Started with the first connection, so that a writer nobody uses
        # (a route without traffic, a configuration being checked) costs no
        # thread and leaves the disk alone.
        self._thread: threading.Thread | None = None
        self._finalizer: weakref.finalize[[_Sink, threading.Thread], PcapWriter] | None = None
        self._starting = threading.Lock()

    def _check_path(self) -> None:
        """Fail the configuration, not the first connection, on what can be seen now.

        Only looks: nothing is created, opened for writing or changed.
        """
        path = self.path
        if os.path.isdir(path):
            raise _cannot("create", errno.EISDIR, path)
        if os.path.lexists(path):
            try:
                existing = examine(path)
            except OSError as error:
                raise _cannot("read", error.errno or errno.EIO, path) from error
            if existing is Existing.FOREIGN:
                raise ValueError(f"pcap: {path} is not a pcapng file: not writing to it")
            if not os.access(path, os.W_OK):
                raise _cannot("write", errno.EACCES, path)
            return
        directory = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(directory):
            raise _cannot("create", errno.ENOENT, path)
        if not os.access(directory, os.W_OK | os.X_OK):
            raise _cannot("create", errno.EACCES, path)

    def _start(self) -> _Sink | None:
        """Start the writer thread (which opens the file), once; None once closed."""
        with self._starting:
            if self._closed:
                return None
            if self._thread is None:
                thread = threading.Thread(
                    target=self._sink.run, name=f"refractium-pcap:{self.path}", daemon=True
                )
                thread.start()
                # The thread must not hold the hook (it would never be
                # collected), so the finalizer closes through the sink; it
                # also runs at exit, before the daemon thread would be killed
                # with frames still queued.
                self._finalizer = weakref.finalize(self, _stop, self._sink, thread)
                self._thread = thread
        return self._sink

    def on_packet(self, ctx: HookContext, direction: Direction, packet: bytes) -> None:
        """Queue ``packet`` for the writer thread; never blocks."""
        if self._closed:
            return
        timestamp = time.time_ns()
        size = len(packet)
        sink = self._sink if self._thread is not None else self._start()
        if sink is None:
            return
        with sink.pending_lock:
            keep = sink.pending + size <= self.max_pending
            if keep:
                sink.pending += size
        if keep:
            # A bytes object cannot change under the writer thread; anything
            # else (a bytearray, a memoryview) is copied first.
            data = packet if type(packet) is bytes else bytes(packet)
            sink.queue.put(_Chunk(timestamp, ctx, direction is Direction.INBOUND, data, size))
            return
        self.dropped_packets += 1
        self.dropped_bytes += size
        sink.queue.put(_Chunk(timestamp, ctx, direction is Direction.INBOUND, None, size))
        events.log(
            logging.WARNING,
            f"pcap-behind:{self.path}",
            "[%016x] pcap: writing %s is behind by %d bytes; leaving %d bytes out",
            ctx.session_id,
            self.path,
            self.max_pending,
            size,
        )

    def on_close(self, ctx: HookContext) -> None:
        """Queue the connection's FIN exchange; the file is flushed after it."""
        if self._closed:
            return
        sink = self._sink if self._thread is not None else self._start()
        if sink is not None:
            sink.queue.put(_End(time.time_ns(), ctx))

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything queued so far is in the file; blocks.

        Returns False if ``timeout`` (seconds) passed first. Not for the
        event loop's thread: use ``await asyncio.to_thread(writer.flush)``.
        """
        if self._closed or self._thread is None:
            return True
        done = threading.Event()
        self._sink.queue.put(done)
        return done.wait(timeout)

    def close(self) -> None:
        """Write everything queued, close the file and end the thread; blocks.

        Idempotent. Packets given after it are ignored. A writer that was
        never given a packet has no file to close, and creates none.
        """
        self._closed = True
        with self._starting:
            finalizer = self._finalizer
        if finalizer is not None:
            finalizer()

    async def aclose(self) -> None:
        """:meth:`close` from a coroutine, without blocking the event loop."""
        self._closed = True  # from now on, packets are ignored
        await asyncio.to_thread(self.close)

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> PcapWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"PcapWriter(path={self.path!r}, snaplen={self.snaplen})"

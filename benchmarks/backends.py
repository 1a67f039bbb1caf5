"""The Python backends the benchmarks put behind every target.

Run as ``python benchmarks/backends.py KIND PORT``; each prints nothing until
it listens (the caller watches /proc/net/tcp) and runs until SIGTERM.

Kinds:

``bulk``
    One thread per connection. The client's first line says what to do:
    ``GET /up/N HTTP/1.1`` then a blank line: read N bytes and answer with
    the byte count (ASCII, newline); ``GET /down/N HTTP/1.1``
    then a blank line: send N bytes in 1 MiB writes and close.
``echo``
    One thread per connection: skip the request head (up to the blank line),
    then echo every byte back (TCP_NODELAY).
``hold``
    A selector loop that accepts and keeps every connection, discarding
    what it receives; after each burst of accepts it prints the number of
    open connections on stdout (one line), for the idle-memory figure.
``reply``
    A selector loop that reads a request head and answers a tiny HTTP/1.0
    response, then closes: the fallback for the connection-rate figure when
    nginx is not installed (much slower than nginx).

They read requests with the parser of the demo's toy servers
(:mod:`refractium.demo.servers`) but are their own code otherwise: threads and
selectors rather than asyncio Streams, so that the backend is never what a
benchmark measures.
"""

from __future__ import annotations

import contextlib
import resource
import selectors
import signal
import socket
import sys
import threading

from refractium.demo.servers import http_response, request_end, request_line

CHUNK = 1 << 20
REPLY = http_response(b"ok\n")
HEAD_LIMIT = 65536


def listener(port: int, backlog: int = 4096) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(backlog)
    return sock


def read_head(conn: socket.socket) -> tuple[str, bytes]:
    """Read one request; return its request line and the bytes already read past it."""
    buf = b""
    while (end := request_end(buf)) is None:
        data = conn.recv(65536)
        if not data:
            return request_line(buf), b""
        buf += data
        if len(buf) > HEAD_LIMIT:
            return request_line(buf), b""
    return request_line(buf), buf[end:]


def serve_threads(port: int, handler: type[Handler]) -> None:
    sock = listener(port)
    while True:
        conn, _ = sock.accept()
        threading.Thread(target=handler(conn).run, daemon=True).start()


class Handler:
    def __init__(self, conn: socket.socket) -> None:
        self.conn = conn

    def run(self) -> None:
        with self.conn, contextlib.suppress(OSError):
            self.handle()

    def handle(self) -> None:
        raise NotImplementedError


class Bulk(Handler):
    def handle(self) -> None:
        conn = self.conn
        line, rest = read_head(conn)
        parts = line.split()
        path = parts[1] if len(parts) > 1 else ""
        if path.startswith("/up/"):
            # Read the announced size (no half-close needed: sslh does not forward one).
            want = int(path[len("/up/") :])
            total = len(rest)
            view = memoryview(bytearray(CHUNK))
            while total < want and (n := conn.recv_into(view, min(CHUNK, want - total))):
                total += n
            conn.sendall(b"%d\n" % total)
        elif path.startswith("/down/"):
            left = int(path[len("/down/") :])
            block = memoryview(bytes(CHUNK))
            while left >= CHUNK:
                conn.sendall(block)
                left -= CHUNK
            if left:
                conn.sendall(block[:left])
            conn.shutdown(socket.SHUT_WR)
            # Wait for the client's close so the last bytes are not reset.
            while conn.recv(65536):
                pass
        else:
            conn.sendall(b"bad request\n")


class Echo(Handler):
    def handle(self) -> None:
        conn = self.conn
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        _, rest = read_head(conn)
        if rest:
            conn.sendall(rest)
        while data := conn.recv(65536):
            conn.sendall(data)


def serve_hold(port: int) -> None:
    sock = listener(port)
    sock.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(sock, selectors.EVENT_READ, None)
    conns: set[socket.socket] = set()
    reported = -1
    while True:
        for key, _ in sel.select():
            if key.data is None:
                for _ in range(256):
                    try:
                        conn, _ = sock.accept()
                    except BlockingIOError:
                        break
                    conn.setblocking(False)
                    sel.register(conn, selectors.EVENT_READ, conn)
                    conns.add(conn)
                continue
            conn = key.fileobj  # type: ignore[assignment]
            try:
                data = conn.recv(65536)
            except OSError:
                data = b""
            if not data:
                sel.unregister(conn)
                conns.discard(conn)
                conn.close()
        if len(conns) != reported:
            reported = len(conns)
            print(reported, flush=True)


def serve_reply(port: int) -> None:
    sock = listener(port)
    sock.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(sock, selectors.EVENT_READ, None)
    bufs: dict[socket.socket, bytes] = {}
    while True:
        for key, _ in sel.select():
            if key.data is None:
                for _ in range(64):
                    try:
                        conn, _ = sock.accept()
                    except BlockingIOError:
                        break
                    conn.setblocking(False)
                    sel.register(conn, selectors.EVENT_READ, conn)
                    bufs[conn] = b""
                continue
            conn = key.fileobj  # type: ignore[assignment]
            try:
                data = conn.recv(65536)
            except OSError:
                data = b""
            buf = bufs[conn] + data
            if data and request_end(buf) is None and len(buf) <= HEAD_LIMIT:
                bufs[conn] = buf
                continue
            if data:
                with contextlib.suppress(OSError):
                    conn.send(REPLY)
            sel.unregister(conn)
            del bufs[conn]
            conn.close()


def main() -> None:
    kind, port = sys.argv[1], int(sys.argv[2])
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if kind == "bulk":
        serve_threads(port, Bulk)
    elif kind == "echo":
        serve_threads(port, Echo)
    elif kind == "hold":
        serve_hold(port)
    elif kind == "reply":
        serve_reply(port)
    else:
        raise SystemExit(f"unknown backend kind {kind!r}")


if __name__ == "__main__":
    main()

"""Half-close without ``transport.write_eof()``.

uvloop crashes (a double free in its shutdown callback) when a transport is
closed while the shutdown request that ``write_eof()`` queued is still
pending, and a proxy closes transports at moments its peers choose. So the
relay never calls ``write_eof()`` on a socket transport: it waits until the
transport's write buffer is empty and then shuts the socket down for writing
itself, synchronously. No request is ever left pending, on any loop.
"""

from __future__ import annotations

import asyncio
import ctypes
import socket
from collections.abc import Callable


def _libc_shutdown() -> Callable[[int, int], int] | None:
    """libc's ``shutdown(2)``, or None where it cannot be found.

    Python reaches a descriptor's ``shutdown`` only through a socket object,
    and wrapping one checks the descriptor with a ``getsockname(2)`` first:
    a system call and a few µs per half-close that the FIN does not need.
    """
    try:
        call = ctypes.CDLL(None, use_errno=True).shutdown
    except (OSError, AttributeError):
        return None
    call.argtypes = (ctypes.c_int, ctypes.c_int)
    call.restype = ctypes.c_int
    return call


_shutdown = _libc_shutdown()


def buffer_empty(transport: asyncio.WriteTransport) -> bool:
    """True when nothing is waiting to be written on ``transport``."""
    return transport.get_write_buffer_size() == 0


def shutdown_write(transport: asyncio.WriteTransport) -> None:
    """Send FIN now. The caller has checked that the write buffer is empty.

    Transports without a socket (pipes, test doubles) use ``write_eof()``.
    """
    sock = transport.get_extra_info("socket")
    if sock is None:
        if transport.can_write_eof():
            transport.write_eof()
        return
    fd = sock.fileno()
    if fd < 0:
        return
    if _shutdown is not None:
        # An error means the peer is already gone: the close that follows says so.
        _shutdown(fd, socket.SHUT_WR)
        return
    # Wrap the loop's descriptor without taking it over: detach() below
    # leaves it open and owned by the transport.
    raw = socket.socket(sock.family, sock.type, sock.proto, fileno=fd)
    try:
        raw.shutdown(socket.SHUT_WR)
    except OSError:
        pass  # the peer is already gone: the close that follows says so
    finally:
        raw.detach()


def when_drained(transport: asyncio.WriteTransport) -> None:
    """Have the protocol's ``resume_writing()`` called once the buffer is empty.

    With both water marks at 0, the transport pauses its protocol at once
    (something is buffered) and resumes it when the buffer is empty.
    """
    transport.set_write_buffer_limits(high=0, low=0)


def send_eof(transport: asyncio.WriteTransport | None) -> bool:
    """Half-close ``transport`` now, or once drained; True while the EOF is still owed.

    When owed, the caller sends it from the protocol's ``resume_writing()``
    (see :func:`when_drained`).
    """
    if transport is None or transport.is_closing():
        return False
    if buffer_empty(transport):
        shutdown_write(transport)
        return False
    when_drained(transport)
    return True

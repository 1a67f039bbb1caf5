"""The two halves of the systemd protocol a service speaks: notify and socket activation.

* :func:`notify` sends one state message (``READY=1``, ``RELOADING=1``,
  ``STOPPING=1``, ``STATUS=...``) to the datagram socket named by
  ``NOTIFY_SOCKET``, as ``sd_notify(3)`` does; without that variable it
  does nothing, so the same code runs under systemd and outside it.
* :func:`listen_fds` takes the sockets systemd passed (``LISTEN_PID``,
  ``LISTEN_FDS``: descriptors 3 onwards, ``sd_listen_fds(3)``) and clears
  those variables, so that a program this process starts does not believe
  the sockets are its own.

Nothing here needs libsystemd; both protocols are a few lines of socket
code (https://www.freedesktop.org/software/systemd/man/latest/sd_notify.html,
https://www.freedesktop.org/software/systemd/man/latest/sd_listen_fds.html).
The environment is read as given: a malformed ``LISTEN_FDS`` is an error,
a ``LISTEN_PID`` naming another process means the sockets are not ours.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import time
from collections.abc import MutableMapping

from refractium.errors import RefractiumError

log = logging.getLogger(__name__)

#: The first descriptor systemd passes (after stdin, stdout and stderr).
LISTEN_FDS_START = 3
_LISTEN_VARS = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")


def notify(state: str, environ: MutableMapping[str, str] | None = None) -> bool:
    """Send ``state`` (newline-separated ``KEY=VALUE`` lines) to systemd.

    Args:
        state: e.g. ``"READY=1"`` or ``"STATUS=12 connections"``.
        environ: where to read ``NOTIFY_SOCKET`` (default: ``os.environ``).

    Returns:
        True when the message was sent; False when ``NOTIFY_SOCKET`` is not
        set or the socket cannot be reached (logged once at DEBUG: a
        supervisor that went away must not stop the proxy).
    """
    env = os.environ if environ is None else environ
    path = env.get("NOTIFY_SOCKET")
    if not path:
        return False
    if path.startswith("@"):
        # An abstract socket: the name starts with a NUL byte instead.
        address: str | bytes = b"\0" + path[1:].encode()
    elif path.startswith("/"):
        address = path
    else:
        log.debug("NOTIFY_SOCKET=%r is not a unix socket path; not notifying", path)
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(state.encode(), address)
    except OSError as exc:
        log.debug("cannot notify %s: %s", path, exc)
        return False
    return True


def reloading_message() -> str:
    """``RELOADING=1`` with the ``MONOTONIC_USEC`` that ``Type=notify-reload`` asks for."""
    return f"RELOADING=1\nMONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}"


def listen_fds(environ: MutableMapping[str, str] | None = None) -> list[socket.socket]:
    """The TCP and UDP sockets systemd passed to this process, in descriptor order.

    The ``LISTEN_*`` variables are removed from ``environ`` whatever they say.

    Args:
        environ: where to read them (default: ``os.environ``).

    Returns:
        One socket per passed descriptor (none when ``LISTEN_PID`` is unset
        or names another process), close-on-exec.

    Raises:
        RefractiumError: ``LISTEN_FDS`` or ``LISTEN_PID`` is not a number, or
            a passed descriptor is not an IPv4/IPv6 TCP listening socket or
            UDP socket.
    """
    env = os.environ if environ is None else environ
    pid, count = env.get("LISTEN_PID"), env.get("LISTEN_FDS")
    for name in _LISTEN_VARS:
        env.pop(name, None)
    if pid is None or count is None:
        return []
    try:
        if int(pid) != os.getpid():
            log.debug("LISTEN_PID=%s is another process: no socket passed to us", pid)
            return []
        n = int(count)
    except ValueError:
        raise RefractiumError(
            f"socket activation: LISTEN_PID={pid!r}, LISTEN_FDS={count!r}: not numbers"
        ) from None
    sockets: list[socket.socket] = []
    try:
        for fd in range(LISTEN_FDS_START, LISTEN_FDS_START + max(n, 0)):
            sockets.append(_passed_socket(fd))
    except RefractiumError:
        for sock in sockets:
            sock.detach()  # not ours to close: the error ends the process anyway
        raise
    return sockets


def _passed_socket(fd: int) -> socket.socket:
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        reason = "not open" if exc.errno == errno.EBADF else "not a socket"
        raise RefractiumError(f"socket activation: fd {fd}: {reason}") from None
    try:
        if sock.family not in (socket.AF_INET, socket.AF_INET6):
            raise RefractiumError(
                f"socket activation: fd {fd}: not an IPv4 or IPv6 socket "
                "(refractium listens on TCP and UDP only)"
            )
        if sock.type == socket.SOCK_STREAM:
            if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
                raise RefractiumError(f"socket activation: fd {fd}: a TCP socket not listening")
        elif sock.type != socket.SOCK_DGRAM:
            raise RefractiumError(f"socket activation: fd {fd}: neither a TCP nor a UDP socket")
    except RefractiumError:
        sock.detach()
        raise
    sock.set_inheritable(False)
    return sock

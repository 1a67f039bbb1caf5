"""Opening listening sockets, and saying in one line why one cannot be opened."""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import socket

from refractium.addr import format_host

#: Receive buffer asked of the kernel for UDP listeners and flow sockets: bursts.
SOCKET_BUFFER = 4 << 20


def listen_error(host: str, port: int, exc: OSError) -> str:
    """The one-line reason ``host:port`` cannot be listened on."""
    where = f"{format_host(host)}:{port}"
    if exc.errno == errno.EADDRINUSE:
        return f"{where}: address already in use"
    if exc.errno == errno.EACCES:
        return f"{where}: permission denied (ports below 1024 need privileges)"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"{where}: address not available on this host"
    if isinstance(exc, socket.gaierror):
        return f"{where}: cannot resolve bind address"
    return f"{where}: cannot listen: {exc.strerror or exc}"


def udp_socket(host: str, port: int, reuse_port: bool = False) -> socket.socket:
    """A non-blocking UDP socket bound to ``host:port`` (the first address it resolves to).

    Bound here, not by the loop, so that its errors keep their errno. An
    IPv6 wildcard is IPv6 only, as the loop makes TCP listeners: with
    ``bind = ["0.0.0.0", "::"]`` both sockets take the same port. With
    ``reuse_port`` (worker processes) each worker binds its own socket to
    the port and the kernel keeps each 4-tuple on one of them.
    """
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        grow_buffers(sock)
        sock.bind(address)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def grow_buffers(sock: socket.socket | None) -> None:
    """Ask for :data:`SOCKET_BUFFER` each way; the kernel caps it (net.core.rmem_max)."""
    if sock is None:
        return
    for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER)


def take_inherited(
    inherited: list[socket.socket] | None, host: str, port: int, kind: socket.SocketKind
) -> socket.socket | None:
    """The passed socket (socket activation) that is the listener ``host:port`` of ``kind``.

    It is removed from ``inherited``, so that what is left at the end
    matched no configured listener.
    """
    if not inherited:
        return None
    for sock in inherited:
        if sock.type != kind:
            continue
        name = sock.getsockname()
        if (port == 0 or name[1] == port) and _same_host(name[0], host):
            inherited.remove(sock)
            return sock
    return None


def _same_host(address: str, host: str) -> bool:
    try:
        return ipaddress.ip_address(address) == ipaddress.ip_address(host)
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return any(ipaddress.ip_address(info[4][0]) == ipaddress.ip_address(address) for info in infos)


def describe_socket(sock: socket.socket) -> str:
    """``tcp 0.0.0.0:443 (fd 3)``, for errors about a passed socket."""
    kind = "udp" if sock.type == socket.SOCK_DGRAM else "tcp"
    try:
        name = sock.getsockname()
        where = f"{format_host(name[0])}:{name[1]}"
    except OSError:
        where = "?"
    return f"{kind} {where} (fd {sock.fileno()})"

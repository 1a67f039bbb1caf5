"""Transparent dialling: a backend connection whose source is the client's address.

With ``transparent = true`` on a route the backend socket is made by hand:
``IP_TRANSPARENT`` (``IPV6_TRANSPARENT`` for IPv6) lets it bind to an address
that is not this host's, the client's, with any free port. The kernel allows
the option only with CAP_NET_ADMIN, and the backend's replies come back only
where policy routing delivers them locally (``refractium doctor`` checks
both). TCP only: UDP flows are dialled as usual.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import socket
from collections.abc import Callable

__all__ = ["IPV6_TRANSPARENT", "NEEDS_CAP", "open_transparent", "transparent_socket"]

# Not in the socket module; the value from <linux/in6.h>.
IPV6_TRANSPARENT = 75
# IP_TRANSPARENT from <linux/in.h>, for Pythons that do not name it.
_IP_TRANSPARENT = getattr(socket, "IP_TRANSPARENT", 19)

#: The dial failure when the kernel refuses the option (no CAP_NET_ADMIN).
NEEDS_CAP = "transparent: needs CAP_NET_ADMIN"


def transparent_socket(client_ip: str) -> socket.socket:
    """A non-blocking TCP socket bound to ``(client_ip, 0)`` with IP_TRANSPARENT set.

    Raises:
        OSError: without an errno (so the dial failure reads as written)
            when the kernel refuses IP_TRANSPARENT, or the bind fails.
    """
    family = socket.AF_INET6 if ipaddress.ip_address(client_ip).version == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        level, option = (
            (socket.IPPROTO_IPV6, IPV6_TRANSPARENT)
            if family == socket.AF_INET6
            else (socket.SOL_IP, _IP_TRANSPARENT)
        )
        try:
            sock.setsockopt(level, option, 1)
        except OSError as exc:
            if exc.errno in (errno.EPERM, errno.EACCES):
                raise OSError(NEEDS_CAP) from None
            raise OSError(f"transparent: {exc.strerror or exc}") from None
        try:
            sock.bind((client_ip, 0))
        except OSError as exc:
            raise OSError(f"transparent: cannot bind {client_ip}: {exc.strerror or exc}") from None
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


async def open_transparent(
    loop: asyncio.AbstractEventLoop,
    factory: Callable[[], asyncio.Protocol],
    client_ip: str,
    host: str,
    port: int,
) -> asyncio.Transport:
    """Connect to ``host:port`` from ``client_ip`` and wrap the socket with ``factory``.

    ``host`` may be a name: it is resolved in the client address's family,
    since a socket bound to an IPv4 address cannot reach an IPv6 backend.

    Raises:
        OSError: the option, the bind, the resolution or the connect failed.
    """
    sock = transparent_socket(client_ip)
    try:
        infos = await loop.getaddrinfo(host, port, family=sock.family, type=socket.SOCK_STREAM)
        if not infos:
            raise OSError(f"transparent: {host} has no address of the client's family")
        await loop.sock_connect(sock, infos[0][4])
        transport, _ = await loop.create_connection(factory, sock=sock)
    except socket.gaierror as exc:
        sock.close()
        reason = exc.strerror or str(exc)
        raise OSError(f"transparent: cannot resolve {host}: {reason}") from None
    except BaseException:
        sock.close()
        raise
    return transport

"""Network addresses as written in the configuration and on the command line.

``parse_address`` reads a backend or admin address (``host:port``,
``[v6]:port``, ``name:port``); ``parse_bind`` reads a listen address without a
port. Both only check the syntax: host names are resolved when a connection
is dialled or a socket bound, so that a configuration can be checked on a
machine that cannot resolve the production names.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

# RFC 1123 labels, plus "_" which internal names (Docker, SRV-style) do use.
_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\Z")
_PORT = re.compile(r"[0-9]{1,5}\Z")
_MAX_HOSTNAME = 253


class AddressError(ValueError):
    """A malformed address; ``str()`` is ``"<reason>: '<text>'"``.

    ``reason`` alone serves callers that quote the text themselves, such as
    the ``-f NAME=HOST:PORT`` option, which shows the whole argument.
    """

    def __init__(self, reason: str, text: str) -> None:
        self.reason = reason
        self.text = text
        super().__init__(f"{reason}: {text!r}")

    def __reduce__(self) -> tuple[type[AddressError], tuple[str, str]]:
        return (type(self), (self.reason, self.text))


@dataclass(frozen=True, slots=True)
class Address:
    """A host (IP literal or name, IPv6 without brackets) and a port."""

    host: str
    port: int
    # Addresses key the health table and the open-connection counts, several
    # look-ups per connection: the hash is computed once, not per look-up.
    _hash: int = field(init=False, repr=False, compare=False, default=0)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_hash", hash((self.host, self.port)))

    def __hash__(self) -> int:
        return self._hash

    def __reduce__(self) -> tuple[type[Address], tuple[str, int]]:
        # Rebuilt, not restored: a string's hash differs from one process to the next.
        return (Address, (self.host, self.port))

    def __str__(self) -> str:
        return f"{format_host(self.host)}:{self.port}"


def format_host(host: str) -> str:
    """``host`` as it is written before ``:port``: IPv6 literals in brackets."""
    return f"[{host}]" if ":" in host else host


def host_port(addr: tuple[str, int] | tuple[str, int, int, int]) -> str:
    """A socket address as ``host:port`` (``[v6]:port``), for logs and reports."""
    return f"{format_host(addr[0])}:{addr[1]}"


def parse_address(text: str) -> Address:
    """Parse ``host:port``, ``[v6]:port`` or ``name:port`` (port 1..65535).

    IP literals are normalised (``[0:0::1]:80`` gives host ``::1``), names are
    lower-cased; nothing is looked up. Raises :class:`AddressError`.
    """
    if text.startswith("["):
        inside, sep, port_text = text[1:].partition("]:")
        if not sep:
            raise AddressError("not host:port", text)
        host = _ipv6_literal(inside, text)
    else:
        host_text, sep, port_text = text.rpartition(":")
        if not sep or not host_text:
            raise AddressError("not host:port", text)
        if ":" in host_text:
            raise AddressError("not host:port (write IPv6 as [addr]:port)", text)
        host = _ipv4_or_name(host_text, text)
    return Address(host, _port(port_text, text))


def parse_bind(text: str) -> str:
    """Parse a listen address: an IPv4/IPv6 literal (brackets optional) or a name.

    Returns the normalised form (IPv6 without brackets, names lower-cased).
    Raises :class:`AddressError`.
    """
    if not text:
        raise AddressError("empty listen address", text)
    if text.startswith("[") and text.endswith("]"):
        return _ipv6_literal(text[1:-1], text)
    if ":" in text:
        try:
            return _ipv6_literal(text, text)
        except AddressError:
            # "0.0.0.0:8080" is a common slip: say where the port goes.
            try:
                parse_address(text)
            except AddressError:
                raise AddressError("not an IP address or host name", text) from None
            raise AddressError("give the listen address without a port", text) from None
    return _ipv4_or_name(text, text)


def _port(port_text: str, text: str) -> int:
    if not _PORT.match(port_text):
        raise AddressError("not host:port", text)
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise AddressError("port out of range 1..65535", text)
    return port


def _ipv6_literal(host: str, text: str) -> str:
    try:
        return str(ipaddress.IPv6Address(host))
    except ValueError:
        raise AddressError("bad IPv6 address", text) from None


def _ipv4_or_name(host: str, text: str) -> str:
    labels = host.removesuffix(".").split(".")
    if all(label.isdigit() for label in labels):
        # All-numeric is meant as an IPv4 literal; never let "10.0.0.256"
        # through as a "name" that will fail to resolve at dial time.
        try:
            return str(ipaddress.IPv4Address(host))
        except ValueError:
            raise AddressError("bad IPv4 address", text) from None
    if len(host) > _MAX_HOSTNAME or not all(_LABEL.match(label) for label in labels):
        raise AddressError("bad host name", text)
    return host.lower()

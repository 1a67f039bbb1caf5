"""PROXY protocol headers, versions 1 and 2: a pure codec (no I/O, no logging).

The format is HAProxy's "The PROXY protocol, Versions 1 & 2"
(https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt):

- version 1 is one US-ASCII line of at most 107 bytes including the CRLF:
  ``PROXY TCP4 <src> <dst> <sport> <dport>\\r\\n``, the same with ``TCP6``, or
  ``PROXY UNKNOWN`` followed by anything up to the CRLF;
- version 2 is the 12-byte signature ``\\r\\n\\r\\n\\x00\\r\\nQUIT\\n``, a
  version/command byte (``0x21`` PROXY, ``0x20`` LOCAL), a family/protocol
  byte, a 2-byte big-endian length, then that many bytes: the addresses and
  ports (4+4+2+2 bytes for IPv4, 16+16+2+2 for IPv6) and optional TLVs,
  which are skipped.

:func:`parse` reads the first bytes of a connection and returns one of four
results, and never raises for any input:

- :class:`ProxyHeader`: a complete, valid header occupying ``length`` bytes;
  whatever follows belongs to the application;
- :data:`NEED_MORE` (a :class:`NeedMore`): the bytes are a strict prefix of
  what can still become a valid header; read more and call again;
- :data:`NOT_PROXY` (a :class:`NotProxy`): the bytes do not start with either
  signature (``PROXY`` + space, or the v2 signature);
- :class:`Malformed`: a signature was seen but the header is invalid, or can
  no longer become valid; abort the connection, as the specification asks.

Addresses are reported as ``(host, port)`` with the host in its canonical
``ipaddress`` text; IPv4-mapped IPv6 addresses (``::ffff:192.0.2.1``) are
reported as the IPv4 address, which is what logs and per-IP limits expect.
``source`` and ``destination`` are ``None`` when the header carries no usable
addresses (v2 LOCAL, v2 UNSPEC/UDP/UNIX families, v1 UNKNOWN): the caller then
uses the real connection endpoints.

SECURITY: a PROXY header lets whoever sends it claim any source address. A
header must only be accepted on connections from trusted upstreams (the caller
checks the peer against ``trusted_proxies`` before calling :func:`parse`), and
a listener that expects headers must require one rather than guess whether it
is present; otherwise any client can spoof its address past logs, per-IP
limits and address-based access rules.
"""

from __future__ import annotations

import ipaddress
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final, TypeAlias

__all__ = [
    "MAX_HEADER",
    "MAX_V1",
    "MAX_V2",
    "NEED_MORE",
    "NOT_PROXY",
    "V1_SIGNATURE",
    "V2_SIGNATURE",
    "Endpoint",
    "Malformed",
    "NeedMore",
    "NotProxy",
    "ParseResult",
    "ProxyHeader",
    "encode_v1",
    "encode_v2",
    "parse",
]

V1_SIGNATURE: Final = b"PROXY "
V2_SIGNATURE: Final = b"\r\n\r\n\x00\r\nQUIT\n"

#: The longest v1 line, CRLF included (the specification's figure).
MAX_V1: Final = 107
#: The longest v2 header accepted, the 16 fixed bytes included; longer ones
#: (all TLVs) are :class:`Malformed`. The specification allows 16 + 65535.
MAX_V2: Final = 4096
#: Enough bytes to hold any header :func:`parse` accepts.
MAX_HEADER: Final = max(MAX_V1, MAX_V2)

_V2_FIXED: Final = 16
_CMD_LOCAL: Final = 0x0
_CMD_PROXY: Final = 0x1
_TCP4: Final = 0x11
_TCP6: Final = 0x21
# The family/protocol bytes the specification defines, with the address block
# each needs. Only TCP over IPv4/IPv6 yields addresses; the others fall back to
# UNSPEC (addresses ignored), as the specification allows.
_V2_FAMILIES: Final[dict[int, int]] = {
    0x00: 0,  # UNSPEC
    _TCP4: 12,
    0x12: 12,  # UDP over IPv4
    _TCP6: 36,
    0x22: 36,  # UDP over IPv6
    0x31: 216,  # UNIX stream
    0x32: 216,  # UNIX datagram
}

_V1_PROTOCOLS: Final = (b"UNKNOWN", b"TCP4", b"TCP6")
# Decimal, no sign, no heading zeroes (the specification forbids them).
_V1_PORT: Final = re.compile(rb"0|[1-9][0-9]{0,4}")
_V1_ADDRESS_FILL: Final = {b"TCP4": b"0.0.0.0", b"TCP6": b"::"}
# Suffixes that complete any valid prefix of an address into a valid address
# (the right one is among them; each candidate is checked by parsing it).
_V1_ADDRESS_ENDINGS: Final = {
    b"TCP4": (b"", b"0", b".0", b"0.0", b".0.0", b"0.0.0", b".0.0.0", b"0.0.0.0"),
    b"TCP6": (
        b"",
        b"0",
        b":",
        b"::",
        b":0",
        b"0::",
        b".0",
        b"0.0",
        b".0.0",
        b"0.0.0",
        b".0.0.0",
    ),
}
_V1_PORT_ENDINGS: Final = (b"", b"0")

Endpoint: TypeAlias = tuple[str, int]
_IP: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """A complete PROXY header at the start of the stream.

    ``source`` is the real client, ``destination`` the address it connected
    to; both are ``None`` when the header carries no usable addresses (LOCAL,
    UNKNOWN, UNSPEC and the non-TCP families). ``length`` is how many bytes the
    header occupies: the application's data starts at ``data[length:]``.
    """

    source: Endpoint | None
    destination: Endpoint | None
    version: int
    length: int


@dataclass(frozen=True, slots=True)
class NeedMore:
    """The bytes are a strict prefix of what may still be a valid header."""


@dataclass(frozen=True, slots=True)
class NotProxy:
    """The bytes do not start with a PROXY signature (v1 or v2)."""


@dataclass(frozen=True, slots=True)
class Malformed:
    """A PROXY signature followed by an invalid header.

    ``reason`` is a fixed text (it never quotes the received bytes), safe to log.
    """

    reason: str


#: A v2 header with the LOCAL command and no addresses: what a sender says
#: when it has no client address to give (the spec's "health check" form).
LOCAL_V2: Final = V2_SIGNATURE + b"\x20\x00\x00\x00"
NEED_MORE: Final = NeedMore()
NOT_PROXY: Final = NotProxy()

ParseResult: TypeAlias = ProxyHeader | NeedMore | NotProxy | Malformed


def parse(data: bytes | bytearray | memoryview) -> ParseResult:
    """Read a PROXY header (v1 or v2) at the start of ``data``.

    ``data`` is the first bytes of a connection, possibly more than the
    header; bytes after the header are not looked at. Returns a
    :class:`ProxyHeader`, :data:`NEED_MORE`, :data:`NOT_PROXY` or a
    :class:`Malformed`; never raises.

    Only a still-incomplete prefix of a signature needs more: bytes that
    depart from both signatures are :data:`NOT_PROXY`, even after matching
    most of one (``PROXX``, or the v2 signature with one byte wrong).
    """
    head = bytes(data[:MAX_HEADER])
    if head.startswith(V1_SIGNATURE):
        return _parse_v1(head[:MAX_V1])
    if head.startswith(V2_SIGNATURE):
        return _parse_v2(head)
    if V1_SIGNATURE.startswith(head) or V2_SIGNATURE.startswith(head):
        return NEED_MORE
    return NOT_PROXY


def encode_v1(source: Endpoint, destination: Endpoint) -> bytes:
    """A v1 line: ``TCP4`` or ``TCP6`` after the hosts' family.

    Hosts must be IP literals (IPv6 zone ids are dropped: the protocol cannot
    carry them) and ports 0..65535, else :class:`ValueError`. IPv4-mapped IPv6
    hosts are written as IPv4. When one host is IPv4 and the other IPv6 the line
    is ``PROXY UNKNOWN\\r\\n``, which receivers treat as "use the real endpoints".
    """
    src, sport = _endpoint(source)
    dst, dport = _endpoint(destination)
    if src.version != dst.version:
        return b"PROXY UNKNOWN\r\n"
    protocol = "TCP4" if src.version == 4 else "TCP6"
    return f"PROXY {protocol} {src} {dst} {sport} {dport}\r\n".encode("ascii")


def encode_v2(source: Endpoint, destination: Endpoint) -> bytes:
    """A v2 header with the PROXY command, TCP over IPv4 or IPv6, and no TLVs.

    Same address rules as :func:`encode_v1`; when one host is IPv4 and the other
    IPv6, the IPv4 one is sent as an IPv4-mapped IPv6 address.
    """
    src, sport = _endpoint(source)
    dst, dport = _endpoint(destination)
    if src.version == 4 and dst.version == 4:
        family = _TCP4
    else:
        family = _TCP6
        src, dst = _as_ipv6(src), _as_ipv6(dst)
    block = src.packed + dst.packed + struct.pack("!HH", sport, dport)
    return V2_SIGNATURE + struct.pack("!BBH", 0x20 | _CMD_PROXY, family, len(block)) + block


# --------------------------------------------------------------------------- v1


def _parse_v1(head: bytes) -> ParseResult:
    """``head`` starts with ``PROXY `` and holds at most :data:`MAX_V1` bytes."""
    end = head.find(b"\r\n")
    if end >= 0:
        return _parse_v1_line(head[:end])
    if len(head) >= MAX_V1:
        return Malformed("v1: no CRLF in the first 107 bytes")
    if any(_v1_completes(head, ending) for ending in _v1_endings(head)):
        return NEED_MORE
    return Malformed("v1: invalid header")


def _parse_v1_line(line: bytes) -> ProxyHeader | Malformed:
    """``line`` is a v1 header without its CRLF."""
    length = len(line) + 2
    fields = line.split(b" ")
    protocol = fields[1]
    if protocol == b"UNKNOWN":
        # "The receiver must ignore anything presented before the CRLF."
        return ProxyHeader(None, None, 1, length)
    if protocol not in (b"TCP4", b"TCP6"):
        return Malformed("v1: unknown protocol")
    if len(fields) != 6:
        return Malformed("v1: not 4 fields separated by single spaces")
    source = _v1_address(fields[2], protocol)
    destination = _v1_address(fields[3], protocol)
    if source is None or destination is None:
        return Malformed("v1: invalid address for the protocol")
    sport = _v1_port(fields[4])
    dport = _v1_port(fields[5])
    if sport is None or dport is None:
        return Malformed("v1: invalid port")
    return ProxyHeader((source, sport), (destination, dport), 1, length)


def _v1_address(field: bytes, protocol: bytes) -> str | None:
    try:
        text = field.decode("ascii")
    except UnicodeDecodeError:
        return None
    if "%" in text:  # an IPv6 zone id: meaningless on the receiver's side
        return None
    try:
        address: _IP
        if protocol == b"TCP4":
            address = ipaddress.IPv4Address(text)
        else:
            address = ipaddress.IPv6Address(text)
    except ValueError:
        return None
    return _host(address)


def _v1_port(field: bytes) -> int | None:
    if _V1_PORT.fullmatch(field) is None:
        return None
    port = int(field)
    return port if port <= 0xFFFF else None


def _v1_endings(head: bytes) -> Iterator[bytes]:
    """Candidate endings that may turn ``head`` (no CRLF) into a valid line.

    Between them they include the shortest ending whenever one exists;
    :func:`_v1_completes` checks each.
    """
    yield b"\n"  # head may end with the CR
    fields = head[len(V1_SIGNATURE) :].split(b" ")
    protocol = fields[0]
    if len(fields) == 1:
        for candidate in _V1_PROTOCOLS:
            if candidate.startswith(protocol):
                yield candidate[len(protocol) :] + _v1_fill(candidate, 0)
        return
    if protocol == b"UNKNOWN":
        yield b"\r\n"
        return
    if protocol not in _V1_ADDRESS_FILL or len(fields) > 5:
        return
    partial = len(fields) - 1  # 1, 2: an address; 3, 4: a port
    endings = _V1_ADDRESS_ENDINGS[protocol] if partial <= 2 else _V1_PORT_ENDINGS
    tail = _v1_fill(protocol, partial)
    for ending in endings:
        yield ending + tail


def _v1_fill(protocol: bytes, done: int) -> bytes:
    """The shortest valid fields after the first ``done`` ones, and the CRLF."""
    if protocol == b"UNKNOWN":
        return b"\r\n"
    address = _V1_ADDRESS_FILL[protocol]
    fields = (address, address, b"0", b"0")[done:]
    return b"".join(b" " + field for field in fields) + b"\r\n"


def _v1_completes(head: bytes, ending: bytes) -> bool:
    line = head + ending
    return (
        len(line) <= MAX_V1
        and line.find(b"\r\n") == len(line) - 2
        and isinstance(_parse_v1_line(line[:-2]), ProxyHeader)
    )


# --------------------------------------------------------------------------- v2


def _parse_v2(head: bytes) -> ParseResult:
    """``head`` starts with the v2 signature and holds at most :data:`MAX_V2` bytes."""
    if len(head) <= 12:
        return NEED_MORE
    version, command = head[12] >> 4, head[12] & 0x0F
    if version != 2:
        return Malformed("v2: version is not 2")
    if command not in (_CMD_LOCAL, _CMD_PROXY):
        return Malformed("v2: unknown command")
    if len(head) <= 13:
        return NEED_MORE
    family = head[13]
    if family not in _V2_FAMILIES:
        return Malformed("v2: unknown address family or protocol")
    # LOCAL ignores the address block, so any length (even 0) is fine.
    needed = _V2_FAMILIES[family] if command == _CMD_PROXY else 0
    longest = MAX_V2 - _V2_FIXED
    if len(head) == 15:  # only the length's high byte
        if head[14] << 8 > longest:
            return Malformed("v2: header longer than MAX_V2")
        return NEED_MORE  # the low byte can still reach ``needed`` (<= 255)
    if len(head) < _V2_FIXED:
        return NEED_MORE
    length = int.from_bytes(head[14:16], "big")
    if length > longest:
        return Malformed("v2: header longer than MAX_V2")
    if length < needed:
        return Malformed("v2: address block too short for the family")
    total = _V2_FIXED + length
    if len(head) < total:
        return NEED_MORE
    if command == _CMD_LOCAL or family not in (_TCP4, _TCP6):
        return ProxyHeader(None, None, 2, total)
    size = 4 if family == _TCP4 else 16
    block = head[_V2_FIXED:total]
    source = ipaddress.ip_address(block[:size])
    destination = ipaddress.ip_address(block[size : 2 * size])
    sport, dport = struct.unpack_from("!HH", block, 2 * size)
    return ProxyHeader((_host(source), sport), (_host(destination), dport), 2, total)


# --------------------------------------------------------------------------- addresses


def _host(address: _IP) -> str:
    """The canonical text, IPv4-mapped IPv6 addresses as IPv4."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def _endpoint(endpoint: Endpoint) -> tuple[_IP, int]:
    host, port = endpoint
    address = ipaddress.ip_address(str(host))  # str(): never read bytes as packed
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        else:
            address = ipaddress.IPv6Address(address.packed)  # drops a zone id
    if isinstance(port, bool) or not 0 <= port <= 0xFFFF:
        raise ValueError(f"port out of range 0..65535: {port!r}")
    return address, int(port)


def _as_ipv6(address: _IP) -> ipaddress.IPv6Address:
    if isinstance(address, ipaddress.IPv6Address):
        return address
    return ipaddress.IPv6Address(b"\x00" * 10 + b"\xff\xff" + address.packed)


def header_for(version: int, source: Endpoint, destination: object) -> bytes:
    """The header of ``version`` (1 or 2) for a connection, whatever its addresses.

    ``destination`` is the socket's ``sockname`` (or None). Addresses that are
    not IP (a UNIX socket, no address at all) give the spec's "unknown"
    forms: ``PROXY UNKNOWN`` for v1, the LOCAL command for v2.
    """
    try:
        local = (destination[0], destination[1])  # type: ignore[index]
        encode = encode_v2 if version == 2 else encode_v1
        return encode(source, local)
    except (TypeError, IndexError, ValueError):
        return b"PROXY UNKNOWN\r\n" if version == 1 else LOCAL_V2

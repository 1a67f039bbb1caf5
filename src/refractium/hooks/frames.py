"""Ethernet + IP + TCP frames made up for a proxied connection, for the pcapng writer.

The proxy sees byte streams, not packets. :class:`Session` rebuilds one
connection as a TCP conversation between the client's and the backend's
address: a 3-way handshake, one data segment per chunk (several when a chunk
is bigger than an IP packet can carry), sequence and acknowledgement numbers
that add up, and a FIN exchange at the end. That is enough for Wireshark's
TCP reassembly, and so for its HTTP, TLS, SSH... dissectors.

The addresses, ports and payloads are the real ones; the MAC addresses, IP
identification, window, TCP options and initial sequence numbers are made
up. Pure: no I/O, no clock.
"""

from __future__ import annotations

import hashlib
import ipaddress
import struct
from typing import NamedTuple, TypeAlias

from refractium.hooks.api import HookContext

__all__ = [
    "ACK",
    "FIN",
    "MAX_SEGMENT",
    "PSH",
    "SYN",
    "SYN_OPTIONS",
    "Endpoint",
    "Session",
    "describe",
    "endpoints",
]

#: The most payload one synthesised segment carries. IPv4's total length and
#: IPv6's payload length are 16-bit fields: 65535 - 20 (IPv4) - 20 (TCP).
MAX_SEGMENT = 65535 - 20 - 20

_ETHERTYPE_IPV4 = 0x0800
_ETHERTYPE_IPV6 = 0x86DD
_IPPROTO_TCP = 6

# TCP control bits (RFC 9293 section 3.1).
FIN = 0x01
SYN = 0x02
PSH = 0x08
ACK = 0x10

# Locally administered unicast MACs (the 0x02 bit of the first octet), so they
# can never be mistaken for a real vendor's.
_CLIENT_MAC = bytes.fromhex("02000000c11e")
_BACKEND_MAC = bytes.fromhex("02000000bac0")

# SYN options: MSS = MAX_SEGMENT (so the big segments are not flagged as
# oversized), NOP, window scale 14. With the 0xFFFF window below that is a
# 1 GiB window, so Wireshark's analysis does not report "window full" for a
# side that sends a lot without its peer sending anything back.
SYN_OPTIONS = struct.pack("!BBH", 2, 4, MAX_SEGMENT) + bytes((1, 3, 3, 14))
_WINDOW = 0xFFFF

_Address: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address


def _ones_complement_sum(data: bytes) -> int:
    """The RFC 1071 16-bit one's complement sum of ``data`` (not yet inverted).

    As 2**16 = 1 (mod 0xFFFF), the sum of the big-endian 16-bit words is the
    whole buffer read as one big integer, mod 0xFFFF: one C-speed operation
    instead of a Python loop over 32k words for a big segment.
    """
    if len(data) % 2:
        data += b"\0"
    number = int.from_bytes(data, "big")
    total = number % 0xFFFF
    # One's complement has two zeros; a non-zero sum that is 0 mod 0xFFFF is 0xFFFF.
    return 0xFFFF if total == 0 and number else total


def _checksum(*parts: bytes) -> int:
    return ~_ones_complement_sum(b"".join(parts)) & 0xFFFF


class Endpoint(NamedTuple):
    """One side of the made-up conversation."""

    address: _Address
    port: int
    mac: bytes


class Session:
    """One connection rebuilt as TCP so far: each side's next sequence number and IP id."""

    __slots__ = ("backend", "client", "ip_id", "next_seq")

    def __init__(self, client: Endpoint, backend: Endpoint, session_id: int) -> None:
        self.client = client
        self.backend = backend
        # Initial sequence numbers from the session id: arbitrary, but the same
        # for the same session, which makes captures easier to compare.
        self.next_seq = [_isn(session_id), _isn(session_id >> 32)]
        self.ip_id = [0, 0]

    def frame(
        self, from_client: bool, flags: int, payload: bytes = b"", options: bytes = b""
    ) -> bytes:
        """One Ethernet frame from one side; advances that side's sequence number."""
        side = 0 if from_client else 1
        source, target = (self.client, self.backend) if from_client else (self.backend, self.client)
        seq = self.next_seq[side]
        ack = self.next_seq[1 - side] if flags & ACK else 0
        tcp = (
            struct.pack(
                "!HHIIBBHHH",
                source.port,
                target.port,
                seq,
                ack,
                (20 + len(options)) // 4 << 4,
                flags,
                _WINDOW,
                0,  # checksum, filled in below
                0,  # urgent pointer
            )
            + options
        )
        # SYN and FIN take one sequence number each, data one per byte.
        self.next_seq[side] = (seq + len(payload) + (1 if flags & (SYN | FIN) else 0)) & 0xFFFFFFFF
        segment_length = len(tcp) + len(payload)
        src, dst = source.address.packed, target.address.packed
        if source.address.version == 4:
            pseudo = src + dst + struct.pack("!BBH", 0, _IPPROTO_TCP, segment_length)
            ident = self.ip_id[side]
            self.ip_id[side] = (ident + 1) & 0xFFFF
            ip = struct.pack(
                "!BBHHHBBH4s4s",
                0x45,  # version 4, 5-word header
                0,
                20 + segment_length,
                ident,
                0x4000,  # don't fragment: the segments are never split further
                64,
                _IPPROTO_TCP,
                0,
                src,
                dst,
            )
            ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
            ethertype = _ETHERTYPE_IPV4
        else:
            pseudo = src + dst + struct.pack("!IxxxB", segment_length, _IPPROTO_TCP)
            ip = struct.pack(
                "!IHBB16s16s",
                6 << 28,  # version 6, traffic class 0, flow label 0
                segment_length,
                _IPPROTO_TCP,
                64,
                src,
                dst,
            )
            ethertype = _ETHERTYPE_IPV6
        checksum = _checksum(pseudo, tcp, payload)
        tcp = tcp[:16] + struct.pack("!H", checksum) + tcp[18:]
        ethernet = target.mac + source.mac + struct.pack("!H", ethertype)
        return b"".join((ethernet, ip, tcp, payload))


def _isn(bits: int) -> int:
    # Not 2**32 - 1: the handshake's ACK would then acknowledge 0, the same
    # number as the SYN's empty acknowledgement field, and Wireshark would
    # call it a duplicate ACK.
    isn = bits & 0xFFFFFFFF
    return 0 if isn == 0xFFFFFFFF else isn


def _address(host: str) -> _Address:
    """``host`` as an IP address; a name gets a stable made-up one in 198.18.0.0/15."""
    text = host.strip("[]")
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        # RFC 2544's benchmarking range: never a real host, so it cannot be
        # confused with one. The real name goes in the first frame's comment.
        digest = hashlib.blake2b(text.encode(), digest_size=4).digest()
        return ipaddress.IPv4Address((198 << 24 | 18 << 16) + int.from_bytes(digest) % (1 << 17))


def endpoints(ctx: HookContext) -> tuple[Endpoint, Endpoint]:
    """The client's and the backend's address, both IPv4 or both IPv6."""
    server = ctx.backend_addr or ctx.local_addr or ("0.0.0.0", 0)
    client = _address(str(ctx.client_addr[0]))
    backend = _address(str(server[0]))
    # A packet has one IP version: when the sides differ, the IPv4 one
    # becomes IPv4-mapped IPv6 (::ffff:a.b.c.d), as a dual-stack socket sees it.
    if client.version != backend.version:
        if isinstance(client, ipaddress.IPv4Address):
            client = ipaddress.IPv6Address(f"::ffff:{client}")
        if isinstance(backend, ipaddress.IPv4Address):
            backend = ipaddress.IPv6Address(f"::ffff:{backend}")
    return (
        Endpoint(client, _port(ctx.client_addr[1]), _CLIENT_MAC),
        Endpoint(backend, _port(server[1]), _BACKEND_MAC),
    )


def _port(port: object) -> int:
    return port if isinstance(port, int) and 0 <= port <= 0xFFFF else 0


def describe(ctx: HookContext) -> str:
    """The first frame's comment: what the capture cannot show by itself."""
    parts = [f"refractium session {ctx.session_id:016x}", f"protocol={ctx.protocol}"]
    if ctx.sni:
        parts.append(f"sni={ctx.sni}")
    if ctx.alpn:
        parts.append(f"alpn={','.join(ctx.alpn)}")
    if ctx.backend_addr:
        parts.append(f"backend={ctx.backend_addr[0]}:{ctx.backend_addr[1]}")
    if ctx.local_addr:
        parts.append(f"listener={ctx.local_addr[0]}:{ctx.local_addr[1]}")
    return " ".join(parts)

"""Client addresses as 16-byte table keys, and the keyed hash that places them.

An address is an IPv6 address in 16 bytes, an IPv4 one mapped into
``::ffff:0:0/96``, so ``1.2.3.4`` and ``::ffff:1.2.3.4`` are one key (a
dual-stack listener reports the second for the first). ``::`` is never a
client's address and marks a slot never used, so it is refused here.

The hash is multiply-shift (the top bits of the key times an odd 128-bit
multiplier, modulo 2**128). The supervisor draws the multiplier at random
and stores it in the table, so every worker places an address alike while a
client cannot choose addresses (a /64 holds plenty) that all fall in one
stripe and fill it: ``zlib.crc32`` would be as fast, but it is linear, so
colliding addresses are easy to compute and no seed changes which collide.
Untrusted input: ``ip`` comes from a peer's address or a PROXY header.
"""

from __future__ import annotations

import secrets
import socket

EMPTY = bytes(16)  # "::": the key of a slot never used
MAPPED = bytes(10) + b"\xff\xff"  # ::ffff:0:0/96, where IPv4 addresses go
MASK128 = (1 << 128) - 1


def address_key(ip: str) -> bytes:
    """The 16-byte key of an IPv4 or IPv6 address as ``getpeername`` gives it.

    A zone (``fe80::1%eth0``) is dropped: one host, whichever link it used.

    Raises:
        ValueError: ``ip`` is not an IP address, or is ``::``.
    """
    try:
        if ":" not in ip:
            return MAPPED + socket.inet_pton(socket.AF_INET, ip)
        if "%" in ip:
            ip = ip.partition("%")[0]
        key = socket.inet_pton(socket.AF_INET6, ip)
    except OSError:
        raise ValueError(f"not an IP address: {ip!r}") from None
    if key == EMPTY:
        raise ValueError("'::' is no client's address")
    return key


def new_multiplier() -> int:
    """A random odd 128-bit hash multiplier, drawn once per table."""
    return secrets.randbits(128) | 1


def key_hash(key: bytes, multiplier: int) -> int:
    """The 32-bit hash of ``key`` (the hot paths inline this same expression)."""
    return ((int.from_bytes(key) * multiplier) & MASK128) >> 96


def write_multiplier(words: memoryview, at: int, multiplier: int) -> None:
    """Store the multiplier in four words from ``words[at]``."""
    for i in range(4):
        words[at + i] = (multiplier >> (32 * i)) & 0xFFFFFFFF


def read_multiplier(words: memoryview, at: int) -> int:
    """The multiplier stored by :func:`write_multiplier`."""
    return sum(words[at + i] << (32 * i) for i in range(4))

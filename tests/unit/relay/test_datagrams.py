"""A loop turn's datagrams for one socket: runs of one size in one GSO send, the rest one by one.

Real loopback sockets receive what a batch sends; the transport is a fake
that records the datagrams handed to it (and sends them too, as a real one
would), so each test sees which went as a GSO run and which one by one.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from refractium.addr import Address
from refractium.relay.datagrams import MAX_SEGMENTS, Batch, Flusher, connected

HOST = "127.0.0.1"


class Transport:
    """A datagram transport over ``sock`` that records what it was asked to send."""

    def __init__(self, sock: socket.socket, backlog: int = 0) -> None:
        self.sock = sock
        self.sent: list[bytes] = []
        self.backlog = backlog

    def sendto(self, data: bytes, addr: Any = None) -> None:
        self.sent.append(data)
        if data:  # as the loops' transports do, an empty datagram is not sent
            self.sock.send(data) if addr is None else self.sock.sendto(data, addr)

    def get_write_buffer_size(self) -> int:
        return self.backlog


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """(a connected sending socket, the receiving one)."""
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    receiver.bind((HOST, 0))
    receiver.settimeout(2)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.connect(receiver.getsockname())
    sender.setblocking(False)
    yield sender, receiver
    sender.close()
    receiver.close()


def received(sock: socket.socket, count: int) -> list[bytes]:
    return [sock.recv(65535) for _ in range(count)]


def datagrams(*sizes: int) -> list[bytes]:
    return [os.urandom(size) for size in sizes]


def send_batch(batch: Batch, items: list[bytes]) -> None:
    """One loop turn: ``items`` read, then the batch flushed."""
    for data in items:
        batch.add(data)
    batch.flush()


def batch_of(
    transport: Any, sock: Any, flusher: Flusher | None = None, errors: list[Exception] | None = None
) -> Batch:
    flusher = flusher or Flusher(asyncio.get_running_loop())
    return Batch(flusher, transport, sock, None, (errors if errors is not None else []).append)


async def test_runs_of_one_size_go_in_one_send_each_and_arrive_as_sent(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    sender, receiver = pair
    transport = Transport(sender)
    batch = batch_of(transport, sender)
    # A run of 512s closed by a shorter one, a lone 100 (a larger one follows), a run
    # of 900s, a lone empty one.
    burst = datagrams(512, 512, 512, 300, 100, 900, 900, 900, 0)
    send_batch(batch, burst)
    assert received(receiver, 8) == [data for data in burst if data]
    assert transport.sent == [burst[4], burst[8]]  # only these went one by one


async def test_the_flusher_sends_every_batch_at_the_end_of_the_turn(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    sender, receiver = pair
    transport = Transport(sender)
    flusher = Flusher(asyncio.get_running_loop())
    batch = batch_of(transport, sender, flusher)
    burst = datagrams(*[64] * (MAX_SEGMENTS + 6))  # more than one GSO send takes
    for data in burst:
        batch.add(data)
    assert batch.pending == burst  # nothing sent during the turn
    await asyncio.sleep(0)
    assert batch.pending == []
    assert received(receiver, len(burst)) == burst
    assert transport.sent == []


async def test_a_transport_holding_a_backlog_gets_every_datagram_in_order(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    sender, receiver = pair
    transport = Transport(sender, backlog=4096)
    batch = batch_of(transport, sender)
    burst = datagrams(512, 512, 512)
    send_batch(batch, burst)
    assert transport.sent == burst  # behind what it holds, not past it
    assert received(receiver, 3) == burst


class Refusing:
    """A socket whose GSO sends fail with ``code``."""

    def __init__(self, code: int) -> None:
        self.code = code
        self.calls = 0

    def sendmsg(self, *args: Any) -> int:
        self.calls += 1
        raise OSError(self.code, os.strerror(self.code))


async def test_a_socket_without_gso_sends_one_by_one_from_then_on(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    sender, receiver = pair
    transport = Transport(sender)
    refusing = Refusing(errno.EIO)
    batch = batch_of(transport, refusing)
    first, second = datagrams(200, 200), datagrams(200, 200)
    send_batch(batch, first)
    send_batch(batch, second)
    assert refusing.calls == 1  # not asked again
    assert transport.sent == first + second
    assert received(receiver, 4) == first + second


async def test_a_size_the_route_cannot_carry_whole_is_sent_one_by_one_smaller_ones_in_runs(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    sender, receiver = pair
    transport = Transport(sender)
    too_big = Refusing(errno.EINVAL)
    batch = batch_of(transport, too_big)
    big = datagrams(1400, 1400)
    send_batch(batch, big)
    assert transport.sent == big and too_big.calls == 1
    again = datagrams(1400, 1400)
    send_batch(batch, again)
    assert too_big.calls == 1  # 1400 is not tried again
    smaller = datagrams(1000, 1000)
    send_batch(batch, smaller)
    assert too_big.calls == 2  # a smaller size is
    assert received(receiver, 6) == big + again + smaller


async def test_a_refused_send_is_reported_as_the_transport_would() -> None:
    # A connected socket whose peer answered with ICMP port unreachable.
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind((HOST, 0))
    closed_port = probe.getsockname()[1]
    probe.close()
    sock = await connected(asyncio.get_running_loop(), Address(HOST, closed_port))
    try:
        sock.send(b"x")
        await asyncio.sleep(0.05)  # the ICMP error is pending on the socket
        errors: list[Exception] = []
        transport = Transport(sock)
        batch = batch_of(transport, sock, errors=errors)
        batch.add(b"a" * 10)
        batch.add(b"b" * 10)
        batch.flush()
        assert [type(exc) for exc in errors] == [ConnectionRefusedError]
        assert transport.sent == []
    finally:
        sock.close()


async def test_a_backend_socket_is_connected_to_its_address() -> None:
    receiver = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    receiver.bind(("::1", 0))
    port = receiver.getsockname()[1]
    try:
        sock = await connected(asyncio.get_running_loop(), Address("::1", port))
        with sock:
            assert sock.getpeername()[:2] == ("::1", port)
            assert sock.getblocking() is False
        with await connected(asyncio.get_running_loop(), Address("localhost", port)) as named:
            assert named.getpeername()[1] == port  # a name is resolved
    finally:
        receiver.close()

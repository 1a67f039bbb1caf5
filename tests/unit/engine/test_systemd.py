"""systemd's notify and socket-activation protocols, against real sockets in this process."""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from refractium.engine import systemd
from refractium.errors import RefractiumError

# Passed sockets are put here instead of 3, which pytest's own files may hold.
START = 200


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A unix datagram socket standing for systemd's notify socket, and its path."""
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.settimeout(2)
        yield sock, path


def test_notify_sends_the_state_to_the_socket(receiver: tuple[socket.socket, str]) -> None:
    sock, path = receiver
    assert systemd.notify("READY=1\nSTATUS=serving", {"NOTIFY_SOCKET": path}) is True
    assert sock.recv(4096) == b"READY=1\nSTATUS=serving"


def test_notify_reaches_an_abstract_socket() -> None:
    name = f"refractium-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())
        sock.settimeout(2)
        assert systemd.notify("STOPPING=1", {"NOTIFY_SOCKET": "@" + name}) is True
        assert sock.recv(4096) == b"STOPPING=1"


@pytest.mark.parametrize("value", [None, "", "relative/path"])
def test_notify_without_a_socket_does_nothing(value: str | None) -> None:
    env = {} if value is None else {"NOTIFY_SOCKET": value}
    assert systemd.notify("READY=1", env) is False


def test_notify_to_a_socket_gone_is_not_an_error(tmp_path: Path) -> None:
    assert systemd.notify("READY=1", {"NOTIFY_SOCKET": str(tmp_path / "gone")}) is False


def test_reloading_message_carries_the_monotonic_clock() -> None:
    first, second = systemd.reloading_message().split("\n")
    assert first == "RELOADING=1"
    key, value = second.split("=")
    assert key == "MONOTONIC_USEC"
    assert abs(int(value) - time.monotonic_ns() // 1000) < 5_000_000


@contextlib.contextmanager
def passed(*socks: socket.socket | int) -> Iterator[None]:
    """Put ``socks`` (sockets or plain descriptors) at START, START+1..., as systemd would."""
    fds = []
    try:
        for i, sock in enumerate(socks):
            fd = START + i
            os.dup2(sock if isinstance(sock, int) else sock.fileno(), fd)
            fds.append(fd)
        yield
    finally:
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)


@pytest.fixture(autouse=True)
def _start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(systemd, "LISTEN_FDS_START", START)


def activation(count: int, pid: int | None = None) -> dict[str, str]:
    return {
        "LISTEN_PID": str(os.getpid() if pid is None else pid),
        "LISTEN_FDS": str(count),
        "LISTEN_FDNAMES": ":".join(["x"] * count),
        "OTHER": "kept",
    }


def test_listen_fds_takes_tcp_and_udp_sockets_and_clears_the_variables() -> None:
    tcp = socket.create_server(("127.0.0.1", 0))
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    env = activation(2)
    with tcp, udp, passed(tcp, udp):
        got = systemd.listen_fds(env)
        assert [(s.fileno(), s.type, s.getsockname()) for s in got] == [
            (START, socket.SOCK_STREAM, tcp.getsockname()),
            (START + 1, socket.SOCK_DGRAM, udp.getsockname()),
        ]
        assert not any(s.get_inheritable() for s in got)
        for sock in got:
            sock.detach()  # `passed` closes the descriptors
    assert env == {"OTHER": "kept"}


def test_listen_fds_for_another_process_takes_nothing() -> None:
    env = activation(1, pid=os.getpid() + 1)
    assert systemd.listen_fds(env) == []
    assert env == {"OTHER": "kept"}


def test_listen_fds_without_the_variables_takes_nothing() -> None:
    assert systemd.listen_fds({}) == []


def test_listen_fds_not_numbers() -> None:
    env = {"LISTEN_PID": "self", "LISTEN_FDS": "1"}
    with pytest.raises(RefractiumError) as caught:
        systemd.listen_fds(env)
    assert str(caught.value) == (
        "socket activation: LISTEN_PID='self', LISTEN_FDS='1': not numbers"
    )
    assert env == {}


def test_a_tcp_socket_not_listening_is_refused() -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with sock, passed(sock), pytest.raises(RefractiumError) as caught:
        systemd.listen_fds(activation(1))
    assert str(caught.value) == f"socket activation: fd {START}: a TCP socket not listening"


def test_a_unix_socket_is_refused(tmp_path: Path) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(tmp_path / "s"))
    sock.listen()
    with sock, passed(sock), pytest.raises(RefractiumError) as caught:
        systemd.listen_fds(activation(1))
    assert str(caught.value) == (
        f"socket activation: fd {START}: not an IPv4 or IPv6 socket "
        "(refractium listens on TCP and UDP only)"
    )


def test_a_descriptor_that_is_no_socket_is_refused() -> None:
    read, write = os.pipe()
    try:
        with passed(read), pytest.raises(RefractiumError) as caught:
            systemd.listen_fds(activation(1))
    finally:
        os.close(read)
        os.close(write)
    assert str(caught.value) == f"socket activation: fd {START}: not a socket"


def test_a_descriptor_not_open_is_refused() -> None:
    with contextlib.suppress(OSError):
        os.close(START)
    with pytest.raises(RefractiumError) as caught:
        systemd.listen_fds(activation(1))
    assert str(caught.value) == f"socket activation: fd {START}: not open"

"""The pcapng capture hook (refractium.hooks.pcap): the file it writes, its thread, its path.

The hook is driven directly, as the proxy would: ``on_packet`` per chunk,
then ``on_close``. The file is read back block by block here; that tshark
decodes it is tests/e2e/test_pcap_e2e.py's business.
"""

from __future__ import annotations

import logging
import os
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from refractium.hooks import pcap
from refractium.hooks.api import Direction, HookContext
from refractium.hooks.pcap import PcapWriter
from tests.unit.hooks.test_frames import parse

IN = Direction.INBOUND
OUT = Direction.OUTBOUND
SHB, IDB, EPB = 0x0A0D0D0A, 1, 6

CLIENT = ("192.0.2.10", 51000)
BACKEND = ("198.51.100.5", 80)
REQUEST = b"GET /capture/index.html?q=1 HTTP/1.1\r\nHost: capture.example\r\nAccept: */*\r\n\r\n"
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello"


def context(
    session_id: int,
    client: tuple[str, int] = CLIENT,
    backend: tuple[str, int] | None = BACKEND,
    protocol: str = "http",
    **extra: Any,
) -> HookContext:
    return HookContext(
        client_addr=client,
        protocol=protocol,
        session_id=session_id,
        backend_addr=backend,
        local_addr=("203.0.113.1", 8443),
        **extra,
    )


def http_session(writer: PcapWriter, ctx: HookContext, request: bytes = REQUEST) -> None:
    """A request in three chunks, the response in one, the end."""
    third = len(request) // 3
    writer.on_packet(ctx, IN, request[:third])
    writer.on_packet(ctx, IN, request[third : 2 * third])
    writer.on_packet(ctx, IN, request[2 * third :])
    writer.on_packet(ctx, OUT, RESPONSE)
    writer.on_close(ctx)


def read_blocks(path: Path) -> list[tuple[int, bytes]]:
    """The file's pcapng blocks (type, body), checking the framing on the way."""
    data = path.read_bytes()
    blocks = []
    offset = 0
    while offset < len(data):
        block_type, total = struct.unpack_from("<II", data, offset)
        assert total % 4 == 0 and total >= 12, (offset, total)
        (trailer,) = struct.unpack_from("<I", data, offset + total - 4)
        assert trailer == total
        blocks.append((block_type, data[offset + 8 : offset + total - 4]))
        offset += total
    assert offset == len(data)
    return blocks


class Packet:
    """One Enhanced Packet Block: its timestamp, lengths, frame and comment."""

    def __init__(self, body: bytes) -> None:
        _, high, low, self.captured, self.length = struct.unpack_from("<IIIII", body)
        self.timestamp_ns = high << 32 | low
        self.frame = body[20 : 20 + self.captured]
        rest = body[20 + self.captured + (-self.captured % 4) :]
        self.comment = ""
        if rest and struct.unpack_from("<H", rest)[0] == 1:
            (size,) = struct.unpack_from("<H", rest, 2)
            self.comment = rest[4 : 4 + size].decode()

    @property
    def tcp(self) -> dict[str, Any]:
        return parse(self.frame)


def packets(path: Path) -> list[Packet]:
    return [Packet(body) for kind, body in read_blocks(path) if kind == EPB]


def payloads(path: Path, port: int = CLIENT[1]) -> list[tuple[int, bytes]]:
    """(sequence number, payload) of the data segments the client (``port``) sent."""
    rows = [p.tcp for p in packets(path)]
    return [(r["seq"], r["payload"]) for r in rows if r["sport"] == port and r["payload"]]


@pytest.fixture
def capture(tmp_path: Path) -> Iterator[tuple[PcapWriter, Path]]:
    path = tmp_path / "cap.pcapng"
    writer = PcapWriter(path=str(path))
    try:
        yield writer, path
    finally:
        writer.close()


class Recorder:
    """A file stand-in for the writer thread: records the threads that write, can stall."""

    def __init__(self, inner: Any, delay: float = 0.0) -> None:
        self.inner = inner
        self.delay = delay
        self.threads: set[int] = set()
        self.gate = threading.Event()
        self.gate.set()

    def write(self, data: bytes) -> int:
        self.threads.add(threading.get_ident())
        self.gate.wait()
        if self.delay:
            time.sleep(self.delay)
        written: int = self.inner.write(data)
        return written

    def flush(self) -> None:
        self.inner.flush()

    def close(self) -> None:
        self.inner.close()


def recorded(monkeypatch: pytest.MonkeyPatch, **kwargs: Any) -> list[Recorder]:
    """Every file the writers open from now on, wrapped in a Recorder."""
    opened: list[Recorder] = []
    real = pcap._open_capture

    def wrapped(path: str, snaplen: int) -> Any:
        opened.append(Recorder(real(path, snaplen), **kwargs))
        return opened[-1]

    monkeypatch.setattr(pcap, "_open_capture", wrapped)
    return opened


# --------------------------------------------------------------------------- the file


def test_file_is_valid_pcapng(capture: tuple[PcapWriter, Path]) -> None:
    writer, path = capture
    http_session(writer, context(0x9999))
    writer.close()
    blocks = read_blocks(path)
    assert [kind for kind, _ in blocks[:2]] == [SHB, IDB]
    assert {kind for kind, _ in blocks[2:]} == {EPB}
    magic, major, minor, _length = struct.unpack_from("<IHHq", blocks[0][1])
    assert (magic, major, minor) == (0x1A2B3C4D, 1, 0)
    linktype, _, snaplen = struct.unpack_from("<HHI", blocks[1][1])
    assert (linktype, snaplen) == (1, 262144)
    # A handshake, 3 + 1 data segments, a FIN exchange.
    assert len(blocks) - 2 == 3 + 4 + 3
    # The first frame says which session it was.
    assert [p.comment for p in packets(path)] == [
        "refractium session 0000000000009999 protocol=http backend=198.51.100.5:80"
        " listener=203.0.113.1:8443",
        *[""] * 9,
    ]
    assert b"".join(payload for _, payload in payloads(path)) == REQUEST


def test_timestamps_are_when_packets_were_given(capture: tuple[PcapWriter, Path]) -> None:
    writer, path = capture
    ctx = context(0xAAAA)
    before = time.time_ns()
    writer.on_packet(ctx, IN, REQUEST)
    time.sleep(0.05)
    writer.on_packet(ctx, OUT, RESPONSE)
    writer.on_close(ctx)
    after = time.time_ns()
    writer.close()
    times = [p.timestamp_ns for p in packets(path) if p.tcp["payload"]]
    assert len(times) == 2
    assert before <= times[0] < times[1] <= after
    assert times[1] - times[0] >= 40_000_000  # nanoseconds, kept as such


def test_snaplen_truncates_frames(tmp_path: Path) -> None:
    path = tmp_path / "short.pcapng"
    with PcapWriter(path=str(path), snaplen=96) as writer:
        ctx = context(0xBBBB)
        writer.on_packet(ctx, IN, b"y" * 500)
        writer.on_close(ctx)
    assert [(p.length, p.captured) for p in packets(path) if p.length > 96] == [
        (14 + 20 + 20 + 500, 96)
    ]


def test_session_without_packets_is_still_a_connection(capture: tuple[PcapWriter, Path]) -> None:
    writer, path = capture
    writer.on_close(context(0xCCCC))
    writer.close()
    syn, ack, fin = 0x02, 0x10, 0x01
    flags = [p.tcp["flags"] for p in packets(path)]
    assert flags == [syn, syn | ack, ack, fin | ack, fin | ack, ack]


# --------------------------------------------------------------------------- an existing file


def test_building_a_writer_leaves_an_existing_capture_byte_identical(tmp_path: Path) -> None:
    """A writer built (by a reload, a check, a second route) must not wipe yesterday's capture."""
    path = tmp_path / "cap.pcapng"
    with PcapWriter(path=str(path)) as first:
        http_session(first, context(0x1))
    before = path.read_bytes()
    writer = PcapWriter(path=str(path))
    assert path.read_bytes() == before
    assert writer.flush(timeout=5)
    writer.close()
    assert path.read_bytes() == before, "a writer never given a packet leaves the file alone"
    unused = PcapWriter(path=str(tmp_path / "never.pcapng"))
    unused.close()
    assert not (tmp_path / "never.pcapng").exists()


def test_a_second_run_appends_a_section_and_keeps_the_first(tmp_path: Path) -> None:
    path = tmp_path / "cap.pcapng"
    with PcapWriter(path=str(path)) as first:
        http_session(first, context(0x1))
    first_run = path.read_bytes()
    with PcapWriter(path=str(path), snaplen=65535) as second:
        http_session(second, context(0x2, client=("192.0.2.11", 51001)))
    data = path.read_bytes()
    assert data.startswith(first_run)
    kinds = [kind for kind, _ in read_blocks(path)]
    assert kinds == [SHB, IDB, *[EPB] * 10, SHB, IDB, *[EPB] * 10]
    assert [p.tcp["sport"] for p in packets(path) if p.tcp["payload"]] == [
        *[51000] * 3,
        80,
        *[51001] * 3,
        80,
    ]
    # Each section describes its own interface.
    idbs = [body for kind, body in read_blocks(path) if kind == IDB]
    assert [struct.unpack_from("<HHI", body)[2] for body in idbs] == [262144, 65535]


def test_a_capture_cut_inside_a_block_is_kept_aside(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "cap.pcapng"
    with PcapWriter(path=str(path)) as first:
        http_session(first, context(0x1))
    cut = path.read_bytes()[:-10]  # the process was killed while writing
    path.write_bytes(cut)
    (tmp_path / "cap-damaged.pcapng").write_bytes(b"an earlier one")
    caplog.set_level(logging.WARNING, "refractium.hooks.pcap")
    with PcapWriter(path=str(path)) as second:
        http_session(second, context(0x2))
    assert (tmp_path / "cap-damaged-2.pcapng").read_bytes() == cut
    assert (tmp_path / "cap-damaged.pcapng").read_bytes() == b"an earlier one"
    assert [kind for kind, _ in read_blocks(path)][:2] == [SHB, IDB]
    assert f"pcap: {path} ends inside a block; kept as {tmp_path}/cap-damaged-2.pcapng" in (
        caplog.text
    )


def test_a_file_that_is_not_pcapng_is_refused_and_left_alone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "refractium.toml"
    path.write_text("[server]\nport = 8080\n")
    with pytest.raises(ValueError, match=r"refractium\.toml is not a pcapng file: not writing"):
        PcapWriter(path=str(path))
    # It became one after the writer was built: the writer thread refuses too.
    other = tmp_path / "cap.pcapng"
    writer = PcapWriter(path=str(other))
    other.write_bytes(b"classic pcap, say")
    caplog.set_level(logging.ERROR, "refractium.hooks.pcap")
    http_session(writer, context(0x3))
    writer.close()
    assert other.read_bytes() == b"classic pcap, say"
    assert f"pcap: writing {other} failed; capture stopped" in caplog.text


# --------------------------------------------------------------------------- the writer thread


async def test_writes_happen_off_the_event_loop(
    capture: tuple[PcapWriter, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    writer, path = capture
    opened = recorded(monkeypatch, delay=0.02)
    started = time.perf_counter()
    for number in range(20):
        ctx = context(0x1000 + number, client=("192.0.2.10", 52000 + number))
        writer.on_packet(ctx, IN, REQUEST)
        writer.on_close(ctx)
    # 20 sessions are 140 frames: 2.8 s if the loop had to wait for each write.
    assert time.perf_counter() - started < 0.5
    assert writer._thread is not None and writer._thread.is_alive()
    await writer.aclose()
    (slow,) = opened
    assert slow.threads == {writer._thread.ident}
    assert threading.get_ident() not in slow.threads
    assert len(packets(path)) == 20 * 7
    assert len({p.tcp["sport"] for p in packets(path)}) == 21  # 20 clients and the backend


def test_session_end_flushes_so_the_file_is_readable(capture: tuple[PcapWriter, Path]) -> None:
    writer, path = capture
    http_session(writer, context(0x1212))
    assert writer.flush(timeout=10)
    # The writer is still open; the file already holds the whole session.
    assert len(packets(path)) == 10
    ctx = context(0x1313, client=("192.0.2.10", 51313))
    writer.on_packet(ctx, IN, REQUEST)
    writer.on_close(ctx)
    deadline = time.monotonic() + 10
    while len(packets(path)) < 10 + 7:  # flushed by on_close, without flush()
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_close_is_idempotent_and_ends_the_thread(capture: tuple[PcapWriter, Path]) -> None:
    writer, path = capture
    http_session(writer, context(0x1414))
    writer.close()
    writer.close()
    assert writer.closed
    assert writer._thread is not None and not writer._thread.is_alive()
    size = path.stat().st_size
    writer.on_packet(context(0x1515), IN, REQUEST)  # ignored, and does not raise
    writer.on_close(context(0x1515))
    assert writer.flush() is True
    assert path.stat().st_size == size


def test_a_closed_writer_never_starts(tmp_path: Path) -> None:
    writer = PcapWriter(path=str(tmp_path / "cap.pcapng"))
    writer.close()
    writer.on_packet(context(0x1), IN, REQUEST)
    writer.on_close(context(0x1))
    assert writer._thread is None
    assert not (tmp_path / "cap.pcapng").exists()


def test_a_writer_behind_leaves_chunks_out_visibly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "behind.pcapng"
    opened = recorded(monkeypatch)
    writer = PcapWriter(path=str(path), max_pending=1000)
    try:
        ctx = context(0x1616)
        writer.on_packet(ctx, IN, b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n")
        while not opened:  # the thread has opened the file: stall it
            time.sleep(0.001)
        opened[0].gate.clear()
        writer.on_packet(ctx, IN, b"z" * 900)  # 928 bytes pending, over 1000 with the next
        writer.on_packet(ctx, IN, b"w" * 500)
        assert (writer.dropped_packets, writer.dropped_bytes) == (1, 500)
        writer.on_close(ctx)
    finally:
        opened[0].gate.set()
        writer.close()
    # The gap is in the sequence numbers, so Wireshark sees a segment missing.
    first = payloads(path)[0][0]
    assert [(seq - first, len(data)) for seq, data in payloads(path)] == [(0, 28), (28, 900)]
    fin = [p.tcp for p in packets(path) if p.tcp["flags"] & 0x01]
    assert fin[0]["sport"] == CLIENT[1] and fin[0]["seq"] - first == 28 + 900 + 500


# --------------------------------------------------------------------------- building


def test_config_style_construction(tmp_path: Path) -> None:
    kwargs: dict[str, Any] = {"path": str(tmp_path / "cfg.pcapng"), "snaplen": 65535}
    writer = PcapWriter(**kwargs)
    try:
        assert writer.name == "pcap"
        assert not os.path.exists(kwargs["path"]), "nothing on disk before the first packet"
        writer.on_close(context(0x1717))
        assert writer.flush(timeout=5)
        assert [kind for kind, _ in read_blocks(Path(kwargs["path"]))][:2] == [SHB, IDB]
    finally:
        writer.close()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"path": ""}, "path"),
        ({"path": 42}, "path"),
        ({"path": "x.pcapng", "snaplen": -1}, "snaplen"),
        ({"path": "x.pcapng", "snaplen": "big"}, "snaplen"),
        ({"path": "x.pcapng", "snaplen": True}, "snaplen"),
        ({"path": "x.pcapng", "snaplen": 1 << 32}, "snaplen"),
        ({"path": "x.pcapng", "max_pending": -5}, "max_pending"),
    ],
)
def test_bad_arguments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kwargs: dict[str, Any], message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=message):
        PcapWriter(**kwargs)
    assert not (tmp_path / "x.pcapng").exists()


def test_unwritable_path_is_a_clear_oserror(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such" / "dir" / "cap.pcapng"
    with pytest.raises(FileNotFoundError, match="cannot create capture file") as error:
        PcapWriter(path=str(missing))
    assert str(missing) in str(error.value)
    with pytest.raises(IsADirectoryError, match="cannot create capture file"):
        PcapWriter(path=str(tmp_path))
    assert not missing.parent.exists()

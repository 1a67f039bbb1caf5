"""Tests for the pcapng capture hook (refractium.hooks.pcap), read back with tshark.

The hook is driven directly, as the proxy's hook task would: ``on_packet``
per chunk, then ``on_close``. tshark (scripts/install-tools.sh installs it)
then has to find the HTTP requests and TLS server names in the file, which
it only does if the frames, sequence numbers and checksums are right.
"""

from __future__ import annotations

import math
import os
import shutil
import ssl
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from refractium.hooks.api import Direction, HookContext
from refractium.hooks.pcap import MAX_SEGMENT, PcapWriter

IN = Direction.INBOUND
OUT = Direction.OUTBOUND

CLIENT = ("192.0.2.10", 51000)
BACKEND = ("198.51.100.5", 80)
REQUEST = b"GET /capture/index.html?q=1 HTTP/1.1\r\nHost: capture.example\r\nAccept: */*\r\n\r\n"
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello"


def tshark_exe() -> str:
    found = shutil.which("tshark")
    assert found, "tshark is not installed: run scripts/install-tools.sh"
    return found


def tshark(path: Path, *args: str) -> str:
    """tshark's output on ``path``; its stderr (the root warning) is ignored."""
    done = subprocess.run(
        [tshark_exe(), "-r", str(path), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def fields(
    path: Path, display_filter: str, *names: str, options: tuple[str, ...] = ()
) -> list[str]:
    """One line per frame that matches ``display_filter``: the fields, tab-separated."""
    args = [*options, "-Y", display_filter, "-T", "fields"]
    for name in names or ("frame.number",):
        args += ["-e", name]
    return tshark(path, *args).splitlines()


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


def client_hello(server_hostname: str) -> bytes:
    """A real TLS ClientHello, as Python's ssl module would send it."""
    tls = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    connection = tls.wrap_bio(incoming, outgoing, server_hostname=server_hostname)
    with pytest.raises(ssl.SSLWantReadError):
        connection.do_handshake()
    hello = outgoing.read()
    assert hello[0] == 0x16  # a handshake record
    return hello


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


# --------------------------------------------------------------------------- decoding


def test_http_request_split_over_chunks_decodes(capture: tuple[PcapWriter, Path]) -> None:
    writer, path = capture
    http_session(writer, context(0x1111))
    writer.close()
    assert fields(path, "http.request", "http.request.uri") == ["/capture/index.html?q=1"]
    assert fields(path, "http.response", "http.response.code", "http.file_data") == ["200\thello"]
    # Client -> backend for the request, backend -> client for the response.
    assert fields(path, "http.request", "ip.src", "tcp.srcport", "ip.dst", "tcp.dstport") == [
        "192.0.2.10\t51000\t198.51.100.5\t80"
    ]
    assert fields(path, "http.response", "ip.src", "ip.dst") == ["198.51.100.5\t192.0.2.10"]


def test_tls_client_hello_server_name(capture: tuple[PcapWriter, Path]) -> None:
    writer, path = capture
    ctx = context(0x2222, client=("192.0.2.10", 51002), backend=("198.51.100.5", 443))
    hello = client_hello("capture.example")
    writer.on_packet(ctx, IN, hello[:40])  # the SNI is in the second chunk
    writer.on_packet(ctx, IN, hello[40:])
    writer.on_close(ctx)
    writer.close()
    names = fields(path, "tls.handshake.type==1", "tls.handshake.extensions_server_name")
    assert names == ["capture.example"]


def test_ipv6_session(capture: tuple[PcapWriter, Path]) -> None:
    writer, path = capture
    http_session(
        writer, context(0x3333, client=("2001:db8::10", 51003), backend=("2001:db8::5", 80))
    )
    writer.close()
    assert fields(path, "http.request", "ipv6.src", "ipv6.dst", "http.request.uri") == [
        "2001:db8::10\t2001:db8::5\t/capture/index.html?q=1"
    ]


def test_mixed_families_use_ipv4_mapped_ipv6(capture: tuple[PcapWriter, Path]) -> None:
    writer, path = capture
    http_session(writer, context(0x4444, client=("192.0.2.10", 51004), backend=("2001:db8::5", 80)))
    writer.close()
    assert fields(path, "http.request", "ipv6.src", "ipv6.dst") == [
        "::ffff:192.0.2.10\t2001:db8::5"
    ]
    assert fields(path, "ip") == []  # no IPv4 frame at all


def test_interleaved_sessions_both_decode(capture: tuple[PcapWriter, Path]) -> None:
    writer, path = capture
    first = context(0x5555, client=("192.0.2.10", 51005))
    second = context(0x6666, client=("192.0.2.11", 51006))
    one = b"GET /first HTTP/1.1\r\nHost: a\r\n\r\n"
    two = b"GET /second HTTP/1.1\r\nHost: b\r\n\r\n"
    writer.on_packet(first, IN, one[:7])
    writer.on_packet(second, IN, two[:9])
    writer.on_packet(first, IN, one[7:])
    writer.on_packet(second, IN, two[9:])
    writer.on_packet(second, OUT, RESPONSE)
    writer.on_packet(first, OUT, RESPONSE)
    writer.on_close(second)
    writer.on_close(first)
    writer.close()
    uris = fields(path, "http.request", "tcp.srcport", "http.request.uri")
    assert sorted(uris) == ["51005\t/first", "51006\t/second"]
    assert len(fields(path, "http.response")) == 2
    assert len(fields(path, "tcp.flags.syn==1 && tcp.flags.ack==0")) == 2
    assert len(fields(path, "tcp.flags.fin==1")) == 4


def test_big_chunk_is_split_and_reassembles(capture: tuple[PcapWriter, Path]) -> None:
    writer, path = capture
    ctx = context(0x7777)
    body = bytes(range(256)) * 800  # 204800 bytes
    response = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    writer.on_packet(ctx, IN, REQUEST)
    writer.on_packet(ctx, OUT, response)
    writer.on_close(ctx)
    writer.close()
    lengths = [int(n) for n in fields(path, "tcp.srcport==80 && tcp.len>0", "tcp.len")]
    assert len(lengths) == math.ceil(len(response) / MAX_SEGMENT) > 1
    assert sum(lengths) == len(response)
    assert max(lengths) <= MAX_SEGMENT
    # Only the chunk's last segment carries PSH.
    pushed = fields(path, "tcp.srcport==80 && tcp.len>0", "tcp.flags.push")
    assert pushed == ["0"] * (len(lengths) - 1) + ["1"]
    assert fields(path, "http.response", "tcp.reassembled.length", "http.content_length") == [
        f"{len(response)}\t{len(body)}"
    ]


def test_sequence_numbers_and_checksums_are_consistent(capture: tuple[PcapWriter, Path]) -> None:
    writer, path = capture
    # Initial sequence numbers (from the session id) 8 and 16 short of 2**32:
    # both sides' numbers wrap within the session.
    ctx = context(0xFFFF_FFF0_FFFF_FFF8)
    http_session(writer, ctx)
    ctx6 = context(0x8888, client=("2001:db8::10", 51008), backend=("2001:db8::5", 80))
    writer.on_packet(ctx6, IN, b"x" * 70001)  # odd length: a padded checksum
    writer.on_close(ctx6)
    writer.close()
    checking = ("-o", "tcp.check_checksum:TRUE", "-o", "ip.check_checksum:TRUE")
    # 1 is "Good"; anything else (0 "Bad", 2 "Unverified") is a bug here.
    assert set(fields(path, "tcp", "tcp.checksum.status", options=checking)) == {"1"}
    assert set(fields(path, "ip", "ip.checksum.status", options=checking)) == {"1"}
    # No retransmission, lost segment, out-of-order, ACK of unseen data...
    assert fields(path, "tcp.analysis.flags") == []
    rows = [
        line.split("\t")
        for line in fields(
            path, "tcp.stream==0", "tcp.flags", "tcp.seq", "tcp.ack", "tcp.len", "tcp.seq_raw"
        )
    ]
    request, response = len(REQUEST), len(RESPONSE)
    third = request // 3
    syn, syn_ack, ack, psh_ack, fin_ack = 0x02, 0x12, 0x10, 0x18, 0x11
    # flags, relative seq, relative ack (0: none), payload length
    assert [[int(row[0], 16), *row[1:4]] for row in rows] == [
        [syn, "0", "0", "0"],
        [syn_ack, "0", "1", "0"],
        [ack, "1", "1", "0"],
        [psh_ack, "1", "1", str(third)],
        [psh_ack, str(1 + third), "1", str(third)],
        [psh_ack, str(1 + 2 * third), "1", str(request - 2 * third)],
        [psh_ack, "1", str(1 + request), str(response)],
        [fin_ack, str(1 + request), str(1 + response), "0"],
        [fin_ack, str(1 + response), str(2 + request), "0"],
        [ack, str(2 + request), str(2 + response), "0"],
    ]
    assert rows[0][4] == str(0xFFFF_FFF8)  # the client's initial number
    assert rows[1][4] == str(0xFFFF_FFF0)  # the backend's
    assert int(rows[-1][4]) == (0xFFFF_FFF8 + 2 + request) % 2**32  # wrapped


@pytest.mark.parametrize("session_id", [0, 0xFFFF_FFFF_FFFF_FFFF, 0xFFFF_FFFF_0000_0001])
def test_extreme_session_ids_give_a_clean_conversation(tmp_path: Path, session_id: int) -> None:
    path = tmp_path / "edge.pcapng"
    with PcapWriter(path=str(path)) as writer:
        http_session(writer, context(session_id))
    assert fields(path, "http.request", "http.request.uri") == ["/capture/index.html?q=1"]
    assert fields(path, "tcp.analysis.flags") == []


# --------------------------------------------------------------------------- the file


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


def test_file_is_valid_pcapng(capture: tuple[PcapWriter, Path]) -> None:
    writer, path = capture
    http_session(writer, context(0x9999))
    writer.close()
    blocks = read_blocks(path)
    assert [kind for kind, _ in blocks[:2]] == [0x0A0D0D0A, 1]
    assert {kind for kind, _ in blocks[2:]} == {6}
    magic, major, minor, _length = struct.unpack_from("<IHHq", blocks[0][1])
    assert (magic, major, minor) == (0x1A2B3C4D, 1, 0)
    linktype, _, snaplen = struct.unpack_from("<HHI", blocks[1][1])
    assert (linktype, snaplen) == (1, 262144)
    assert len(blocks) - 2 == 3 + 4 + 3
    capinfos = shutil.which("capinfos")
    if capinfos:
        done = subprocess.run(
            [capinfos, "-t", "-c", "-M", str(path)], capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, done.stderr
        assert "pcapng" in done.stdout
        assert "Number of packets:   10" in done.stdout
    # The first frame says which session it was.
    comments = fields(path, "frame.comment", "frame.comment")
    assert comments == [
        "refractium session 0000000000009999 protocol=http backend=198.51.100.5:80"
        " listener=203.0.113.1:8443"
    ]


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
    times = [int(line.replace(".", "")) for line in fields(path, "tcp.len>0", "frame.time_epoch")]
    assert len(times) == 2
    assert before <= times[0] < times[1] <= after
    assert times[1] - times[0] >= 40_000_000  # nanoseconds, kept as such


def test_snaplen_truncates_frames(tmp_path: Path) -> None:
    path = tmp_path / "short.pcapng"
    with PcapWriter(path=str(path), snaplen=96) as writer:
        ctx = context(0xBBBB)
        writer.on_packet(ctx, IN, b"y" * 500)
        writer.on_close(ctx)
    rows = fields(path, "frame.len > 96", "frame.len", "frame.cap_len")
    assert rows == [f"{14 + 20 + 20 + 500}\t96"]


def test_session_without_packets_is_still_a_connection(capture: tuple[PcapWriter, Path]) -> None:
    writer, path = capture
    writer.on_close(context(0xCCCC))
    writer.close()
    assert fields(path, "tcp", "tcp.flags.str") != []
    assert len(fields(path, "tcp")) == 6
    assert fields(path, "tcp.analysis.flags") == []


def test_backend_name_gets_a_made_up_address(capture: tuple[PcapWriter, Path]) -> None:
    writer, path = capture
    http_session(writer, context(0xDDDD, backend=("backend.internal", 8080)))
    writer.close()
    (row,) = fields(path, "http.request", "ip.dst", "tcp.dstport")
    address, port = row.split("\t")
    assert address.startswith(("198.18.", "198.19.")) and port == "8080"
    assert "backend=backend.internal:8080" in fields(path, "frame.comment", "frame.comment")[0]


def test_no_backend_uses_the_listener(capture: tuple[PcapWriter, Path]) -> None:
    writer, path = capture
    http_session(writer, context(0xEEEE, backend=None))
    writer.close()
    rows = fields(path, "tcp.len>0 && tcp.srcport==51000", "ip.dst", "tcp.dstport")
    assert rows == ["203.0.113.1\t8443"] * 3


# --------------------------------------------------------------------------- the writer thread


async def test_writes_happen_off_the_event_loop(capture: tuple[PcapWriter, Path]) -> None:
    writer, path = capture
    slow = Recorder(writer._sink.file, delay=0.02)
    writer._sink.file = slow  # type: ignore[assignment]
    started = time.perf_counter()
    for number in range(20):
        ctx = context(0x1000 + number, client=("192.0.2.10", 52000 + number))
        writer.on_packet(ctx, IN, REQUEST)
        writer.on_close(ctx)
    # 20 sessions are 160 frames: 3.2 s if the loop had to wait for each write.
    assert time.perf_counter() - started < 0.5
    assert writer._thread.is_alive()
    await writer.aclose()
    assert slow.threads == {writer._thread.ident}
    assert threading.get_ident() not in slow.threads
    assert len(fields(path, "http.request")) == 20


def test_session_end_flushes_so_the_file_is_readable(capture: tuple[PcapWriter, Path]) -> None:
    writer, path = capture
    http_session(writer, context(0x1212))
    assert writer.flush(timeout=10)
    # The writer is still open; the file already holds the whole session.
    assert fields(path, "http.request", "http.request.uri") == ["/capture/index.html?q=1"]
    ctx = context(0x1313, client=("192.0.2.10", 51313))
    writer.on_packet(ctx, IN, REQUEST)
    writer.on_close(ctx)
    deadline = time.monotonic() + 10
    while len(fields(path, "http.request")) < 2:  # flushed by on_close, without flush()
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_close_is_idempotent_and_ends_the_thread(capture: tuple[PcapWriter, Path]) -> None:
    writer, path = capture
    http_session(writer, context(0x1414))
    writer.close()
    writer.close()
    assert writer.closed
    assert not writer._thread.is_alive()
    size = path.stat().st_size
    writer.on_packet(context(0x1515), IN, REQUEST)  # ignored, and does not raise
    writer.on_close(context(0x1515))
    assert writer.flush() is True
    assert path.stat().st_size == size


def test_a_writer_behind_leaves_chunks_out_visibly(tmp_path: Path) -> None:
    path = tmp_path / "behind.pcapng"
    writer = PcapWriter(path=str(path), max_pending=1000)
    stalled = Recorder(writer._sink.file)
    stalled.gate.clear()
    writer._sink.file = stalled  # type: ignore[assignment]
    try:
        ctx = context(0x1616)
        writer.on_packet(ctx, IN, b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n")
        writer.on_packet(ctx, IN, b"z" * 900)  # 928 bytes pending, over 1000 with the next
        writer.on_packet(ctx, IN, b"w" * 500)
        assert (writer.dropped_packets, writer.dropped_bytes) == (1, 500)
        writer.on_close(ctx)
    finally:
        stalled.gate.set()
        writer.close()
    # The gap is in the sequence numbers, so Wireshark sees a segment missing.
    lens = fields(path, "tcp.len>0", "tcp.seq", "tcp.len")
    assert lens == ["1\t28", "29\t900"]
    ctx_end = fields(path, "tcp.flags.fin==1 && tcp.srcport==51000", "tcp.seq")
    assert ctx_end == [str(1 + 28 + 900 + 500)]
    assert fields(path, "tcp.analysis.lost_segment", "tcp.seq") == [str(1 + 28 + 900 + 500)]


def test_config_style_construction(tmp_path: Path) -> None:
    kwargs: dict[str, Any] = {"path": str(tmp_path / "cfg.pcapng"), "snaplen": 65535}
    writer = PcapWriter(**kwargs)
    try:
        assert writer.name == "pcap"
        assert os.path.getsize(kwargs["path"]) > 0  # the headers are written at once
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
    assert not (tmp_path / "x.pcapng").exists()  # checked before the file is made


def test_unwritable_path_is_a_clear_oserror(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such" / "dir" / "cap.pcapng"
    with pytest.raises(FileNotFoundError, match="cannot create capture file") as error:
        PcapWriter(path=str(missing))
    assert str(missing) in str(error.value)
    with pytest.raises(IsADirectoryError, match="cannot create capture file"):
        PcapWriter(path=str(tmp_path))


def test_file_is_truncated_on_construction(tmp_path: Path) -> None:
    path = tmp_path / "again.pcapng"
    path.write_bytes(b"old contents" * 1000)
    with PcapWriter(path=str(path)):
        pass
    assert [kind for kind, _ in read_blocks(path)] == [0x0A0D0D0A, 1]

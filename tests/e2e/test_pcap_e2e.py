"""The pcapng writer read back by tshark: the frames it makes up decode as real ones.

tshark (scripts/install-tools.sh installs it) has to find the HTTP requests
and TLS server names in the files, which it only does if the frames,
sequence numbers and checksums are right. The writer is driven directly
(``on_packet`` per chunk, then ``on_close``) and, last, through the proxy.
"""

from __future__ import annotations

import math
import shutil
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from refractium.hooks.pcap import MAX_SEGMENT, PcapWriter
from tests.kit.backends import http_backend, run, tls_backend
from tests.kit.clients import openssl_get
from tests.kit.proxy import LOCAL_TCP, running_proxy
from tests.unit.hooks.test_pcap import IN, OUT, REQUEST, RESPONSE, context, http_session


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


def test_capinfos_and_tshark_read_the_file_and_its_comment(
    capture: tuple[PcapWriter, Path],
) -> None:
    writer, path = capture
    http_session(writer, context(0x9999))
    writer.close()
    capinfos = shutil.which("capinfos")
    if capinfos:
        done = subprocess.run(
            [capinfos, "-t", "-c", "-M", str(path)], capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, done.stderr
        assert "pcapng" in done.stdout
        assert "Number of packets:   10" in done.stdout
    assert fields(path, "frame.comment", "frame.comment") == [
        "refractium session 0000000000009999 protocol=http backend=198.51.100.5:80"
        " listener=203.0.113.1:8443"
    ]


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


def test_a_writer_behind_shows_the_gap_as_a_lost_segment(tmp_path: Path) -> None:
    """What was left out is skipped in the sequence numbers: Wireshark says so."""
    path = tmp_path / "behind.pcapng"
    writer = PcapWriter(path=str(path), max_pending=0)
    ctx = context(0x1616)
    writer.on_packet(ctx, IN, b"w" * 500)  # nothing may wait: left out
    writer.on_close(ctx)
    writer.close()
    assert writer.dropped_bytes == 500
    assert fields(path, "tcp.analysis.lost_segment", "tcp.seq") == ["501"]


def test_a_second_run_keeps_the_first_runs_packets(tmp_path: Path) -> None:
    """A restarted proxy appends a section; tshark reads both runs' connections."""
    path = tmp_path / "cap.pcapng"
    for number, uri in enumerate((b"/first-run", b"/second-run")):
        request = b"GET %s HTTP/1.1\r\nHost: capture.example\r\n\r\n" % uri
        client: tuple[str, int] = ("192.0.2.10", 51000 + number)
        with PcapWriter(path=str(path)) as writer:
            http_session(writer, context(0x100 + number, client=client), request)
    assert fields(path, "http.request", "http.request.uri") == ["/first-run", "/second-run"]
    assert len(fields(path, "tcp")) == 20
    assert fields(path, "tcp.analysis.flags") == []


async def test_tshark_decodes_http_uri_and_tls_sni_through_the_proxy(tmp_path: Path) -> None:
    capture = tmp_path / "capture.pcapng"
    pcap = f'{{ use = "refractium.hooks.pcap:PcapWriter", path = "{capture}" }}'
    async with http_backend("web") as web, tls_backend("T", ["capture.example"]) as tls:
        config = f"""
[[protocols]]
name = "http"
overflow = "block"
hooks = [{pcap}]
forward_to = "{web.address}"

[[protocols]]
name = "tls"
overflow = "block"
hooks = [{pcap}]
forward_to = "{tls.address}"
"""
        async with running_proxy(*LOCAL_TCP, config=config) as proxy:
            curl = await run(["curl", "-s", f"http://127.0.0.1:{proxy.port}/captured/path?q=1"])
            assert curl.stdout == b"web\n"
            reply = await openssl_get(proxy.port, "capture.example")
            assert b"T sni=capture.example" in reply.stdout
            assert await proxy.stop() == 0  # closes the capture file
    assert fields(capture, "http.request", "http.request.uri") == ["/captured/path?q=1"]
    sni = fields(capture, "tls.handshake.type == 1", "tls.handshake.extensions_server_name")
    assert sni == ["capture.example"]

"""The TCP conversation the pcapng writer makes up: headers, checksums, numbers."""

from __future__ import annotations

import ipaddress
import struct

import pytest

from refractium.hooks.api import HookContext
from refractium.hooks.frames import (
    ACK,
    FIN,
    MAX_SEGMENT,
    PSH,
    SYN,
    SYN_OPTIONS,
    Session,
    describe,
    endpoints,
)


def context(
    client: tuple[str, int] = ("192.0.2.10", 51000),
    backend: tuple[str, int] | None = ("198.51.100.5", 80),
    session_id: int = 0x1234_5678_9ABC_DEF0,
    **extra: object,
) -> HookContext:
    return HookContext(
        client_addr=client,
        protocol="http",
        session_id=session_id,
        backend_addr=backend,
        local_addr=("203.0.113.1", 8443),
        **extra,  # type: ignore[arg-type]
    )


def internet_checksum(data: bytes) -> int:
    """RFC 1071, word by word: the slow way, to check the fast one."""
    if len(data) % 2:
        data += b"\0"
    total = 0
    for (word,) in struct.iter_unpack("!H", data):
        total += word
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def parse(frame: bytes) -> dict[str, object]:
    """The fields of an Ethernet + IPv4/IPv6 + TCP frame, checksums verified."""
    ethertype = struct.unpack_from("!H", frame, 12)[0]
    ip = frame[14:]
    if ethertype == 0x0800:
        header, rest = ip[:20], ip[20:]
        assert internet_checksum(header) == 0, "IPv4 header checksum"
        assert struct.unpack_from("!H", header, 2)[0] == len(ip)
        src, dst = header[12:16], header[16:20]
        pseudo = src + dst + struct.pack("!BBH", 0, 6, len(rest))
    else:
        assert ethertype == 0x86DD
        header, rest = ip[:40], ip[40:]
        assert struct.unpack_from("!H", header, 4)[0] == len(rest)
        src, dst = header[8:24], header[24:40]
        pseudo = src + dst + struct.pack("!IxxxB", len(rest), 6)
    assert internet_checksum(pseudo + rest) == 0, "TCP checksum"
    sport, dport, seq, ack, offset, flags = struct.unpack_from("!HHIIBB", rest)
    return {
        "src": str(ipaddress.ip_address(src)),
        "dst": str(ipaddress.ip_address(dst)),
        "sport": sport,
        "dport": dport,
        "seq": seq,
        "ack": ack,
        "flags": flags,
        "options": rest[20 : (offset >> 4) * 4],
        "payload": rest[(offset >> 4) * 4 :],
    }


def test_a_conversation_adds_up() -> None:
    client, backend = endpoints(context())
    session = Session(client, backend, 0x1234_5678_9ABC_DEF0)
    frames = [
        session.frame(True, SYN, options=SYN_OPTIONS),
        session.frame(False, SYN | ACK, options=SYN_OPTIONS),
        session.frame(True, ACK),
        session.frame(True, PSH | ACK, b"hello"),
        session.frame(False, PSH | ACK, b"x" * 1001),  # odd length: a padded checksum
        session.frame(True, FIN | ACK),
        session.frame(False, FIN | ACK),
        session.frame(True, ACK),
    ]
    rows = [parse(frame) for frame in frames]
    c, b = 0x9ABC_DEF0, 0x1234_5678  # initial numbers from the session id
    assert [(r["flags"], r["seq"], r["ack"]) for r in rows] == [
        (SYN, c, 0),
        (SYN | ACK, b, c + 1),
        (ACK, c + 1, b + 1),
        (PSH | ACK, c + 1, b + 1),
        (PSH | ACK, b + 1, c + 6),
        (FIN | ACK, c + 6, b + 1002),
        (FIN | ACK, b + 1002, c + 7),
        (ACK, c + 7, b + 1003),
    ]
    assert rows[0]["options"] == SYN_OPTIONS and rows[2]["options"] == b""
    assert (rows[3]["src"], rows[3]["sport"], rows[3]["dst"], rows[3]["dport"]) == (
        "192.0.2.10",
        51000,
        "198.51.100.5",
        80,
    )
    assert rows[4]["payload"] == b"x" * 1001 and rows[4]["src"] == "198.51.100.5"


def test_sequence_numbers_wrap_and_a_big_segment_still_checks() -> None:
    client, backend = endpoints(
        context(client=("2001:db8::10", 51008), backend=("2001:db8::5", 80))
    )
    session = Session(client, backend, 0xFFFF_FFF0_FFFF_FFF8)
    assert session.next_seq == [0xFFFF_FFF8, 0xFFFF_FFF0]
    row = parse(session.frame(True, ACK, b"y" * MAX_SEGMENT))
    assert row["src"] == "2001:db8::10" and len(row["payload"]) == MAX_SEGMENT  # type: ignore[arg-type]
    assert session.next_seq[0] == (0xFFFF_FFF8 + MAX_SEGMENT) % 2**32


@pytest.mark.parametrize("session_id", [0xFFFF_FFFF_FFFF_FFFF, 0xFFFF_FFFF_0000_0001])
def test_an_initial_number_is_never_all_ones(session_id: int) -> None:
    """Else the handshake's ACK would acknowledge 0, like the SYN's empty field."""
    client, backend = endpoints(context())
    assert 0xFFFF_FFFF not in Session(client, backend, session_id).next_seq


def test_mixed_families_become_ipv4_mapped_ipv6() -> None:
    client, backend = endpoints(context(backend=("2001:db8::5", 443)))
    assert (str(client.address), str(backend.address)) == ("::ffff:c000:20a", "2001:db8::5")
    row = parse(Session(client, backend, 1).frame(True, SYN))
    assert row["src"] == "::ffff:c000:20a"


def test_a_backend_name_gets_a_stable_made_up_address_and_no_backend_the_listener() -> None:
    _, named = endpoints(context(backend=("backend.internal", 8080)))
    assert named.address in ipaddress.ip_network("198.18.0.0/15") and named.port == 8080
    assert endpoints(context(backend=("backend.internal", 1)))[1].address == named.address
    _, listener = endpoints(context(backend=None))
    assert (str(listener.address), listener.port) == ("203.0.113.1", 8443)


def test_the_first_frames_comment_says_what_the_capture_cannot() -> None:
    ctx = context(sni="a.example", alpn=("h2", "http/1.1"))
    assert describe(ctx) == (
        "refractium session 123456789abcdef0 protocol=http sni=a.example alpn=h2,http/1.1"
        " backend=198.51.100.5:80 listener=203.0.113.1:8443"
    )

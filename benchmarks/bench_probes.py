"""Time the protocol probes on realistic first bytes.

Run with ``python benchmarks/bench_probes.py``. For every probe and every
input (an HTTP GET, a ~500-byte TLS 1.3 ClientHello with SNI and ALPN
h2/http1.1 from this Python's ssl module, an SSH banner) it times batches of
calls with ``time.perf_counter_ns`` and prints the median ns per call, plus
the bare ClientHello parser (whose ClientHello carries the JA4 fingerprint,
computed) and the same hello fragmented over three records, seen before (its
layout and hashes kept, as for a client that connects again) and as if new
(the JA4 tables emptied before each call), and with a GREASE extension (as
BoringSSL clients send, which shuffle their extensions: walked every time).

Then the TLS probe on three real clients' hellos (Chrome's from FoxIO's
capture, curl's and this Python's, as in ``tests/unit/protocols/data/ja4``):
the probe alone, as where no fingerprint is ever read (a Match's ``ja4`` is
computed only when read), then the probe and a read of ``ja4``. Chrome's
hello is given new GREASE values and a new extension order on every call, as
Chrome does per connection.

Then each of the other built-in probes on its own protocol's first flight
(what a match costs; ``probe_datagram`` for the UDP form where there is one).
The probes' ``first_bytes`` filter is not applied: the table shows the cost
of a call, which the route table skips for data starting with a foreign byte.
"""

from __future__ import annotations

import contextlib
import itertools
import ssl
import statistics
import struct
import time
from collections.abc import Callable
from pathlib import Path

from refractium.protocols import BUILTIN, CustomProbe, ja4
from refractium.protocols.clienthello import parse_client_hello, parse_handshake
from refractium.protocols.dns import DnsProbe
from refractium.protocols.openvpn import OpenVpnProbe
from refractium.protocols.syslog import SyslogProbe

BATCH = 1_000
ROUNDS = 200
JA4_DATA = Path(__file__).resolve().parent.parent / "tests" / "unit" / "protocols" / "data" / "ja4"
GREASE = sorted(ja4.GREASE)


def client_hello() -> bytes:
    """A real ClientHello, as the first flight of an ssl.SSLObject."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    conn = ctx.wrap_bio(incoming, outgoing, server_hostname="www.example.com")
    with contextlib.suppress(ssl.SSLWantReadError):
        conn.do_handshake()
    return outgoing.read()


def three_records(stream: bytes) -> bytes:
    """Re-frame a single-record hello into three handshake records."""
    body = stream[5 : 5 + int.from_bytes(stream[3:5], "big")]
    cuts = (0, 100, 300, len(body))
    return b"".join(
        b"\x16" + stream[1:3] + (b - a).to_bytes(2, "big") + body[a:b]
        for a, b in itertools.pairwise(cuts)
    )


def greased(stream: bytes) -> bytes:
    """The hello with an empty GREASE extension (0x0A0A) in front of the others."""
    body = stream[5 : 5 + int.from_bytes(stream[3:5], "big")]
    p = 4 + 34
    p += 1 + body[p]
    p += 2 + int.from_bytes(body[p : p + 2], "big")
    p += 1 + body[p]
    block = b"\x0a\x0a\x00\x00" + body[p + 2 :]
    rest = body[4:p] + len(block).to_bytes(2, "big") + block
    msg = b"\x01" + len(rest).to_bytes(3, "big") + rest
    return stream[:3] + len(msg).to_bytes(2, "big") + msg


def forget() -> None:
    """Empty what JA4 keeps between hellos."""
    for table in (ja4.layouts, ja4._fingerprints, ja4._ciphers_table, ja4._extensions_table):
        table.clear()


def as_if_new(data: bytes) -> object:
    """Parse with nothing kept from earlier hellos: a client's first visit."""
    forget()
    return parse_client_hello(data)


def pcap_payloads(path: Path) -> bytes:
    """What the client sent to port 443 over TCP, from a classic pcap (Ethernet, IPv4)."""
    raw = path.read_bytes()
    sent = b""
    pos = 24
    while pos < len(raw):
        size = struct.unpack_from("<I", raw, pos + 8)[0]
        ip = raw[pos + 16 + 14 : pos + 16 + size]
        pos += 16 + size
        segment = ip[(ip[0] & 0x0F) * 4 : struct.unpack_from(">H", ip, 2)[0]]
        if ip[9] == 6 and struct.unpack_from(">H", segment, 2)[0] == 443:
            sent += segment[(segment[12] >> 4) * 4 :]
    return sent


def chrome_connections(stream: bytes, count: int = 64) -> list[bytes]:
    """Chrome's hello as on ``count`` connections: new GREASE values, extensions rotated."""
    body = stream[9:]
    p = 34 + 1 + body[34]
    cs_end = p + 2 + int.from_bytes(body[p : p + 2], "big")
    ext_start = cs_end + 1 + body[cs_end] + 2
    entries: list[bytes] = []
    q = ext_start
    while q < len(body):
        size = int.from_bytes(body[q + 2 : q + 4], "big")
        entries.append(body[q : q + 4 + size])
        q += 4 + size
    hellos = []
    for i in range(count):
        value = GREASE[i % 16].to_bytes(2, "big")
        ext_values = [GREASE[(i + 5) % 16], GREASE[(i + 9) % 16]]
        changed = []
        for entry in entries:
            kind = int.from_bytes(entry[:2], "big")
            if kind in ja4.GREASE:
                entry = ext_values.pop().to_bytes(2, "big") + entry[2:]
            elif kind == 0x002B:  # supported_versions: a GREASE value first
                entry = entry[:5] + value + entry[7:]
            changed.append(entry)
        first, rest = changed[0], changed[1:]
        shift = i % len(rest)
        block = first + b"".join(rest[shift:] + rest[:shift])
        # Chrome's first cipher suite is a GREASE value.
        msg = body[: p + 2] + value + body[p + 4 : ext_start] + block
        msg = b"\x01" + len(msg).to_bytes(3, "big") + msg
        hellos.append(stream[:3] + len(msg).to_bytes(2, "big") + msg)
    return hellos


def first_flights() -> dict[str, tuple[Callable[[bytes], object], bytes]]:
    """Each other built-in probe and a first flight of its protocol."""

    def probe_of(name: str) -> Callable[[bytes], object]:
        return BUILTIN[name].probe

    def datagram_of(name: str) -> Callable[[bytes], object]:
        probe = BUILTIN[name]
        assert isinstance(probe, DnsProbe | OpenVpnProbe | SyslogProbe)
        return probe.probe_datagram

    # dig 9.18's query for www.example.com A (EDNS, cookie), as a datagram and over TCP.
    dns_query = bytes.fromhex(
        "cca40120000100000000000103777777076578616d706c6503636f6d000001000100002904d0000000"
        "00000c000a00087e2b40bd4904eccd"
    )
    # OpenVPN hard resets: tls-auth with SHA-1, and tls-crypt-v2 with a 300-byte WKc.
    tls_auth = b"\x38" + bytes(range(1, 9)) + bytes(range(20)) + b"\x00\x00\x00\x01"
    tls_auth += b"\x66\x50\xa1\xb2" + bytes(5)
    v3 = b"\x50" + bytes(range(1, 9)) + b"\x0f\x00\x00\x01" + bytes(4 + 32 + 5 + 298) + b"\x01\x2c"
    cnxn = b"CNXN\x01\x00\x00\x01\x00\x00\x10\x00\x07\x00\x00\x00\x00\x00\x00\x00"
    cnxn += b"\xbc\xb1\xa7\xb1host::\x00"
    syslog = b"<13>1 2026-11-21T23:36:34.329417+00:00 vm root - - - hello udp"
    return {
        f"dns datagram ({len(dns_query)} B)": (datagram_of("dns"), dns_query),
        "dns over tcp": (probe_of("dns"), len(dns_query).to_bytes(2, "big") + dns_query),
        f"openvpn datagram tls-auth ({len(tls_auth)} B)": (datagram_of("openvpn"), tls_auth),
        f"openvpn datagram v3 ({len(v3)} B)": (datagram_of("openvpn"), v3),
        "openvpn over tcp, tls-auth": (probe_of("openvpn"), b"\x00\x2a" + tls_auth),
        "wireguard initiation (148 B)": (probe_of("wireguard"), b"\x01\x00\x00\x00" + bytes(144)),
        "xmpp stream header": (
            probe_of("xmpp"),
            b"<?xml version='1.0'?><stream:stream to='example.com' xmlns='jabber:client' "
            b"xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>",
        ),
        "socks5 greeting (curl)": (probe_of("socks5"), b"\x05\x02\x00\x01"),
        "tinc ID request": (probe_of("tinc"), b"0 alpha 17.7\n"),
        "adb CNXN": (probe_of("adb"), cnxn),
        "rdp connection request": (
            probe_of("rdp"),
            b"\x03\x00\x00\x2b\x26\xe0\x00\x00\x00\x00\x00Cookie: mstshash=Administr\r\n"
            b"\x01\x00\x08\x00\x0b\x00\x00\x00",
        ),
        "syslog datagram (RFC 5424)": (datagram_of("syslog"), syslog),
        "syslog over tcp, octet-counted": (probe_of("syslog"), b"62 " + syslog),
        "ftp USER line": (probe_of("ftp"), b"USER anonymous\r\n"),
        "anyprot, anything": (probe_of("anyprot"), b"\x00"),
    }


def cycling(fn: Callable[[bytes], object], inputs: list[bytes]) -> Callable[[bytes], object]:
    """``fn`` called on each of ``inputs`` in turn, whatever it is passed."""
    it = itertools.cycle(inputs)
    return lambda _: fn(next(it))


def median_ns(fn: Callable[[bytes], object], data: bytes) -> float:
    """Median over ROUNDS batches of the mean time of one call in a batch."""
    per_call: list[float] = []
    for _ in range(ROUNDS):
        start = time.perf_counter_ns()
        for _ in range(BATCH):
            fn(data)
        per_call.append((time.perf_counter_ns() - start) / BATCH)
    return statistics.median(per_call)


def main() -> None:
    hello = client_hello()
    inputs = {
        "http GET": b"GET /index.html HTTP/1.1\r\nHost: www.example.com\r\n"
        b"User-Agent: curl/8.5.0\r\nAccept: */*\r\n\r\n",
        f"TLS hello ({len(hello)} B)": hello,
        "SSH banner": b"SSH-2.0-OpenSSH_9.6p1 Ubuntu-3ubuntu13\r\n",
    }
    probes: dict[str, Callable[[bytes], object]] = {
        name: probe.probe for name, probe in BUILTIN.items()
    }
    probes["custom pattern"] = CustomProbe("c1", (b"\x00\x0e8",)).probe
    probes["custom ^regex"] = CustomProbe("c2", regex=r"^HELLO [0-9]+").probe

    width = max(len(k) for k in inputs) + 2
    print(f"median ns per call ({ROUNDS} rounds x {BATCH} calls)\n")
    print("probe".ljust(16) + "".join(k.rjust(width) for k in inputs))
    for name, fn in probes.items():
        row = "".join(f"{median_ns(fn, data):>{width}.0f}" for data in inputs.values())
        print(name.ljust(16) + row)

    print()
    fragmented = three_records(hello)
    parsers: dict[str, tuple[Callable[[bytes], object], bytes]] = {
        "parse_client_hello (1 record)": (parse_client_hello, hello),
        "parse_client_hello (3 records)": (parse_client_hello, fragmented),
        "parse_handshake (bare message)": (parse_handshake, hello[5:]),
        "parse_client_hello, as if new": (as_if_new, hello),
        "parse_client_hello, GREASE ext.": (parse_client_hello, greased(hello)),
        "tls probe, hello cut in half": (BUILTIN["tls"].probe, hello[: len(hello) // 2]),
    }
    for label, (fn, data) in parsers.items():
        print(f"{label:<34}{median_ns(fn, data):>8.0f} ns")

    print("\nthe TLS probe on real clients' hellos, and the first read of Match.ja4\n")
    tls_probe = BUILTIN["tls"].probe
    chrome = bytes.fromhex((JA4_DATA / "foxio-chrome-tcp.hex").read_text())
    hellos = {
        f"Chrome, new GREASE per call ({len(chrome)} B)": chrome_connections(chrome),
        "Chrome, the capture itself": [chrome],
        "curl 7.88 (OpenSSL 3.0)": [pcap_payloads(JA4_DATA / "curl.pcap")],
        f"Python ssl ({len(hello)} B)": [hello],
    }
    for variants in hellos.values():
        assert len({getattr(tls_probe(v), "ja4", None) for v in variants}) == 1
    forget()  # no fingerprint read yet, as where none ever is
    alone = {label: median_ns(cycling(tls_probe, v), b"") for label, v in hellos.items()}

    def probe_and_read(probe: Callable[[bytes], object]) -> Callable[[bytes], object]:
        return lambda data: getattr(probe(data), "ja4", None)

    print(f"{'hello':<38}{'probe':>8}{'probe + ja4':>14}{'ja4 read':>10}  (ns)")
    for label, variants in hellos.items():
        both = median_ns(cycling(probe_and_read(tls_probe), variants), b"")
        print(f"{label:<38}{alone[label]:>8.0f}{both:>14.0f}{both - alone[label]:>10.0f}")

    print("\nthe other probes on their own protocol's first flight (a match)\n")
    for label, (fn, data) in first_flights().items():
        print(f"{label:<34}{median_ns(fn, data):>8.0f} ns")


if __name__ == "__main__":
    main()

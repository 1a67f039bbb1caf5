"""Shared samples for the protocol probe tests: real and hand-made TLS hellos.

Helpers are handed out through session fixtures (rather than imported) so the
tests work whatever pytest import mode is in use.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence

import pytest

from refractium.protocols.base import Match, Probe, Verdict

# A ClientHello captured from `openssl s_client -servername Captured.Example.ORG.
# -alpn h2,http/1.1` (OpenSSL 3.0.19), so the tests also cover a hello that
# this machine's Python did not produce. Note the upper case and trailing dot.
CAPTURED_OPENSSL_HELLO = bytes.fromhex(
    "1603010154010001500303f2a427a5bf2536688cab7d474bfcf1615f8c7baa7a940a2db046fc782ee728b120"
    "5772edb9d8bd4bd2ea7f1251ee2d1fa0bc9cc87fb96510f74e08d4b632e1770f003e130213031301c02cc030"
    "009fcca9cca8ccaac02bc02f009ec024c028006bc023c0270067c00ac0140039c009c0130033009d009c003d"
    "003c0035002f00ff010000c90000001a001800001543617074757265642e4578616d706c652e4f52472e000b"
    "000403000102000a00160014001d0017001e0019001801000101010201030104002300000010000e000c0268"
    "3208687474702f312e310016000000170000000d002a0028040305030603080708080809080a080b08040805"
    "0806040105010601030303010302040205020602002b0009080304030303020301002d000201010033002600"
    "24001d002010799c784f7667d5ab5ea2e174ffc0e7b970231024f3035abf0fc6300972ae6a"
)

# An SSLv2-compatible CLIENT-HELLO (2-byte header with the high bit set), as
# very old clients sent: msg type 1, version 3.1, 3 cipher specs, 16-byte
# challenge.
SSLV2_HELLO = (
    b"\x80\x1e\x01\x03\x01\x00\x09\x00\x00\x00\x10"
    + b"\x00\x00\x04\x00\x00\x05\x00\x00\x0a"
    + bytes(range(16))
)


def python_hello(
    server_hostname: str | None = "Mixed.Example.COM",
    alpn: Sequence[str] | None = ("h2", "http/1.1"),
) -> bytes:
    """The first flight of this Python's ssl module: a real ClientHello record."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if alpn is not None:
        ctx.set_alpn_protocols(list(alpn))
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    conn = ctx.wrap_bio(incoming, outgoing, server_hostname=server_hostname)
    with pytest.raises(ssl.SSLWantReadError):
        conn.do_handshake()
    return outgoing.read()


def extension(ext_type: int, body: bytes) -> bytes:
    return ext_type.to_bytes(2, "big") + len(body).to_bytes(2, "big") + body


def sni_extension(*names: bytes, name_type: int = 0) -> bytes:
    entries = b"".join(name_type.to_bytes(1, "big") + len(n).to_bytes(2, "big") + n for n in names)
    return extension(0, len(entries).to_bytes(2, "big") + entries)


def alpn_extension(*protocols: bytes) -> bytes:
    names = b"".join(len(p).to_bytes(1, "big") + p for p in protocols)
    return extension(16, len(names).to_bytes(2, "big") + names)


def handshake(
    extensions: Sequence[bytes] | None = (),
    *,
    session_id: bytes = bytes(32),
    ciphers: bytes = b"\x13\x01\x13\x02\xc0\x2f",
    compression: bytes = b"\x00",
    legacy_version: bytes = b"\x03\x03",
    msg_type: int = 1,
) -> bytes:
    """A ClientHello handshake message (header + body); extensions=None omits the block."""
    body = (
        legacy_version
        + bytes(range(32))
        + len(session_id).to_bytes(1, "big")
        + session_id
        + len(ciphers).to_bytes(2, "big")
        + ciphers
        + len(compression).to_bytes(1, "big")
        + compression
    )
    if extensions is not None:
        block = b"".join(extensions)
        body += len(block).to_bytes(2, "big") + block
    return msg_type.to_bytes(1, "big") + len(body).to_bytes(3, "big") + body


def frame(msg: bytes, sizes: Sequence[int] = (), version: bytes = b"\x03\x01") -> bytes:
    """Wrap a handshake message in records: one per size, the rest in a last one."""
    out = b""
    pos = 0
    for size in sizes:
        chunk = msg[pos : pos + size]
        out += b"\x16" + version + len(chunk).to_bytes(2, "big") + chunk
        pos += size
    if pos < len(msg):
        rest = msg[pos:]
        out += b"\x16" + version + len(rest).to_bytes(2, "big") + rest
    return out


def reframe(record_stream: bytes, sizes: Sequence[int]) -> bytes:
    """Re-frame a single-record hello into several records of the given sizes."""
    assert record_stream[0] == 0x16
    length = int.from_bytes(record_stream[3:5], "big")
    return frame(record_stream[5 : 5 + length], sizes, version=record_stream[1:3])


def assert_incremental(probe: Probe, data: bytes) -> Match:
    """Every strict prefix needs more; the whole matches; so does whole + junk."""
    for i in range(len(data)):
        assert probe.probe(data[:i]) is Verdict.NEED_MORE, f"prefix of {i} bytes"
    whole = probe.probe(data)
    assert isinstance(whole, Match)
    assert probe.probe(data + b"\x00trailing\xff bytes") == whole
    return whole


class Samples:
    """The helpers above, as one object for the ``samples`` fixture."""

    captured_openssl_hello = CAPTURED_OPENSSL_HELLO
    sslv2_hello = SSLV2_HELLO
    python_hello = staticmethod(python_hello)
    extension = staticmethod(extension)
    sni_extension = staticmethod(sni_extension)
    alpn_extension = staticmethod(alpn_extension)
    handshake = staticmethod(handshake)
    frame = staticmethod(frame)
    reframe = staticmethod(reframe)
    assert_incremental = staticmethod(assert_incremental)


@pytest.fixture(scope="session")
def samples() -> type[Samples]:
    return Samples


@pytest.fixture(scope="session")
def real_hello() -> bytes:
    """A real ~500-byte TLS 1.3 ClientHello with SNI and ALPN h2, http/1.1."""
    return python_hello()

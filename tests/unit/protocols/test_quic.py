"""The QUIC probe: RFC vectors, real aioquic clients, hand-built flights, refusals.

Hand-built packets are protected with aioquic's own packet protection
(``CryptoPair``), so the probe's decryption is checked against another
implementation, not against itself.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from itertools import pairwise
from typing import Any

import pytest
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.crypto import CryptoPair
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from refractium.protocols.base import Match, Probe, Transport, Verdict
from refractium.protocols.quic import (
    MAX_CRYPTO,
    MAX_CRYPTO_FRAMES,
    MAX_DATAGRAMS,
    MAX_PACKETS,
    QUIC_V1,
    QUIC_V2,
    QuicProbe,
    initial_keys,
)

S = Any  # the conftest ``samples`` fixture (a class of helpers)

PROBE = QuicProbe()
NO = Verdict.NO
NEED_MORE = Verdict.NEED_MORE

# --------------------------------------------------------------------------
# RFC 9001 Appendix A (QUIC v1) and RFC 9369 Appendix A (QUIC v2).

RFC_DCID = bytes.fromhex("8394c8f03e515708")

# A.2: the client Initial, a 1200-byte datagram. Its ClientHello offers
# server name example.com and the ALPN protocol "alpn".
RFC9001_CLIENT_INITIAL = bytes.fromhex(
    "c000000001088394c8f03e5157080000449e7b9aec34d1b1c98dd7689fb8ec11"
    "d242b123dc9bd8bab936b47d92ec356c0bab7df5976d27cd449f63300099f399"
    "1c260ec4c60d17b31f8429157bb35a1282a643a8d2262cad67500cadb8e7378c"
    "8eb7539ec4d4905fed1bee1fc8aafba17c750e2c7ace01e6005f80fcb7df6212"
    "30c83711b39343fa028cea7f7fb5ff89eac2308249a02252155e2347b63d58c5"
    "457afd84d05dfffdb20392844ae812154682e9cf012f9021a6f0be17ddd0c208"
    "4dce25ff9b06cde535d0f920a2db1bf362c23e596d11a4f5a6cf3948838a3aec"
    "4e15daf8500a6ef69ec4e3feb6b1d98e610ac8b7ec3faf6ad760b7bad1db4ba3"
    "485e8a94dc250ae3fdb41ed15fb6a8e5eba0fc3dd60bc8e30c5c4287e53805db"
    "059ae0648db2f64264ed5e39be2e20d82df566da8dd5998ccabdae053060ae6c"
    "7b4378e846d29f37ed7b4ea9ec5d82e7961b7f25a9323851f681d582363aa5f8"
    "9937f5a67258bf63ad6f1a0b1d96dbd4faddfcefc5266ba6611722395c906556"
    "be52afe3f565636ad1b17d508b73d8743eeb524be22b3dcbc2c7468d54119c74"
    "68449a13d8e3b95811a198f3491de3e7fe942b330407abf82a4ed7c1b311663a"
    "c69890f4157015853d91e923037c227a33cdd5ec281ca3f79c44546b9d90ca00"
    "f064c99e3dd97911d39fe9c5d0b23a229a234cb36186c4819e8b9c5927726632"
    "291d6a418211cc2962e20fe47feb3edf330f2c603a9d48c0fcb5699dbfe58964"
    "25c5bac4aee82e57a85aaf4e2513e4f05796b07ba2ee47d80506f8d2c25e50fd"
    "14de71e6c418559302f939b0e1abd576f279c4b2e0feb85c1f28ff18f58891ff"
    "ef132eef2fa09346aee33c28eb130ff28f5b766953334113211996d20011a198"
    "e3fc433f9f2541010ae17c1bf202580f6047472fb36857fe843b19f5984009dd"
    "c324044e847a4f4a0ab34f719595de37252d6235365e9b84392b061085349d73"
    "203a4a13e96f5432ec0fd4a1ee65accdd5e3904df54c1da510b0ff20dcc0c77f"
    "cb2c0e0eb605cb0504db87632cf3d8b4dae6e705769d1de354270123cb11450e"
    "fc60ac47683d7b8d0f811365565fd98c4c8eb936bcab8d069fc33bd801b03ade"
    "a2e1fbc5aa463d08ca19896d2bf59a071b851e6c239052172f296bfb5e724047"
    "90a2181014f3b94a4e97d117b438130368cc39dbb2d198065ae3986547926cd2"
    "162f40a29f0c3c8745c0f50fba3852e566d44575c29d39a03f0cda721984b6f4"
    "40591f355e12d439ff150aab7613499dbd49adabc8676eef023b15b65bfc5ca0"
    "6948109f23f350db82123535eb8a7433bdabcb909271a6ecbcb58b936a88cd4e"
    "8f2e6ff5800175f113253d8fa9ca8885c2f552e657dc603f252e1a8e308f76f0"
    "be79e2fb8f5d5fbbe2e30ecadd220723c8c0aea8078cdfcb3868263ff8f09400"
    "54da48781893a7e49ad5aff4af300cd804a6b6279ab3ff3afb64491c85194aab"
    "760d58a606654f9f4400e8b38591356fbf6425aca26dc85244259ff2b19c41b9"
    "f96f3ca9ec1dde434da7d2d392b905ddf3d1f9af93d1af5950bd493f5aa731b4"
    "056df31bd267b6b90a079831aaf579be0a39013137aac6d404f518cfd4684064"
    "7e78bfe706ca4cf5e9c5453e9f7cfd2b8b4c8d169a44e55c88d4a9a7f9474241"
    "e221af44860018ab0856972e194cd934"
)

# A.3: the server Initial (a ServerHello, server keys, empty DCID).
RFC9001_SERVER_INITIAL = bytes.fromhex(
    "cf000000010008f067a5502a4262b5004075c0d95a482cd0991cd25b0aac406a"
    "5816b6394100f37a1c69797554780bb38cc5a99f5ede4cf73c3ec2493a1839b3"
    "dbcba3f6ea46c5b7684df3548e7ddeb9c3bf9c73cc3f3bded74b562bfb19fb84"
    "022f8ef4cdd93795d77d06edbb7aaf2f58891850abbdca3d20398c276456cbc4"
    "2158407dd074ee"
)

# A.5: a ChaCha20-Poly1305 short header (1-RTT) packet.
RFC9001_SHORT_HEADER = bytes.fromhex("4cfe4189655e5cd55c41f69080575d7999c25a5bfb")

# RFC 9369 A.2: the same client Initial in QUIC version 2.
RFC9369_CLIENT_INITIAL = bytes.fromhex(
    "d76b3343cf088394c8f03e5157080000449ea0c95e82ffe67b6abcdb4298b485"
    "dd04de806071bf03dceebfa162e75d6c96058bdbfb127cdfcbf903388e99ad04"
    "9f9a3dd4425ae4d0992cfff18ecf0fdb5a842d09747052f17ac2053d21f57c5d"
    "250f2c4f0e0202b70785b7946e992e58a59ac52dea6774d4f03b55545243cf1a"
    "12834e3f249a78d395e0d18f4d766004f1a2674802a747eaa901c3f10cda5500"
    "cb9122faa9f1df66c392079a1b40f0de1c6054196a11cbea40afb6ef5253cd68"
    "18f6625efce3b6def6ba7e4b37a40f7732e093daa7d52190935b8da58976ff33"
    "12ae50b187c1433c0f028edcc4c2838b6a9bfc226ca4b4530e7a4ccee1bfa2a3"
    "d396ae5a3fb512384b2fdd851f784a65e03f2c4fbe11a53c7777c023462239dd"
    "6f7521a3f6c7d5dd3ec9b3f233773d4b46d23cc375eb198c63301c21801f6520"
    "bcfb7966fc49b393f0061d974a2706df8c4a9449f11d7f3d2dcbb90c6b877045"
    "636e7c0c0fe4eb0f697545460c806910d2c355f1d253bc9d2452aaa549e27a1f"
    "ac7cf4ed77f322e8fa894b6a83810a34b361901751a6f5eb65a0326e07de7c12"
    "16ccce2d0193f958bb3850a833f7ae432b65bc5a53975c155aa4bcb4f7b2c4e5"
    "4df16efaf6ddea94e2c50b4cd1dfe06017e0e9d02900cffe1935e0491d77ffb4"
    "fdf85290fdd893d577b1131a610ef6a5c32b2ee0293617a37cbb08b847741c3b"
    "8017c25ca9052ca1079d8b78aebd47876d330a30f6a8c6d61dd1ab5589329de7"
    "14d19d61370f8149748c72f132f0fc99f34d766c6938597040d8f9e2bb522ff9"
    "9c63a344d6a2ae8aa8e51b7b90a4a806105fcbca31506c446151adfeceb51b91"
    "abfe43960977c87471cf9ad4074d30e10d6a7f03c63bd5d4317f68ff325ba3bd"
    "80bf4dc8b52a0ba031758022eb025cdd770b44d6d6cf0670f4e990b22347a7db"
    "848265e3e5eb72dfe8299ad7481a408322cac55786e52f633b2fb6b614eaed18"
    "d703dd84045a274ae8bfa73379661388d6991fe39b0d93debb41700b41f90a15"
    "c4d526250235ddcd6776fc77bc97e7a417ebcb31600d01e57f32162a8560cacc"
    "7e27a096d37a1a86952ec71bd89a3e9a30a2a26162984d7740f81193e8238e61"
    "f6b5b984d4d3dfa033c1bb7e4f0037febf406d91c0dccf32acf423cfa1e70710"
    "10d3f270121b493ce85054ef58bada42310138fe081adb04e2bd901f2f13458b"
    "3d6758158197107c14ebb193230cd1157380aa79cae1374a7c1e5bbcb80ee23e"
    "06ebfde206bfb0fcbc0edc4ebec309661bdd908d532eb0c6adc38b7ca7331dce"
    "8dfce39ab71e7c32d318d136b6100671a1ae6a6600e3899f31f0eed19e3417d1"
    "34b90c9058f8632c798d4490da4987307cba922d61c39805d072b589bd52fdf1"
    "e86215c2d54e6670e07383a27bbffb5addf47d66aa85a0c6f9f32e59d85a44dd"
    "5d3b22dc2be80919b490437ae4f36a0ae55edf1d0b5cb4e9a3ecabee93dfc6e3"
    "8d209d0fa6536d27a5d6fbb17641cde27525d61093f1b28072d111b2b4ae5f89"
    "d5974ee12e5cf7d5da4d6a31123041f33e61407e76cffcdcfd7e19ba58cf4b53"
    "6f4c4938ae79324dc402894b44faf8afbab35282ab659d13c93f70412e85cb19"
    "9a37ddec600545473cfb5a05e08d0b209973b2172b4d21fb69745a262ccde96b"
    "a18b2faa745b6fe189cf772a9f84cbfc"
)

# JA4 values in this file: FoxIO's reference implementation given the same
# ClientHello over TCP (data/ja4/README.md), with the QUIC letter "q".
RFC_JA4 = "q13d0211an_62ed6f6ca7ad_4d634acda6c0"
RFC_MATCH = Match("quic", "example.com", ("alpn",), RFC_JA4)
# aioquic 1.7.2's hello (data/ja4/aioquic.pcap): the same whatever the name.
AIOQUIC_JA4 = "q13d0307h3_55b375c5d22e_1cecd519fee8"

# The plaintext ClientHello of A.2 (the data of its one CRYPTO frame), for
# hand-built packets that need a real hello but no fixture.
RFC_HELLO = bytes.fromhex(
    "010000ed0303ebf8fa56f12939b9584a3896472ec40bb863cfd3e86804fe3a47"
    "f06a2b69484c00000413011302010000c000000010000e00000b6578616d706c"
    "652e636f6dff01000100000a00080006001d0017001800100007000504616c70"
    "6e000500050100000000003300260024001d00209370b2c9caa47fbabaf4559f"
    "edba753de171fa71f50f1ce15d43e994ec74d748002b0003020304000d001000"
    "0e0403050306030203080408050806002d00020101001c000240010039003204"
    "08ffffffffffffffff05048000ffff07048000ffff0801100104800075300901"
    "100f088394c8f03e51570806048000ffff"
)


def test_rfc_vectors_are_typed_in_whole() -> None:
    assert len(RFC9001_CLIENT_INITIAL) == len(RFC9369_CLIENT_INITIAL) == 1200
    assert len(RFC_HELLO) == 4 + 0xED


def test_rfc9001_a1_initial_keys() -> None:
    key, iv, hp = initial_keys(QUIC_V1, RFC_DCID)
    assert key == bytes.fromhex("1f369613dd76d5467730efcbe3b1a22d")
    assert iv == bytes.fromhex("fa044b2f42a3fd3b46fb255c")
    assert hp == bytes.fromhex("9f50449e04a0e810283a1e9933adedd2")


def test_rfc9369_a1_initial_keys() -> None:
    key, iv, hp = initial_keys(QUIC_V2, RFC_DCID)
    assert key == bytes.fromhex("8b1a0bc121284290a29e0971b5cd045d")
    assert iv == bytes.fromhex("91f73e2351d8fa91660e909f")
    assert hp == bytes.fromhex("45b95e15235d6f45a6b19cbcb0294ba9")


def test_initial_keys_of_an_unknown_version() -> None:
    with pytest.raises(KeyError):
        initial_keys(0xFF00001D, RFC_DCID)


@pytest.mark.parametrize(
    "packet", [RFC9001_CLIENT_INITIAL, RFC9369_CLIENT_INITIAL], ids=["v1", "v2"]
)
def test_rfc_client_initial(packet: bytes) -> None:
    assert PROBE.probe_datagrams([packet]) == RFC_MATCH
    assert PROBE.probe_datagram(packet) == RFC_MATCH
    assert PROBE.probe(packet) == RFC_MATCH


@pytest.mark.parametrize(
    "packet", [RFC9001_CLIENT_INITIAL, RFC9369_CLIENT_INITIAL], ids=["v1", "v2"]
)
def test_rfc_client_initial_altered(packet: bytes) -> None:
    for position in (0, 5, 9, 14, 16, 18, 19, 22, 100, 1199):  # header, pn, payload, tag
        bad = bytearray(packet)
        bad[position] ^= 0x01
        assert PROBE.probe(bytes(bad)) is NO, position
    # Another version number: a version this probe cannot decrypt.
    bad = bytearray(packet)
    bad[1] ^= 0x01
    assert PROBE.probe(bytes(bad)) == Match("quic")


@pytest.mark.parametrize(
    "packet", [RFC9001_CLIENT_INITIAL, RFC9369_CLIENT_INITIAL], ids=["v1", "v2"]
)
def test_rfc_client_initial_truncated(packet: bytes) -> None:
    # Every prefix: shorter than the 1200 bytes a client pads to, or a cut
    # packet. UDP delivers whole datagrams, so a prefix is never NEED_MORE.
    for size in range(len(packet)):
        assert PROBE.probe(packet[:size]) is NO, size


def test_rfc_server_initial_and_short_header() -> None:
    assert PROBE.probe(RFC9001_SERVER_INITIAL) is NO
    assert PROBE.probe(RFC9001_SERVER_INITIAL + bytes(1200)) is NO
    assert PROBE.probe(RFC9001_SHORT_HEADER) is NO
    assert PROBE.probe(RFC9001_SHORT_HEADER + bytes(1200)) is NO


# --------------------------------------------------------------------------
# Real clients: aioquic.


def aioquic_flight(
    server_name: str = "a.example",
    alpn: Sequence[str] = ("h3",),
    version: int = QUIC_V1,
) -> list[bytes]:
    """The datagrams an aioquic client sends first (its Initial packets)."""
    config = QuicConfiguration(is_client=True, server_name=server_name, alpn_protocols=list(alpn))
    config.supported_versions = [version]
    connection = QuicConnection(configuration=config)
    connection.connect(("192.0.2.1", 443), now=0.0)
    return [data for data, _ in connection.datagrams_to_send(now=0.0)]


def long_alpn_list(count: int = 30) -> list[str]:
    """ALPN names that make aioquic's hello about 2 KB: two datagrams."""
    return [f"proto-{i:03d}-" + "x" * 40 for i in range(count)]


def test_identity() -> None:
    assert PROBE.name == "quic"
    assert PROBE.transport is Transport.UDP
    assert isinstance(PROBE, Probe)
    assert repr(QuicProbe("h3")) == "QuicProbe('h3')"
    assert QuicProbe("h3").probe(RFC9001_CLIENT_INITIAL) == Match(
        "h3", "example.com", ("alpn",), RFC_JA4
    )
    assert PROBE.first_bytes == frozenset(range(0x80, 0x100))


@pytest.mark.parametrize("version", [QUIC_V1, QUIC_V2], ids=["v1", "v2"])
def test_aioquic_client(version: int) -> None:
    for _ in range(10):  # a new random DCID each time
        datagrams = aioquic_flight(version=version)
        assert len(datagrams) == 1
        assert int.from_bytes(datagrams[0][1:5], "big") == version
        assert PROBE.probe_datagrams(datagrams) == Match("quic", "a.example", ("h3",), AIOQUIC_JA4)


def test_aioquic_client_without_sni() -> None:
    # aioquic sends no server_name for an IP address.
    datagrams = aioquic_flight(server_name="192.0.2.1", alpn=("h3", "h3-29"))
    # "i" and one extension fewer; server_name is not in the hashed list.
    assert PROBE.probe_datagrams(datagrams) == Match(
        "quic", None, ("h3", "h3-29"), "q13i0306h3_55b375c5d22e_1cecd519fee8"
    )


@pytest.mark.parametrize("version", [QUIC_V1, QUIC_V2], ids=["v1", "v2"])
def test_aioquic_hello_over_two_datagrams(version: int) -> None:
    alpn = long_alpn_list()
    datagrams = aioquic_flight(server_name="big.example", alpn=alpn, version=version)
    assert len(datagrams) == 2
    # The split hello has the fingerprint of aioquic's one-datagram hello,
    # but for the first ALPN name ("proto-000-xxx...": "px").
    expected = Match("quic", "big.example", tuple(alpn), "q13d0307px_55b375c5d22e_1cecd519fee8")
    first, second = datagrams
    assert PROBE.probe_datagrams([first]) is NEED_MORE
    # The second datagram alone decrypts but starts past offset 0.
    assert PROBE.probe_datagrams([second]) is NEED_MORE
    assert PROBE.probe_datagrams([first, second]) == expected
    assert PROBE.probe_datagrams([second, first]) == expected  # reordered
    assert PROBE.probe_datagrams([first, first, second]) == expected  # retransmitted
    # Coalescing both packets in one datagram changes nothing.
    assert PROBE.probe_datagrams([first + second]) == expected


def test_aioquic_hello_over_four_datagrams() -> None:
    alpn = long_alpn_list(60)
    datagrams = aioquic_flight(alpn=alpn)
    assert len(datagrams) == 4
    expected = Match("quic", "a.example", tuple(alpn), "q13d0307px_55b375c5d22e_1cecd519fee8")
    rng = random.Random(4)
    for _ in range(10):
        order = rng.sample(datagrams, 4)
        assert PROBE.probe_datagrams(order) == expected
        assert PROBE.probe_datagrams(order[:3]) is NEED_MORE


def test_aioquic_flight_with_noise_between() -> None:
    first, second = aioquic_flight(alpn=long_alpn_list())
    other_connection = aioquic_flight(alpn=long_alpn_list())[1]
    corrupted = second[:100] + bytes([second[100] ^ 1]) + second[101:]
    noise = [b"", b"\x00" * 1200, random.Random(7).randbytes(1300), corrupted, other_connection]
    # After the first datagram, what a server would drop is ignored.
    assert PROBE.probe_datagrams([first, *noise]) is NEED_MORE
    assert PROBE.probe_datagrams([first, *noise, second]).sni == "a.example"  # type: ignore[union-attr]
    # But the first datagram decides.
    for bad in noise[:-1]:
        assert PROBE.probe_datagrams([bad, first, second]) is NO
    # A client Initial of another connection (a new one from the same port):
    # the flow is that connection's, still incomplete.
    assert PROBE.probe_datagrams([other_connection, first, second]) is NEED_MORE


# --------------------------------------------------------------------------
# Hand-built flights.


def varint(value: int) -> bytes:
    for size, prefix in ((1, 0), (2, 0x40), (4, 0x80), (8, 0xC0)):
        if value < 1 << (8 * size - 2):
            return (value | prefix << (8 * size - 8)).to_bytes(size, "big")
    raise ValueError(value)


def crypto_frame(offset: int, data: bytes) -> bytes:
    return b"\x06" + varint(offset) + varint(len(data)) + data


def crypto_frames(hello: bytes, cuts: Sequence[int]) -> list[bytes]:
    """CRYPTO frames carrying ``hello`` cut at the given offsets, in order."""
    bounds = [0, *cuts, len(hello)]
    return [crypto_frame(a, hello[a:b]) for a, b in pairwise(bounds)]


def initial(
    payload: bytes,
    *,
    dcid: bytes = RFC_DCID,
    scid: bytes = b"\x01\x02\x03\x04",
    version: int = QUIC_V1,
    pn: int = 0,
    pn_len: int = 2,
    token: bytes = b"",
    kind: int | None = None,
    flags: int = 0xC0,
    reserved: int = 0,
    pad_to: int | None = 1200,
    server_keys: bool = False,
) -> bytes:
    """One client Initial packet protected by aioquic, padded with PADDING
    frames so that the packet is ``pad_to`` bytes long."""
    if kind is None:
        kind = 1 if version == QUIC_V2 else 0
    first = flags | kind << 4 | reserved << 2 | (pn_len - 1)

    def build(body: bytes) -> tuple[bytes, bytes]:
        header = (
            bytes([first])
            + version.to_bytes(4, "big")
            + bytes([len(dcid)])
            + dcid
            + bytes([len(scid)])
            + scid
            + varint(len(token))
            + token
            + (0x4000 | (pn_len + len(body) + 16)).to_bytes(2, "big")
            + (pn % (1 << (8 * pn_len))).to_bytes(pn_len, "big")
        )
        return header, body

    # The header protection sample needs 4 bytes after the packet number.
    header, body = build(payload + bytes(max(0, 4 - pn_len - len(payload))))
    if pad_to is not None and len(header) + len(body) + 16 < pad_to:
        header, body = build(body + bytes(pad_to - len(header) - len(body) - 16))
    pair = CryptoPair()
    pair.setup_initial(cid=dcid, is_client=not server_keys, version=version)
    return pair.encrypt_packet(header, body, pn)


def zero_rtt(payload_size: int = 40, *, dcid: bytes = RFC_DCID, version: int = QUIC_V1) -> bytes:
    """A 0-RTT long header packet; its (random) protected content is never read."""
    kind = 2 if version == QUIC_V2 else 1
    return (
        bytes([0xC0 | kind << 4 | 1])
        + version.to_bytes(4, "big")
        + bytes([len(dcid)])
        + dcid
        + b"\x00"
        + varint(payload_size)
        + random.Random(payload_size).randbytes(payload_size)
    )


def hello(samples: S, size: int = 0, name: bytes = b"hand.example") -> bytes:
    """A ClientHello message with SNI, ALPN h3 and, if ``size``, a key share
    of that many bytes (X25519MLKEM768 makes it about 1.2 KB)."""
    extensions = [samples.sni_extension(name), samples.alpn_extension(b"h3")]
    if size:
        share = b"\x11\xec" + size.to_bytes(2, "big") + bytes(range(256)) * (size // 256)
        share += bytes(size - len(share) + 4)
        extensions.append(samples.extension(51, len(share).to_bytes(2, "big") + share))
    return samples.handshake(extensions)  # type: ignore[no-any-return]


HAND = Match("quic", "hand.example", ("h3",), "q12d0302h3_40b44b994229_000000000000")
# hello() with a key share (any size): one extension more.
HAND_SHARE = Match("quic", "hand.example", ("h3",), "q12d0303h3_40b44b994229_052bfcbedb83")


def test_helpers_agree_with_the_rfc_vector() -> None:
    # pn 2, 4-byte packet number, the RFC's one CRYPTO frame: the A.2 bytes.
    built = initial(crypto_frame(0, RFC_HELLO), scid=b"", pn=2, pn_len=4)
    assert built == RFC9001_CLIENT_INITIAL
    built = initial(crypto_frame(0, RFC_HELLO), scid=b"", pn=2, pn_len=4, version=QUIC_V2)
    assert built == RFC9369_CLIENT_INITIAL


def test_shuffled_crypto_frames_in_one_packet(samples: S) -> None:
    msg = hello(samples)
    frames = crypto_frames(msg, [10, 11, 50, 90, 91, 120])
    for seed in range(20):
        random.Random(seed).shuffle(frames)
        assert PROBE.probe(initial(b"".join(frames))) == HAND


def test_post_quantum_sized_hello_over_two_packets_out_of_order(samples: S) -> None:
    # Like Chrome: a ~1.3 KB hello in two Initial packets, each packet's
    # CRYPTO frames out of order, PADDING between them.
    msg = hello(samples, size=1216 + 36)
    assert len(msg) > 1300
    one = crypto_frames(msg[:700], [300, 301])
    two = [crypto_frame(900, msg[900:]), crypto_frame(700, msg[700:900])]
    first = initial(one[2] + b"\x00" * 20 + one[0] + one[1], pn=0)
    second = initial(b"".join(two), pn=1)
    assert PROBE.probe_datagrams([first]) is NEED_MORE
    assert PROBE.probe_datagrams([second]) is NEED_MORE
    assert PROBE.probe_datagrams([first, second]) == HAND_SHARE
    assert PROBE.probe_datagrams([second, first]) == HAND_SHARE
    # Both packets coalesced in one datagram (the first one then needs no
    # padding of its own).
    small_first = initial(b"".join(one), pn=0, pad_to=None)
    assert PROBE.probe_datagrams([small_first + second]) == HAND_SHARE


def test_overlapping_and_repeated_crypto_data(samples: S) -> None:
    msg = hello(samples)
    frames = [
        crypto_frame(40, msg[40:]),
        crypto_frame(0, msg[:30]),
        crypto_frame(20, msg[20:60]),
        crypto_frame(0, msg[:30]),
        crypto_frame(0, b""),
    ]
    assert PROBE.probe(initial(b"".join(frames))) == HAND


def test_gap_in_crypto_data_needs_more(samples: S) -> None:
    msg = hello(samples)
    assert PROBE.probe(initial(crypto_frame(0, msg[:30]) + crypto_frame(31, msg[31:]))) is NEED_MORE
    # No CRYPTO data at all (only PING and PADDING): still a client Initial.
    assert PROBE.probe(initial(b"\x01")) is NEED_MORE


def test_other_allowed_frames(samples: S) -> None:
    msg = hello(samples)
    ack = b"\x02" + varint(5) + varint(100) + varint(2) + varint(1) + b"\x01\x01\x00\x00"
    ack_ecn = b"\x03\x10\x00\x00\x00" + varint(1) + varint(2) + varint(300)
    close = b"\x1c" + varint(0x0A) + varint(0x06) + varint(5) + b"bye!!"
    payload = (
        b"\x01" + ack + crypto_frame(0, msg[:50]) + ack_ecn + close + crypto_frame(50, msg[50:])
    )
    assert PROBE.probe(initial(payload)) == HAND


@pytest.mark.parametrize(
    "frame",
    [
        b"\x08\x00\x02hi",  # STREAM
        b"\x1e",  # HANDSHAKE_DONE
        b"\x1d\x00\x00\x00",  # CONNECTION_CLOSE (application): not in Initial
        b"\x07\x00",  # NEW_TOKEN
        b"\x40\x06\x00\x01\x01",  # CRYPTO with a two-byte frame type
        b"\x06\x00\x40\xf1\x01",  # CRYPTO longer than the packet
        b"\x06\x00",  # truncated CRYPTO
        b"\x02\x01\x00\x05\x00",  # ACK with more ranges than bytes
        b"\x03\x01\x00\x00\x00\x00\x00",  # ACK_ECN without all its counts
        b"\x1c\x00\x00\x40\xff",  # CONNECTION_CLOSE reason past the end
        b"\x06" + varint(MAX_CRYPTO) + b"\x01\x01",  # CRYPTO beyond any hello
    ],
)
def test_frames_not_allowed_or_malformed(samples: S, frame: bytes) -> None:
    msg = hello(samples)
    # Placed last so that PADDING does not follow the truncated ones.
    assert PROBE.probe(initial(crypto_frame(0, msg) + frame, pad_to=None) + bytes(1200)) is NO


def test_packet_without_frames() -> None:
    # The smallest packet that can be sampled: a 4-byte packet number and
    # an empty payload. Zero bytes after it pad the datagram.
    assert PROBE.probe(initial(b"", pn_len=4, pad_to=None) + bytes(1200)) is NO


def test_not_a_client_hello_in_the_crypto_stream(samples: S) -> None:
    server_hello = b"\x02" + RFC_HELLO[1:]
    assert PROBE.probe(initial(crypto_frame(0, server_hello))) is NO
    truncated = RFC_HELLO[:4] + RFC_HELLO[4:40]  # claims 0xed bytes; then junk
    assert PROBE.probe(initial(crypto_frame(0, truncated + b"\xff" * 300))) is NO


@pytest.mark.parametrize("pn_len", [1, 2, 3, 4])
@pytest.mark.parametrize("pn", [0, 1, 200, 70000, 0xFFFFFFFF])
def test_packet_numbers(pn_len: int, pn: int) -> None:
    packet = initial(crypto_frame(0, RFC_HELLO), pn=pn, pn_len=pn_len)
    truncated = pn % (1 << (8 * pn_len))
    # A first packet's number is its truncated value (RFC 9000 A.3).
    expected = RFC_MATCH if truncated == pn else NO
    assert PROBE.probe(packet) == expected


def test_header_variants() -> None:
    payload = crypto_frame(0, RFC_HELLO)
    # A token (from a Retry or NEW_TOKEN), connection IDs of every length.
    assert PROBE.probe(initial(payload, token=b"t" * 100)) == RFC_MATCH
    assert PROBE.probe(initial(payload, dcid=bytes(20), scid=bytes(20))) == RFC_MATCH
    assert PROBE.probe(initial(payload, scid=b"")) == RFC_MATCH
    # RFC 9287: a client may clear the fixed bit ("greasing the QUIC bit").
    assert PROBE.probe(initial(payload, flags=0x80)) == RFC_MATCH


def test_header_refusals() -> None:
    payload = crypto_frame(0, RFC_HELLO)
    # Reserved bits must be zero once protection is removed.
    assert PROBE.probe(initial(payload, reserved=1)) is NO
    assert PROBE.probe(initial(payload, reserved=2)) is NO
    # RFC 9000 7.2: a client's first DCID has at least 8 bytes.
    assert PROBE.probe(initial(payload, dcid=bytes(7))) is NO
    # RFC 9000 14.1: datagrams with an Initial are padded to 1200 bytes.
    assert PROBE.probe(initial(payload, pad_to=1199)) is NO
    assert PROBE.probe(initial(payload, pad_to=1200)) == RFC_MATCH
    # A server's Initial, protected with the server keys.
    assert PROBE.probe(initial(payload, server_keys=True)) is NO
    # v2 type bits on a v1 packet make it a 0-RTT packet; v1 bits on v2 a Retry.
    assert PROBE.probe(initial(payload, kind=1)) is NEED_MORE
    assert PROBE.probe(initial(payload, kind=0, version=QUIC_V2)) is NO
    # Handshake packets.
    assert PROBE.probe(initial(payload, kind=2)) is NO
    assert PROBE.probe(initial(payload, kind=3, version=QUIC_V2)) is NO


def test_coalesced_packets(samples: S) -> None:
    msg = hello(samples)
    whole = initial(crypto_frame(0, msg), pad_to=None)
    # An Initial followed by 0-RTT, then zero bytes padding the datagram.
    assert PROBE.probe(whole + zero_rtt(100) + bytes(1200)) == HAND
    # 0-RTT packets that overtook the Initial: a beginning.
    assert PROBE.probe_datagrams([zero_rtt(100)]) is NEED_MORE
    assert PROBE.probe_datagrams([zero_rtt(100), whole + bytes(1200)]) == HAND
    # A packet of another connection in the datagram is ignored, with the rest.
    head = initial(crypto_frame(0, msg[:60]), pad_to=None)
    tail = initial(crypto_frame(60, msg[60:]), pad_to=None, pn=1)
    other = initial(crypto_frame(60, msg[60:]), pad_to=None, pn=1, dcid=bytes(8))
    assert PROBE.probe(head + tail + bytes(1200)) == HAND
    assert PROBE.probe(head + other + tail + bytes(1200)) is NEED_MORE
    assert PROBE.probe(head + zero_rtt(50, dcid=bytes(8)) + tail + bytes(1200)) is NEED_MORE
    # ... and so is another version.
    v2_tail = initial(crypto_frame(60, msg[60:]), pad_to=None, pn=1, version=QUIC_V2)
    assert PROBE.probe(head + v2_tail + bytes(1200)) is NEED_MORE
    # A 0-RTT packet whose length overruns the datagram.
    assert PROBE.probe_datagrams([zero_rtt(100)[:-1]]) is NO


# --------------------------------------------------------------------------
# Versions that cannot be decrypted.


def long_header(version: int, dcid: bytes = bytes(8), first: int = 0xC3, size: int = 1200) -> bytes:
    head = bytes([first]) + version.to_bytes(4, "big") + bytes([len(dcid)]) + dcid + b"\x00"
    return head + bytes(size - len(head))


@pytest.mark.parametrize("version", [0xFF00001D, 0x1A2A3A4A, 0x00000002, 0x709A50C4])
def test_unknown_version_matches_without_sni(version: int) -> None:
    assert PROBE.probe(long_header(version)) == Match("quic")
    assert PROBE.probe(long_header(version, dcid=bytes(20), size=1500)) == Match("quic")
    assert PROBE.probe(long_header(version, size=1199)) is NO
    assert PROBE.probe(long_header(version, dcid=bytes(7))) is NO
    assert PROBE.probe(long_header(version, dcid=bytes(21))) is NO
    assert PROBE.probe(long_header(version, first=0x83)) is NO  # fixed bit clear
    # Only a flow's first packet: later, it is ignored like any other.
    assert PROBE.probe_datagrams([long_header(version), RFC9001_CLIENT_INITIAL]) == Match("quic")
    assert PROBE.probe_datagrams([RFC9001_CLIENT_INITIAL, long_header(version)]) == RFC_MATCH


def test_version_negotiation_is_refused() -> None:
    assert PROBE.probe(long_header(0)) is NO


# --------------------------------------------------------------------------
# Limits.


def test_crypto_frame_limit(samples: S) -> None:
    msg = hello(samples, size=600)
    assert len(msg) > MAX_CRYPTO_FRAMES + 10

    def flight(pieces: int) -> list[bytes]:
        frames = crypto_frames(msg, range(1, pieces))
        half = len(frames) // 2
        return [initial(b"".join(frames[:half])), initial(b"".join(frames[half:]), pn=1)]

    assert PROBE.probe_datagrams(flight(MAX_CRYPTO_FRAMES)) == HAND_SHARE
    assert PROBE.probe_datagrams(flight(MAX_CRYPTO_FRAMES + 1)) is NO


def test_datagram_limit(samples: S) -> None:
    msg = hello(samples)
    first = initial(crypto_frame(0, msg[:100]))
    rest = initial(crypto_frame(100, msg[100:]), pn=1)
    assert PROBE.probe_datagrams([first] * MAX_DATAGRAMS) is NEED_MORE
    assert PROBE.probe_datagrams([first] * (MAX_DATAGRAMS + 1)) is NO
    assert PROBE.probe_datagrams([first] * (MAX_DATAGRAMS - 1) + [rest]) == HAND
    # The hello completed within the limit: what follows does not matter.
    assert PROBE.probe_datagrams([first, rest] + [first] * MAX_DATAGRAMS) == HAND


def test_packet_limit(samples: S) -> None:
    msg = hello(samples)
    head = initial(crypto_frame(0, msg[:100]), pad_to=None)
    tail = initial(crypto_frame(100, msg[100:]), pad_to=None, pn=1)
    filler = zero_rtt(20) * (MAX_PACKETS - 2)
    assert PROBE.probe(head + filler + tail + bytes(1200)) == HAND
    assert PROBE.probe(head + filler + zero_rtt(20) + tail + bytes(1200)) is NO


# --------------------------------------------------------------------------
# Not QUIC.


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc0",
        b"\xc0\x00\x00\x00\x01",
        b"\xc0\x00\x00\x00\x01\x08",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(1200),  # TLS over UDP?
        b"\x16\xfe\xfd" + bytes(1200),  # DTLS 1.2
        b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07example\x03com\x00\x00\x01\x00\x01",
        b"\x01\x00\x00\x00" + bytes(144),  # WireGuard handshake initiation
        b"\x40" + bytes(1300),  # short header
        b"\xff" * 1300,
        bytes(1300),
    ],
)
def test_not_quic(data: bytes) -> None:
    assert PROBE.probe(data) is NO
    assert PROBE.probe_datagrams([data, RFC9001_CLIENT_INITIAL]) is NO


def test_no_datagram_yet() -> None:
    assert PROBE.probe_datagrams([]) is NEED_MORE
    assert PROBE.probe_datagrams(()) is NEED_MORE


def test_random_datagrams() -> None:
    rng = random.Random(2024)
    for _ in range(2000):
        size = rng.choice([rng.randrange(64), rng.randrange(1200, 1500)])
        data = rng.randbytes(size)
        assert PROBE.probe(data) is NO or PROBE.probe(data) == Match("quic")


# --------------------------------------------------------------------------
# Property tests: no input makes the probe raise.

FUZZ = settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

AIOQUIC_FLIGHT = aioquic_flight(alpn=long_alpn_list())


def check(datagrams: Sequence[bytes]) -> None:
    result = PROBE.probe_datagrams(datagrams)
    assert isinstance(result, Match) or result in (NO, NEED_MORE)
    if isinstance(result, Match):
        assert result.protocol == "quic"


@FUZZ
@given(st.lists(st.binary(max_size=1500), max_size=4))
def test_fuzz_random_datagrams(datagrams: list[bytes]) -> None:
    check(datagrams)


@FUZZ
@given(
    st.lists(st.binary(max_size=60), max_size=3),
    st.integers(min_value=0, max_value=2),
)
def test_fuzz_long_headers(tails: list[bytes], pick: int) -> None:
    # Random bytes after plausible first bytes, versions and DCID lengths.
    prefix = (b"\xc3\0\0\0\x01\x08", b"\xd3\x6b\x33\x43\xcf\x08", b"\xc0\0\0\0\x01")[pick]
    check([prefix + tail + bytes(1200) for tail in tails])


@FUZZ
@given(
    flips=st.lists(
        st.tuples(st.integers(min_value=0), st.integers(min_value=0, max_value=255)),
        min_size=1,
        max_size=6,
    ),
    cut=st.none() | st.integers(min_value=0),
    which=st.integers(min_value=0, max_value=1),
)
def test_fuzz_mutated_aioquic_flight(
    flips: list[tuple[int, int]], cut: int | None, which: int
) -> None:
    datagrams = list(AIOQUIC_FLIGHT)
    data = bytearray(datagrams[which])
    for position, value in flips:
        data[position % len(data)] = value
    datagrams[which] = bytes(data if cut is None else data[: cut % (len(data) + 1)])
    check(datagrams)


def frame_strategy() -> st.SearchStrategy[bytes]:
    number = st.integers(min_value=0, max_value=(1 << 62) - 1).map(varint)
    small = st.integers(min_value=0, max_value=300).map(varint)
    junk = st.binary(max_size=8)

    def fields(kind: bytes, *parts: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
        return st.tuples(*parts).map(lambda values: kind + b"".join(values))

    return st.one_of(
        st.builds(crypto_frame, st.integers(0, 70000), st.binary(max_size=80)),
        st.builds(
            lambda o, d: crypto_frame(o, RFC_HELLO[o : o + d]),
            st.integers(0, 250),
            st.integers(0, 250),
        ),
        fields(b"\x02", number, number, small, number, junk),  # ACK
        fields(b"\x03", number, number, small, number, junk),  # ACK_ECN
        fields(b"\x1c", number, number, small, st.binary(max_size=20)),  # CONNECTION_CLOSE
        st.sampled_from([b"\x00", b"\x01", b"\x00" * 30]),
        st.binary(min_size=1, max_size=6),
    )


@FUZZ
@given(
    frames=st.lists(frame_strategy(), max_size=8),
    pn_len=st.integers(min_value=1, max_value=4),
    pad=st.booleans(),
)
def test_fuzz_decrypted_frames(frames: list[bytes], pn_len: int, pad: bool) -> None:
    # Authentic packets with arbitrary frames inside: the frame parser and
    # the reassembly see whatever a client could send.
    payload = b"".join(frames)
    packet = initial(payload, pn_len=pn_len, pad_to=1200 if pad else None) + bytes(1200)
    check([packet])
    check([packet, RFC9001_CLIENT_INITIAL])


# --------------------------------------------------------------------------
# The probe as UDP engines use it: growing lists of datagrams.


def test_growing_flow() -> None:
    first, second = aioquic_flight(alpn=long_alpn_list(30))
    flow: list[bytes] = []
    answers: list[object] = []
    for datagram in (first, second):
        flow.append(datagram)
        answers.append(PROBE.probe_datagrams(flow))
    assert answers[0] is NEED_MORE
    assert isinstance(answers[1], Match)
    assert answers[1].alpn == tuple(long_alpn_list(30))


ProbeFn = Callable[[bytes], object]


@pytest.mark.parametrize("method", ["probe", "probe_datagram"])
def test_single_datagram_entry_points(method: str) -> None:
    fn: ProbeFn = getattr(PROBE, method)
    for data in (RFC9001_CLIENT_INITIAL, RFC9369_CLIENT_INITIAL, b"", b"\x00", *AIOQUIC_FLIGHT):
        assert fn(data) == PROBE.probe_datagrams([data])

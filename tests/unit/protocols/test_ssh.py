"""The SSH probe: RFC 4253 4.2 identification strings."""

from __future__ import annotations

from typing import Any

import pytest

from refractium.protocols import BUILTIN, Match, SshProbe, Transport, Verdict

S = Any  # the conftest ``samples`` fixture (a class of helpers)

PROBE = BUILTIN["ssh"]


def test_registered() -> None:
    assert isinstance(PROBE, SshProbe)
    assert PROBE.name == "ssh"
    assert PROBE.transport is Transport.TCP


@pytest.mark.parametrize(
    "banner",
    [
        b"SSH-2.0-OpenSSH_9.6p1 Ubuntu-3ubuntu13\r\n",
        b"SSH-1.99-Cisco-1.25\r\n",
        b"SSH-2.0-PuTTY_Release_0.80\r\n",
    ],
)
def test_banners(banner: bytes, samples: S) -> None:
    # The first four bytes decide: every shorter prefix needs more.
    samples.assert_incremental(PROBE, b"SSH-")
    assert PROBE.probe(banner) == Match("ssh")
    for i in range(4, len(banner) + 1):
        assert PROBE.probe(banner[:i]) == Match("ssh")


def test_banner_followed_by_kexinit() -> None:
    data = b"SSH-2.0-x\r\n\x00\x00\x05\xdc\x08\x14" + bytes(64)
    assert PROBE.probe(data) == Match("ssh")


@pytest.mark.parametrize(
    "data",
    [b"ssh-2.0-x\r\n", b"SSH2.0", b"SSX-", b"GET / HTTP/1.1\r\n", b"\x16\x03\x01", b"\r\nSSH-"],
)
def test_not_ssh(data: bytes) -> None:
    assert PROBE.probe(data) is Verdict.NO


@pytest.mark.parametrize("data", [b"", b"S", b"SS", b"SSH"])
def test_prefixes_need_more(data: bytes) -> None:
    assert PROBE.probe(data) is Verdict.NEED_MORE

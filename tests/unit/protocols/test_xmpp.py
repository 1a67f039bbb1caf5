"""The XMPP probe: a stream opening that mentions ``jabber`` early."""

from __future__ import annotations

from typing import Any

import pytest

from refractium.protocols import BUILTIN, Match, Transport, Verdict
from refractium.protocols.base import first_bytes
from refractium.protocols.xmpp import SEARCH_LIMIT, XmppProbe

S = Any  # the conftest ``samples`` fixture (a class of helpers)

PROBE = BUILTIN["xmpp"]
assert isinstance(PROBE, XmppProbe)
MATCH = Match("xmpp")

# RFC 6120 section 4.2 / 9.1.1, and what common clients send.
OPENINGS = {
    "rfc6120-client": b"<?xml version='1.0'?><stream:stream from='juliet@im.example.com' "
    b"to='im.example.com' version='1.0' xml:lang='en' xmlns='jabber:client' "
    b"xmlns:stream='http://etherx.jabber.org/streams'>",
    "no-declaration": b"<stream:stream to='example.com' xmlns='jabber:client' "
    b"xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>",
    "server-to-server": b"<?xml version='1.0'?>\n<stream:stream xmlns='jabber:server' "
    b"xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' "
    b"to='example.net' from='example.org' version='1.0'>",
    "double-quotes-newline": b'<?xml version="1.0" encoding="UTF-8"?>\r\n<stream:stream '
    b'xmlns="jabber:client" to="example.com" version="1.0" '
    b'xmlns:stream="http://etherx.jabber.org/streams">',
}


def test_registered() -> None:
    assert PROBE.name == "xmpp"
    assert PROBE.transport is Transport.TCP
    assert first_bytes(PROBE) == frozenset(b"<")


@pytest.mark.parametrize("opening", OPENINGS.values(), ids=OPENINGS.keys())
def test_openings_byte_by_byte(opening: bytes, samples: S) -> None:
    decided = opening.index(b"jabber") + len(b"jabber")
    assert samples.assert_incremental(PROBE, opening[:decided]) == MATCH
    for i in range(decided, len(opening) + 1):
        assert PROBE.probe(opening[:i]) == MATCH


def test_declaration_alone_waits() -> None:
    # Pidgin writes the declaration and the stream header separately.
    declaration = b"<?xml version='1.0' ?>"
    assert PROBE.probe(declaration) is Verdict.NEED_MORE
    assert PROBE.probe(declaration + OPENINGS["no-declaration"]) == MATCH


def test_jabber_must_come_early() -> None:
    head = b"<stream:stream to='" + b"a" * SEARCH_LIMIT + b"' xmlns='jabber:client'>"
    assert PROBE.probe(head[: SEARCH_LIMIT - 1]) is Verdict.NEED_MORE
    assert PROBE.probe(head) is Verdict.NO
    late = b"<?xml version='1.0'?>" + b" " * (SEARCH_LIMIT - 27) + b"jabber"
    assert len(late) == SEARCH_LIMIT
    assert PROBE.probe(late) == MATCH


@pytest.mark.parametrize(
    "data",
    [
        b"<?xml>",
        b"<?xmlversion='1.0'?>",
        b"<?XML version='1.0'?>",
        b"<stream:streams xmlns='jabber:client'>",
        b"<stream:stream>jabber",
        b"<html><body>jabber</body></html>",
        b" <?xml version='1.0'?><stream:stream xmlns='jabber:client'>",
        b"\xef\xbb\xbf<?xml version='1.0'?>",
        b"jabber",
        b"GET /jabber HTTP/1.1\r\n",
    ],
)
def test_not_xmpp(data: bytes) -> None:
    assert PROBE.probe(data) is Verdict.NO


@pytest.mark.parametrize(
    "data", [b"", b"<", b"<?", b"<?xml", b"<s", b"<stream:stream", b"<?xml version='1.0'?>"]
)
def test_prefixes_need_more(data: bytes) -> None:
    assert PROBE.probe(data) is Verdict.NEED_MORE

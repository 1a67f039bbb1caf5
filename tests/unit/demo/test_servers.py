"""The toy servers' request parsing: where a request ends and what its line is."""

from __future__ import annotations

import pytest

from refractium.demo.servers import request_end, request_line
from refractium.wire.proxy_protocol import encode_v1, encode_v2

GET = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
POST = b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"
V1 = encode_v1(("192.0.2.1", 1234), ("192.0.2.2", 80))
V2 = encode_v2(("2001:db8::1", 1234), ("2001:db8::2", 443))


@pytest.mark.parametrize(
    "request_bytes",
    [GET, POST, V1 + GET, V2 + POST],
    ids=["get", "post-with-body", "v1-then-get", "v2-then-post"],
)
def test_a_request_is_complete_only_with_its_last_byte(request_bytes: bytes) -> None:
    for i in range(len(request_bytes)):
        assert request_end(request_bytes[:i]) is None, request_bytes[:i]
    assert request_end(request_bytes) == len(request_bytes)
    # What follows (a pipelined request, the client's next bytes) is not part of it.
    assert request_end(request_bytes + b"GET / HTTP/1.1\r\n\r\n") == len(request_bytes)


@pytest.mark.parametrize(
    ("data", "line"),
    [
        (GET, "GET /a HTTP/1.1"),
        (V1 + POST, "POST /x HTTP/1.1"),
        (V2 + GET, "GET /a HTTP/1.1"),
        (b"GET /unfinished", "GET /unfinished"),
        (b"PROXY TCP4 nonsense\r\nGET / HTTP/1.1\r\n\r\n", "PROXY TCP4 nonsense"),
        (b"GET /\xff HTTP/1.1\r\n\r\n", "GET /\\xff HTTP/1.1"),
        (b"GET /" + b"a" * 500 + b" HTTP/1.1\r\n\r\n", "GET /" + "a" * 195),
    ],
    ids=["plain", "after-v1", "after-v2", "incomplete", "malformed-proxy", "non-ascii", "long"],
)
def test_request_line_skips_a_proxy_header(data: bytes, line: str) -> None:
    assert request_line(data) == line


def test_a_bad_content_length_counts_as_none() -> None:
    for value in (b"x", b"-5"):
        head = b"POST / HTTP/1.1\r\nContent-Length: " + value + b"\r\n\r\n"
        assert request_end(head + b"rest") == len(head)

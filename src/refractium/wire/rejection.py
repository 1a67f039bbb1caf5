"""What a rejected client is told, in its own protocol's terms (pure, no I/O).

An endpoint hook's ``Reject(error_code, reason)`` reaches the client as:

* HTTP/1.x: a response with ``error_code`` as its status (403 when the code
  is not an HTTP status) and ``reason`` as its plain-text body;
* TLS: a fatal ``access_denied`` alert, which every TLS stack reports as
  such (``openssl s_client``: "tlsv1 alert access denied");
* anything else (SSH, HTTP/2, custom protocols, a silent client): nothing,
  the connection is just closed.

A client over a route's connection rate is told the same way
(:func:`too_many_for`): HTTP/1.x gets ``429 Too Many Requests`` with
``Retry-After``, TLS the same fatal alert.
"""

from __future__ import annotations

import math
from http import HTTPStatus

# TLS record: content type alert (21), legacy version TLS 1.2, length 2;
# then level fatal (2), description access_denied (49). RFC 8446 section 6.
TLS_ACCESS_DENIED = b"\x15\x03\x03\x00\x02\x02\x31"

_HTTP2_PREFACE = b"PRI * HTTP/2.0"


def http_status(code: int) -> int:
    """``code`` if it is an HTTP status, else 403."""
    return code if 100 <= code <= 599 else 403


def reply_for(protocol: str | None, first_bytes: bytes, code: int, reason: bytes) -> bytes:
    """The bytes to send a client that is rejected; empty to just close.

    ``protocol`` is what identified the connection (``Match.protocol``),
    ``first_bytes`` what the client sent before the decision.
    """
    if protocol == "http" and first_bytes and not first_bytes.startswith(_HTTP2_PREFACE):
        return http_response(http_status(code), reason)
    if protocol in ("tls", "https") or first_bytes[:1] == b"\x16":
        return TLS_ACCESS_DENIED
    return b""


def too_many_for(protocol: str | None, first_bytes: bytes, retry_after_s: float) -> bytes:
    """What a client over a connection rate is sent; empty to just close.

    ``Retry-After`` is whole seconds, rounded up, at least 1 (RFC 9110 section 10.2.3).
    """
    if protocol == "http" and first_bytes and not first_bytes.startswith(_HTTP2_PREFACE):
        seconds = max(1, math.ceil(retry_after_s))
        return http_response(429, b"connection rate exceeded\n", (("Retry-After", str(seconds)),))
    return reply_for(protocol, first_bytes, 429, b"")


def http_response(status: int, body: bytes, headers: tuple[tuple[str, str], ...] = ()) -> bytes:
    """A complete HTTP/1.1 response that closes the connection."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Unknown"
    extra = "".join(f"{name}: {value}\r\n" for name, value in headers)
    head = (
        f"HTTP/1.1 {status} {phrase}\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"{extra}"
        "Connection: close\r\n"
        "\r\n"
    )
    return head.encode("ascii") + body

"""Admitting a PROXY protocol header from a trusted upstream (``accept_proxy_protocol``).

Pure: given what a connection expects and the bytes it has read, say what
to do. A trusted proxy must start with a valid header (v1 or v2); anyone
else must not send one (a client could otherwise claim any address). The
codec itself is :mod:`refractium.wire.proxy_protocol`.
"""

from __future__ import annotations

from refractium.relay.state import HEADER_FORBIDDEN, Upstream
from refractium.wire import proxy_protocol
from refractium.wire.proxy_protocol import ProxyHeader

#: read_header's answer when the header is not complete yet.
WAIT = None


def read_header(expects: Upstream, data: bytes) -> ProxyHeader | str | bool | None:
    """What ``data`` (a connection's bytes so far) means for its upstream header.

    Returns:
        ``WAIT`` (None) to read more; ``False`` when no header was expected
        and none came (relay ``data`` unchanged); the :class:`ProxyHeader`
        a trusted proxy sent; or a string, the reason to refuse the
        connection.
    """
    result = proxy_protocol.parse(data)
    if result is proxy_protocol.NEED_MORE:
        return WAIT
    if expects == HEADER_FORBIDDEN:
        if result is proxy_protocol.NOT_PROXY:
            return False
        return "a PROXY header from an untrusted address"
    if isinstance(result, ProxyHeader):
        return result
    why = result.reason if isinstance(result, proxy_protocol.Malformed) else "none sent"
    return f"no valid PROXY header from a trusted proxy: {why}"

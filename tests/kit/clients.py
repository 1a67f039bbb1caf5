"""Small hand-driven clients for end-to-end tests: slow senders and a TLS pump.

curl, openssl and ssh-keyscan cover the real-client cases; these cover what
those tools cannot do, such as sending a first flight one byte every 5 ms.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl

from tests.kit.backends import Completed, run

HOST = "127.0.0.1"


async def open_nodelay(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection whose small writes leave as separate segments."""
    reader, writer = await asyncio.open_connection(HOST, port)
    writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return reader, writer


async def send(writer: asyncio.StreamWriter, data: bytes, *, byte_delay: float | None) -> None:
    """Send ``data`` whole, or one byte every ``byte_delay`` seconds."""
    if byte_delay is None:
        writer.write(data)
        await writer.drain()
        return
    for i in range(len(data)):
        writer.write(data[i : i + 1])
        await writer.drain()
        await asyncio.sleep(byte_delay)


async def read_all(reader: asyncio.StreamReader, timeout: float = 10) -> bytes:
    async with asyncio.timeout(timeout):
        return await reader.read()


async def close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


async def exchange(
    port: int, data: bytes, *, byte_delay: float | None = None, half_close: bool = True
) -> bytes:
    """Send ``data`` (then EOF) and return everything that comes back."""
    reader, writer = await open_nodelay(port)
    try:
        await send(writer, data, byte_delay=byte_delay)
        if half_close:
            writer.write_eof()
        return await read_all(reader)
    finally:
        await close(writer)


async def tls_request(
    port: int, server_name: str, *, alpn: list[str] | None = None, byte_delay: float | None = None
) -> bytes:
    """A TLS handshake whose ClientHello may be sent byte by byte, then one HTTP request.

    Returns the decrypted response. The certificate is not verified here; the
    curl/openssl tests verify it.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(alpn)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname=server_name)
    reader, writer = await open_nodelay(port)
    try:
        async with asyncio.timeout(30):
            with contextlib.suppress(ssl.SSLWantReadError):
                tls.do_handshake()
            await send(writer, outgoing.read(), byte_delay=byte_delay)
            while True:
                try:
                    tls.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    if pending := outgoing.read():
                        writer.write(pending)
                    data = await reader.read(65536)
                    if not data:
                        raise ConnectionError("closed during the TLS handshake") from None
                    incoming.write(data)
            tls.write(f"GET / HTTP/1.1\r\nHost: {server_name}\r\n\r\n".encode())
            writer.write(outgoing.read())
            response = bytearray()
            while data := await reader.read(65536):
                incoming.write(data)
                with contextlib.suppress(ssl.SSLWantReadError, ssl.SSLZeroReturnError):
                    while chunk := tls.read(65536):
                        response += chunk
            return bytes(response)
    finally:
        await close(writer)


async def openssl_get(port: int, server_name: str, alpn: str | None = None) -> Completed:
    """``openssl s_client`` with SNI ``server_name`` (and ALPN), sending one HTTP request."""
    cmd = ["openssl", "s_client", "-quiet", "-connect", f"{HOST}:{port}"]
    cmd += ["-servername", server_name, *(["-alpn", alpn] if alpn else [])]
    return await run(cmd, input=f"GET / HTTP/1.1\r\nHost: {server_name}\r\n\r\n".encode())

"""Self-tests of the end-to-end backends, with real clients and no proxy."""

from __future__ import annotations

import asyncio
import os
import socket

import pytest

from tests.kit.backends import (
    banner_backend,
    echo_backend,
    free_port,
    http_backend,
    run,
    tls_backend,
)
from tests.kit.sinksource import (
    BLOCK,
    expected_sha256,
    pattern_chunks,
    sink_source_backend,
    sink_source_exchange,
)
from tests.kit.sshd import sshd_backend

MiB = 1 << 20


def test_free_port_is_bindable() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


async def test_run_collects_output_and_times_out() -> None:
    done = await run(["sh", "-c", "cat; echo err >&2; exit 3"], input=b"in")
    assert (done.returncode, done.stdout, done.stderr) == (3, b"in", b"err\n")
    with pytest.raises(TimeoutError):
        await run(["sleep", "10"], timeout=0.2)


async def test_http_backend_answers_curl_with_its_tag() -> None:
    async with http_backend("alpha") as backend:
        url = f"http://127.0.0.1:{backend.port}/some/path"
        done = await run(["curl", "-s", "--max-time", "10", url])
        assert done.returncode == 0, done.err
        assert done.stdout == b"alpha\n"
        done = await run(["curl", "-s", "-i", "--max-time", "10", url])
        assert b"Content-Type: text/plain" in done.stdout
        assert backend.accepted == 2
        assert backend.received[0].startswith(b"GET /some/path HTTP/1.1\r\n")
        assert backend.received[0].endswith(b"\r\n\r\n")
        assert backend.requests == ["GET /some/path HTTP/1.1"] * 2


async def test_http_backend_reads_body_and_keeps_proxy_header() -> None:
    async with http_backend("beta") as backend:
        reader, writer = await asyncio.open_connection("127.0.0.1", backend.port)
        request = (
            b"PROXY TCP4 10.0.0.1 10.0.0.2 1234 80\r\n"
            b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"
        )
        # Byte by byte: the server must wait for the whole request.
        for i in range(len(request)):
            writer.write(request[i : i + 1])
            await writer.drain()
        response = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        await writer.wait_closed()
        assert response.startswith(b"HTTP/1.1 200 OK\r\n")
        assert response.endswith(b"\r\n\r\nbeta\n")
        assert backend.received == [request]
        assert backend.requests == ["POST /x HTTP/1.1"]


async def test_tls_backend_reports_sni_to_curl() -> None:
    async with tls_backend("gamma", ["a.test", "b.test"], alpn=["http/1.1"]) as backend:
        done = await run(
            [
                "curl",
                "-s",
                "--max-time",
                "10",
                "--cacert",
                str(backend.ca_file),
                "--resolve",
                f"b.test:{backend.port}:127.0.0.1",
                f"https://b.test:{backend.port}/",
            ]
        )
        assert done.returncode == 0, done.err
        assert done.stdout == b"gamma sni=b.test alpn=http/1.1\n"
        assert backend.sessions == [("b.test", "http/1.1")]
        assert backend.accepted == 1


async def test_tls_backend_without_alpn_or_sni() -> None:
    async with tls_backend("delta", ["a.test"]) as backend:
        done = await run(["curl", "-s", "-k", f"https://127.0.0.1:{backend.port}/"])
        assert done.returncode == 0, done.err
        assert done.stdout == b"delta sni=None alpn=None\n"


async def test_tls_backend_selects_h2_for_openssl() -> None:
    async with tls_backend("eps", ["a.test"], alpn=["h2", "http/1.1"]) as backend:
        done = await run(
            [
                "openssl",
                "s_client",
                "-connect",
                f"127.0.0.1:{backend.port}",
                "-servername",
                "a.test",
                "-alpn",
                "h2",
                "-CAfile",
                str(backend.ca_file),
                "-verify_return_error",
                "-ign_eof",
            ],
            input=b"",
        )
        output = done.out
        assert "ALPN protocol: h2" in output, output + done.err
        assert "Verify return code: 0 (ok)" in output
        assert "eps sni=a.test alpn=h2\n" in output
        assert backend.sessions == [("a.test", "h2")]


async def test_tls_backend_counts_failed_handshakes() -> None:
    async with tls_backend("zeta", ["a.test"]) as backend:
        reader, writer = await asyncio.open_connection("127.0.0.1", backend.port)
        writer.write(b"GET / HTTP/1.1\r\n\r\n")  # not TLS
        await asyncio.wait_for(reader.read(), 5)
        writer.close()
        await writer.wait_closed()
        assert backend.accepted == 1
        assert backend.handshakes == 0


async def test_banner_backend_speaks_first_then_echoes() -> None:
    banner = b"SSH-2.0-Test\r\n"
    async with banner_backend(banner) as backend:
        reader, writer = await asyncio.open_connection("127.0.0.1", backend.port)
        assert await asyncio.wait_for(reader.readexactly(len(banner)), 5) == banner
        writer.write(b"ping\n")
        assert await asyncio.wait_for(reader.readexactly(5), 5) == b"ping\n"
        writer.write_eof()
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
        await writer.wait_closed()
        assert backend.accepted == 1
        assert backend.received == [b"ping\n"]


def _echo_half_close(port: int, payload: bytes) -> bytes:
    """Blocking client: send everything, shutdown(SHUT_WR), read until EOF."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(1 << 16):
            chunks.append(chunk)
        return b"".join(chunks)


async def test_echo_backend_half_close() -> None:
    async with echo_backend() as backend:
        # Small enough to fit in the socket buffers, so a sequential client works.
        payload = os.urandom(100_000)
        echoed = await asyncio.to_thread(_echo_half_close, backend.port, payload)
        assert echoed == payload
        assert backend.accepted == 1


async def test_echo_backend_large_concurrent() -> None:
    async with echo_backend() as backend:
        reader, writer = await asyncio.open_connection("127.0.0.1", backend.port)

        async def send() -> None:
            for piece in pattern_chunks(8 * MiB):
                writer.write(piece)
                await writer.drain()
            writer.write_eof()

        async def receive() -> bytes:
            return await reader.read(-1)

        _, echoed = await asyncio.wait_for(asyncio.gather(send(), receive()), 20)
        writer.close()
        await writer.wait_closed()
        assert len(echoed) == 8 * MiB
        assert echoed[: len(BLOCK)] == BLOCK
        assert echoed == BLOCK * 8


async def test_sink_source_round_trip() -> None:
    size = 16 * MiB
    async with sink_source_backend() as backend:
        result = await sink_source_exchange(backend.port, upload=size, download=size)
        result.check(upload=size, download=size)
        # Uneven sizes, and nothing at all in one direction.
        odd = await sink_source_exchange(backend.port, upload=12345, download=MiB + 7)
        odd.check(upload=12345, download=MiB + 7)
        empty = await sink_source_exchange(backend.port, upload=0, download=0)
        empty.check(upload=0, download=0)
        assert backend.accepted == 3
        record = backend.records[0]
        assert (record.requested, record.sent, record.received) == (size, size, size)
        assert record.sha256 == expected_sha256(size)
        assert record.completed


async def test_sshd_backend_keyscan_and_login() -> None:
    async with sshd_backend() as sshd:
        done = await run(sshd.keyscan_command())
        assert done.returncode == 0, done.err
        assert f"[127.0.0.1]:{sshd.port} {sshd.host_key}" in done.out
        assert sshd.host_key_pub.startswith(sshd.host_key)
        login = await run(sshd.ssh_command("echo", "hello-from-sshd"))
        assert login.returncode == 0, login.err + "\n".join(sshd.log_lines)
        assert login.stdout == b"hello-from-sshd\n"

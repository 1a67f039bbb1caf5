"""Packet hooks end to end: exact bytes, order, slow and failing hooks."""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import struct
from pathlib import Path

import pytest

from tests.kit.backends import echo_backend
from tests.kit.clients import close, open_nodelay
from tests.kit.proxy import LOCAL_TCP, running_proxy
from tests.kit.sinksource import expected_sha256, sink_source_backend, sink_source_exchange

# The repository root, on the proxy's PYTHONPATH so hook specs can name tests.kit.hookmods.
ROOT = Path(__file__).resolve().parents[2]
ENV = {"PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
MiB = 1 << 20


def merged(order: str) -> list[tuple[str, int]]:
    """The order file with consecutive reads of one direction merged."""
    runs: list[tuple[str, int]] = []
    for line in order.splitlines():
        side, size = line.split()
        if runs and runs[-1][0] == side:
            runs[-1] = (side, runs[-1][1] + int(size))
        else:
            runs.append((side, int(size)))
    return runs


# Plain hooks are drained by a loop callback, coroutine hooks by a task, and a
# plain hook that returns an awaitable moves its connection to a task midway.
RECORDERS = ["Recorder", "AsyncRecorder", "SometimesAsyncRecorder"]


@pytest.mark.parametrize("recorder", RECORDERS)
async def test_recorder_sees_every_byte_once_in_read_order(tmp_path: Path, recorder: str) -> None:
    async with echo_backend() as echo:
        config = f"""
[[protocols]]
name = "mine"
patterns = ["ROUND"]
hooks = [{{ use = "tests.kit.hookmods:{recorder}", dir = "{tmp_path}" }}]
forward_to = "{echo.address}"
"""
        chunks = [b"ROUND" + random.randbytes(random.randint(1, 30_000)) for _ in range(60)]
        async with running_proxy(*LOCAL_TCP, config=config, env=ENV) as proxy:
            reader, writer = await open_nodelay(proxy.port)
            for chunk in chunks:  # an interleaved exchange: one chunk, its echo, ...
                writer.write(chunk)
                async with asyncio.timeout(10):
                    assert await reader.readexactly(len(chunk)) == chunk
            await close(writer)
            async with asyncio.timeout(10):
                while not list(tmp_path.glob("*.closed")):
                    await asyncio.sleep(0.05)
        (session,) = [p.stem for p in tmp_path.glob("*.closed")]
        sent = b"".join(chunks)
        assert (tmp_path / f"{session}.in").read_bytes() == sent
        assert (tmp_path / f"{session}.out").read_bytes() == sent
        runs = merged((tmp_path / f"{session}.order").read_text())
        expected = [(side, len(c)) for c in chunks for side in ("in", "out")]
        assert runs == expected, "the hooks saw the reads in the order the proxy made them"
        assert (tmp_path / f"{session}.closed").read_text() == "mine"


def bulk_config(backend: str, hooks: str = "", overflow: str = "drop") -> str:
    return f"""
[server]
fallback_tcp = "127.0.0.1:9"

[[protocols]]
name = "bulk"
patterns = ["\\\\x00\\\\x00\\\\x00\\\\x00"]
overflow = "{overflow}"
hooks = [{hooks}]
forward_to = "{backend}"
"""


async def timed_download(port: int, size: int) -> float:
    loop = asyncio.get_running_loop()
    started = loop.time()
    result = await sink_source_exchange(port, upload=0, download=size)
    result.check(upload=0, download=size)
    return loop.time() - started


async def test_a_slow_hook_does_not_slow_the_relay_and_drops_are_counted(tmp_path: Path) -> None:
    size = 64 * MiB
    slow = f'{{ use = "tests.kit.hookmods:SlowDigest", dir = "{tmp_path}", delay_ms = 20 }}'
    async with sink_source_backend() as backend:
        async with running_proxy(*LOCAL_TCP, config=bulk_config(backend.address), env=ENV) as p:
            plain = await timed_download(p.port, size)
        async with running_proxy(
            *LOCAL_TCP, config=bulk_config(backend.address, slow), env=ENV
        ) as p:
            hooked = await timed_download(p.port, size)
            await p.wait_for("hook queue full .* dropping packets for slow")
    # The relay does not wait for the hook (loose bound: this machine is noisy).
    assert hooked <= 1.5 * max(plain, 0.5), (plain, hooked)


async def test_block_mode_delivers_every_byte_to_a_slow_hook(tmp_path: Path) -> None:
    size = 64 * MiB
    slow = f'{{ use = "tests.kit.hookmods:SlowDigest", dir = "{tmp_path}", delay_ms = 20 }}'
    async with (
        sink_source_backend() as backend,
        running_proxy(*LOCAL_TCP, config=bulk_config(backend.address, slow, "block"), env=ENV) as p,
    ):
        result = await sink_source_exchange(p.port, upload=0, download=size, timeout=300)
        result.check(upload=0, download=size)
        async with asyncio.timeout(60):
            while not list(tmp_path.glob("*.digest")):
                await asyncio.sleep(0.1)
        assert "dropping" not in p.stderr
    (digest,) = tmp_path.glob("*.digest")
    inbound, outbound = digest.read_text().split()
    assert inbound == hashlib.sha256(struct.pack(">Q", size)).hexdigest()
    trailer = f"sha256={expected_sha256(0)} bytes=0\n".encode()
    assert outbound == _sha256_of_download(size, trailer)


def _sha256_of_download(size: int, trailer: bytes) -> str:
    from tests.kit.sinksource import pattern_chunks

    digest = hashlib.sha256()
    for piece in pattern_chunks(size):
        digest.update(piece)
    digest.update(trailer)
    return digest.hexdigest()


async def test_a_raising_hook_leaves_the_connection_intact() -> None:
    async with sink_source_backend() as backend:
        config = bulk_config(backend.address, '"tests.kit.hookmods:Raiser"')
        async with running_proxy(*LOCAL_TCP, config=config, env=ENV) as p:
            result = await sink_source_exchange(p.port, upload=8 * MiB, download=8 * MiB)
            result.check(upload=8 * MiB, download=8 * MiB)
            await p.wait_for("hook raiser raised in on_packet")
            assert "this hook always fails" in p.stderr  # with its traceback


async def test_a_bad_hook_is_a_config_error_before_listening(tmp_path: Path) -> None:
    from tests.kit.proxy import run_cli

    cases = [
        ('"nosuchmodule:Hook"', "cannot import 'nosuchmodule'"),
        ('"tests.kit.hookmods:Missing"', "module 'tests.kit.hookmods' has no attribute 'Missing'"),
        ('{ use = "tests.kit.hookmods:Recorder", wrong = 1 }', "tests.kit.hookmods:Recorder:"),
        ('{ use = "tests.kit.hookmods:Raiser", x = 1 }', "Raiser() takes no arguments"),
    ]
    for hooks, fragment in cases:  # one line each: file, key, what is wrong
        (tmp_path / "refractium.toml").write_text(
            f'[[protocols]]\nname = "http"\nhooks = [{hooks}]\nforward_to = "127.0.0.1:9"\n'
        )
        code, _, stderr = await run_cli("check", cwd=tmp_path, env=ENV)
        assert code == 1, stderr
        assert stderr.startswith("refractium: refractium.toml: protocols[0].hooks[0]: "), stderr
        assert fragment in stderr and "Traceback" not in stderr


async def test_mirror_copies_traffic_and_a_dead_mirror_costs_nothing(tmp_path: Path) -> None:
    from tests.kit.backends import free_port

    copied = bytearray()
    done = asyncio.Event()

    async def receiver(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        copied.extend(await reader.read())
        done.set()
        writer.close()

    mirror = await asyncio.start_server(receiver, "127.0.0.1", 0)
    live = f"127.0.0.1:{mirror.sockets[0].getsockname()[1]}"
    dead = f"127.0.0.1:{free_port()}"
    async with mirror, echo_backend() as echo:
        for to in (live, dead):
            config = f"""
[[protocols]]
name = "mine"
patterns = ["HELLO"]
hooks = [{{ use = "refractium.hooks.mirror:Mirror", to = "{to}" }}]
forward_to = "{echo.address}"
"""
            async with running_proxy(*LOCAL_TCP, config=config) as proxy:
                reader, writer = await open_nodelay(proxy.port)
                for line in (b"HELLO one\n", b"two\n"):
                    writer.write(line)
                    async with asyncio.timeout(5):
                        assert await reader.readline() == line
                await close(writer)
                if to == live:
                    async with asyncio.timeout(5):
                        await done.wait()
    # Both directions, in the order the proxy read them.
    assert bytes(copied) == b"HELLO one\nHELLO one\ntwo\ntwo\n"

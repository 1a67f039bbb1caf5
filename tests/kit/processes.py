"""Stopping the servers the tests start: politely, then for sure."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal


async def stop_process(proc: asyncio.subprocess.Process, group: bool) -> None:
    """SIGTERM (to its process group with ``group``), SIGKILL after 5 s."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            if group:
                os.killpg(proc.pid, signal.SIGTERM)
            else:
                proc.terminate()
        try:
            async with asyncio.timeout(5):
                await proc.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
    elif group:
        # Session children may outlive the listener; they share its process group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)

"""TrafficLogger: the JSON lines it writes, its per-session state and its writer thread.

The hook is called directly, as the dispatcher does (``on_packet`` per chunk,
then ``on_close``); ``flush()`` waits for the writer thread before the file
is read.
"""

from __future__ import annotations

import json
import re
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from refractium.config import HookSpec
from refractium.errors import HookLoadError
from refractium.hooks import Direction, HookContext
from refractium.hooks.loader import load_hook
from refractium.hooks.logger import TrafficLogger, escape_preview

IN, OUT = Direction.INBOUND, Direction.OUTBOUND
TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\Z")

CTX = HookContext(
    client_addr=("192.0.2.7", 40000),
    protocol="http",
    session_id=0x00C0FFEE,
    sni="example.org",
    backend_addr=("127.0.0.1", 8080),
    local_addr=("0.0.0.0", 443),
)


@pytest.fixture
def logfile(tmp_path: Path) -> Path:
    return tmp_path / "traffic.jsonl"


@pytest.fixture
def loggers() -> Iterator[list[TrafficLogger]]:
    """Loggers a test made, closed at its end (even when it fails)."""
    made: list[TrafficLogger] = []
    yield made
    for logger in made:
        logger.close()


def make(loggers: list[TrafficLogger], *args: Any, **kwargs: Any) -> TrafficLogger:
    logger = TrafficLogger(*args, **kwargs)
    loggers.append(logger)
    return logger


def read_lines(logger: TrafficLogger, path: Path) -> list[dict[str, Any]]:
    assert logger.flush(timeout=5)
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def writer_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "refractium-traffic-logger"]


# -- the lines ---------------------------------------------------------------------


def test_interleaved_exchange_in_order_then_close_totals(
    loggers: list[TrafficLogger], logfile: Path
) -> None:
    logger = make(loggers, str(logfile), preview=16)
    request = b"GET / HTTP/1.1\r\nHost: example.org\r\n\r\n"
    response = b"HTTP/1.1 200 OK\r\n\r\n\x00\xff\\'\""
    logger.on_packet(CTX, IN, request)
    logger.on_packet(CTX, OUT, response)
    logger.on_packet(CTX, IN, b"\x7f\x80tail")
    logger.on_close(CTX)

    lines = read_lines(logger, logfile)
    assert [(line.get("direction"), line.get("size")) for line in lines] == [
        ("inbound", len(request)),
        ("outbound", len(response)),
        ("inbound", 6),
        (None, None),
    ]
    for line in lines:
        assert TIME.match(line["time"]), line["time"]
        assert line["session"] == "0000000000c0ffee"
        assert line["client"] == "192.0.2.7:40000"
        assert line["backend"] == "127.0.0.1:8080"
        assert line["protocol"] == "http"
        assert line["sni"] == "example.org"
    assert [line["preview"] for line in lines[:3]] == [
        "GET / HTTP/1.1\\r\\n",  # 16 bytes, escaped: one escape per byte
        "HTTP/1.1 200 OK\\r",
        "\\x7f\\x80tail",
    ]
    assert lines[3] == {
        "time": lines[3]["time"],
        "event": "close",
        "session": "0000000000c0ffee",
        "client": "192.0.2.7:40000",
        "backend": "127.0.0.1:8080",
        "protocol": "http",
        "sni": "example.org",
        "inbound_packets": 2,
        "inbound_bytes": len(request) + 6,
        "outbound_packets": 1,
        "outbound_bytes": len(response),
    }
    assert lines[0]["time"] <= lines[3]["time"]
    # Nothing of the session is kept once it is closed.
    assert logger.active_sessions == 0
    assert logger._sessions == {}
    assert logger.stats() == {
        "lines": 4,
        "dropped_lines": 0,
        "pending_lines": 0,
        "write_errors": 0,
        "active_sessions": 0,
    }


def test_escape_preview_is_one_escape_per_byte() -> None:
    assert escape_preview(b"ab\r\n\t\x00\x1b\x7f\x80\xff\\'\" ~") == (
        "ab\\r\\n\\t\\x00\\x1b\\x7f\\x80\\xff\\\\'\" ~"
    )
    # What json.loads gives back is that text: decoding it again gives the bytes.
    raw = bytes(range(256))
    assert escape_preview(raw).encode("ascii").decode("unicode_escape").encode("latin-1") == raw


def test_hex_preview(loggers: list[TrafficLogger], logfile: Path) -> None:
    logger = make(loggers, logfile, preview=4, preview_format="hex")
    logger.on_packet(CTX, IN, b"\x16\x03\x01\x02\x00\x01")
    logger.on_packet(CTX, OUT, b"\x00")
    logger.on_close(CTX)
    lines = read_lines(logger, logfile)
    assert [line.get("preview") for line in lines] == ["16030102", "00", None]


def test_no_preview_by_default(loggers: list[TrafficLogger], logfile: Path) -> None:
    logger = make(loggers, logfile)
    logger.on_packet(CTX, IN, b"secret")
    logger.on_close(CTX)
    lines = read_lines(logger, logfile)
    assert "preview" not in lines[0]
    assert lines[0]["size"] == 6


def test_sessions_are_kept_apart(loggers: list[TrafficLogger], logfile: Path) -> None:
    other = HookContext(client_addr=("::1", 5000), protocol="ssh", session_id=1)
    logger = make(loggers, logfile)
    logger.on_packet(CTX, IN, b"a" * 10)
    logger.on_packet(other, IN, b"b" * 3)
    logger.on_packet(CTX, OUT, b"c" * 5)
    assert logger.active_sessions == 2
    logger.on_close(other)
    logger.on_packet(other, OUT, b"late")  # misuse must not corrupt the other session
    logger.on_close(other)
    logger.on_close(CTX)
    closes = [line for line in read_lines(logger, logfile) if line.get("event") == "close"]
    by_session = {line["session"]: line for line in closes}
    assert by_session["0000000000c0ffee"]["inbound_bytes"] == 10
    assert by_session["0000000000c0ffee"]["outbound_bytes"] == 5
    assert by_session["0000000000000001"]["client"] == "[::1]:5000"
    assert by_session["0000000000000001"]["backend"] is None
    assert by_session["0000000000000001"]["sni"] is None
    assert logger.active_sessions == 0


def test_close_without_packets_still_logs(loggers: list[TrafficLogger], logfile: Path) -> None:
    logger = make(loggers, logfile)
    logger.on_close(CTX)
    (line,) = read_lines(logger, logfile)
    assert line["event"] == "close"
    assert line["inbound_packets"] == line["outbound_packets"] == 0
    assert logger.active_sessions == 0


def test_file_is_appended_not_truncated(loggers: list[TrafficLogger], logfile: Path) -> None:
    logfile.write_text('{"earlier": true}\n', encoding="utf-8")
    first = make(loggers, logfile)
    first.on_packet(CTX, IN, b"x")
    first.close()
    second = make(loggers, logfile)
    second.on_packet(CTX, OUT, b"yy")
    second.close()
    lines = [json.loads(line) for line in logfile.read_text(encoding="utf-8").splitlines()]
    assert lines[0] == {"earlier": True}
    assert [(line["direction"], line["size"]) for line in lines[1:]] == [
        ("inbound", 1),
        ("outbound", 2),
    ]


def test_default_output_is_stderr(
    loggers: list[TrafficLogger], capsys: pytest.CaptureFixture[str]
) -> None:
    logger = make(loggers)  # resolves sys.stderr now: capsys's
    assert logger.path is None
    logger.on_packet(CTX, IN, b"hello")
    assert logger.flush(timeout=5)
    (line,) = capsys.readouterr().err.splitlines()
    assert json.loads(line)["size"] == 5
    logger.close()
    assert not sys.stderr.closed  # not ours to close


# -- the writer thread -------------------------------------------------------------------


def test_no_thread_until_the_first_line_and_none_after_close(
    loggers: list[TrafficLogger], logfile: Path
) -> None:
    before = len(writer_threads())
    logger = make(loggers, logfile)
    assert len(writer_threads()) == before  # loading a config starts nothing
    logger.on_packet(CTX, IN, b"x")
    assert len(writer_threads()) == before + 1
    logger.close()
    logger.close()  # idempotent
    assert len(writer_threads()) == before
    logger.on_packet(CTX, IN, b"after")
    assert logger.dropped_lines == 1
    assert logger.flush(timeout=1)
    assert len(logfile.read_text(encoding="utf-8").splitlines()) == 1


class BlockingStream:
    """A stderr stand-in whose writes wait for ``release``."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.text: list[str] = []
        self.closed = False

    def write(self, text: str) -> int:
        self.release.wait(10)
        self.text.append(text)
        return len(text)

    def flush(self) -> None:
        pass


def test_a_stalled_output_drops_packet_lines_but_not_close_lines(
    loggers: list[TrafficLogger], monkeypatch: pytest.MonkeyPatch
) -> None:
    stream = BlockingStream()
    monkeypatch.setattr(sys, "stderr", stream)
    logger = make(loggers, max_pending=3)
    for _ in range(20):  # the loop side never waits for the stuck writer
        logger.on_packet(CTX, IN, b"x")
    logger.on_close(CTX)
    assert logger.dropped_lines >= 20 - 3 - 1  # the thread may have taken one batch
    stream.release.set()
    assert logger.flush(timeout=5)
    lines = [json.loads(line) for line in "".join(stream.text).splitlines()]
    assert len(lines) == logger.lines == 21 - logger.dropped_lines
    assert lines[-1]["event"] == "close"
    assert lines[-1]["inbound_packets"] == 20  # the totals count every packet


class FailingStream:
    closed = False

    def __init__(self) -> None:
        self.calls = 0

    def write(self, text: str) -> int:
        self.calls += 1
        raise OSError(28, "No space left on device")

    def flush(self) -> None:
        pass


def test_write_errors_are_counted_and_the_thread_survives(
    loggers: list[TrafficLogger], monkeypatch: pytest.MonkeyPatch
) -> None:
    stream = FailingStream()
    monkeypatch.setattr(sys, "stderr", stream)
    logger = make(loggers)
    logger.on_packet(CTX, IN, b"x")
    assert logger.flush(timeout=5)
    logger.on_packet(CTX, IN, b"y")
    assert logger.flush(timeout=5)
    assert stream.calls == 2
    assert logger.write_errors == 2


def test_a_forgotten_logger_stops_its_thread(logfile: Path) -> None:
    before = len(writer_threads())
    logger = TrafficLogger(logfile)
    logger.on_packet(CTX, IN, b"x")
    del logger  # the finaliser writes what is queued and stops the thread
    assert len(writer_threads()) == before
    assert len(logfile.read_text(encoding="utf-8").splitlines()) == 1


# -- arguments --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"preview": -1}, ValueError, "preview must be at least 0"),
        ({"preview": "64"}, TypeError, "preview must be a whole number"),
        ({"preview": True}, TypeError, "preview must be a whole number"),
        ({"preview": 1.5}, TypeError, "preview must be a whole number"),
        ({"preview_format": "base64"}, ValueError, "preview_format must be 'text' or 'hex'"),
        ({"path": 42}, TypeError, "path must be a file name"),
        ({"path": ""}, ValueError, "path must not be empty"),
        ({"max_pending": 0}, ValueError, "max_pending must be at least 1"),
        ({"pth": "x"}, TypeError, "unexpected keyword argument 'pth'"),
    ],
)
def test_bad_arguments(kwargs: dict[str, Any], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=re.escape(message)):
        TrafficLogger(**kwargs)


def test_unopenable_path(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"cannot open '.*x\.jsonl' for appending: No such file"):
        TrafficLogger(tmp_path / "missing-dir" / "x.jsonl")


def test_loaded_from_the_config(loggers: list[TrafficLogger], logfile: Path) -> None:
    use = "refractium.hooks.logger:TrafficLogger"
    hook = load_hook(HookSpec(use, {"path": str(logfile), "preview": 64}, key="h"), "r.toml")
    assert isinstance(hook, TrafficLogger)
    loggers.append(hook)
    assert hook.name == "logger"
    assert hook.preview == 64
    with pytest.raises(HookLoadError, match="preview_format must be"):
        load_hook(HookSpec(use, {"preview_format": "b64"}, key="h"), "r.toml")

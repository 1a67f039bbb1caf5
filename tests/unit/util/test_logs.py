"""Where logs go: stderr, a file that reopens (logrotate), syslog over UDP or a unix socket."""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from refractium.errors import ConfigError
from refractium.util import logs

log = logging.getLogger("refractium.test")


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """Put the ``refractium`` logger back as it was, closing what a test opened."""
    root = logging.getLogger("refractium")
    saved = (root.handlers[:], root.level, root.propagate)
    yield
    for handler in root.handlers:
        if handler not in saved[0]:
            handler.close()
    root.handlers[:], root.level, root.propagate = saved


def test_stderr_by_default(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure("info", "text")
    log.debug("not shown")
    log.info("shown")
    err = capsys.readouterr().err
    assert err.endswith(" INFO    refractium.test: shown\n")
    assert "not shown" not in err


def test_a_file_instead_of_stderr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "refractium.log"
    logs.configure("warning", "json", file=str(path))
    log.info("below the level")
    log.warning("to the file")
    (line,) = path.read_text(encoding="utf-8").splitlines()
    entry = json.loads(line)
    assert (entry["level"], entry["logger"], entry["message"]) == (
        "warning",
        "refractium.test",
        "to the file",
    )
    assert capsys.readouterr().err == ""


def test_reopen_after_a_rename_starts_a_new_file(tmp_path: Path) -> None:
    path = tmp_path / "refractium.log"
    rotated = tmp_path / "refractium.log.1"
    logs.configure("info", "text", file=str(path))
    log.info("first")
    path.rename(rotated)
    log.info("second")  # still the renamed file, until told
    logs.reopen()
    log.info("third")
    assert [line.split(": ", 1)[1] for line in rotated.read_text().splitlines()] == [
        "first",
        "second",
    ]
    assert [line.split(": ", 1)[1] for line in path.read_text().splitlines()] == ["third"]


def test_a_file_that_cannot_be_reopened_keeps_the_old_one(tmp_path: Path) -> None:
    directory = tmp_path / "logs"
    directory.mkdir()
    path = directory / "refractium.log"
    logs.configure("info", "text", file=str(path))
    moved = tmp_path / "moved"
    directory.rename(moved)  # the configured path's directory is gone
    logs.reopen()
    log.info("still logged")
    lines = (moved / "refractium.log").read_text().splitlines()
    assert [line.split(": ", 1)[1] for line in lines] == [
        f"cannot reopen the log file {path}: No such file or directory; "
        "still writing to the old one",
        "still logged",
    ]


def test_an_unwritable_file_names_the_key(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such.log"
    with pytest.raises(ConfigError) as caught:
        logs.configure(file=str(missing), source="refractium.toml")
    assert str(caught.value) == (
        f"refractium.toml: log.file: cannot open '{missing}': No such file or directory"
    )


@pytest.fixture
def syslog_server() -> Iterator[socket.socket]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
        server.bind(("127.0.0.1", 0))
        server.settimeout(5)
        yield server


def test_syslog_over_udp(syslog_server: socket.socket) -> None:
    port = syslog_server.getsockname()[1]
    logs.configure("info", "text", syslog=f"udp:127.0.0.1:{port}")
    log.warning("to syslog")
    datagram, _ = syslog_server.recvfrom(65535)
    # <28>: facility daemon (3) * 8 + severity warning (4), RFC 3164 section 4.1.1.
    assert (
        datagram == f"<28>refractium[{os.getpid()}]: WARNING refractium.test: to syslog\0".encode()
    )


def test_a_file_and_syslog_both(tmp_path: Path, syslog_server: socket.socket) -> None:
    port = syslog_server.getsockname()[1]
    path = tmp_path / "refractium.log"
    logs.configure("info", "text", file=str(path), syslog=f"udp:localhost:{port}")
    log.info("both")
    datagram, _ = syslog_server.recvfrom(65535)
    assert datagram.startswith(b"<30>refractium[")
    assert datagram.endswith(b"INFO refractium.test: both\0")
    assert path.read_text().endswith(" INFO    refractium.test: both\n")


def test_syslog_over_a_unix_socket(tmp_path: Path) -> None:
    address = str(tmp_path / "log.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(address)
        server.settimeout(5)
        logs.configure("info", "json", syslog=f"unix:{address}")
        log.error("over unix")
        datagram = server.recv(65535)
    prefix = f"<27>refractium[{os.getpid()}]: ".encode()
    assert datagram.startswith(prefix)
    assert json.loads(datagram[len(prefix) : -1])["message"] == "over unix"


def test_an_unreachable_syslog_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        logs.configure(syslog=f"unix:{tmp_path}/nothing", source="refractium.toml")
    assert str(caught.value) == (
        f"refractium.toml: log.syslog: cannot reach 'unix:{tmp_path}/nothing': "
        "No such file or directory"
    )


def test_a_syslog_path_that_is_no_socket(tmp_path: Path) -> None:
    (tmp_path / "log").write_text("")
    with pytest.raises(ConfigError) as caught:
        logs.configure(syslog=f"unix:{tmp_path}/log")
    assert str(caught.value) == f"log.syslog: cannot reach 'unix:{tmp_path}/log': not a socket"

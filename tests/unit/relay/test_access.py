"""The access line: its fields, its quoting, and the same line whichever way it is written.

The program's own handlers take lines directly and in batches
(``accesslog.sink``); an embedding program gets ordinary log records. Both
must give the same text and the same JSON.
"""

from __future__ import annotations

import json
import logging
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from refractium.addr import Address
from refractium.backends.balancing import Pool
from refractium.protocols.base import Match, Transport
from refractium.relay.access import FIELDS, log_ended
from refractium.routing import Route
from refractium.util import accesslog, logs

BACKEND = Address("10.0.0.2", 443)
ROUTE = Route(
    name="https",
    id="https#2",
    index=1,
    probe=None,
    transport=Transport.TCP,
    pool=Pool((BACKEND,)),
)


@dataclass
class Ended:
    session_id: int = 0x00C0FFEE00C0FFEE
    client_addr: tuple[str, int] = ("2001:db8::7", 50123)
    route: Route | None = ROUTE
    match: Match | None = None
    backend_addr: Address | None = BACKEND
    bytes_in: int = 517
    bytes_out: int = 4096
    reason: str | None = None
    identify_s: float | None = 0.000231
    connect_s: float | None = 0.0012345
    outcome: str = "relayed"

    def final_outcome(self) -> str:
        return self.outcome


TLS = Match("https", "b.example", ("h2", "http/1.1"), "t13d1516h2_8daaf6152771_b186095e22b6")


@pytest.fixture
def log_file(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "refractium.log"
    yield path
    accesslog.install(None)
    root = logging.getLogger("refractium")
    for handler in root.handlers[:]:
        handler.close()
        root.removeHandler(handler)
    root.propagate = True


def written(path: Path) -> list[str]:
    accesslog.flush()
    return path.read_text().splitlines()


def end(conn: Ended, fmt: str) -> None:
    log_ended(conn, "tcp", ("192.0.2.1", 443), conn.outcome, 0.0456789, fmt)


def test_a_text_line_has_every_field_in_order(log_file: Path) -> None:
    logs.configure("warning", "text", file=str(log_file), access=True)
    end(Ended(match=TLS), "text")
    (line,) = written(log_file)
    assert line.split(" INFO    refractium.access: ")[1] == (
        "session=00c0ffee00c0ffee transport=tcp client=[2001:db8::7]:50123"
        " listener=192.0.2.1:443 protocol=https route=https#2 sni=b.example alpn=h2,http/1.1"
        " ja4=t13d1516h2_8daaf6152771_b186095e22b6 backend=10.0.0.2:443 outcome=relayed"
        " reason=- bytes_in=517 bytes_out=4096 identify_ms=0.231 connect_ms=1.234"
        " duration_ms=45.679"
    )


def test_text_values_with_spaces_quotes_or_controls_are_quoted(log_file: Path) -> None:
    logs.configure("info", "text", file=str(log_file), access=True)
    odd = Match("tls", None, ("a b", 'q"'), None)
    end(Ended(match=odd, reason='no "entry"\nhere', outcome="rejected"), "text")
    end(Ended(match=Match("tls", None, ("",), None), reason=""), "text")
    first, second = (x.split("refractium.access: ")[1] for x in written(log_file))
    assert ' alpn="a b,q\\"" ' in first
    assert ' reason="no \\"entry\\"\\nhere" ' in first
    assert " sni=- " in first and " ja4=- " in first
    assert ' alpn="" ' in second and ' reason="" ' in second


def test_a_json_line_is_one_object_with_nulls(log_file: Path) -> None:
    logs.configure("info", "json", file=str(log_file), access=True)
    end(Ended(route=None, backend_addr=None, connect_s=None, outcome="unidentified"), "json")
    (line,) = written(log_file)
    entry = json.loads(line)
    assert list(entry) == ["time", "level", "logger", *FIELDS]
    assert (entry["level"], entry["logger"]) == ("info", "refractium.access")
    assert entry["route"] is None and entry["backend"] is None and entry["connect_ms"] is None
    assert (entry["bytes_in"], entry["identify_ms"], entry["duration_ms"]) == (517, 0.231, 45.679)
    assert entry["client"] == "[2001:db8::7]:50123"


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_the_direct_way_and_a_log_record_write_the_same_line(
    log_file: Path, fmt: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    logs.configure("info", fmt, file=str(log_file), access=True)
    conn = Ended(match=TLS, reason="a reason, with = and spaces")
    end(conn, fmt)
    monkeypatch.setattr(accesslog, "sink", None)  # as in a program that set up logging itself
    end(conn, fmt)
    direct, recorded = written(log_file)
    if fmt == "json":
        a, b = json.loads(direct), json.loads(recorded)
        for entry in (a, b):
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entry.pop("time"))
        assert a == b
    else:
        assert direct[23:] == recorded[23:]  # after "YYYY-MM-DD HH:MM:SS,mmm"
        assert direct[:19] <= recorded[:19]


def test_lines_wait_for_their_batch_then_are_written_in_one_go(log_file: Path) -> None:
    logs.configure("info", "text", file=str(log_file), access=True)
    end(Ended(), "text")
    assert log_file.read_text() == ""  # in the batch, not yet written
    accesslog.flush()
    assert len(log_file.read_text().splitlines()) == 1
    for _ in range(64):  # a full batch is written without a flush
        end(Ended(), "text")
    assert len(log_file.read_text().splitlines()) == 65


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_syslog_gets_each_line_at_once(log_file: Path, fmt: str) -> None:
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.settimeout(5)
    with receiver:
        port = receiver.getsockname()[1]
        logs.configure("info", fmt, syslog=f"udp:127.0.0.1:{port}", access=True)
        end(Ended(match=TLS), fmt)
        message = receiver.recv(65536).decode()
    assert message.startswith("<30>")  # daemon.info
    if fmt == "json":
        entry: dict[str, Any] = json.loads(message[message.index("{") :].rstrip("\x00"))
        assert (entry["logger"], entry["sni"], entry["bytes_out"]) == (
            "refractium.access",
            "b.example",
            4096,
        )
    else:
        assert "INFO refractium.access: session=00c0ffee00c0ffee transport=tcp " in message


def test_without_the_programs_set_up_lines_are_records_for_the_host_program(
    caplog: pytest.LogCaptureFixture,
) -> None:
    accesslog.install(None)
    with caplog.at_level(logging.INFO, logger="refractium.access"):
        end(Ended(match=TLS), "text")
    (record,) = caplog.records
    assert (record.name, record.levelno) == ("refractium.access", logging.INFO)
    assert record.getMessage().startswith("session=00c0ffee00c0ffee transport=tcp ")

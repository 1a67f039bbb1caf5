"""Logging set-up (text or JSON lines; stderr, a file, syslog) and a rate-limited warning helper.

Only the command line configures logging; library users keep their own.
Nothing on the data path logs per chunk: refusals and other events that an
attacker can trigger at will go through :class:`RateLimitedLog`.

A log file is reopened by :func:`reopen` (the program calls it on SIGUSR1),
so logrotate can rename the file and have the next lines go to a new one.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import socket
import stat
import sys
import time
from collections.abc import Callable
from typing import Any

from refractium.addr import AddressError, parse_address
from refractium.errors import ConfigError
from refractium.util import accesslog

__all__ = [
    "JsonFormatter",
    "RateLimitedLog",
    "ReopeningFileHandler",
    "TextFormatter",
    "configure",
    "reopen",
]

_TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
# syslog stamps the time itself; the tag in front is the handler's ident.
_SYSLOG_FORMAT = "%(levelname)s %(name)s: %(message)s"

log = logging.getLogger(__name__)


class _Stamps:
    """A time.time() as text, the seconds formatted once a second, the milliseconds each time."""

    __slots__ = ("_convert", "_fmt", "_ms", "_second", "_text")

    def __init__(self, fmt: str, ms: str, convert: Callable[[float], time.struct_time]) -> None:
        self._fmt = fmt
        self._ms = ms
        self._convert = convert
        self._second = -1
        self._text = ""

    def __call__(self, created: float) -> str:
        second = int(created)
        if second != self._second:
            self._second = second
            self._text = time.strftime(self._fmt, self._convert(created))
        return self._text + self._ms.format(int((created - second) * 1000))


class TextFormatter(logging.Formatter):
    """``logging.Formatter`` whose time stamp is built once a second, not once a line.

    strftime is most of a line's cost; an access line per connection makes
    that worth saving.
    """

    def __init__(self, fmt: str) -> None:
        super().__init__(fmt)
        # ``2026-01-02 03:04:05,678``, in local time.
        self.stamp = _Stamps("%Y-%m-%d %H:%M:%S", ",{:03d}", time.localtime)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return self.stamp(record.created)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC), level, logger, message (+ exception).

    An access line's object has its fields instead of a message.
    """

    converter = time.gmtime  # type: ignore[assignment]  # the stub wants (float | None)

    def __init__(self) -> None:
        super().__init__()
        # The ``time`` field: ``2026-01-02T03:04:05.678Z``, in UTC.
        self.stamp = _Stamps("%Y-%m-%dT%H:%M:%S", ".{:03d}Z", time.gmtime)

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.stamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        fields = getattr(record, "access", None)
        if fields is not None:
            entry.update(fields)
            return json.dumps(entry, ensure_ascii=False)
        entry["message"] = record.getMessage()
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class ReopeningFileHandler(logging.FileHandler):
    """A log file (appended to, UTF-8) that :meth:`reopen` opens again by name.

    After logrotate renamed the file, reopening creates a new one at the
    configured path; lines logged meanwhile went to the renamed file, so
    none is lost.
    """

    def __init__(self, path: str) -> None:
        super().__init__(path, mode="a", encoding="utf-8")

    def reopen(self) -> None:
        """Open the file by its name again and write there from now on.

        Raises:
            OSError: the file cannot be opened; the old one is kept.
        """
        stream = self._open()
        self.acquire()
        try:
            old, self.stream = self.stream, stream
        finally:
            self.release()
        if old is not None:
            old.close()


def configure(
    level: str = "info",
    fmt: str = "text",
    *,
    file: str | None = None,
    syslog: str | None = None,
    access: bool = False,
    source: str | None = None,
) -> None:
    """Send the ``refractium`` loggers at ``level`` in ``fmt`` where ``[log]`` says.

    To stderr when neither ``file`` nor ``syslog`` is given; otherwise to
    the file, to syslog, or to both. Handlers configured before are closed.

    Args:
        level: debug, info, warning or error.
        fmt: text or json.
        file: a file to append to (created if missing).
        syslog: ``unix:/dev/log`` (a local socket) or ``udp:HOST:PORT``.
        access: write the access lines (logger ``refractium.access``, INFO,
            whatever ``level`` says), to the same places, in batches.
        source: the configuration file, named in errors.

    Raises:
        ConfigError: the file cannot be opened or syslog cannot be reached,
            naming ``log.file`` or ``log.syslog``.
    """
    handlers: list[logging.Handler] = []
    try:
        if file:
            handlers.append(_file_handler(file, source))
        if syslog:
            handlers.append(_syslog_handler(syslog, source))
    except ConfigError:
        for handler in handlers:
            handler.close()
        raise
    if not handlers:
        handlers.append(logging.StreamHandler(sys.stderr))
    for handler in handlers:
        if fmt == "json":
            handler.setFormatter(JsonFormatter())
        elif isinstance(handler, logging.handlers.SysLogHandler):
            handler.setFormatter(logging.Formatter(_SYSLOG_FORMAT))
        else:
            handler.setFormatter(TextFormatter(_TEXT_FORMAT))
    root = logging.getLogger("refractium")
    old = root.handlers[:]
    root.handlers[:] = handlers
    root.setLevel(level.upper())
    root.propagate = False
    accesslog.install(handlers if access else None)
    for handler in old:
        if handler not in handlers:
            handler.close()


def reopen() -> None:
    """Reopen every log file :func:`configure` set up (call it on SIGUSR1).

    A file that cannot be opened again is reported as an error and the old
    one kept, so logging goes on.
    """
    accesslog.flush()  # what was logged before the rename goes to the old file
    for handler in logging.getLogger("refractium").handlers:
        if isinstance(handler, ReopeningFileHandler):
            try:
                handler.reopen()
            except OSError as exc:
                log.error(
                    "cannot reopen the log file %s: %s; still writing to the old one",
                    handler.baseFilename,
                    exc.strerror,
                )


def _file_handler(path: str, source: str | None) -> ReopeningFileHandler:
    try:
        return ReopeningFileHandler(path)
    except OSError as exc:
        raise ConfigError(source, "log.file", f"cannot open {path!r}: {exc.strerror}") from None


def _syslog_handler(target: str, source: str | None) -> logging.handlers.SysLogHandler:
    """A handler for ``unix:/path`` or ``udp:HOST:PORT``, facility daemon."""
    scheme, _, rest = target.partition(":")
    address: str | tuple[str, int]
    try:
        if scheme == "unix" and rest:
            # The handler ignores a socket it cannot connect to (syslogd may
            # come later); at start, a missing one is a mistake worth a line.
            if not stat.S_ISSOCK(os.stat(rest).st_mode):
                raise ConfigError(source, "log.syslog", f"cannot reach {target!r}: not a socket")
            address = rest
        elif scheme == "udp":
            parsed = parse_address(rest)
            # Resolved once here: the handler would otherwise look the name
            # up again for every line it sends.
            infos = socket.getaddrinfo(parsed.host, parsed.port, type=socket.SOCK_DGRAM)
            address = (str(infos[0][4][0]), parsed.port)
        else:
            raise ConfigError(
                source, "log.syslog", f"expected 'unix:/dev/log' or 'udp:HOST:PORT', got {target!r}"
            )
        handler = logging.handlers.SysLogHandler(
            address, facility=logging.handlers.SysLogHandler.LOG_DAEMON
        )
    except AddressError as exc:
        raise ConfigError(source, "log.syslog", str(exc)) from None
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigError(source, "log.syslog", f"cannot reach {target!r}: {reason}") from None
    handler.ident = f"refractium[{os.getpid()}]: "
    return handler


class RateLimitedLog:
    """Log at most ``burst`` messages per ``period_s`` per key; count the rest.

    The count of suppressed messages is reported with the next message that
    gets through, so nothing is silently lost from the operator's view.
    """

    __slots__ = ("_burst", "_logger", "_period_s", "_windows")

    def __init__(self, logger: logging.Logger, *, burst: int = 5, period_s: float = 10.0) -> None:
        self._logger = logger
        self._burst = burst
        self._period_s = period_s
        # key -> [window start, messages logged in window, suppressed since last log]
        self._windows: dict[str, list[float]] = {}

    def log(self, level: int, key: str, msg: str, *args: object, exc_info: bool = False) -> None:
        """Log ``msg % args`` unless ``key`` has used up its burst this period.

        ``exc_info`` adds the exception being handled (its traceback).
        """
        if not self._logger.isEnabledFor(level):
            return
        now = time.monotonic()
        window = self._windows.get(key)
        if window is None or now - window[0] >= self._period_s:
            suppressed = int(window[2]) if window is not None else 0
            self._windows[key] = window = [now, 0.0, 0.0]
            if suppressed:
                msg += " (%d similar messages suppressed)"
                args = (*args, suppressed)
        if window[1] >= self._burst:
            window[2] += 1
            return
        window[1] += 1
        self._logger.log(level, msg, *args, exc_info=exc_info)

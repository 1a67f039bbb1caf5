"""Logging set-up (text or JSON lines) and a rate-limited warning helper.

Only the command line configures logging; library users keep their own.
Nothing on the data path logs per chunk: refusals and other events that an
attacker can trigger at will go through :class:`RateLimitedLog`.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

_TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC), level, logger, message (+ exception)."""

    converter = time.gmtime  # type: ignore[assignment]  # the stub wants (float | None)

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure(level: str = "info", fmt: str = "text") -> None:
    """Send the ``refractium`` loggers to stderr at ``level`` in ``fmt``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(_TEXT_FORMAT))
    root = logging.getLogger("refractium")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


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

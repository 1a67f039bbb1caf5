"""Where access lines go once the program configured logging: batched, to the log's handlers.

An access line is written per connection, so its cost counts in
connections/s. Through ``logging`` a line costs a LogRecord, a formatter
pass and a write with a flush: about 12 µs. When the program configured
logging (:func:`install`, from :func:`refractium.util.logs.configure`) and
nothing else listens on logger ``refractium.access``, :data:`sink` takes the
line directly: it adds the same prefix the formatter would (or builds the
same JSON object) and keeps it for one write per batch. Lines wait at most
until :func:`flush` (the program calls it twice a second) or a full batch.

Without :func:`install` (Refractium embedded in another program),
:data:`sink` is None and the access log is plain ``logging`` on
``refractium.access``: whatever the host program set up receives it.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any, Final

__all__ = ["LOGGER", "AccessBatch", "flush", "install", "sink"]

#: The logger access lines are written on.
LOGGER: Final = "refractium.access"
# Lines kept before they are written in one go.
_BATCH: Final = 64
_PREFIX: Final = f"{'INFO':<7} {LOGGER}: "  # what the text format puts before the message


class AccessBatch(logging.Handler):
    """The access logger's handler: lines for a stream or a file are written in batches.

    :meth:`write` is the direct way in (text: the line after the prefix;
    JSON: the fields); :meth:`emit` takes records logged some other way.
    Handlers that are not streams (syslog: one message a line anyway) get
    each line as a record at once.
    """

    def __init__(self, targets: list[logging.Handler]) -> None:
        super().__init__()
        self._streams = [t for t in targets if _direct(t)]
        self._others = [t for t in targets if not _direct(t)]
        self._lines: list[list[str]] = [[] for _ in self._streams]
        self._count = 0

    def write_text(self, message: str) -> None:
        """One access line in text: ``message`` is what follows the logger's name."""
        created = time.time()
        for target, lines in zip(self._streams, self._lines, strict=True):
            lines.append(f"{target.formatter.stamp(created)} {_PREFIX}{message}")  # type: ignore[union-attr]
        if self._others:
            self._to_others(created, message, None)
        self._count += 1
        if self._count >= _BATCH:
            self.flush()

    def write_json(self, members: str) -> None:
        """One access line in JSON: ``members`` are the object's after time, level and logger."""
        created = time.time()
        for target, lines in zip(self._streams, self._lines, strict=True):
            stamp = target.formatter.stamp(created)  # type: ignore[union-attr]
            lines.append(f'{{"time": "{stamp}", "level": "info", "logger": "{LOGGER}", {members}}}')
        if self._others:
            self._to_others(created, "access", json.loads("{" + members + "}"))
        self._count += 1
        if self._count >= _BATCH:
            self.flush()

    def _to_others(self, created: float, message: str, fields: dict[str, Any] | None) -> None:
        record = logging.makeLogRecord(
            {"name": LOGGER, "levelno": logging.INFO, "levelname": "INFO", "msg": message}
        )
        record.created = created
        if fields is not None:
            record.access = fields
        for other in self._others:
            other.handle(record)

    def emit(self, record: logging.LogRecord) -> None:
        for target, lines in zip(self._streams, self._lines, strict=True):
            lines.append(target.format(record))
        for other in self._others:
            other.handle(record)
        self._count += 1
        if self._count >= _BATCH:
            self.flush()

    def flush(self) -> None:
        if not self._count:
            return
        self._count = 0
        for target, lines in zip(self._streams, self._lines, strict=True):
            text = "\n".join(lines) + "\n"
            lines.clear()
            target.acquire()
            try:
                stream = target.stream  # type: ignore[attr-defined]
                stream.write(text)
                stream.flush()
            except (
                OSError,
                ValueError,
            ):  # a full disk or a closed stream: lose lines, not the proxy
                pass
            finally:
                target.release()


def _direct(handler: logging.Handler) -> bool:
    """Whether ``handler`` is a stream whose formatter :class:`AccessBatch` can stand in for."""
    return isinstance(handler, logging.StreamHandler) and callable(
        getattr(handler.formatter, "stamp", None)
    )


#: The handler lines go to directly, when :func:`install` set one and it is
#: the access logger's only one; None: log through ``logging``.
sink: AccessBatch | None = None


def install(targets: list[logging.Handler] | None) -> None:
    """Send access lines to ``targets`` (the log's handlers), or stop (None)."""
    global sink
    logger = logging.getLogger(LOGGER)
    for handler in logger.handlers[:]:
        handler.flush()
        logger.removeHandler(handler)
    sink = None
    if targets is None:
        logger.setLevel(logging.NOTSET)
        logger.propagate = True
        return
    batch = AccessBatch(targets)
    logger.addHandler(batch)
    # Access lines are written whatever [log] level says.
    logger.setLevel(logging.INFO)
    logger.propagate = False
    sink = batch


def flush() -> None:
    """Write the access lines still waiting for a full batch."""
    for handler in logging.getLogger(LOGGER).handlers:
        handler.flush()

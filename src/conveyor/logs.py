"""Structured logs: JSON lines when stderr is not a terminal, readable lines when it is."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import TextIO

#: Extra fields a log record may carry; both formatters render them (``extra={...}``).
FIELDS = ("job_id", "task", "action", "attempt", "duration_s", "worker", "reason")

_RESERVED = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts``, ``level``, ``logger``, ``msg`` and the extra fields.

    Log collectors (CloudWatch, Loki) index these fields, so a job can be followed by its id.
    """

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RESERVED and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, separators=(",", ":"))


class TextFormatter(logging.Formatter):
    """``HH:MM:SS level message  key=value ...`` for a human at a terminal.

    Every field is shown, even when the message already names its value: whether a value
    "appears" in a message cannot be told from text (``attempt=1`` is not in job ``a1b``).
    The known fields come first, in ``FIELDS`` order, then any other extra, by name;
    values with spaces, quotes or ``=`` are quoted (logfmt), so every line splits back.
    """

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        line = f"{stamp} {record.levelname.lower():<7} {record.getMessage()}"
        extras = " ".join(f"{key}={_logfmt(value)}" for key, value in _fields(record))
        if extras:
            line = f"{line}  {extras}"
        if record.exc_info:
            line = f"{line}\n{self.formatException(record.exc_info)}"
        return line


def _fields(record: logging.LogRecord) -> list[tuple[str, object]]:
    """The record's extra fields with a value: ``FIELDS`` in order, then the rest by name."""
    extra = {
        key: value
        for key, value in vars(record).items()
        if key not in _RESERVED and not key.startswith("_") and value is not None
    }
    known = [(key, extra.pop(key)) for key in FIELDS if key in extra]
    return known + sorted(extra.items())


def _logfmt(value: object) -> str:
    """A value as logfmt writes it: bare when it is one plain word, else JSON-quoted."""
    text = str(value)
    if text and not any(c.isspace() or c in '"=\\' for c in text) and text.isprintable():
        return text
    return json.dumps(text, ensure_ascii=False)


def configure_logging(
    log_format: str = "auto", level: str = "INFO", stream: TextIO | None = None
) -> None:
    """Send conveyor's logs to ``stream`` (stderr) in the chosen format.

    Args:
        log_format: ``json``, ``text``, or ``auto`` (text on a terminal, JSON otherwise).
        level: a logging level name.
        stream: where to write; stderr by default.
    """
    stream = stream or sys.stderr
    if log_format == "auto":
        log_format = "text" if stream.isatty() else "json"
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    logger = logging.getLogger("conveyor")
    for old in list(logger.handlers):
        logger.removeHandler(old)
    logger.addHandler(handler)
    logger.setLevel(level.upper())
    logger.propagate = False

"""Logging to stderr, as readable text or one JSON object per line.

Data goes to stdout; logs and progress go to stderr, so ``cartfhir query ...
--format csv > out.csv`` stays clean. ``--log-format json`` is for schedulers
(Airflow, cron + log shippers) that parse logs. Every line, tracebacks included,
passes through ``cartfhir.redact`` on its way out.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Literal

from cartfhir.redact import redact

LogFormat = Literal["text", "json"]
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record; ``extra={...}`` fields become keys."""

    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                payload[key] = value
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str, ensure_ascii=False)


class RedactingFormatter(logging.Formatter):
    """Any formatter's output with secrets masked: the last step before a line is written."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        return redact(self.inner.format(record))


def configure(fmt: LogFormat = "text", verbose: bool = False) -> None:
    """Route the ``cartfhir`` loggers to stderr in the chosen format."""
    handler = logging.StreamHandler(sys.stderr)
    inner = JsonFormatter() if fmt == "json" else logging.Formatter(
        "%(asctime)s %(levelname)-7s %(message)s", datefmt="%H:%M:%S")
    handler.setFormatter(RedactingFormatter(inner))
    root = logging.getLogger("cartfhir")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    root.propagate = False

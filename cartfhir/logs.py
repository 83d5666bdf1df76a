"""Logging to stderr, as readable text or one JSON object per line.

Data goes to stdout; logs and progress go to stderr, so ``cartfhir query ...
--format csv > out.csv`` stays clean. ``--log-format json`` is for schedulers
(Airflow, cron + log shippers) that parse logs: records that matter to them carry
an ``event`` (``log_event``), and every stage opens and closes with
``stage.start``/``stage.finish`` (``stage_events``); docs/logging.md is the schema.
Every line, tracebacks included, passes through ``cartfhir.redact`` on its way out.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Literal, ParamSpec, TypeVar

from cartfhir.redact import redact

LogFormat = Literal["text", "json"]
P = ParamSpec("P")
R = TypeVar("R")
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


_handlers: list[logging.Handler] = []  # what configure attached, so it can take it off again


def configure(fmt: LogFormat = "text", verbose: bool = False) -> None:
    """Route the ``cartfhir`` loggers to stderr in the chosen format.

    In JSON mode every line on stderr must parse, so the root logger (other
    libraries) and Python's ``warnings`` go through the same JSON handler; in text
    mode they stay as Python prints them.
    """
    handler = logging.StreamHandler(sys.stderr)
    inner = JsonFormatter() if fmt == "json" else logging.Formatter(
        "%(asctime)s %(levelname)-7s %(message)s", datefmt="%H:%M:%S")
    handler.setFormatter(RedactingFormatter(inner))
    root = logging.getLogger("cartfhir")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    root.propagate = False
    top = logging.getLogger()
    for old in _handlers:
        top.removeHandler(old)
    _handlers.clear()
    logging.captureWarnings(fmt == "json")
    if fmt == "json":
        others = logging.StreamHandler(sys.stderr)
        others.setFormatter(RedactingFormatter(JsonFormatter()))
        others.setLevel(logging.DEBUG if verbose else logging.WARNING)
        top.addHandler(others)
        _handlers.append(others)


def log_event(event: str, *, msg: str | None = None, level: int = logging.INFO,
              logger: str = "cartfhir", **fields: Any) -> None:
    """One record carrying ``event`` and ``fields`` (keys of its JSON line; see
    docs/logging.md); ``msg`` is the human sentence, the event name when not given."""
    logging.getLogger(logger).log(level, "%s", msg or event, extra={"event": event, **fields})


# The keys every stage event carries besides ts/level/logger/msg/event: the one list,
# docs/logging.md's table is checked against it (tests/test_cli_json.py). Inside pool,
# whose stages work on a private copy, ``db`` is the pooled database and ``work_db`` the
# copy; ``error_type`` is added to a finish when the stage raised.
STAGE_EVENT_KEYS = {
    "stage.start": ("stage", "command", "run_id", "db"),
    "stage.finish": ("stage", "command", "run_id", "status", "duration_s", "counts", "db"),
}
# The command line the CLI is running (``use_command_line``); None when called from Python.
_command_line: dict[str, str | None] = {"line": None}
# The stage wrapping this one (pool around its validate and analyze): command and db.
_outer: ContextVar[dict[str, Any] | None] = ContextVar("cartfhir_outer_stage", default=None)


def use_command_line(line: str | None) -> None:
    """The command line stage events name as ``command`` (the CLI sets it, then None)."""
    _command_line["line"] = line


# How loud a stage's end is, by its status: a scheduler alerts on warning and error.
FINISH_LEVEL = {"success": logging.INFO, "partial": logging.WARNING,
                "invalid": logging.WARNING, "interrupted": logging.WARNING,
                "failed": logging.ERROR}


class StageOutcome:
    """What a stage's end reports; the block fills it in (status, counts, run id)."""

    def __init__(self, run_id: str | None) -> None:
        self.run_id = run_id
        self.status: str | None = None
        self.counts: Any = None


@contextmanager
def stage_events(stage: str, command: str, run_id: str | None = None,
                 **fields: Any) -> Iterator[StageOutcome]:
    """Log ``stage.start`` now and ``stage.finish`` when the block ends, however it ends.

    The finish carries the status (the block's, or failed/interrupted when it raised,
    with ``error_type``), the counts and the duration in seconds.
    """
    outer = _outer.get()
    if outer is not None:  # pool's own stages: the pool's command line and database
        command = outer["command"]
        if "db" in fields and str(fields["db"]) != outer["db"]:
            fields["work_db"] = str(fields["db"])
        fields["db"] = outer["db"]
    outcome = StageOutcome(run_id)
    log_event("stage.start", msg=f"{stage} started" + (f" (run {run_id})" if run_id else ""),
              stage=stage, command=command, run_id=run_id, **fields)
    started = time.perf_counter()
    error: BaseException | None = None
    try:
        yield outcome
    except BaseException as exc:
        error = exc
        raise
    finally:
        status = outcome.status or ("success" if error is None else
                                    "interrupted" if _interrupted(error) else "failed")
        duration = round(time.perf_counter() - started, 3)
        extra = {} if error is None else {"error_type": type(error).__name__}
        log_event("stage.finish", level=FINISH_LEVEL.get(status, logging.INFO),
                  msg=f"{stage} finished: {status} in {duration:.1f} s"
                      + (f" (run {outcome.run_id})" if outcome.run_id else ""),
                  stage=stage, command=command, run_id=outcome.run_id, status=status,
                  duration_s=duration, counts=outcome.counts, **fields, **extra)


def _interrupted(exc: BaseException) -> bool:
    from cartfhir.runs import is_interrupt  # runs imports the database layer; logs must not

    return is_interrupt(exc)


def logged_stage(stage: str, db: Callable[[dict[str, Any]], Any]
                 ) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Give a stage that keeps no run record (pool, export-site) the same start and
    finish events; its result's ``status`` and ``to_dict()`` (less the status) are the
    finish's status and counts. ``db`` gives the database the stage is about from the
    call's arguments by name; stages run inside it log that database and its command."""
    def wrap(function: Callable[P, R]) -> Callable[P, R]:
        signature = inspect.signature(function)

        @functools.wraps(function)
        def logged(*args: P.args, **kwargs: P.kwargs) -> R:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            command = _command_line["line"] or stage
            where = str(db(bound.arguments))
            with stage_events(stage, command=command, db=where) as outcome:
                token = _outer.set({"command": command, "db": where})
                try:
                    result = function(*args, **kwargs)
                finally:
                    _outer.reset(token)
                outcome.status = getattr(result, "status", None)
                to_dict = getattr(result, "to_dict", None)
                if to_dict is not None:
                    outcome.counts = {k: v for k, v in to_dict().items() if k != "status"}
            return result
        return logged
    return wrap

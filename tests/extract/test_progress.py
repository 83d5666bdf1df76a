"""progress: a null reporter for libraries, rich bars on stderr for terminals."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from cartfhir.progress import NullProgress, RichProgress, make_progress


def test_null_progress_accepts_everything() -> None:
    with NullProgress().task("anything", total=None) as task:
        task.advance()
        task.advance(10)


def test_make_progress_follows_the_flag_or_the_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    assert isinstance(make_progress(True), RichProgress)
    assert isinstance(make_progress(False), NullProgress)
    monkeypatch.setattr("sys.stderr", io.StringIO())  # not a terminal
    assert isinstance(make_progress(), NullProgress)


def test_rich_progress_draws_tasks_and_stops_when_the_last_closes() -> None:
    out = io.StringIO()
    progress = RichProgress(Console(file=out, force_terminal=False, width=100))
    with progress.task("landing a", total=2048, unit="bytes") as outer:
        with progress.task("inner", total=3) as inner:
            inner.advance(3)
        outer.advance(1024)
        assert progress._bars is not None  # still shown while "landing a" is open
    assert progress._bars is None
    drawn = out.getvalue().splitlines()
    assert drawn[0].startswith("landing a") and "2.0/2.0 kB" in drawn[0]  # bytes as sizes
    assert drawn[1].startswith("inner") and "3/3" in drawn[1]  # items as counts

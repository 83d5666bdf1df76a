"""Progress reporting that library code can use without knowing about terminals.

Library code asks a ``Progress`` for a ``task`` and advances it; what that looks
like (nothing, or a rich bar on stderr) is chosen once by the caller, usually
with ``make_progress``.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from typing import Protocol

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.progress import Progress as _RichBars
from rich.text import Text


class ProgressTask(Protocol):
    """One unit of work being reported; ``advance`` adds to what is done."""

    def advance(self, n: int = 1) -> None: ...


class Progress(Protocol):
    """Hands out tasks; ``total=None`` means the amount of work is unknown."""

    def task(
        self, description: str, total: int | None = None, unit: str = "items"
    ) -> AbstractContextManager[ProgressTask]: ...


class _NullTask:
    def advance(self, n: int = 1) -> None:
        pass


class NullProgress:
    """Reports nothing; the default whenever no one is watching."""

    @contextmanager
    def task(
        self, description: str, total: int | None = None, unit: str = "items"
    ) -> Iterator[ProgressTask]:
        yield _NullTask()


class _RichTask:
    def __init__(self, bars: _RichBars, task_id: int) -> None:
        self._bars = bars
        self._task_id = task_id

    def advance(self, n: int = 1) -> None:
        self._bars.advance(self._task_id, n)


class _AmountColumn(ProgressColumn):
    """'1.2/3.4 MB' for tasks counted in bytes, '12/34' for anything else."""

    def __init__(self) -> None:
        super().__init__()
        self._bytes = DownloadColumn()
        self._items = MofNCompleteColumn()

    def render(self, task: Task) -> Text:
        column = self._bytes if task.fields.get("unit") == "bytes" else self._items
        return column.render(task)


class RichProgress:
    """Rich progress bars on stderr, shown while at least one task is open.

    ``unit="bytes"`` shows transferred/total sizes; any other unit shows counts.
    """

    def __init__(self, console: Console | None = None) -> None:
        self._console = console or Console(stderr=True)
        self._bars: _RichBars | None = None
        self._open = 0

    def _make_bars(self) -> _RichBars:
        return _RichBars(
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            _AmountColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self._console,
        )

    @contextmanager
    def task(
        self, description: str, total: int | None = None, unit: str = "items"
    ) -> Iterator[ProgressTask]:
        # One live display at a time: the first open task starts it, the last
        # one to close stops it, so nested tasks share the screen.
        if self._bars is None:
            self._bars = self._make_bars()
            self._bars.start()
        bars = self._bars
        task_id = bars.add_task(description, total=total, unit=unit)
        self._open += 1
        try:
            yield _RichTask(bars, task_id)
            if total is not None:
                bars.update(task_id, completed=total)
        finally:
            self._open -= 1
            if self._open == 0:
                bars.stop()
                self._bars = None


@contextmanager
def type_bars(progress: Progress, site: str, types: list[str],
              unit: str) -> Iterator[dict[str, ProgressTask]]:
    """One bar per resource type of a site, sized by how many units each type has.

    A data engineer watching a long pull sees which type is slow, not just that
    the site is; ``types`` holds one entry per unit of work (search or file).
    """
    with ExitStack() as stack:
        yield {rtype: stack.enter_context(progress.task(f"{site} {rtype} {unit}", total=n))
               for rtype, n in sorted(Counter(types).items())}


def make_progress(enabled: bool | None = None) -> Progress:
    """Rich bars when ``enabled``, or when it is None and stderr is a terminal."""
    if enabled is None:
        enabled = sys.stderr.isatty()
    return RichProgress() if enabled else NullProgress()

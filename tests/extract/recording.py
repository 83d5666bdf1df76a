"""A Progress for tests: remembers every task it was asked for and how far each went."""

from __future__ import annotations

import contextlib
from typing import Any


class RecordingProgress:
    """Records ``(description, total, unit)`` per task and the units advanced per task."""

    def __init__(self) -> None:
        self.tasks: list[tuple[str, int | None, str]] = []
        self.done: dict[str, int] = {}

    @property
    def advanced(self) -> int:
        return sum(self.done.values())

    def task(self, description: str, total: int | None = None, unit: str = "items") -> Any:
        self.tasks.append((description, total, unit))
        self.done.setdefault(description, 0)
        outer = self

        class Task:
            def advance(self, n: int = 1) -> None:
                outer.done[description] += n

        return contextlib.nullcontext(Task())

"""Rendering rows for people (a table) or machines (CSV, JSON) on stdout."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterable, Sequence
from typing import Any, Literal, TextIO

from rich.console import Console
from rich.table import Table

OutputFormat = Literal["table", "csv", "json"]


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def render_rows(columns: Sequence[str], rows: Iterable[Sequence[Any]], fmt: OutputFormat = "table",
                title: str | None = None, out: TextIO | None = None) -> int:
    """Write rows in the chosen format; return how many rows were written."""
    out = out or sys.stdout
    n = 0
    if fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow(["" if v is None else v for v in row])
            n += 1
    elif fmt == "json":
        out.write("[")
        for row in rows:
            out.write(("," if n else "") + "\n  " + json.dumps(
                dict(zip(columns, row, strict=True)), default=str, ensure_ascii=False))
            n += 1
        out.write("\n]\n" if n else "]\n")
    else:
        table = Table(title=title, show_lines=False, header_style="bold")
        for column in columns:
            table.add_column(column, overflow="fold")
        for row in rows:
            table.add_row(*(_cell(v) for v in row))
            n += 1
        Console(file=out, soft_wrap=False, width=max(100, Console(file=out).width)).print(table)
    return n

"""Rendering rows for people (a table) or machines (CSV, JSON) on stdout.

``render_rows`` prints the stage summaries; ``render_result`` prints a query's rows the
way the DuckDB command line does: a box that fits the terminal (long cells cut with
``…``, middle columns left out behind a ``…`` column when they do not fit), the row count
under it, and the DuckDB types on request. Printed to a pipe or a file, nothing is cut.

CSV and JSON (stdout and ``--out``) pass every value through ``converter``, guided by
the DuckDB type of its column, so what they write is valid for any reader:

- NaN and ±Infinity are ``null`` in JSON (it has no such numbers); a top-level CSV cell
  keeps DuckDB's ``nan``/``inf``/``-inf``, which CSV readers (DuckDB, pandas) parse;
- a JSON-typed value is the document it holds, at any depth (in a struct, list or map);
- BLOB is base64 text; INTERVAL an ISO 8601 duration (``P1DT3H``; DuckDB hands Python a
  month as 30 days); dates, times, UUIDs and DECIMALs their text;
- in CSV a struct, list or map cell is its JSON text.
"""

from __future__ import annotations

import base64
import csv
import json
import math
import os
import shutil
import sys
from collections.abc import Callable, Iterable, Sequence
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal, TextIO

import duckdb
from duckdb.sqltypes import DuckDBPyType
from rich.cells import cell_len, set_cell_size
from rich.console import Console
from rich.table import Table

from cartfhir.errors import UsageError

OutputFormat = Literal["table", "csv", "json"]
# What each file suffix means when rows are written to a file ('query --out', 'view --out').
SUFFIX_FORMATS = {".csv": "csv", ".json": "json", ".parquet": "parquet"}
JSON_TYPES = ("JSON", "JSON[]")  # DuckDB's JSON type; such values arrive as JSON text
ELLIPSIS = "…"
MIN_COLUMN = 8  # narrower than this, a cut value says too little to be worth showing
_NUMERIC = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT",
            "UINTEGER", "UBIGINT", "UHUGEINT", "FLOAT", "DOUBLE", "DECIMAL")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def file_format(out: Path, choices: Sequence[str], given: str | None = None) -> str:
    """The format rows written to ``out`` take, from its suffix (.csv, .json, .parquet).

    One rule for every command that writes rows to a file, so ``query --out x.csv`` and
    ``view --out x.csv`` agree. An unknown suffix, or a ``given`` format the suffix
    contradicts, is a usage error: a file named .csv holding Parquet misleads whoever
    opens it next.
    """
    suffix = Path(out).suffix.lower()
    fmt = SUFFIX_FORMATS.get(suffix)
    names = ", ".join(f"{s} ({f})" for s, f in SUFFIX_FORMATS.items() if f in choices)
    if fmt is None or fmt not in choices:
        raise UsageError(f"--out {out}: cannot tell the format from {suffix or 'no suffix'!r}; "
                         f"name the file with one of {names}")
    if given is not None and given != fmt:
        raise UsageError(f"--out {out} is a {fmt} file but --format says {given}; drop "
                         "--format or make them agree")
    return fmt


def json_columns(columns: Sequence[str], types: Sequence[str]) -> set[str]:
    """The columns DuckDB types as JSON (or JSON[]), whose text values are JSON documents."""
    return {c for c, t in zip(columns, types, strict=False) if t in JSON_TYPES}


def _duckdb_type(kind: Any) -> Any:
    """A DuckDB type object from a cursor description's type or its name; None if unknown."""
    if kind is None or isinstance(kind, DuckDBPyType):
        return kind
    try:
        return duckdb.type(str(kind))
    except (duckdb.Error, RuntimeError, TypeError, ValueError):
        return None  # a type Python cannot name: the value is converted by its Python kind


def _children(kind: Any) -> list[tuple[str, Any]]:
    try:
        return list(kind.children)
    except (duckdb.Error, AttributeError, RuntimeError, TypeError, ValueError):
        return []  # a type without children, or one the binding cannot take apart


def iso_duration(value: timedelta) -> str:
    """An ISO 8601 duration: P<d>DT<h>H<m>M<s>S, '-' in front when negative, PT0S for zero."""
    sign = "-" if value < timedelta(0) else ""
    value = abs(value)
    hours, rest = divmod(value.seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    secs = f"{seconds}.{value.microseconds:06d}".rstrip("0").rstrip(".") \
        if value.microseconds else str(seconds)
    date = f"{value.days}D" if value.days else ""
    time = "".join(f"{n}{unit}" for n, unit in ((hours, "H"), (minutes, "M")) if n)
    time += f"{secs}S" if seconds or value.microseconds else ""
    return f"{sign}P{date}{'T' + time if time else ''}" if date or time else "PT0S"


def _no_constant(name: str) -> None:
    return None  # NaN/Infinity inside JSON text: JSON has no such numbers


Converter = Callable[[Any], Any]


_AS_IS = frozenset({type(None), bool, int, str})  # already JSON data (checked first: fast)


def _plain(value: Any) -> Any:
    """A value made JSON data by its Python kind alone (no JSON text is parsed)."""
    if type(value) in _AS_IS or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, timedelta):
        return iso_duration(value)
    if isinstance(value, dict):
        return {_key(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return str(value)  # date, time, timestamp, UUID, Decimal: their text


def _key(key: Any) -> str:
    value = _plain(key)
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _finite(data: Any) -> Any:
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {k: _finite(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_finite(v) for v in data]
    return data


def _from_json_text(value: Any) -> Any:
    if isinstance(value, str):
        return _finite(json.loads(value, parse_constant=_no_constant))
    return _plain(value)


def converter(kind: Any = None) -> Converter:
    """The function making values of DuckDB type ``kind`` JSON data, built once per column.

    ``kind`` (a type object or its name) says where JSON documents sit, which Python
    cannot tell from a str: a JSON value is parsed at any depth, in a struct, a list
    or a map. Types the walk does not know convert by their Python kind (``_plain``).
    """
    kind = _duckdb_type(kind)
    if kind is None:
        return _plain
    if str(kind) == "JSON":
        return _from_json_text
    children = _children(kind) if kind.id in ("struct", "map", "list", "array") else []
    if not children:
        return _plain
    if kind.id == "struct":
        fields = {name: converter(child) for name, child in children}
        if all(f is _plain for f in fields.values()):
            return _plain

        def struct(value: Any) -> Any:
            if not isinstance(value, dict):
                return _plain(value)
            return {k: fields.get(k, _plain)(v) for k, v in value.items()}
        return struct
    if kind.id == "map":
        of = dict(children)
        key, item = converter(of.get("key")), converter(of.get("value"))
        if key is _plain and item is _plain:
            return _plain

        def mapping(value: Any) -> Any:
            if not isinstance(value, dict):
                return _plain(value)
            return {_key(key(k)): item(v) for k, v in value.items()}
        return mapping
    child = converter(dict(children).get("child"))
    if child is _plain:
        return _plain

    def items(value: Any) -> Any:
        if not isinstance(value, list | tuple):
            return _plain(value)
        return [None if v is None else child(v) for v in value]
    return items


def json_value(value: Any, kind: Any = None) -> Any:
    """``value`` as fetched from DuckDB, made JSON data (dict, list, str, number, bool, None).

    One conversion for every writer of rows (stdout and files), so they cannot
    disagree; the rules are in the module docstring. Many values of one column:
    build its ``converter`` once instead.
    """
    return converter(kind)(value)


def csv_value(value: Any, convert: Converter = _plain) -> Any:
    """A CSV cell: nested values (struct, list, map, JSON) as compact JSON text, NaN and
    ±Infinity as DuckDB writes them, other values as ``convert`` (the column's
    ``converter``) makes them."""
    if value is None:
        return ""
    if convert is _plain and type(value) in _AS_IS:
        return value
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    converted = convert(value)
    if isinstance(value, dict | list | tuple) or convert is _from_json_text:
        return json.dumps(converted, ensure_ascii=False, separators=(",", ":"))
    return converted


def render_rows(columns: Sequence[str], rows: Iterable[Sequence[Any]], fmt: OutputFormat = "table",
                title: str | None = None, out: TextIO | None = None,
                types: Sequence[Any] | None = None) -> int:
    """Write rows in the chosen format; return how many rows were written.

    ``types`` are the columns' DuckDB types (type objects or names, as a cursor's
    description gives them): CSV and JSON convert each value by its type (``json_value``,
    ``csv_value``), so JSON documents come out as the objects they are at any depth.
    """
    convert = [converter(t) for t in types] if types is not None else [_plain] * len(columns)
    out = out or sys.stdout
    n = 0
    if fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow([csv_value(v, f) for v, f in zip(row, convert, strict=True)])
            n += 1
    elif fmt == "json":
        out.write("[")
        for row in rows:
            record = {c: f(v) for c, v, f in zip(columns, row, convert, strict=True)}
            out.write(("," if n else "") + "\n  " + json.dumps(
                record, ensure_ascii=False, allow_nan=False))
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


def terminal_width(out: TextIO) -> int | None:
    """Columns to fit a table into: $COLUMNS, else the terminal's; None when not a terminal.

    Rows printed into a pipe or a file are data for someone else, so they are never cut.
    """
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    isatty = getattr(out, "isatty", None)
    if isatty is not None and isatty():
        return shutil.get_terminal_size().columns
    return None


def _text(value: Any) -> str:
    """A value as the DuckDB command line shows it: NULL for null, one line per cell."""
    if value is None:
        return "NULL"
    text = str(value)
    return text.replace("\r", "\\r").replace("\n", "\\n").replace("\t", " ")


def _numeric(kind: str, values: list[Any]) -> bool:
    if kind:
        return kind.split("(")[0] in _NUMERIC
    present = [v for v in values if v is not None]
    return bool(present) and all(isinstance(v, int | float | Decimal) and not isinstance(v, bool)
                                 for v in present)


def _cut(text: str, width: int) -> str:
    if cell_len(text) <= width:
        return text
    return set_cell_size(text, max(width - 1, 0)) + ELLIPSIS if width else ""


def _least(natural: list[int], header: list[int]) -> list[int]:
    """How narrow each column may get: its name whole (or MIN_COLUMN), never wider than needed.

    Fewer columns, each one readable, say more than many cut to a few letters.
    """
    return [min(w, max(h, MIN_COLUMN)) for w, h in zip(natural, header, strict=True)]


def _shown(natural: list[int], least: list[int], width: int | None) -> list[int]:
    """The indexes of the columns that fit: as many as can, from both ends, first first."""
    n = len(natural)
    if width is None or sum(natural) + 3 * n + 1 <= width:
        return list(range(n))
    left, right = [], []
    for i in range(n):  # alternate: first, last, second, second-to-last ...
        index = i // 2 if i % 2 == 0 else n - 1 - i // 2
        trial = sorted(left + right + [index])
        elided = len(trial) < n
        need = sum(least[j] for j in trial) + 3 * len(trial) + 1 + (4 if elided else 0)
        if need > width and trial != [0]:
            break
        (left if i % 2 == 0 else right).append(index)
    return sorted(left + right)


def _fit(natural: list[int], least: list[int], width: int) -> list[int]:
    """Column widths within ``width`` (borders included): the widest columns give way first.

    Every column wider than a cap is cut to it (but not below its ``least``); the cap is
    the largest that fits. When even the least widths do not fit, those are cut too.
    """
    budget = max(width - (3 * len(natural) + 1), len(natural))
    if sum(natural) <= budget:
        return list(natural)
    if sum(least) > budget:
        least = [1] * len(natural)

    def widths(cap: int) -> list[int]:
        return [max(low, min(w, cap)) for w, low in zip(natural, least, strict=True)]

    lo, hi = 1, max(natural)
    while lo < hi:  # the largest cap whose widths still fit
        cap = (lo + hi + 1) // 2
        if sum(widths(cap)) <= budget:
            lo = cap
        else:
            hi = cap - 1
    return widths(lo)


def render_result(columns: Sequence[str], rows: Iterable[Sequence[Any]], *,
                  types: Sequence[str] | None = None, out: TextIO | None = None,
                  width: int | None = None) -> int:
    """Print a query's rows as a box fitted to ``width`` (None: every value whole).

    Under the box: '<n> rows', plus how many columns were shown when some were left out.
    ``types`` (the DuckDB type names) add a second header line. Returns the row count.
    """
    out = out or sys.stdout
    values = [list(row) for row in rows]
    data = [[_text(v) for v in row] for row in values]
    kinds = list(types) if types is not None else [""] * len(columns)
    header = [str(c) for c in columns]
    natural = [max([cell_len(header[i]), cell_len(kinds[i]) if types is not None else 0,
                    *(cell_len(r[i]) for r in data)]) for i in range(len(header))]
    least = _least(natural, [cell_len(h) for h in header])
    shown = _shown(natural, least, width)
    elided = len(shown) < len(header)
    cols = [(i, natural[i], least[i]) for i in shown]
    if elided:  # the '…' column sits where the left-out columns were
        at = next((k for k, i in enumerate(shown) if i != k), len(shown))
        cols.insert(at, (-1, 1, 1))
    widths = [w for _, w, _ in cols]
    if width is not None:
        widths = _fit(widths, [low for _, _, low in cols], width)
    right = {i for i in shown if _numeric(kinds[i], [r[i] for r in values[:100]])}

    def line(cells: list[str], align_right: bool = True) -> str:
        parts = []
        for (i, _, _), w, text in zip(cols, widths, cells, strict=True):
            text = _cut(text, w)
            pad = " " * (w - cell_len(text))
            parts.append(pad + text if align_right and i in right else text + pad)
        return "│ " + " │ ".join(parts) + " │"

    def pick(values: list[str]) -> list[str]:
        return [ELLIPSIS if i < 0 else values[i] for i, _, _ in cols]

    rule = "─┼─".join("─" * w for w in widths)
    print("┌─" + "─┬─".join("─" * w for w in widths) + "─┐", file=out)
    print(line(pick(header), align_right=False), file=out)
    if types is not None:
        print(line(pick([k.lower() for k in kinds]), align_right=False), file=out)
    print("├─" + rule + "─┤", file=out)
    for row in data:
        print(line(pick(row)), file=out)
    print("└─" + "─┴─".join("─" * w for w in widths) + "─┘", file=out)
    footer = f"{len(data)} row{'' if len(data) == 1 else 's'}"
    if elided:
        footer += f"  {len(header)} columns ({len(shown)} shown)"
    print(footer, file=out)
    return len(data)


__all__ = ["ELLIPSIS", "SUFFIX_FORMATS", "OutputFormat", "converter", "csv_value", "file_format",
           "iso_duration", "json_columns", "json_value", "render_result", "render_rows",
           "terminal_width"]

"""Query rows as the DuckDB command line shows them, and the file format of --out."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from cartfhir.errors import UsageError
from cartfhir.render import file_format, render_result, render_rows, terminal_width

WIDE = [f"column_{i}" for i in range(12)]


def _render(columns, rows, **kwargs) -> list[str]:  # noqa: ANN001
    out = io.StringIO()
    render_result(columns, rows, out=out, **kwargs)
    return out.getvalue().splitlines()


def test_a_wide_result_fits_the_width_behind_an_ellipsis_column() -> None:
    lines = _render(WIDE, [[f"value_{i}" for i in range(12)]] * 3, width=60)
    assert max(len(line) for line in lines) <= 60
    header = [c.strip() for c in lines[1].strip("│").split("│")]
    assert header[0] == "column_0" and header[-1].startswith("column_")
    assert "…" in header and len(header) < len(WIDE)
    shown = len(header) - 1
    assert lines[-1] == f"3 rows  12 columns ({shown} shown)"


def test_long_values_are_cut_with_an_ellipsis_and_numbers_align_right() -> None:
    lines = _render(["n", "text"], [[7, "y" * 200], [12345, None]], width=40)
    assert all(len(line) == 40 for line in lines[:-1])
    assert lines[3].endswith("y… │") and lines[3].startswith("│     7 │")
    assert "NULL" in lines[4]  # null is not an empty string
    assert lines[-1] == "2 rows"


def test_without_a_width_every_value_is_whole() -> None:
    lines = _render(WIDE, [["x" * 300] * 12], width=None)
    assert lines[3].count("x" * 300) == 12
    assert lines[-1] == "1 row"


def test_an_empty_result_shows_its_header_and_0_rows() -> None:
    lines = _render(["site", "n"], [], width=80)
    assert [c.strip() for c in lines[1].strip("│").split("│")] == ["site", "n"]
    assert lines[-1] == "0 rows"


def test_types_are_shown_under_the_column_names() -> None:
    lines = _render(["n", "counts"], [[1, '{"a": 1}']], types=["BIGINT", "JSON"], width=None)
    assert [c.strip() for c in lines[2].strip("│").split("│")] == ["bigint", "json"]


def test_terminal_width_comes_from_columns_else_the_terminal_else_none(
        monkeypatch: pytest.MonkeyPatch) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setenv("COLUMNS", "60")
    assert terminal_width(io.StringIO()) == 60
    monkeypatch.delenv("COLUMNS")
    assert terminal_width(io.StringIO()) is None  # a pipe or a file: nothing is cut
    assert isinstance(terminal_width(Tty()), int)


@pytest.mark.parametrize(("name", "given", "expected"), [
    ("rows.csv", None, "csv"), ("rows.JSON", None, "json"), ("r.parquet", None, "parquet"),
    ("rows.csv", "csv", "csv")])
def test_the_format_of_a_file_comes_from_its_suffix(name: str, given: str | None,
                                                    expected: str) -> None:
    assert file_format(Path(name), ("csv", "json", "parquet"), given) == expected


def test_an_unknown_or_contradicted_suffix_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match=r"\.csv \(csv\), \.json \(json\), \.parquet"):
        file_format(Path("rows.txt"), ("csv", "json", "parquet"))
    with pytest.raises(UsageError, match=r"\.csv \(csv\), \.parquet \(parquet\)$"):
        file_format(Path("rows.json"), ("parquet", "csv"))  # 'view --out' writes no JSON
    with pytest.raises(UsageError, match="is a csv file but --format says json"):
        file_format(Path("rows.csv"), ("csv", "json"), "json")


def test_json_columns_are_written_as_objects() -> None:
    out = io.StringIO()
    render_rows(["run", "counts", "many"], [["r1", '{"site_a": {"inserted": 3}}', ['[1]', None]]],
                fmt="json", out=out, types=["VARCHAR", "JSON", "JSON[]"])
    assert json.loads(out.getvalue()) == [
        {"run": "r1", "counts": {"site_a": {"inserted": 3}}, "many": [[1], None]}]


# Values Python's json module would write as non-JSON (NaN), as a Python repr (b'abc') or
# as a string of JSON depending on where the JSON sits: each kind once, at the top level
# and nested, so the conversion is checked by type at any depth.
HOSTILE = ("""select 'nan'::double n, 'inf'::double i, -'inf'::double ni,"""
           """ {'x': '{"q":1}'::json} s, ['{"a":1}'::json] l, 'abc'::blob b,"""
           """ interval 1 day iv, interval '1 day 03:04:05.5' iv2, -interval 90 minute neg,"""
           """ {'b': 'x'::blob, 'n': 'nan'::float} sb, ['nan'::double, 1.5] ln,"""
           """ map {'k': '[1]'::json} m, '[NaN]'::json jn, [{'j': '2'::json}] deep""")
EXPECTED = {"n": None, "i": None, "ni": None, "s": {"x": {"q": 1}}, "l": [{"a": 1}],
            "b": "YWJj", "iv": "P1D", "iv2": "P1DT3H4M5.5S", "neg": "-PT1H30M",
            "sb": {"b": "eA==", "n": None}, "ln": [None, 1.5], "m": {"k": [1]},
            "jn": [None], "deep": [{"j": 2}]}


def strict_json(text: str):  # noqa: ANN201
    """json.loads that refuses NaN and Infinity, as JSON readers outside Python do."""
    def refuse(name: str) -> None:
        raise ValueError(f"not JSON: {name}")
    return json.loads(text, parse_constant=refuse)


@pytest.fixture
def empty_db(tmp_path: Path) -> Path:
    import duckdb
    path = tmp_path / "empty.duckdb"
    duckdb.connect(str(path)).close()
    return path


def test_query_json_is_strict_json_whatever_the_types(
        empty_db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from cartfhir.cli import run_cli
    assert run_cli(["query", HOSTILE, "--db", str(empty_db), "--format", "json"]) == 0
    assert strict_json(capsys.readouterr().out) == [EXPECTED]


def test_query_csv_writes_nested_values_as_json_blobs_as_base64_intervals_as_iso(
        empty_db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import csv

    from cartfhir.cli import run_cli
    assert run_cli(["query", HOSTILE, "--db", str(empty_db), "--format", "csv"]) == 0
    header, row = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    got = dict(zip(header, row, strict=True))
    assert (got["n"], got["i"], got["ni"]) == ("nan", "inf", "-inf")  # CSV readers take these
    for name in ("s", "l", "sb", "ln", "m", "jn", "deep"):
        assert strict_json(got[name]) == EXPECTED[name], name
    for name in ("b", "iv", "iv2", "neg"):
        assert got[name] == EXPECTED[name], name

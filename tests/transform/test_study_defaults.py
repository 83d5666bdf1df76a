"""Every window and threshold name the SQL and the endpoint registry use is defined.

SQL reads ref.window / ref.threshold by name; a misspelt name matches no row and turns
into a silent NULL. The names are found where the SQL looks them up (``name = '...'``,
``CASE w.name WHEN '...'``, the lists a window name is matched against,
``list_contains(x.windows, '...')``) and in the endpoint registry's ``{window.NAME}`` /
``{threshold.NAME}`` placeholders.
"""

from __future__ import annotations

import re
from importlib import resources

import yaml

from cartfhir.graph import load_graph, read_text

_NOISE = re.compile(r"--[^\n]*")
_EQUALS = re.compile(r"\b(?:\w+\.)?(?:window_)?name\s*=\s*'([a-z_0-9]+)'")
_CASE = re.compile(r"\bCASE\s+\w+\.(?:window_)?name\s+(.*?)\bEND\b", re.S)
_WHEN = re.compile(r"\bWHEN\s+'([a-z_0-9]+)'")
_MATCHED = re.compile(r"list_contains\((?:(?!list_contains).)*?,\s*\w+\.name\)", re.S)
_LISTED = re.compile(r"\[([^\]]*)\]")
_LITERAL = re.compile(r"'([a-z_0-9]+)'")
# list_contains is DuckDB's spelling, array_contains the one both engines accept
_IN_WINDOWS = re.compile(
    r"(?:list|array)_contains\(\s*(?:\w+\.)?windows\s*,\s*'([a-z_0-9]+)'\s*\)")
_PLACEHOLDER = re.compile(r"\{(window|threshold)\.([a-z_0-9]+)\}")


def _defaults() -> dict[str, set[str]]:
    text = resources.files("cartfhir.transform").joinpath("study_defaults.yaml").read_text(
        encoding="utf-8")
    data = yaml.safe_load(text)
    return {"window": set(data["windows"]), "threshold": set(data["thresholds"])}


def sql_names(sql: str) -> set[str]:
    """Window and threshold names a SQL text looks up (comments ignored)."""
    code = _NOISE.sub(" ", sql)
    names = set(_EQUALS.findall(code)) | set(_IN_WINDOWS.findall(code))
    for case in _CASE.findall(code):
        names |= set(_WHEN.findall(case))
    for matched in _MATCHED.findall(code):
        for listed in _LISTED.findall(matched):
            names |= set(_LITERAL.findall(listed))
    return names


def _sql_files() -> dict[str, str]:
    files = {n.path: read_text(n.path) for n in load_graph().nodes if n.kind == "sql"}
    folder = resources.files("cartfhir.analyze")
    files |= {f"analyze/{f.name}": f.read_text(encoding="utf-8") for f in folder.iterdir()
              if f.name.endswith(".sql")}
    return files


def test_the_scanner_finds_names_in_each_form() -> None:
    sql = ("SELECT max(value) FILTER (WHERE name = 'a') FROM ref.threshold -- name = 'z'\n"
           "JOIN w ON w.name = 'b' AND x.window_name = 'c'\n"
           "SELECT CASE w.name WHEN 'd' THEN 'not_a_name' ELSE 'e' END,\n"
           "list_contains(CASE p.category WHEN 'cat' THEN ['f', 'g'] ELSE ['h'] END, w.name)\n"
           "WHERE list_contains(x.windows, 'i') OR array_contains(x.windows, 'j')")
    assert sql_names(sql) == {"a", "b", "c", "d", "f", "g", "h", "i", "j"}


def test_every_name_the_sql_looks_up_is_in_study_defaults() -> None:
    known = set().union(*_defaults().values())
    found = {path: sql_names(sql) for path, sql in _sql_files().items()}
    unknown = {path: sorted(names - known) for path, names in found.items() if names - known}
    assert unknown == {}, "define these in transform/study_defaults.yaml or fix the SQL"
    used = set().union(*found.values())
    assert {"horizon_days", "dose", "lab_daily", "severe_min_grade", "early_infection"} <= used


def test_every_registry_placeholder_names_a_defined_window_or_threshold() -> None:
    defaults = _defaults()
    text = resources.files("cartfhir.analyze").joinpath("endpoints.yaml").read_text(
        encoding="utf-8")
    placeholders = _PLACEHOLDER.findall(text)
    assert placeholders, "endpoints.yaml has no {window.x} / {threshold.x} placeholders"
    unknown = sorted(f"{kind}.{name}" for kind, name in placeholders
                     if name not in defaults[kind])
    assert unknown == []

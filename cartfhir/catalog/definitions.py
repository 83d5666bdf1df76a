"""The numeric tables of docs/clinical-definitions.md, generated from where the values live.

The prose of that page is written by hand; every number in it (windows, thresholds,
CTCAE cut-offs, codes, endpoints, EFS definitions) sits between
``<!-- generated: NAME -->`` and ``<!-- end: NAME -->`` and comes from
``cartfhir/transform/study_defaults.yaml``, ``cartfhir/transform/terminology/*.csv`` and
``cartfhir/analyze/endpoints.yaml``, so the page cannot drift from the code.
tests/catalog/test_definitions.py fails when the committed page is stale; refresh it with

    .venv/bin/python -m cartfhir.catalog.definitions
"""

from __future__ import annotations

import csv
import io
import re
import sys
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

__all__ = ["BLOCKS", "DOC", "render_block", "update"]

DOC = Path(__file__).resolve().parents[2] / "docs" / "clinical-definitions.md"
MAX_CODES = 8  # codes listed per concept and system; the CSV has the rest
_BLOCK = re.compile(
    r"(<!-- generated: (?P<name>[a-z_]+) -->\n)(?P<body>.*?)(<!-- end: (?P=name) -->)", re.DOTALL)
# "  name: [lo, hi]   # comment" / "  name: 3   # comment" in study_defaults.yaml
_ENTRY = re.compile(r"^  (?P<name>[a-z_0-9]+):\s*(?P<value>[^#]+?)\s*(?:#\s*(?P<note>.*))?$")


def _text(package: str, name: str) -> str:
    return resources.files(package).joinpath(name).read_text(encoding="utf-8")


def _csv(name: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(_text("cartfhir.transform", f"terminology/{name}"))))


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ").strip()


def _table(columns: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _study_entries(section: str) -> list[tuple[str, str, str]]:
    """(name, value, comment) of one section of study_defaults.yaml, comments included."""
    text = _text("cartfhir.transform", "study_defaults.yaml")
    values = yaml.safe_load(text)[section]
    notes: dict[str, str] = {}
    current = None
    for line in text.splitlines():
        if re.match(r"^[a-z_]+:", line):
            current = line.split(":", 1)[0]
        elif current == section and (match := _ENTRY.match(line)):
            notes[match["name"]] = match["note"] or ""
    out = []
    for name, value in values.items():
        shown = f"{value[0]} to {value[1]}" if isinstance(value, list) else str(value)
        out.append((name, shown, notes.get(name, "")))
    return out


def _windows() -> str:
    return _table(["window", "days (inclusive)", "what it bounds"],
                  [list(entry) for entry in _study_entries("windows")])


def _thresholds() -> str:
    return _table(["threshold", "default", "meaning"],
                  [list(entry) for entry in _study_entries("thresholds")])


def _grade_cuts() -> str:
    rows = [[r["concept"], r["basis"], r["direction"], r["bound"], r["grade"], r["note"]]
            for r in _csv("grade_cuts.csv")]
    return _table(["concept", "basis", "direction", "bound", "grade", "note"], rows)


def _concepts() -> str:
    systems = {r["system"]: r["name"] for r in _csv("code_systems.csv")}
    codes: dict[str, dict[str, list[str]]] = {}
    for row in _csv("concept_map.csv"):
        by_system = codes.setdefault(row["concept"], {})
        by_system.setdefault(systems.get(row["system"], row["system"]), []).append(row["code"])
    rows = []
    for concept in _csv("concepts.csv"):
        listed = []
        for system, values in codes.get(concept["concept"], {}).items():
            more = f" and {len(values) - MAX_CODES} more" if len(values) > MAX_CODES else ""
            listed.append(f"{system}: {', '.join(values[:MAX_CODES])}{more}")
        rows.append([concept["concept"], concept["kind"], concept["canonical_unit"],
                     concept["description"], "; ".join(listed) or "text patterns only"])
    return _table(["concept", "kind", "unit", "description", "default codes"], rows)


def _registry() -> dict[str, Any]:
    return yaml.safe_load(_text("cartfhir.analyze", "endpoints.yaml"))


def _fill(template: str) -> str:
    """An endpoints.yaml label with the default windows and thresholds filled in."""
    study = yaml.safe_load(_text("cartfhir.transform", "study_defaults.yaml"))

    def value(match: re.Match[str]) -> str:
        kind, name = match[1], match[2]
        if kind == "window":
            lo, hi = study["windows"][name]
            return f"{lo}-{hi}"
        return str(study["thresholds"][name])
    return re.sub(r"\{(window|threshold)\.([a-z_0-9]+)\}", value, template)


def _endpoints() -> str:
    registry = _registry()
    sections = registry.get("sections", {})
    rows = [[e["key"], e["kind"], _fill(e["label"]),
             _fill(sections.get(e.get("section", ""), e.get("section", "")))]
            for e in registry["endpoints"]]
    return _table(["endpoint", "kind", "label (default definitions)", "report section"], rows)


def _efs() -> str:
    registry = _registry()
    labels = registry.get("efs_labels", {})
    rows = []
    for definition in registry["efs"]:
        events = [labels.get(e["type"], e["type"]) for e in definition["events"]]
        rows.append([definition["name"], definition.get("description", ""),
                     ", ".join(events), definition.get("censor", "")])
    return _table(["definition", "description", "events (first wins on the same day)",
                   "censored at"], rows)


def _grading() -> str:
    rows = [[g["name"], _fill(g["scale"]), _fill(g["how"])] for g in _registry()["grading"]]
    return _table(["endpoint", "grading scale", "how cartfhir obtains the grade"], rows)


def _response() -> str:
    rows = [[r["name"], _fill(r["definition"]), _fill(r["not_evaluated"] or "") or "–"]
            for r in _registry()["response"]]
    return _table(["response", "what cartfhir evaluates (default thresholds)",
                   "not evaluated from the data"], rows)


def _text_results() -> str:
    """The words read instead of a number, then what each means per concept."""
    words = _table(["result", "written as (RE2, on the lower-cased text)", "note"],
                   [[r["result"], f"`{r['pattern']}`", r["note"]]
                    for r in _csv("qualitative_words.csv")])
    units = {r["concept"]: r["canonical_unit"] for r in _csv("concepts.csv")}
    meanings = _table(
        ["concept", "result", "read as", "note"],
        [[r["concept"], r["result"],
          f"{r['comparator']} {r['value']} {units[r['concept']]}" if r["value"]
          else "no number: quarantined (no_detection_limit)", r["note"]]
         for r in _csv("qualitative_results.csv")])
    return words + "\n" + meanings


BLOCKS: dict[str, Callable[[], str]] = {
    "windows": _windows, "thresholds": _thresholds, "grade_cuts": _grade_cuts,
    "concepts": _concepts, "endpoints": _endpoints, "efs": _efs,
    "grading": _grading, "response": _response,
    "text_results": _text_results,
}


def render_block(name: str) -> str:
    return BLOCKS[name]()


def update(text: str) -> str:
    """``text`` with every generated block replaced by its current content."""
    seen: set[str] = set()

    def replace(match: re.Match[str]) -> str:
        name = match["name"]
        if name not in BLOCKS:
            raise KeyError(f"unknown generated block {name!r} (known: {', '.join(BLOCKS)})")
        seen.add(name)
        return match[1] + render_block(name) + match[4]
    updated = _BLOCK.sub(replace, text)
    missing = set(BLOCKS) - seen
    if missing:
        raise KeyError(f"the page lacks generated blocks: {', '.join(sorted(missing))}")
    return updated


def main() -> None:
    DOC.write_text(update(DOC.read_text(encoding="utf-8")), encoding="utf-8")
    print(f"updated {DOC}", file=sys.stderr)


if __name__ == "__main__":
    main()

"""The endpoint registry (``endpoints.yaml``), rendered with the windows and thresholds in use.

``load()`` gives the file as data; ``render(raw, windows, thresholds)`` fills its label,
value and title templates and returns a ``Registry``; ``effective(con)`` renders it
with the database's own ``ref.window`` and ``ref.threshold`` (what the data was built
with, so it also holds for a pooled database). ``build_endpoint`` writes the rendered
endpoints to ``analysis.endpoint``. The report, the CLI summary and the pool read the
registry; no endpoint list lives in Python.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

import duckdb
import pandas as pd
import yaml

from cartfhir.config import threshold_problem
from cartfhir.db import write_frame
from cartfhir.errors import ConfigError, DatabaseError

SOURCE = "cartfhir/analyze/endpoints.yaml"
KINDS = ("proportion", "continuous", "ordinal")
PLACEHOLDER = re.compile(r"\{(window|threshold)\.([a-z0-9_]+)\}")
Windows = dict[str, tuple[int, int]]
Thresholds = dict[str, float]


@dataclass(frozen=True)
class Endpoint:
    key: str
    kind: str  # proportion | continuous | ordinal
    value: str  # DuckDB expression over one cohort.episode_endpoints row, thresholds filled in
    label: str
    section: str
    headline: bool = False
    heterogeneity: bool = False
    figure: str | None = None
    figure_label: str | None = None
    concept: str | None = None
    symlog: float | None = None
    digits: int = 1  # decimals of the report's medians and quartiles
    paired: bool = True  # false where a paired test is meaningless (age grows every round)


@dataclass(frozen=True)
class Figure:
    key: str
    section: str
    title: str


@dataclass(frozen=True)
class EfsEvent:
    type: str
    date: str | None = None  # a date column: the event happens then (when after the infusion)
    day: int | None = None  # or a fixed day, when every column in `when` has a listed value
    when: tuple[tuple[str, tuple[Any, ...]], ...] = ()


@dataclass(frozen=True)
class EfsDefinition:
    name: str
    description: str
    events: tuple[EfsEvent, ...]
    censor: str


@dataclass(frozen=True)
class Grading:
    """How one toxicity endpoint is graded: its scale and how cartfhir gets the grade."""

    name: str
    scale: str
    how: str


@dataclass(frozen=True)
class Response:
    """One response category: what cartfhir evaluates, and what of the published
    definition it cannot (said in the report rather than implied)."""

    name: str
    definition: str
    not_evaluated: str


@dataclass(frozen=True)
class Registry:
    endpoints: tuple[Endpoint, ...]
    sections: dict[str, str]  # key -> title, in report order
    figures: tuple[Figure, ...]
    efs: tuple[EfsDefinition, ...]
    rounds: tuple[int, int]  # (CART1, CART2)
    windows: Windows
    efs_labels: dict[str, str] = field(default_factory=dict)  # EFS event type -> its label
    grading: tuple[Grading, ...] = ()  # grading scales (Methods, clinical-definitions.md)
    response: tuple[Response, ...] = ()  # response definitions, thresholds filled in

    @property
    def headline(self) -> list[Endpoint]:
        return [e for e in self.endpoints if e.headline]

    @property
    def heterogeneity(self) -> list[Endpoint]:
        return [e for e in self.endpoints if e.heterogeneity]

    def in_figure(self, figure: str) -> list[Endpoint]:
        return [e for e in self.endpoints if e.figure == figure]

    def label(self, key: str) -> str:
        return next((e.label for e in self.endpoints if e.key == key), key)


@cache
def _text() -> str:
    return resources.files("cartfhir.analyze").joinpath("endpoints.yaml").read_text("utf-8")


def load() -> dict[str, Any]:
    """endpoints.yaml as data (a fresh copy each call)."""
    return yaml.safe_load(_text())


def _number(name: str, value: Any) -> str:
    """A threshold as a SQL literal: a finite number (whole when declared so), else an error."""
    if problem := threshold_problem(name, value):
        raise ConfigError(f"ref.threshold: {problem}; set it in the config's "
                          "transform.thresholds and run 'cartfhir transform'")
    value = float(value)
    return str(int(value)) if value.is_integer() else repr(value)


def _filler(windows: Windows, thresholds: Thresholds, where: str):
    def fill(match: re.Match[str]) -> str:
        kind, name = match.groups()
        known = windows if kind == "window" else thresholds
        if name not in known:
            table = f"ref.{kind}"
            raise ConfigError(
                f"{SOURCE}: {where} names {kind} {name!r}, which {table} does not have "
                f"(known: {', '.join(sorted(known))}); the database predates this "
                "cartfhir: run 'cartfhir transform' to rebuild ref.* (or fix the name in "
                f"{SOURCE})")
        if kind == "window":
            lo, hi = known[name]
            return f"{lo}-{hi}"
        return _number(name, known[name])
    return fill


def _render_text(text: str, windows: Windows, thresholds: Thresholds, where: str) -> str:
    return PLACEHOLDER.sub(_filler(windows, thresholds, where), str(text))


BLOCKS = {"grading": (Grading, ("name", "scale", "how")),
          "response": (Response, ("name", "definition", "not_evaluated"))}


def _entries(raw: dict[str, Any], block: str, fill: Any) -> tuple[Any, ...]:
    """The ``grading`` or ``response`` list: each entry exactly its fields, text filled in."""
    kind, fields = BLOCKS[block]
    entries = raw.get(block)
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{SOURCE}: {block} must be a non-empty list")
    out = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or set(entry) != set(fields):
            raise ConfigError(f"{SOURCE}: {block}[{i}] must have exactly the fields "
                              f"{', '.join(fields)}")
        out.append(kind(**{f: fill("" if entry[f] is None else entry[f], f"{block}[{i}] {f}")
                           for f in fields}))
    return tuple(out)


def render(raw: dict[str, Any], windows: Windows, thresholds: Thresholds) -> Registry:
    """The registry with every template filled from ``windows`` and ``thresholds``."""
    def fill(text: Any, where: str) -> Any:
        return None if text is None else _render_text(text, windows, thresholds, where)

    sections = {k: fill(v, f"section {k}") for k, v in raw["sections"].items()}
    endpoints = []
    for e in raw["endpoints"]:
        where = f"endpoint {e['key']}"
        if e["kind"] not in KINDS or e["section"] not in sections:
            raise ConfigError(f"{SOURCE}: {where}: kind must be one of {', '.join(KINDS)} and "
                              f"section one of {', '.join(sections)}")
        if not isinstance(e.get("paired", True), bool):
            raise ConfigError(f"{SOURCE}: {where}: paired must be true or false, got "
                              f"{e['paired']!r}")
        endpoints.append(Endpoint(**{"digits": 0 if e["kind"] == "ordinal" else 1, **e,
                                     "value": fill(e["value"], f"{where} value"),
                                     "label": fill(e["label"], f"{where} label"),
                                     "figure_label": fill(e.get("figure_label"), where)}))
    figures = tuple(Figure(f["key"], f["section"], fill(f["title"], f"figure {f['key']}"))
                    for f in raw["figures"])
    efs = tuple(EfsDefinition(
        name=d["name"], description=d["description"], censor=d["censor"],
        events=tuple(EfsEvent(type=v["type"], date=v.get("date"), day=v.get("day"),
                              when=tuple((c, tuple(ok)) for c, ok in v.get("when", {}).items()))
                     for v in d["events"]))
        for d in raw["efs"])
    efs_labels = {str(k): str(v) for k, v in (raw.get("efs_labels") or {}).items()}
    if unlabelled := sorted({e.type for d in efs for e in d.events} - set(efs_labels)):
        raise ConfigError(f"{SOURCE}: EFS event type(s) {', '.join(unlabelled)} have no "
                          "label; add them to efs_labels")
    rounds = (int(fill(raw["rounds"]["cart1"], "rounds")),
              int(fill(raw["rounds"]["cart2"], "rounds")))
    return Registry(endpoints=tuple(endpoints), sections=sections, figures=figures, efs=efs,
                    rounds=rounds, windows=dict(windows), efs_labels=efs_labels,
                    grading=_entries(raw, "grading", fill),
                    response=_entries(raw, "response", fill))


def effective(con: duckdb.DuckDBPyConnection) -> Registry:
    """The registry rendered with this database's ref.window and ref.threshold."""
    try:
        windows = {n: (lo, hi) for n, lo, hi in con.execute(
            "SELECT name, lo, hi FROM ref.window").fetchall()}
        thresholds = dict(con.execute("SELECT name, value FROM ref.threshold").fetchall())
    except duckdb.CatalogException as exc:
        raise DatabaseError(f"{exc}; run 'cartfhir transform' first (the endpoint labels "
                            "come from ref.window and ref.threshold)") from None
    if unset := sorted(n for n, (lo, hi) in windows.items() if lo is None or hi is None):
        raise ConfigError(f"ref.window: window(s) {', '.join(unset)} have no bounds; run "
                          "'cartfhir transform' to rebuild ref.*")
    return render(load(), windows, thresholds)


ENDPOINT_COLUMNS = ["position", "key", "label", "kind", "value", "section", "section_title",
                    "headline", "heterogeneity", "figure", "figure_label", "concept"]


def endpoint_frame(registry: Registry) -> pd.DataFrame:
    """The rows of analysis.endpoint: the endpoints as this database renders them."""
    rows = [[i, e.key, e.label, e.kind, e.value, e.section, registry.sections[e.section],
             e.headline, e.heterogeneity, e.figure, e.figure_label, e.concept]
            for i, e in enumerate(registry.endpoints, start=1)]
    frame = pd.DataFrame(rows, columns=ENDPOINT_COLUMNS)
    return frame.astype({"position": "int32", "headline": bool, "heterogeneity": bool})


def build_endpoint(con: duckdb.DuckDBPyConnection, context: Any = None) -> int:
    """Builder of analysis.endpoint (the registry rendered with ref.window/ref.threshold)."""
    frame = endpoint_frame(effective(con))
    con.execute("CREATE SCHEMA IF NOT EXISTS analysis")
    return write_frame(con, "analysis.endpoint", frame)


def defaults() -> Registry:
    """The registry as the study defaults render it, without a database (tests, docs)."""
    data = yaml.safe_load(resources.files("cartfhir.transform").joinpath(
        "study_defaults.yaml").read_text("utf-8"))
    return render(load(), {k: tuple(v) for k, v in data["windows"].items()}, data["thresholds"])

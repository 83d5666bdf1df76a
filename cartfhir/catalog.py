"""Every DuckDB table cartfhir writes, with its grain and column descriptions, in one place.

``load_catalog()`` reads the documentation that lives next to each table's code: the
header comment of every SQL file (``-- schema.table: ...``, ``Grain: ...``, then
``--   column  type: description`` lines), the ViewDefinitions behind ``flat.*`` and
``ref.*``'s DDL. Tables built in Python without such a file are described below, here
and nowhere else. ``render_markdown`` makes ``docs/data-dictionary.md`` from it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

LAYERS = ("raw", "flat", "harmonized", "cohort", "qa", "analysis", "meta", "ref")
LAYER_NOTES = {
    "raw": "Resources as landed, with what was rejected. Raw ids stay in this schema.",
    "flat": "One table per ViewDefinition in `cartfhir/transform/views/` (SQL-on-FHIR v2), "
            "each with a leading `site` column.",
    "harmonized": "Records mapped to study concepts, values in canonical units.",
    "cohort": "Episodes, windows, daily labs, adverse events and endpoints per CAR-T infusion.",
    "qa": "What is not used and why, what is not mapped, and the validation results.",
    "analysis": "CART1 against CART2, event-free survival after CART2, count dynamics.",
    "meta": "Runs, extraction state and the reference files each transform used.",
    "ref": "Clinical knowledge as data, rebuilt by every transform from "
           "`cartfhir/transform/terminology/`, `study_defaults.yaml` and the config.",
}

# Where the SQL files with documented headers live: (package, folder inside it).
SQL_FOLDERS = (
    ("cartfhir.extract.sql", ""),
    ("cartfhir.sql", ""),
    ("cartfhir.expectations.sql", ""),
    ("cartfhir.transform", "models/harmonized"),
    ("cartfhir.transform", "models/cohort"),
    ("cartfhir.transform", "models/qa"),
    ("cartfhir.analyze", ""),
)
VIEW_FOLDER = ("cartfhir.transform", "views")

# Tables that exist only after some kinds of extraction; a run without them is complete.
_FHIR = "created by the first extraction from a FHIR server (REST search or Bulk Data)"
_BULK = "created by the first Bulk Data $export extraction"
OPTIONAL = {
    "meta.extract_state": _FHIR,
    "meta.extract_patient": _FHIR,
    "meta.extract_request": _FHIR,
    "meta.bulk_job": _BULK,
    "raw.deleted": _BULK,
    "raw.export_error": _BULK,
}

# The types the header comments use, and what DuckDB calls them (for `schema` and tests).
DUCKDB_TYPES = {
    "text": "VARCHAR", "integer": "INTEGER", "bigint": "BIGINT", "ubigint": "UBIGINT",
    "double": "DOUBLE", "boolean": "BOOLEAN", "date": "DATE", "json": "JSON",
    "timestamptz": "TIMESTAMP WITH TIME ZONE", "text[]": "VARCHAR[]", "json[]": "JSON[]",
}
_TYPE_NAMES = {v: k for k, v in DUCKDB_TYPES.items()}


@dataclass(frozen=True)
class Column:
    name: str
    type: str | None
    description: str


@dataclass(frozen=True)
class Table:
    """One table: ``schema.name``, its grain, what it holds, its columns and where it is made."""

    schema: str
    name: str
    grain: str
    description: str
    columns: list[Column] = field(default_factory=list)
    source: str = ""
    optional: str | None = None  # why the table may be absent, when it may

    @property
    def full_name(self) -> str:
        return f"{self.schema}.{self.name}"

    def column(self, name: str) -> Column | None:
        return next((c for c in self.columns if c.name == name), None)


# --- tables built in Python: documented here (move each to a .sql header when it gets one)

def _cols(*specs: tuple[str, str, str]) -> list[Column]:
    return [Column(n, t, d) for n, t, d in specs]


_GROUP = "a site id, or 'all' for every site pooled"
PYTHON_TABLES = [
    Table("raw", "patient_key", "(site, patient_id)",
          "The pseudonym of every patient id seen at a site (Patient resources and subject "
          "references). The only link between raw ids and patient_key; it stays in the site.",
          _cols(("site", "text", "site id"),
                ("patient_id", "text", "the Patient id at the site (raw identifier)"),
                ("patient_key", "text", "HMAC-SHA256 of site and patient id with the site's "
                                        "secret key")),
          "cartfhir/transform/identity.py"),
    Table("meta", "reference_version", "(run_id, name, origin)",
          "Every reference file a transform loaded, with its SHA-256, so a run records "
          "exactly which knowledge produced its tables.",
          _cols(("run_id", "text", "meta.runs.run_id of the transform"),
                ("name", "text", "what the file is, e.g. 'terminology/units.csv' or "
                                 "'site_a concept map'"),
                ("origin", "text", "'package:<file>' for a default, else the file's path"),
                ("sha256", "text", "SHA-256 of the file's bytes"),
                ("lines", "integer", "lines in the file")),
          "cartfhir/transform/reference.py"),
    # analysis.* tables written from pandas frames by cartfhir/analyze (count_dynamics has
    # its header in cartfhir/analyze/dynamics.sql). The comparison's column list must equal
    # cartfhir.analyze.compare.COLUMNS (tests/test_catalog.py checks it).
    Table("analysis", "comparison", "(site, endpoint)",
          "Every endpoint of cartfhir/analyze/endpoints.yaml, CART1 against CART2, per site "
          "and pooled. Unpaired tests follow the paper (two-sided Fisher exact; Mann-Whitney U, "
          "exact without ties); paired tests use the patients who had both rounds (exact "
          "McNemar; Wilcoxon signed-rank). The table keeps small counts; the report and the "
          "CSV/JSON copies show counts below analysis.small_cell_k as '<k'.",
          _cols(("site", "text", _GROUP),
                ("endpoint", "text", "endpoint key (cartfhir/analyze/endpoints.yaml)"),
                ("kind", "text", "proportion | continuous | ordinal"),
                *((f"cart{r}_{s}", t, f"round {r}: {d}") for r in (1, 2) for s, t, d in (
                    ("n", "bigint", "episodes with a value"),
                    ("events", "bigint", "episodes with the event (proportions only)"),
                    ("median", "double", "median (continuous and ordinal only)"),
                    ("q1", "double", "first quartile"),
                    ("q3", "double", "third quartile"),
                    ("min", "double", "smallest value"),
                    ("max", "double", "largest value"))),
                ("test", "text", "unpaired test: fisher_exact | mann_whitney_exact | "
                                 "mann_whitney_asymptotic"),
                ("p_value", "double", "two-sided p of the unpaired test (null when undefined)"),
                ("paired_test", "text", "paired test: mcnemar_exact | wilcoxon_signed_rank"),
                ("paired_p_value", "double", "two-sided p of the paired test"),
                ("n_pairs", "bigint", "patients with a value in both rounds")),
          "cartfhir/analyze/compare.py"),
    Table("analysis", "efs", "(site, patient_key, definition)",
          "Event-free survival after CART2, per patient and definition. 'paper': relapse, "
          "chemotherapy, HSCT or death is an event; 'standard': death, relapse or no response "
          "(at day 0) is an event. Without an event a patient is censored at last contact.",
          _cols(("site", "text", "site id"),
                ("patient_key", "text", "HMAC pseudonym"),
                ("definition", "text", "paper | standard"),
                ("event", "boolean", "true when an event ended the time"),
                ("event_type", "text", "paper: relapse | chemotherapy | hsct | death | censored; "
                                       "standard: relapse | death | no_response | censored"),
                ("time_days", "double", "days from the CART2 infusion to the event or "
                                        "censoring")),
          "cartfhir/analyze/efs.py"),
    Table("analysis", "efs_summary", "(site, definition)",
          "Kaplan-Meier estimate of EFS after CART2: median with its 95 % CI.",
          _cols(("site", "text", _GROUP),
                ("definition", "text", "paper | standard"),
                ("n", "bigint", "patients"),
                ("events", "bigint", "patients with an event"),
                ("median_days", "double", "median EFS in days (null: not reached)"),
                ("median_ci_low", "double", "lower 95 % bound of the median (null: not "
                                            "estimable)"),
                ("median_ci_high", "double", "upper 95 % bound of the median (null: not "
                                             "reached)")),
          "cartfhir/analyze/efs.py"),
    Table("analysis", "efs_curve", "(site, definition, time)",
          "The Kaplan-Meier steps behind analysis.efs_summary, for plots: survival just after "
          "each distinct event or censoring time.",
          _cols(("site", "text", _GROUP),
                ("definition", "text", "paper | standard"),
                ("time", "double", "days after the CART2 infusion"),
                ("at_risk", "bigint", "patients at risk just before time"),
                ("events", "bigint", "events at time"),
                ("censored", "bigint", "patients censored at time"),
                ("survival", "double", "survival just after time"),
                ("ci_low", "double", "pointwise 95 % lower bound (null where undefined)"),
                ("ci_high", "double", "pointwise 95 % upper bound (null where undefined)")),
          "cartfhir/analyze/efs.py"),
]

# ref.*: columns and types come from cartfhir.transform.reference.REF_DDL; these say what
# each table is for and the columns that need a word.
REF_DOCS: dict[str, tuple[str, str, dict[str, str]]] = {
    "concept": ("(concept)", "Study concepts with their canonical unit and plausible range "
                "(terminology/concepts.csv).",
                {"kind": "observation | condition | procedure | ...",
                 "unit_group": "the ref.unit group its units convert within",
                 "plausible_min": "smallest plausible value in canonical_unit",
                 "plausible_max": "largest plausible value in canonical_unit"}),
    "concept_map": ("(site, resource_type, system, code)", "Code maps: a code of a resource "
                    "type means a concept (package defaults, study and site maps).",
                    {"site": "null for the defaults and study maps",
                     "system": "as system_key() spells it (trimmed, lower case, http, no "
                               "'www.', trailing '/' or '|version')",
                     "grade": "a grade the code itself carries (D89.833 -> 3)",
                     "priority": "higher wins: site 15 > study 12 > default 10",
                     "source": "the file the row came from"}),
    "text_pattern": ("(site, resource_type, concept, pattern)", "Regular expressions on "
                     "code text and displays, for codes without a settled standard.",
                     {"site": "null for the defaults",
                      "pattern": "regular expression (RE2), matched case-insensitively",
                      "refines": "the concept a map must have decided for this pattern to "
                                 "refine it (lymphodepletion refines chemotherapy); null: "
                                 "the pattern never overrules a map",
                      "source": "the file the row came from"}),
    "unit": ("(unit_group, unit_key)", "Unit spellings and their conversion to the group's "
             "canonical unit: canonical = value * factor + offset.",
             {"unit_key": "normalized spelling; spellings of one unit share it"}),
    "severity_grade": ("(system, code)", "Condition.severity codes as a last-resort grade.", {}),
    "body_site": ("(body_site, system, code)", "Relapse sites (marrow, cns, testis) by code "
                  "or text pattern.", {"rank": "order when several are joined"}),
    "target": ("(target)", "CAR targets recognised in product text.", {}),
    "reference_range": ("(concept)", "Default reference ranges (canonical unit) for results "
                        "that carry none.", {}),
    "post_event": ("(event)", "Events after the infusion, by priority on the same day.", {}),
    "qualitative_result": ("(concept, pattern)", "Qualitative results ('negative') read as "
                           "a number with a comparator.", {}),
    "grade_cut": ("(concept, basis, direction, bound)", "CTCAE v5 cut-offs for lab grades.",
                  {"basis": "absolute | lln | uln | baseline",
                   "direction": "below | above"}),
    "concept_combination": ("(concept)", "Concepts one record makes by carrying all of "
                            "several codes (neutropenia + fever = febrile neutropenia).", {}),
    "code_system": ("(system)", "Standard code systems (terminology/code_systems.csv): a "
                    "coding in one is authoritative, never matched by its text.",
                    {"canonical": "the URI maps use (an OID's URI; else the system itself)",
                     "hierarchy": "prefix (ICD-10, ICD-10-CM: a map code covers the codes "
                                  "extending it, compared without dots) | null (exact codes); "
                                  "an OID takes its canonical system's",
                     "case_insensitive": "codes compare trimmed and upper-cased (ICD-10, "
                                         "PCS, CPT, HCPCS, LOINC); an OID takes its "
                                         "canonical system's"}),
    "scope_note": ("(system, pattern)", "Why an unmapped code is out of the study's scope, "
                   "from its LOINC name (terminology/scope_notes.csv); never used to map.",
                   {"pattern": "lower-case regular expression on the display",
                    "rank": "order of the notes when several apply"}),
    "window": ("(name)", "Study windows in inclusive day offsets from the infusion "
               "(study_defaults.yaml, config transform.windows).", {}),
    "threshold": ("(name)", "Study thresholds (study_defaults.yaml, config "
                  "transform.thresholds).", {}),
}
# Columns a transform adds to a ref table after creating it from REF_DDL.
REF_EXTRA = {"unit": [("unit_key", "text", 1)]}  # (name, type, position)


# --- parsing

_HEADER = re.compile(r"^--\s+([a-z_]+)\.([a-z_]+):\s*(.*)$")
_NAME = r"[a-z_][a-z0-9_]*"
_TYPE = r"(?:text|integer|bigint|ubigint|double|boolean|date|timestamptz|json)(?:\[\])?"
_NAMES = re.compile(rf"\s*({_NAME})(?:\s*\(([^)]*)\))?\s*")
_SPEC = re.compile(rf"^({_TYPE})((?:\s*,\s*{_NAME}\s+{_TYPE})*)\s*(?::\s*(.*))?$", re.S)
_GRAIN = re.compile(r"Grain:\s*(.*?[.])(?=\s+[A-Z(]|\s*$)", re.S)
_AS_IN = re.compile(r"^as in ([a-z_]+\.[a-z_]+)$")


def _entry_columns(text: str) -> list[Column]:
    """Columns from one entry: 'a, b (note) / c  type: description' (type and text optional)."""
    names: list[tuple[str, str | None]] = []
    pos = 0
    while match := _NAMES.match(text, pos):
        names.append((match.group(1), match.group(2)))
        pos = match.end()
        if pos < len(text) and text[pos] in ",/":
            pos += 1
            continue
        break
    rest = text[pos:].strip()
    kind: str | None = None
    described: dict[str, str] = {}
    if rest.startswith(":"):
        rest = rest[1:].strip()
    elif spec := _SPEC.match(rest):
        kind, more, rest = spec.group(1), spec.group(2), (spec.group(3) or "").strip()
        # 'a  double, b text: ...' gives each name its own type
        for extra in re.finditer(rf"({_NAME})\s+({_TYPE})", more or ""):
            names.append((extra.group(1), None))
            described[extra.group(1)] = extra.group(2)
    return [Column(name, described.get(name, kind),
                   f"{rest} ({note})" if note and rest else rest or (note or ""))
            for name, note in names]


def parse_sql_header(text: str, source: str = "") -> Table | None:
    """The table documented at the top of a SQL file, or None when it documents no table."""
    lines = text.splitlines()
    if not lines or not (first := _HEADER.match(lines[0])):
        return None
    prose = [first.group(3)]
    entries: list[str] = []
    for line in lines[1:]:
        if not line.startswith("--"):
            break
        body = line[2:]
        indent = len(body) - len(body.lstrip(" "))
        content = body.strip()
        if not entries and indent < 3:
            prose.append(content)
        elif indent == 3 and not (entries and _open(entries[-1])):
            entries.append(content)
        elif entries:
            entries[-1] += " " + content
    about = " ".join(prose)
    grain_match = _GRAIN.search(about)
    grain = grain_match.group(1).rstrip(".").strip() if grain_match else ""
    if grain_match:
        about = about[:grain_match.start()] + about[grain_match.end():]
    columns = [c for entry in entries for c in _entry_columns(entry)]
    return Table(first.group(1), first.group(2), grain, _sentence(about), columns, source)


def _open(entry: str) -> bool:
    """An entry whose column names go on to the next line ('a, b,' or names only)."""
    return entry.endswith(",")


def _sentence(text: str) -> str:
    text = " ".join(text.split())
    return text[:1].upper() + text[1:]


def _folder(package: str, sub: str) -> Traversable:
    folder = resources.files(package)
    return folder.joinpath(sub) if sub else folder


def _source(package: str, sub: str, name: str) -> str:
    return "/".join(p for p in (package.replace(".", "/"), sub, name) if p)


def _sql_tables() -> list[Table]:
    tables = []
    for package, sub in SQL_FOLDERS:
        for path in sorted(_folder(package, sub).iterdir(), key=lambda p: p.name):
            if path.name.endswith(".sql"):
                table = parse_sql_header(path.read_text(encoding="utf-8"),
                                         _source(package, sub, path.name))
                if table is not None:
                    tables.append(table)
    return tables


def view_table(view: dict, source: str = "") -> Table:
    """``flat.<name>`` of a ViewDefinition: its description and every column, after ``site``."""
    text = view.get("description") or view.get("title") or ""
    text = re.sub(r"^flat\.[a-z_]+:\s*", "", text)
    grain = ""
    if match := re.search(r"\s*\(grain:\s*([^)]*)\)", text):
        grain = f"({match.group(1).strip()})"
        text = text[:match.start()] + text[match.end():]
    columns = [Column("site", "text", "site id from the config")]

    def walk(selects: list[dict]) -> None:
        for select in selects:
            for column in select.get("column", []):
                kind = column.get("type")
                if kind and column.get("collection"):
                    kind += "[]"
                columns.append(Column(column["name"], kind, column.get("description", "")))
            walk(select.get("select", []))
            walk(select.get("unionAll", [])[:1])  # every branch has the same columns

    walk(view.get("select", []))
    return Table("flat", view["name"], grain, _sentence(text), columns, source)


def _view_tables() -> list[Table]:
    package, sub = VIEW_FOLDER
    return [view_table(json.loads(p.read_text(encoding="utf-8")), _source(package, sub, p.name))
            for p in sorted(_folder(package, sub).iterdir(), key=lambda p: p.name)
            if p.name.endswith(".json")]


def _ref_tables() -> list[Table]:
    from cartfhir.transform.reference import REF_DDL

    tables = []
    for name, ddl in REF_DDL.items():
        grain, about, notes = REF_DOCS.get(name, ("", "", {}))
        columns = []
        for spec in ddl.split(", "):
            column, kind = spec.split(maxsplit=1)
            column = column.strip('"')
            columns.append(Column(column, _TYPE_NAMES.get(kind, kind.lower()),
                                  notes.get(column, "")))
        for column, kind, position in REF_EXTRA.get(name, []):
            columns.insert(position, Column(column, kind, notes.get(column, "")))
        tables.append(Table("ref", name, grain, about, columns,
                            "cartfhir/transform/reference.py"))
    return tables


def _resolve(table: Table, by_name: dict[str, Table]) -> Table:
    """Fill 'as in schema.table' columns from that table's column of the same name."""
    columns = []
    for column in table.columns:
        text, note = column.description, ""
        if match := re.match(r"^(as in [a-z_]+\.[a-z_]+)(?: \((.*)\))?$", text):
            text, note = match.group(1), match.group(2) or ""
        other = by_name.get(m.group(1)) if (m := _AS_IN.match(text)) else None
        origin = other.column(column.name) if other is not None else None
        if origin is not None and other is not table:
            origin = _resolve(other, by_name).column(column.name) or origin
            description = f"{origin.description} ({note})" if note else origin.description
            column = Column(column.name, column.type or origin.type, description)
        columns.append(column)
    return replace(table, columns=columns)


def _layer(table: Table) -> tuple[int, str]:
    return (LAYERS.index(table.schema) if table.schema in LAYERS else len(LAYERS), table.name)


def load_catalog() -> list[Table]:
    """Every table cartfhir writes, by layer (raw, flat, ... ref) and then by name."""
    tables = _sql_tables() + _view_tables() + PYTHON_TABLES + _ref_tables()
    tables = [replace(t, optional=OPTIONAL.get(t.full_name)) for t in tables]
    by_name = {t.full_name: t for t in tables}
    return sorted((_resolve(t, by_name) for t in tables), key=_layer)


def find_table(tables: list[Table], name: str) -> Table | None:
    """A table by 'schema.table', or by 'table' alone when only one schema has it."""
    exact = [t for t in tables if t.full_name == name]
    if exact:
        return exact[0]
    short = [t for t in tables if t.name == name]
    return short[0] if len(short) == 1 else None


def add_database_tables(tables: list[Table], db: Path) -> list[Table]:
    """The catalog plus every table the database ``db`` holds that it does not document.

    Such tables (views.* written by 'cartfhir view', tables made by hand) get their DuckDB
    types and no descriptions. A database that does not exist yet adds nothing.
    """
    if not Path(db).exists():
        return tables
    from cartfhir.db import connect

    con = connect(Path(db), read_only=True)
    try:
        rows = con.execute(
            "SELECT table_schema || '.' || table_name, column_name, data_type "
            "FROM information_schema.columns WHERE table_catalog = current_database() "
            "ORDER BY table_schema, table_name, ordinal_position").fetchall()
    finally:
        con.close()
    known = {t.full_name for t in tables}
    found: dict[str, list[Column]] = {}
    for full_name, column, kind in rows:
        if full_name not in known:
            found.setdefault(full_name, []).append(
                Column(column, _TYPE_NAMES.get(kind, kind.lower()), ""))
    extra = [Table(*name.split(".", 1), "", "Not in the catalog (not made by cartfhir's "
                   "stages).", columns) for name, columns in found.items()]
    return sorted(tables + extra, key=_layer)


# --- rendering

def _cell(text: str | None) -> str:
    return (text or "").replace("|", "\\|").replace("\n", " ")


def render_markdown(tables: list[Table]) -> str:
    """The data dictionary: one section per schema in layer order, one table per table."""
    out = ["# Data dictionary", "",
           "Every table cartfhir writes to its DuckDB database, with its grain and columns.",
           "Generated from the documentation next to each table's code (SQL header comments,",
           "ViewDefinitions, `cartfhir/catalog.py`) by",
           "`cartfhir schema --format markdown > docs/data-dictionary.md`;",
           "`tests/test_catalog.py` fails when this file or the code drift apart.", ""]
    schemas = list(dict.fromkeys(t.schema for t in tables))
    out += ["Schemas: " + ", ".join(f"[`{s}`](#{s})" for s in schemas) + ".", ""]
    for schema in schemas:
        out += [f"## {schema}", ""]
        if schema in LAYER_NOTES:
            out += [LAYER_NOTES[schema], ""]
        for table in (t for t in tables if t.schema == schema):
            out += [f"### {table.full_name}", ""]
            if table.description:
                out += [table.description, ""]
            facts = []
            if table.grain:
                facts.append(f"Grain: {table.grain}.")
            if table.source:
                facts.append(f"Defined in `{table.source}`.")
            if table.optional:
                facts.append(f"Optional: {table.optional}.")
            if facts:
                out += [" ".join(facts), ""]
            out += ["| column | type | description |", "|---|---|---|"]
            out += [f"| `{c.name}` | {_cell(c.type)} | {_cell(c.description)} |"
                    for c in table.columns]
            out.append("")
    return "\n".join(out)


def column_rows(tables: list[Table]) -> list[list[str]]:
    """One row per column: table, column, type, description (for table/CSV output)."""
    return [[t.full_name, c.name, c.type or "", c.description] for t in tables
            for c in t.columns]


def as_json(tables: list[Table]) -> list[dict]:
    return [{"table": t.full_name, "grain": t.grain, "description": t.description,
             "source": t.source, "optional": t.optional,
             "columns": [{"name": c.name, "type": c.type, "description": c.description}
                         for c in t.columns]} for t in tables]


__all__ = ["Column", "Table", "add_database_tables", "as_json", "column_rows", "find_table",
           "load_catalog", "parse_sql_header", "render_markdown", "view_table"]

"""Clinical knowledge as data: load value sets, maps, units, windows and grades into ``ref.*``.

The package's defaults live in ``terminology/*.csv`` and ``study_defaults.yaml``;
sites and studies add maps (CSV or FHIR ConceptMap JSON) and override windows and
thresholds in the config. Every file loaded is hashed, so a run records exactly
which knowledge produced its tables (``meta.reference_version``).
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import math
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import yaml

from cartfhir.catalog.sidecars import table_ddl
from cartfhir.config import Config
from cartfhir.db import registered
from cartfhir.errors import ConfigError
from cartfhir.graph import BuildContext, load_graph

PACKAGE = "cartfhir.transform"
# Whose rule it is, ref.concept_map.tier and ref.text_pattern.tier: a higher tier wins
# before priorities are compared (the rule: harmonized/code_concept.yml).
TIER_DEFAULT, TIER_STUDY, TIER_SITE = 1, 2, 3
# A map row's priority when its CSV gives none; a pattern's CSV always gives one.
PRIORITY_CODE = 10
RESOURCE_TYPES = ("Observation", "Condition", "Procedure", "MedicationAdministration")
# How a code system's codes nest: '' none (exact codes), 'prefix' (a code covers its extensions).
HIERARCHIES = ("", "prefix")
# What a FHIR status means for a record (terminology/record_statuses.csv): usable (it counts),
# pending (not final yet: it does not count), void (retracted or not done: it never counts),
# relapse (a B-ALL Condition's clinicalStatus).
STATUS_USES = ("pending", "relapse", "usable", "void")
# The comparators a qualitative result may mean (FHIR Quantity.comparator, as in harmonized.lab).
COMPARATORS = ("<", "<=", ">=", ">")
# A reference file (a site's maps, patterns or unit spellings) larger than this is a mistake.
MAX_REFERENCE_BYTES = 32 * 2**20
_DECIMAL = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?", re.ASCII)


@dataclass(frozen=True)
class Source:
    """One loaded file: where it came from and the SHA-256 of its bytes."""

    name: str
    origin: str
    sha256: str
    rows: int


@dataclass
class Reference:
    """All reference rows, ready to be written to DuckDB."""

    tables: dict[str, list[dict[str, Any]]]
    sources: list[Source]


def _package_text(name: str) -> tuple[str, str]:
    text = resources.files(PACKAGE).joinpath(name).read_text(encoding="utf-8")
    return text, f"package:{name}"


def _file_text(path: Path) -> tuple[str, str]:
    """A reference file's text (UTF-8, a byte order mark dropped), at most
    ``MAX_REFERENCE_BYTES``."""
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_REFERENCE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    if len(data) > MAX_REFERENCE_BYTES:
        raise ConfigError(f"{path} is larger than {MAX_REFERENCE_BYTES // 2**20} MB; a map or "
                          "pattern file that large is not one")
    try:
        return data.decode("utf-8-sig"), str(path)
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not UTF-8 text (byte {exc.start + 1}: "
                          f"0x{data[exc.start]:02x}); save it as UTF-8 (in Excel: "
                          "'CSV UTF-8')") from None


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _csv_rows(text: str, origin: str, required: tuple[str, ...]) -> list[dict[str, str]]:
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in required if c not in (reader.fieldnames or [])]
    if missing:
        raise ConfigError(f"{origin}: missing column(s) {', '.join(missing)}; "
                          f"expected at least {', '.join(required)}")
    rows = []
    for n, row in enumerate(reader, start=2):
        if None in row:
            raise ConfigError(f"{origin} line {n}: more fields than columns (quote commas)")
        rows.append({k: (v.strip() if isinstance(v, str) else v) for k, v in row.items()})
    return rows


def _number(value: str, origin: str, column: str) -> float | None:
    """A finite number, or an exact ratio 'a/b' of two (1/0.06206 is not any short decimal).

    Plain decimals only: Python's float() also reads 'nan', 'inf' and '1_000', which no
    conversion means."""
    if value in ("", None):
        return None
    parts = value.split("/")
    number: float | None = None
    if len(parts) <= 2 and all(_DECIMAL.fullmatch(part.strip()) for part in parts):
        with contextlib.suppress(ZeroDivisionError, OverflowError):
            number = float(parts[0]) if len(parts) == 1 else float(parts[0]) / float(parts[1])
    if number is None or not math.isfinite(number):
        raise ConfigError(f"{origin}: column {column} must be a number or a ratio a/b, "
                          f"not {value!r}")
    return number


def _check_patterns(rows: list[dict[str, str]], origin: str) -> None:
    """Compile every row's pattern in DuckDB, the engine that runs it (RE2, not Python's re).

    A lookahead or backreference passes Python's re but fails mid-transform in RE2, so
    each pattern is tried here, before anything is written.
    """
    with duckdb.connect() as con:
        for line, row in enumerate(rows, start=2):
            try:
                con.execute("SELECT regexp_matches('', ?, 'i')", [row["pattern"]])
            except duckdb.Error as exc:
                raise ConfigError(
                    f"{origin} line {line}: pattern {row['pattern']!r} is not a regular "
                    f"expression DuckDB (RE2) can run: {str(exc).split(': ', 1)[-1]}; "
                    "lookarounds and backreferences are not supported") from None


def concept_map_rows(text: str, origin: str, site: str | None, tier: int,
                     concepts: set[str]) -> list[dict[str, Any]]:
    """Code-map rows of one tier from a CSV or a FHIR ConceptMap (JSON), checked against
    known concepts."""
    if origin.endswith(".json") or text.lstrip().startswith("{"):
        rows = _concept_map_json(text, origin)
    else:
        rows = _csv_rows(text, origin, ("resource_type", "system", "code", "concept"))
    out = []
    for row in rows:
        concept = row["concept"]
        if concept not in concepts and concept != "_excluded":
            raise ConfigError(f"{origin}: unknown concept {concept!r} for code "
                              f"{row['system']}|{row['code']}; "
                              f"known: {', '.join(sorted(concepts))}")
        if row["resource_type"] not in RESOURCE_TYPES:
            raise ConfigError(f"{origin}: resource_type must be one of "
                              f"{', '.join(RESOURCE_TYPES)}, not {row['resource_type']!r}")
        if not (row["code"] or "").strip():
            # An empty code would match nothing exactly and every code of a prefix system.
            raise ConfigError(f"{origin}: a {row['system']} row for {concept!r} has no code")
        grade = _number(row.get("grade") or "", origin, "grade")
        out.append({"site": site, "resource_type": row["resource_type"], "system": row["system"],
                    "code": row["code"], "concept": concept,
                    "grade": int(grade) if grade is not None else None,
                    "tier": tier,
                    "priority": int(_number(row.get("priority") or "", origin, "priority")
                                    or PRIORITY_CODE),
                    "source": origin})
    return out


def _concept_map_json(text: str, origin: str) -> list[dict[str, str]]:
    """Rows from a FHIR R4 ConceptMap: group.source = system, target code = study concept.

    The resource type comes from the ConceptMap's ``targetUri``/``targetCanonical`` tail
    (e.g. ``.../cartfhir/Observation``) or an extension-free convention: a group's
    ``target`` naming ``cartfhir:Observation``.
    """
    try:
        resource = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{origin}: not valid JSON: {exc}") from None
    if resource.get("resourceType") != "ConceptMap":
        raise ConfigError(f"{origin}: expected a ConceptMap, got {resource.get('resourceType')!r}")
    rows = []
    for group in resource.get("group") or []:
        system = group.get("source")
        target = str(group.get("target") or resource.get("targetUri")
                     or resource.get("targetCanonical") or "")
        rtype = target.rsplit(":", 1)[-1].rsplit("/", 1)[-1]
        if not system or rtype not in RESOURCE_TYPES:
            raise ConfigError(f"{origin}: each group needs 'source' (the code system) and a "
                              "'target' ending in Observation, Condition or Procedure")
        for element in group.get("element") or []:
            for tgt in element.get("target") or []:
                if tgt.get("equivalence", "equivalent") in ("unmatched", "disjoint"):
                    continue
                rows.append({"resource_type": rtype, "system": system,
                             "code": element.get("code", ""), "concept": tgt.get("code", ""),
                             "grade": ""})
    return rows


def text_pattern_rows(text: str, origin: str, site: str | None, tier: int,
                      concepts: set[str]) -> list[dict[str, Any]]:
    """Text-pattern rows of one tier, matched case-insensitively as written (never
    lower-cased: \\S is not \\s). ``refines`` names the concept a map must have decided for
    the pattern to refine it (lymphodepletion refines chemotherapy); a pattern without it
    never overrules a map."""
    rows = _csv_rows(text, origin, ("resource_type", "concept", "priority", "pattern"))
    _check_patterns(rows, origin)
    out = []
    for row in rows:
        refines = row.get("refines") or None
        for concept in (row["concept"], refines):
            if concept is not None and concept not in concepts and concept != "_excluded":
                raise ConfigError(f"{origin}: unknown concept {concept!r} in the pattern "
                                  f"{row['pattern']!r}; known: {', '.join(sorted(concepts))}")
        if refines == "_excluded" or (refines and row["concept"] == "_excluded"):
            raise ConfigError(f"{origin}: the pattern {row['pattern']!r} cannot refine into or "
                              "out of '_excluded': a map's decision is only ever refined")
        out.append({"site": site, "resource_type": row["resource_type"],
                    "concept": row["concept"], "tier": tier,
                    "priority": int(_number(row["priority"], origin, "priority") or 0),
                    "pattern": row["pattern"], "refines": refines, "source": origin})
    return out


def unit_map_rows(text: str, origin: str, site: str, concepts: dict[str, str | None],
                  ucum_units: dict[tuple[str, str], tuple[float, float]]) -> list[dict[str, Any]]:
    """A site's own unit spellings (``sites[].unit_maps``): per concept, a unit text and
    either the UCUM unit it means (converted as ``units.csv`` converts that unit in the
    concept's unit group) or its factor (and offset) to the canonical unit.

    ``concepts`` gives each concept's unit group; ``ucum_units`` the conversion of each
    (unit group, UCUM unit) in ``units.csv``.
    """
    out = []
    for line, row in enumerate(_csv_rows(text, origin, ("concept", "unit")), start=2):
        where, concept = f"{origin} line {line}", row["concept"]
        if concept not in concepts:
            raise ConfigError(f"{where}: unknown concept {concept!r}; "
                              f"known: {', '.join(sorted(c for c, g in concepts.items() if g))}")
        group = concepts[concept]
        if group is None:
            raise ConfigError(f"{where}: {concept} has no units (it is not a measured result)")
        if not row["unit"]:
            raise ConfigError(f"{where}: no unit text for {concept}; write the spelling the "
                              "site sends in the column unit")
        factor, offset = _unit_map_conversion(row, where, group, ucum_units)
        out.append({"site": site, "concept": concept, "unit": row["unit"], "factor": factor,
                    "offset": offset, "source": origin})
    return out


def _unit_map_conversion(row: dict[str, str], where: str, group: str,
                         ucum_units: dict[tuple[str, str], tuple[float, float]]
                         ) -> tuple[float, float]:
    """A unit-map row's factor and offset: its UCUM unit's, or the ones it gives."""
    ucum, factor = row.get("ucum") or "", row.get("factor") or ""
    if bool(ucum) == bool(factor):
        raise ConfigError(f"{where}: give either ucum or factor for {row['unit']!r}"
                          f"{', not both' if ucum else ''}: ucum names the UCUM unit it "
                          f"means, factor converts it to {row['concept']}'s canonical unit")
    if factor:
        number = _number(factor, where, "factor")
        if number is None or number <= 0:
            raise ConfigError(f"{where}: factor {factor} must be above 0")
        return number, _number(row.get("offset") or "", where, "offset") or 0.0
    if row.get("offset"):
        raise ConfigError(f"{where}: an offset needs a factor; a UCUM unit brings its own "
                          "conversion")
    if (group, ucum) not in ucum_units:
        known = sorted(u for g, u in ucum_units if g == group)
        raise ConfigError(f"{where}: {ucum!r} is not a UCUM unit the {group} group converts; "
                          f"use one of {', '.join(known)} or give a factor")
    return ucum_units[group, ucum]


def record_status_rows(text: str, origin: str) -> list[dict[str, str]]:
    """What each FHIR status means for a record, one row per (resource type, element, status)."""
    columns = ("resource_type", "element", "status", "use")
    rows = [{c: r[c] for c in columns} for r in _csv_rows(text, origin, columns)]
    seen: set[tuple[str, str, str]] = set()
    for line, row in enumerate(rows, start=2):
        key = (row["resource_type"], row["element"], row["status"])
        if row["resource_type"] not in RESOURCE_TYPES:
            raise ConfigError(f"{origin} line {line}: resource_type must be one of "
                              f"{', '.join(RESOURCE_TYPES)}, not {row['resource_type']!r}")
        if row["use"] not in STATUS_USES:
            raise ConfigError(f"{origin} line {line}: use {row['use']!r} of {'.'.join(key)} "
                              f"is unknown; use one of {', '.join(STATUS_USES)}")
        if key in seen:
            raise ConfigError(f"{origin} line {line}: {'.'.join(key)} is listed twice; "
                              "keep one row")
        seen.add(key)
    return rows


def qualitative_word_rows(text: str, origin: str) -> list[dict[str, str]]:
    """The words meaning each qualitative result ('negative'): one pattern per result, so a
    text matches a result at most once."""
    rows = [{"result": r["result"], "pattern": r["pattern"]}
            for r in _csv_rows(text, origin, ("result", "pattern"))]
    _check_patterns(rows, origin)
    seen: set[str] = set()
    for line, row in enumerate(rows, start=2):
        if not row["result"] or row["result"] in seen:
            raise ConfigError(f"{origin} line {line}: result {row['result']!r} is empty or "
                              "listed twice; keep one pattern per result (join words with |)")
        seen.add(row["result"])
    return rows


def qualitative_result_rows(text: str, origin: str, concepts: set[str],
                            results: set[str]) -> list[dict[str, Any]]:
    """What a qualitative result means per concept: a censored number (value and comparator)
    or, both left empty, no number the study knows (a detection limit that differs by kit)."""
    out: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    columns = ("concept", "result", "value", "comparator")
    for line, row in enumerate(_csv_rows(text, origin, columns), start=2):
        where = f"{origin} line {line}"
        key = (row["concept"], row["result"])
        if row["concept"] not in concepts:
            raise ConfigError(f"{where}: {row['concept']!r} is not a measured concept; "
                              f"known: {', '.join(sorted(concepts))}")
        if row["result"] not in results:
            raise ConfigError(f"{where}: result {row['result']!r} has no words in "
                              f"qualitative_words.csv; known: {', '.join(sorted(results))}")
        if key in seen:
            raise ConfigError(f"{where}: {row['concept']} {row['result']} is listed twice; "
                              "keep one row")
        seen.add(key)
        if bool(row["value"]) != bool(row["comparator"]):
            raise ConfigError(f"{where}: give value and comparator together (a censored "
                              "limit), or neither (no known limit)")
        if row["comparator"] and row["comparator"] not in COMPARATORS:
            raise ConfigError(f"{where}: comparator {row['comparator']!r} must be one of "
                              f"{', '.join(COMPARATORS)}")
        out.append({"concept": row["concept"], "result": row["result"],
                    "value": _number(row["value"], where, "value"),
                    "comparator": row["comparator"] or None})
    return out


def load_reference(config: Config) -> Reference:
    """Read the defaults and the config's additions; raise ConfigError on anything malformed."""
    sources: list[Source] = []
    tables: dict[str, list[dict[str, Any]]] = {}

    def read(name: str, path: Path | None = None) -> tuple[str, str]:
        text, origin = _file_text(path) if path else _package_text(name)
        sources.append(Source(name, origin, _sha(text), text.count("\n")))
        return text, origin

    text, origin = read("terminology/concepts.csv")
    concepts = _csv_rows(text, origin, ("concept", "kind", "category", "unit_group",
                                        "canonical_unit", "plausible_min", "plausible_max"))
    tables["concept"] = [
        {**r, "plausible_min": _number(r["plausible_min"], origin, "plausible_min"),
         "plausible_max": _number(r["plausible_max"], origin, "plausible_max"),
         "category": r["category"] or None, "unit_group": r["unit_group"] or None,
         "canonical_unit": r["canonical_unit"] or None}
        for r in concepts]
    known = {r["concept"] for r in concepts}

    text, origin = read("terminology/concept_map.csv")
    maps = concept_map_rows(text, origin, None, TIER_DEFAULT, known)
    for path in config.transform.concept_maps:
        text, origin = read("study concept map", path)
        maps += concept_map_rows(text, origin, None, TIER_STUDY, known)
    for site in config.sites:
        for path in site.concept_maps:
            text, origin = read(f"{site.id} concept map", path)
            maps += concept_map_rows(text, origin, site.id, TIER_SITE, known)
    tables["concept_map"] = maps

    text, origin = read("terminology/text_patterns.csv")
    patterns = text_pattern_rows(text, origin, None, TIER_DEFAULT, known)
    for site in config.sites:
        for path in site.text_patterns:
            text, origin = read(f"{site.id} text patterns", path)
            patterns += text_pattern_rows(text, origin, site.id, TIER_SITE, known)
    tables["text_pattern"] = patterns

    text, origin = read("terminology/units.csv")
    units = [{"unit_group": r["unit_group"], "unit": r["unit"], "ucum": r["ucum"],
              "factor": _number(r["factor"], origin, "factor"),
              "offset": _number(r["offset"], origin, "offset") or 0.0}
             for r in _csv_rows(text, origin, ("unit_group", "unit", "ucum", "factor", "offset"))]
    tables["unit"] = units
    ucum_units = {(r["unit_group"], r["ucum"]): (r["factor"], r["offset"]) for r in units}
    groups = {r["concept"]: r["unit_group"] or None for r in concepts}
    tables["unit_map"] = [
        row for site in config.sites for path in site.unit_maps
        for row in unit_map_rows(*read(f"{site.id} unit map", path), site.id, groups, ucum_units)]

    text, origin = read("terminology/qualitative_words.csv")
    tables["qualitative_word"] = qualitative_word_rows(text, origin)
    text, origin = read("terminology/qualitative_results.csv")
    tables["qualitative_result"] = qualitative_result_rows(
        text, origin, {r["concept"] for r in concepts if r["unit_group"]},
        {r["result"] for r in tables["qualitative_word"]})

    simple = {
        "severity_grade": ("terminology/severity_grades.csv", ("system", "code", "grade")),
        "body_site": ("terminology/body_sites.csv", ("body_site", "rank", "system", "code",
                                                      "pattern")),
        "target": ("terminology/targets.csv", ("target", "priority", "pattern")),
        "reference_range": ("terminology/reference_ranges.csv", ("concept", "low", "high")),
        "post_event": ("terminology/post_events.csv", ("event", "priority")),
        "grade_cut": ("terminology/grade_cuts.csv", ("concept", "basis", "direction", "bound",
                                                     "grade")),
        # Notes for humans on why an unmapped code is out of the study; never used to map.
        "scope_note": ("terminology/scope_notes.csv", ("system", "rank", "pattern", "note")),
        # The closed set of qa.quarantine reason codes (the harmonized models name them).
        "quarantine_reason": ("terminology/quarantine_reasons.csv",
                              ("reason_code", "description")),
    }
    for table, (name, columns) in simple.items():
        path = config.transform.grade_cuts if table == "grade_cut" else None
        text, origin = read(name, path)
        rows = [{c: r[c] for c in columns} for r in _csv_rows(text, origin, columns)]
        if "pattern" in columns:
            _check_patterns(rows, origin)
        tables[table] = rows

    # Standard code systems (with their OID aliases): a coding in one of them is
    # authoritative, so a record no map knows is unmapped, never matched by its text.
    # hierarchy 'prefix' (the ICD-10 family): a map code covers the codes extending it.
    text, origin = read("terminology/code_systems.csv")
    # case_insensitive: codes compare trimmed and upper-cased ('xw033c7' is XW033C7).
    systems = _csv_rows(text, origin, ("system", "canonical", "name", "hierarchy",
                                       "case_insensitive"))
    for r in systems:
        if r["hierarchy"] not in HIERARCHIES:
            raise ConfigError(f"{origin}: hierarchy of {r['system']} must be empty or "
                              f"'prefix', not {r['hierarchy']!r}")
        if r["case_insensitive"] not in ("", "true", "false"):
            raise ConfigError(f"{origin}: case_insensitive of {r['system']} must be empty, "
                              f"'true' or 'false', not {r['case_insensitive']!r}")
    tables["code_system"] = [
        {"system": r["system"], "canonical": r["canonical"] or r["system"], "name": r["name"],
         "hierarchy": r["hierarchy"] or None,
         "case_insensitive": r["case_insensitive"] == "true"}
        for r in systems]

    text, origin = read("terminology/record_statuses.csv")
    tables["record_status"] = record_status_rows(text, origin)
    tables["site"] = [{"site": site.id, "timezone": site.timezone} for site in config.sites]

    text, origin = read("terminology/combinations.csv")
    tables["concept_combination"] = [
        {"concept": r["concept"], "requires": r["requires"].split()}
        for r in _csv_rows(text, origin, ("concept", "requires"))]

    text, origin = read("study_defaults.yaml")
    defaults = yaml.safe_load(text)
    tables["window"] = _windows(defaults["windows"], config.transform.windows)
    tables["threshold"] = _thresholds(defaults["thresholds"], config.transform.thresholds)
    return Reference(tables=tables, sources=sources)


def _windows(defaults: dict[str, list[int]],
             overrides: dict[str, tuple[int, int]]) -> list[dict[str, Any]]:
    unknown = sorted(set(overrides) - set(defaults))
    if unknown:
        raise ConfigError(f"transform.windows: unknown window(s) {', '.join(unknown)}; "
                          f"known: {', '.join(sorted(defaults))}")
    merged = {name: tuple(overrides.get(name, bounds)) for name, bounds in defaults.items()}
    return [{"name": n, "lo": int(lo), "hi": int(hi)} for n, (lo, hi) in merged.items()]


def _thresholds(defaults: dict[str, float], overrides: dict[str, float]) -> list[dict[str, Any]]:
    unknown = sorted(set(overrides) - set(defaults))
    if unknown:
        raise ConfigError(f"transform.thresholds: unknown threshold(s) {', '.join(unknown)}; "
                          f"known: {', '.join(sorted(defaults))}")
    return [{"name": n, "value": float(overrides.get(n, v))} for n, v in defaults.items()]


def ref_ddl() -> dict[str, str]:
    """CREATE TABLE column lists of the ``ref.*`` tables, from their sidecars
    (``transform/ref/<table>.yml``), in build order."""
    return {node.name: table_ddl(node.table) for node in load_graph().stage("ref")
            if node.schema == "ref"}


# The ref columns holding a code system URI that models compare through system_key().
SYSTEM_COLUMNS = {"concept_map": ("system",), "code_system": ("system", "canonical"),
                  "scope_note": ("system",)}


def write_reference(con: duckdb.DuckDBPyConnection, reference: Reference, run_id: str) -> None:
    """Replace the ``ref.*`` tables and record the sources' hashes for this run."""
    con.execute("CREATE SCHEMA IF NOT EXISTS ref")
    for table, columns in ref_ddl().items():
        con.execute(f"CREATE OR REPLACE TABLE ref.{table} ({columns})")
        rows = reference.tables[table]
        if rows:
            names = [c.split()[0] for c in columns.split(", ")]
            keys = [n.strip('"') for n in names]
            frame = pd.DataFrame([[row.get(k) for k in keys] for row in rows], columns=keys,
                                 dtype=object)
            with registered(con, "_ref_rows", frame):  # one insert per table, not per row
                con.execute(f"INSERT INTO ref.{table} ({', '.join(names)}) SELECT "
                            + ", ".join(f'"{k}"' for k in keys) + " FROM _ref_rows")
    _check_time_zones(con)
    # Systems are compared as system_key()s (macros.sql): one spelling per system.
    for table, columns in SYSTEM_COLUMNS.items():
        con.execute(f"UPDATE ref.{table} SET "
                    + ", ".join(f"{c} = system_key({c})" for c in columns))
    con.execute("UPDATE ref.unit SET unit_key = unit_key(unit)")
    # Spellings of one unit ('10*9/L', '10^9/L') share a key; they must agree on the factor.
    clash = con.execute("SELECT unit_group, unit_key, list(DISTINCT unit) FROM ref.unit "
                        "GROUP BY ALL HAVING count(DISTINCT (factor, \"offset\")) > 1").fetchall()
    if clash:
        group, key, units = clash[0]
        raise ConfigError(f"units.csv: {', '.join(units)} ({group}) are the same unit ({key!r}) "
                          "but have different conversion factors")
    con.execute("CREATE OR REPLACE TABLE ref.unit AS SELECT unit_group, unit_key, "
                "min(unit) AS unit, any_value(factor) AS factor, "
                "any_value(\"offset\") AS \"offset\" FROM ref.unit GROUP BY unit_group, unit_key")
    _key_unit_maps(con)
    con.execute("CREATE SCHEMA IF NOT EXISTS meta")
    con.execute("CREATE TABLE IF NOT EXISTS meta.reference_version "
                f"({table_ddl('meta.reference_version')})")
    con.executemany("INSERT INTO meta.reference_version VALUES (?, ?, ?, ?, ?)",
                    [[run_id, s.name, s.origin, s.sha256, s.rows] for s in reference.sources])


def _key_unit_maps(con: duckdb.DuckDBPyConnection) -> None:
    """Key the sites' own spellings as ref.unit is keyed; one row per (site, concept, key)."""
    con.execute("UPDATE ref.unit_map SET unit_key = unit_key(unit)")
    clash = con.execute("SELECT any_value(source), site, concept, list(DISTINCT unit ORDER BY unit)"
                        " FROM ref.unit_map GROUP BY site, concept, unit_key "
                        "HAVING count(DISTINCT (factor, \"offset\")) > 1").fetchall()
    if clash:
        source, site, concept, units = clash[0]
        raise ConfigError(f"{source}: {', '.join(units)} are one spelling of {concept} at "
                          f"{site} with different conversions; keep one row")
    con.execute("CREATE OR REPLACE TABLE ref.unit_map AS SELECT site, concept, unit_key, "
                "min(unit) AS unit, any_value(factor) AS factor, "
                "any_value(\"offset\") AS \"offset\", min(source) AS source FROM ref.unit_map "
                "GROUP BY site, concept, unit_key")


def time_zone_problem(con: duckdb.DuckDBPyConnection, site_id: str, zone: str) -> str | None:
    """Why DuckDB cannot read site ``site_id``'s zone, or None. The config checked the name
    against the host's tzdata; DuckDB reads its own (ICU), which may be older, and
    site_date() would fail mid-build on a zone it lacks."""
    known = con.execute("SELECT count(*) FROM pg_timezone_names() WHERE name = ?",
                        [zone]).fetchone()[0]
    if known:
        return None
    return (f"sites[{site_id}].timezone {zone!r} is not in DuckDB's time zone data; use an "
            "older name of the same zone (https://en.wikipedia.org/wiki/"
            "List_of_tz_database_time_zones) or update duckdb")


def _check_time_zones(con: duckdb.DuckDBPyConnection) -> None:
    for site_id, zone in con.execute("SELECT site, timezone FROM ref.site "
                                     "WHERE timezone IS NOT NULL ORDER BY site").fetchall():
        problem = time_zone_problem(con, site_id, zone)
        if problem:
            raise ConfigError(problem)


def build_reference(con: duckdb.DuckDBPyConnection, context: BuildContext) -> int:
    """Graph builder of every ref.* table and meta.reference_version (build.yaml, stage ref);
    ``context.reference`` is what ``load_reference`` read, ``context.run_id`` the transform."""
    write_reference(con, context.reference, context.run_id)
    return sum(len(rows) for rows in context.reference.tables.values())


def reference_hash(reference: Reference) -> str:
    """One hash over every source, for the run manifest."""
    digest = hashlib.sha256()
    for s in sorted(reference.sources, key=lambda s: (s.name, s.origin)):
        digest.update(f"{s.name}\0{s.sha256}\n".encode())
    return digest.hexdigest()

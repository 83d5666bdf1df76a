"""The cohort and qa models on Spark equal DuckDB's, table by table, and the generator's truth.

DuckDB transforms the synthetic three-site cohort (with bad lines, and with local and
unmapped codes added so that qa.unmapped_* have rows); its model inputs (harmonized.*,
flat.*, ref.*, raw.*) go to Parquet and are registered on Spark, where every cohort and
qa model is built in the graph's order from the same SQL (or its .spark.sql override).
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import duckdb
import pytest

from cartfhir.api import extract, transform
from cartfhir.graph import Node, load_graph, sql_tables
from cartfhir.spark.catalog import OWNED
from cartfhir.spark.compare import table_diff
from cartfhir.spark.models import build_model, create_functions, model_sql
from cartfhir.spark.tables import table_folder, write_layout
from cartfhir.synth import generate
from cartfhir.synth.truth import TRUTH_COLUMNS
from cartfhir.transform.identity import patient_key
from tests.spark.declared import empty_tables
from tests.testbed import make_config
from tests.transform.small_site import Site
from tests.transform.truth import IDENTITY, _same

pytestmark = pytest.mark.spark

SITES = ["site_a", "site_b", "site_c"]
STAGES = ("cohort", "qa")
# Codes no map knows, added to two sites: local codes and text alone (counted as unmapped)
# and standard codes outside the study (out of scope), dated before any infusion so that
# no endpoint of the truth moves.
LOCAL_LAB = {"system": "http://hospital.example.org/lab-codes", "code": "ZZ-17",
             "display": "Local mystery assay"}
GLUCOSE = {"system": "http://loinc.org", "code": "2345-7",
           "display": "Glucose [Mass/volume] in Serum or Plasma"}
HYPERTENSION = {"system": "http://snomed.info/sct", "code": "38341003",
                "display": "Hypertensive disorder"}
# Out of scope by two of ref.scope_note's patterns: its note lists both, in rank order.
URINE_RATIO = {"system": "http://loinc.org", "code": "2890-2",
               "display": "Protein/Creatinine [Mass Ratio] in Urine"}


# DuckDB-only SQL that Spark rejects or reads differently; a cohort or qa model spells each
# in the SQL both accept or through a macro pair of macros.sql / macros.spark.sql.
DUCKDB_ONLY = {
    "QUALIFY": r"\bqualify\b", "GROUP BY ALL": r"\bgroup\s+by\s+all\b", "::": r"::",
    "struct_pack": r"\bstruct_pack\b", "LATERAL": r"\blateral\b",
    "arg_max/arg_min": r"\barg_(max|min)\b", "strftime": r"\bstrftime\b",
    "date_diff": r"\bdate_?diff\b", "unnest": r"\bunnest\b", "list(...)": r"\blist\s*\(",
    "list_*": r"\blist_\w+\s*\(", "string_agg": r"\bstring_agg\b",
    "json_extract*": r"\bjson_extract", "regexp_matches": r"\bregexp_matches\b",
    "array_to_string": r"\barray_to_string\b", "[...] list": r"\[[^\]]*\]",
    "FILTER ... OVER": r"\bfilter\s*\([^)]*\)\s*over\b",
    "count(DISTINCT (a, b))": r"\bcount\s*\(\s*distinct\s*\(",
}
_COMMENTS = re.compile(r"'(?:[^']|'')*'|--[^\n]*")


def test_the_models_use_no_duckdb_only_sql() -> None:
    graph = load_graph()
    found = []
    for node in (n for stage in STAGES for n in graph.stage(stage)):
        text = _COMMENTS.sub(lambda m: m[0] if m[0].startswith("'") else "",
                             model_sql(node, "duckdb")).lower()
        found += [f"{node.source}: {name}" for name, pattern in DUCKDB_ONLY.items()
                  if re.search(pattern, text)]
    assert not found, found


def _add_unmapped(site_dir: Path, site: str) -> int:
    """Append resources with codes nobody maps to ``site_dir``'s NDJSON; return how many."""
    with (site_dir / "Patient.000.ndjson").open() as fh:
        patients = [json.loads(line)["id"] for line in fh if line.strip()][:3]
    observations, conditions = [], []
    tag = site.replace("_", "-")  # a FHIR id has no '_'
    for i, pid in enumerate(patients):
        for j, coding in enumerate((LOCAL_LAB, GLUCOSE, URINE_RATIO)):
            observations.append({
                "resourceType": "Observation", "id": f"unmapped-{tag}-{i}-{j}",
                "status": "final", "code": {"coding": [coding], "text": coding["display"]},
                "subject": {"reference": f"Patient/{pid}"},
                "effectiveDateTime": "2001-02-03T04:05:00Z",
                "valueQuantity": {"value": 5.5 + i, "unit": "mg/dL"}})
        conditions.append({
            "resourceType": "Condition", "id": f"unmapped-{tag}-{i}-c",
            "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                                     "condition-clinical", "code": "active"}]},
            "code": ({"coding": [HYPERTENSION]} if i % 2 else
                     {"text": "odd local diagnosis"}),
            "subject": {"reference": f"Patient/{pid}"}, "onsetDateTime": "2001-02-03"})
    for name, rows in (("Observation", observations), ("Condition", conditions)):
        with (site_dir / f"{name}.000.ndjson").open("a") as fh:
            fh.writelines(json.dumps(r) + "\n" for r in rows)
    return len(observations) + len(conditions)


def _models() -> list[Node]:
    graph = load_graph()
    return [node for stage in STAGES for step in graph.steps(stage) for node in step]


def _inputs(models: list[Node]) -> list[str]:
    """The tables the models read that no cohort or qa model makes."""
    made = {node.table for node in models}
    read: set[str] = set()
    for node in models:
        for engine in ("duckdb", "spark"):
            read |= sql_tables(model_sql(node, engine))
    return sorted(read - made)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, spark):  # noqa: ANN001, ANN201
    """The DuckDB store of the cohort, and the cohort and qa models built on Spark."""
    root = tmp_path_factory.mktemp("models_cohort")
    generate(root / "data", patients=40, seed=11, sites=SITES, bad_rate=0.01)
    assert all(_add_unmapped(root / "data" / site, site) for site in SITES[:2])
    config = make_config(root, SITES)
    extract(config)
    transform(config)
    models = _models()
    return root, config, models, _build_on_spark(spark, config.output.duckdb, root, models)


def _build_on_spark(spark, store: Path, root: Path,  # noqa: ANN001
                    models: list[Node]) -> dict[str, int]:
    """The models built on Spark from the DuckDB ``store``'s inputs; rows per table."""
    inputs = _inputs(models)
    parquet = root / "parquet"
    with duckdb.connect(str(store), read_only=True) as con:
        write_layout(con, inputs, parquet)
        empty = empty_tables(con, inputs)  # harmonized.derived_lab: no differential here
    # Every table is external, in this test's folder (none in the session's warehouse).
    for schema in sorted({t.split(".")[0] for t in [*inputs, *(n.table for n in models)]}):
        spark.sql(f"CREATE DATABASE IF NOT EXISTS {schema} "
                  f"LOCATION '{root / 'warehouse' / schema}'")
    for table in inputs:
        spark.sql(f"DROP TABLE IF EXISTS {table}")
        spark.sql(f"CREATE TABLE {table} {empty.get(table, '')} USING parquet "
                  f"LOCATION '{table_folder(parquet, table)}' {OWNED}")
        if spark.table(table).columns[-1:] == ["site"] and not table.startswith("ref."):
            spark.sql(f"MSCK REPAIR TABLE {table}")  # register the site partitions
    create_functions(spark)
    return {node.table: build_model(spark, node, str(root / "spark" / node.table))
            for node in models}


def test_every_cohort_and_qa_model_equals_duckdb(built, spark) -> None:  # noqa: ANN001
    _, config, models, rows = built
    assert rows["qa.unmapped_codes"] > 0 and rows["qa.unmapped_record"] > 0
    problems = []
    with duckdb.connect(str(config.output.duckdb), read_only=True) as con:
        for node in models:
            diff = table_diff(con, f"SELECT * FROM {node.table}", spark,
                              f"SELECT * FROM {node.table}")
            if not diff.equal:
                problems.append(f"{node.table}: {diff}")
    assert not problems, "\n".join(problems)


def test_the_unmapped_codes_are_the_ones_added(built, spark) -> None:  # noqa: ANN001
    rows = {(r.site, r.system, r.code, r.standard, r["count"]) for r in spark.sql(
        "SELECT * FROM qa.unmapped_codes").collect()}
    for site in SITES[:2]:
        assert (site, LOCAL_LAB["system"], LOCAL_LAB["code"], False, 3) in rows
        assert (site, GLUCOSE["system"], GLUCOSE["code"], True, 3) in rows
        assert (site, None, None, False, 2) in rows  # the text-only condition
        assert (site, URINE_RATIO["system"], URINE_RATIO["code"], True, 3) in rows
    notes = {r.scope_note for r in spark.sql("SELECT * FROM qa.unmapped_codes "
                                             f"WHERE code = '{URINE_RATIO['code']}'").collect()}
    assert notes == {"out of study scope: urine specimen; ratio or fraction of two analytes"}
    assert not {r for r in rows if r[0] == "site_c"}


def test_spark_episode_endpoints_equal_the_truth(built, spark) -> None:  # noqa: ANN001
    root, config, _, _ = built
    secrets = {s.id: s.pseudonym_key.resolve() for s in config.sites if s.pseudonym_key}
    table = {(r["site"], r["patient_key"], r["round"]): r for r in (
        row.asDict() for row in spark.sql("SELECT * FROM cohort.episode_endpoints").collect())}
    with (root / "data" / "truth" / "episodes.csv").open(encoding="utf-8") as fh:
        truth = list(csv.DictReader(fh))
    assert truth
    problems, seen = [], set()
    for row in truth:
        key = (row["site"], patient_key(secrets[row["site"]], row["site"], row["patient_id"]),
               int(row["round"]))
        seen.add(key)
        got = table.get(key)
        if got is None:
            problems.append(f"{key[0]} round {key[2]}: no episode on Spark")
            continue
        problems += [f"{key[0]} patient {row['patient_index']} round {key[2]}, {column}: "
                     f"truth {row[column]!r}, Spark {got[column]!r}"
                     for column in TRUTH_COLUMNS
                     if column not in IDENTITY and not _same(row[column], got.get(column))]
    problems += [f"{k[0]} round {k[2]}: on Spark, not in the truth" for k in set(table) - seen]
    assert not problems, "\n".join(problems[:40])


def test_a_remission_without_its_counts_is_not_evaluable_on_spark_too(
        spark, tmp_path: Path) -> None:  # noqa: ANN001
    """The synthetic cohort draws counts on every marrow day, so its parity never meets NE:
    one patient, four rounds, each a remission (blasts 2 %) with some counts missing."""
    site = Site(tmp_path)
    for t0, counts in ((0, []), (100, [("751-8", 1.5)]), (200, [("751-8", 0.5)]),
                       (300, [("777-3", 150.0)])):
        site.infusion(t0)
        site.lab(t0 + 2, 2.0, "%", code="11150-0", ucum="%")
        for code, value in counts:
            site.lab(t0 + 2, value, "10*9/L", code=code, ucum="10*9/L")
    site.build().close()
    store = next(tmp_path.glob("**/*.duckdb"))
    _build_on_spark(spark, store, tmp_path, _models())
    got = sorted(tuple(r) for r in spark.sql(
        "SELECT round, best_response, response_reason FROM cohort.episode_endpoints").collect())
    assert [r[1] for r in got] == ["NE", "NE", "CRi", "NE"]
    assert got[3][2] == "no ANC from day -1 to the day-2 marrow"  # day 2 less 3, signed
    with duckdb.connect(str(store), read_only=True) as con:
        diff = table_diff(con, "SELECT * FROM cohort.episode_endpoints", spark,
                          "SELECT * FROM cohort.episode_endpoints")
    assert diff.equal, str(diff)

"""The harmonized models and the shared macros on Spark give DuckDB's rows.

The inputs the harmonized models read (flat.*, ref.*, raw.patient_key) come from a DuckDB
transform of a synthetic three-site cohort with bad lines, moved to Spark as Parquet in the
table-store layout; each harmonized model is then built on Spark from the same .sql file
(or its .spark.sql override) and diffed with DuckDB's table both ways. The macro pairs are
checked one by one on edge inputs, where the engines' casts and regex dialects part.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import duckdb
import pytest

from cartfhir.graph import create_macros, load_graph
from cartfhir.spark.catalog import OWNED
from cartfhir.spark.compare import table_diff
from cartfhir.spark.identity import sql_string
from cartfhir.spark.models import build_model, create_functions
from cartfhir.spark.tables import write_layout
from tests.spark.declared import empty_tables
from tests.testbed import transformed_store
from tests.transform.test_text_results import TEXTS

pytestmark = pytest.mark.spark

SITES = ["site_a", "site_b", "site_c"]
HARMONIZED = [node.table for node in load_graph().stage("harmonized")]


def _lab(site: str, n: int, at: str, code: dict[str, str], value: float, unit: str,
         comparator: str | None = None) -> dict[str, Any]:
    quantity: dict[str, Any] = {"value": value, "unit": unit}
    if comparator:
        quantity["comparator"] = comparator
    return {"resourceType": "Observation", "id": f"differential-{site}-{n}", "status": "final",
            "code": {"coding": [code]}, "subject": {"reference": "Patient/differential-1"},
            "effectiveDateTime": at, "valueQuantity": quantity}


def _differentials() -> dict[str, list[dict[str, Any]]]:
    """A patient at two sites whose counts come as a WBC and a differential in percent, so
    harmonized.derived_lab has rows to compare (the generator always sends the ANC): a total
    percentage, segmented plus band forms with a censored WBC, a time with a measured ANC,
    and a local Chinese percentage."""
    wbc = {"system": "http://loinc.org", "code": "6690-2"}
    total = {"system": "http://loinc.org", "code": "770-8"}
    segmented = {"system": "http://loinc.org", "code": "32200-8"}
    band = {"system": "http://hospital-x.example/lis", "code": "BAND",
            "display": "Band neutrophils %"}
    anc = {"system": "http://loinc.org", "code": "751-8"}
    local = "http://hospital-b.example.cn/lis"
    t1, t2, t3 = ("2024-03-04T08:00:00+08:00", "2024-03-06T08:00:00+08:00",
                  "2024-03-08T08:00:00+08:00")
    patient = {"resourceType": "Patient", "id": "differential-1", "gender": "male",
               "birthDate": "2015-01-01"}
    site_a = [patient, _lab("a", 1, t1, wbc, 2.0, "10*9/L"), _lab("a", 2, t1, total, 40, "%"),
              _lab("a", 3, t2, wbc, 0.5, "10*9/L", "<"), _lab("a", 4, t2, segmented, 60, "%"),
              _lab("a", 5, t2, band, 5, "%"), _lab("a", 6, t3, wbc, 1.2, "10*9/L"),
              _lab("a", 7, t3, total, 30, "%"), _lab("a", 8, t3, anc, 0.4, "10*9/L")]
    site_b = [patient,
              _lab("b", 1, t1, {"system": local, "code": "WBC", "display": "白细胞计数"}, 3.1,
                   "10^9/L"),
              _lab("b", 2, t1, {"system": local, "code": "NEUT%", "display": "中性粒细胞百分比"},
                   55, "%")]
    return {"site_a": site_a, "site_b": site_b}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A DuckDB store after a transform of the three-site cohort (1% bad lines), with
    differentials to derive ANCs from. site_b has its time zone, so the models read its days
    through site_date's zone branch (its profile writes +08:00, Shanghai's offset: the days
    are the ones written)."""
    return transformed_store(tmp_path_factory.mktemp("harmonized"), SITES, patients=15,
                             seed=11, bad_rate=0.01, extra=_differentials(),
                             site_b={"timezone": "Asia/Shanghai"})


@pytest.fixture(scope="module")
def on_spark(spark, store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: ANN001
    """Spark with the harmonized models' inputs registered and every model built."""
    graph = load_graph()
    inputs = [n.table for stage in ("ref", "flat", "identity") for n in graph.stage(stage)
              if n.table != "meta.reference_version"]
    parquet = tmp_path_factory.mktemp("harmonized_parquet")
    with duckdb.connect(str(store), read_only=True) as con:
        present = {f"{s}.{t}" for s, t in con.execute(
            "SELECT table_schema, table_name FROM information_schema.tables").fetchall()}
        write_layout(con, [t for t in inputs if t in present], parquet / "in")
        empty = empty_tables(con, [t for t in inputs if t in present])
    for table in inputs:
        if table not in present:
            continue
        spark.sql(f"CREATE DATABASE IF NOT EXISTS {table.split('.')[0]}")
        spark.sql(f"DROP TABLE IF EXISTS {table}")
        spark.sql(f"CREATE TABLE {table} {empty.get(table, '')} USING parquet "
                  f"LOCATION {sql_string(str(parquet / 'in' / table))} {OWNED}")
        if any((parquet / "in" / table).glob("site=*")):
            spark.sql(f"MSCK REPAIR TABLE {table}")  # the catalog learns the site partitions
    create_functions(spark)
    for table in HARMONIZED:
        build_model(spark, graph.node(table), str(parquet / "out" / table))
    return parquet


@pytest.mark.parametrize("table", HARMONIZED)
def test_each_harmonized_model_gives_duckdbs_rows(spark, store: Path, on_spark: Path,  # noqa: ANN001
                                                  table: str) -> None:
    with duckdb.connect(str(store), read_only=True) as con:
        rows = con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        diff = table_diff(con, f"SELECT * FROM {table}", spark, f"SELECT * FROM {table}")
    assert rows > 0, f"{table} is empty on DuckDB: the parity says nothing"
    assert diff.equal, str(diff)


def test_the_cohort_reaches_every_branch(store: Path) -> None:
    """The parity above covers the cases that differ between engines, not only clean rows."""
    with duckdb.connect(str(store), read_only=True) as con:
        problems = {r[0] for r in con.execute(
            "SELECT DISTINCT problem_code FROM harmonized.observation_value").fetchall()}
        retracted = con.execute("SELECT count(*) FROM harmonized.condition "
                                "WHERE problem_code = 'retracted'").fetchone()[0]
        sites = con.execute("SELECT count(*) FROM harmonized.condition "
                            "WHERE cardinality(body_sites) > 0").fetchone()[0]
        derived = {r[0:2] for r in con.execute(
            "SELECT derivation, comparator FROM harmonized.lab").fetchall()}
    assert {None, "no_unit", "unit_not_convertible", "implausible_magnitude"} <= problems
    assert retracted > 0
    assert sites > 0
    assert {("wbc_x_neutrophil_pct", None), ("wbc_x_segmented_band_pct", "<")} <= derived


# ---- the macro pairs, one by one ---------------------------------------------------------

# The real-world unit spellings the DuckDB tests convert (tests/transform/unit_spellings.csv).
SPELLINGS = sorted({r["spelling"] for r in csv.DictReader(
    (Path(__file__).parents[1] / "transform" / "unit_spellings.csv")
    .read_text(encoding="utf-8").splitlines())})

# Date-times as servers send them: UTC, the site's offset, other offsets, no seconds, many
# decimals, no offset, a date alone, and what is not a FHIR time.
SITE_TIMES = [
    "2021-03-05T04:30:00Z", "2021-03-04T23:30:00Z", "2021-03-04T14:00:00Z",
    "2021-03-04T23:30:00+08:00", "2021-03-04T07:30:00+08:00", "2021-03-04T23:30:00-05:00",
    "2021-03-04T20:00:00-05:00", "2021-03-04T23:30Z", "2021-03-04T23:30+08:00",
    "2021-03-04T23:30:00.123Z", "2021-03-04T23:30:00.123456789Z", "2021-03-04T10:00:00+14:00",
    "2021-03-04T10:00:00+0800", "2021-03-04T10:00:00+15:00", "2021-03-04T23:30:00",
    "2021-03-04 23:30:00Z", "2021-03-04T24:00:00Z", "2021-03-04T23:59:60Z",
    "2021-02-30T23:30:00Z", "2021-12-31T23:30:00Z", "2021-03-04", "2021-03", "2021", "bad", "",
    " 2021-03-04T23:30:00Z", "2021-03-04T23:30:00Z\n", None]

CASES: dict[str, tuple[str, list[object]]] = {
    "unit_key": ("unit_key(?)", [
        "x10^9/L", "10*9/L", "x10E9/L", "×10^9/L", "μmol/L", "µmol/L", "{cells}/uL",
        "cells/uL", "[iU]/L", " mg / dL ", "°C", "℃", "°F", "10e3/uL", "10E+9/L",
        "10^9\u00a0/L", "\tK/µL\n", "mcg/mL", "mCi", "m^2", "10⁻³/L", "IU/mL", "mEq/dL",
        "cells/hpf", "", None, *SPELLINGS]),
    "local_date": ("local_date(?)", [
        "2021-06", "2021", "2021-06-01", "2021-03-04T23:30:00+08:00", "2021-6-1",
        "2021-02-30", "bad", "", "2021-06-01T", "20210601", "2021/6/1", "2021/06-01",
        " 2021-06-01", "2021-06-01  ", "2021.06.01", "2021 06 01", "2021-06-01x", None]),
    "fhir_instant": ("fhir_instant(?)", [
        "2021-03-04T23:30:00+08:00", "2021-03-04T23:30:00Z", "2021-03-04T23:30:00.123Z",
        "2021-03-04T23:30:00", "2021-03-04T23:30", "2021-03-04T24:00:00Z", "2021-03-04T24:00+08:00",
        "2021-03-04T24:00:01Z", "2021-03-04T23:30+08:00",
        "2021-03-04T23:30:00-05:00", "2021-03-04", "2021-06", "2021", "bad", "", None]),
    # A DST zone around its switches (US 2021: 14 March, 7 November), zones without DST, a
    # half-hour zone, and no zone: ICU (DuckDB) and Java's tzdb (Spark) agree on these.
    "site_date": ("site_date(?, 'America/New_York')", [*SITE_TIMES, "2021-03-14T06:30:00Z",
                  "2021-03-14T07:30:00Z", "2021-03-15T03:30:00Z", "2021-03-15T04:30:00Z",
                  "2021-11-07T04:30:00Z", "2021-11-07T05:30:00Z", "2021-11-08T04:30:00Z"]),
    "site_date Asia/Shanghai": ("site_date(?, 'Asia/Shanghai')", SITE_TIMES),
    "site_date Asia/Kolkata": ("site_date(?, 'Asia/Kolkata')", SITE_TIMES),
    "site_date Europe/Berlin": ("site_date(?, 'Europe/Berlin')", [
        *SITE_TIMES, "2021-03-27T23:30:00Z", "2021-03-28T22:30:00Z", "2021-10-30T22:30:00Z",
        "2021-10-31T23:30:00Z"]),
    "site_date without zone": ("site_date(?, CAST(NULL AS STRING))", SITE_TIMES),
    "grade_from_text": ("grade_from_text(?)", [
        "2级", "Grade 3", "ASTCT grade 2", "III", "III级", "grade IV", "V", "VI", "II-III",
        "iii", "none", "", None]),
    "code_key": ("code_key(?)", ["A41.9", " a41.9 ", "A419", "J18.900x001", ".", None]),
    "system_key": ("system_key(?)", [
        "HTTPS://www.LOINC.org/", "http://snomed.info/sct/900000000000207008/version/20230131",
        "http://snomed.info/sct|20230131", " http://loinc.org// ", "urn:oid:2.16.840.1.113883.6.1",
        "http://www.ama-assn.org/go/cpt", "", None]),
    "json_text": ("json_text(?, '$.code')", [
        '{"system":"http://loinc.org","code":"33939-0"}', '{"code":12}', '{"code":null}',
        '{"display":"x"}', None]),
    "matches_regex": ("matches_regex(?, '(?i)car-?t')", ["CAR-T infusion", "cart", "car t", None]),
    "in_quotes": ("in_quotes(?)", ["mg/dL", "it's", "", None]),
    "item_at": ("item_at(split(?, ','), 2)", ["a,b,c", "a", "", None]),
    "key_prefixes": ("key_prefixes(?, 4)", ["A41.9", "a", ".", "", None]),
    "to_int": ("to_int(CAST(? AS DOUBLE))", ["2.5", "3.5", "-2.5", "2.4", "7", None]),
    "num_text": ("num_text(CAST(? AS DOUBLE))", [
        "5.2", "100", "0", "0.0052", "12345678", "123.25", "1.5e9", "-4.75", None]),
    # the texts of tests/transform/test_text_results.py (what laboratory systems send)
    "value_token": ("value_token(?)", [*TEXTS, "5.", "5 mg\nL", "<\n3", None]),
    # as a decimal: Java writes 1.2E-4 where DuckDB writes 0.00012, the same double
    "value_number": ("CAST(value_number(?) AS DECIMAL(24, 10))", [
        *TEXTS, "5.", "1e", "1.5e+03", "00,5", None]),
    "value_comparator": ("value_comparator(?)", [*TEXTS, "5", "< x", "<\n3", None]),
    "value_unit": ("value_unit(?)", [*TEXTS, "12 x10^9/L ", "5 mg\nL", "5.", None]),
}


def _duck(expr: str, value: object) -> object:
    with duckdb.connect() as con:
        con.execute("SET TimeZone = 'UTC'")
        create_macros(con, load_graph())
        return con.execute(f"SELECT CAST({expr} AS VARCHAR)",
                           [None if value is None else str(value)]).fetchone()[0]


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_macro_pair_means_the_same_on_both_engines(spark, name: str) -> None:  # noqa: ANN001
    create_functions(spark)
    expr, values = CASES[name]
    differences = []
    for value in values:
        duck = _duck(expr, value)
        literal = "CAST(NULL AS STRING)" if value is None else sql_string(str(value))
        spark_expr = expr.replace("?", literal, 1)  # the parameter
        if name in ("fhir_instant",):
            spark_expr = f"date_format({spark_expr}, 'yyyy-MM-dd HH:mm:ss.SSSSSS')"
            duck = None if duck is None else _duck(
                f"strftime(timezone('UTC', {expr}), '%Y-%m-%d %H:%M:%S.%f')", value)
        got = spark.sql(f"SELECT CAST({spark_expr} AS STRING)").collect()[0][0]
        if name in ("key_prefixes", "item_at") and got is not None:
            # lists as text: DuckDB quotes elements and writes NULL, Spark neither
            duck = None if duck is None else duck.replace("'", "").replace("NULL", "null")
        if got != duck:
            differences.append((value, duck, got))
    assert not differences, f"{name}: (input, DuckDB, Spark) {differences}"


PATTERNS = [  # (text, pattern) as ref.text_pattern and ref.body_site hold them
    ("car-t细胞回输", r"\bcar-?t\b|chimeric antigen receptor"),
    ("crs分级", r"(\bcrs\b|cytokine release).*(grade|分级)"),
    ("scar tissue", r"\bcar-?t\b"),
    ("cart", r"\bcar-?t\b"),
    ("left arm", r"\b(left|l)\b"),
    ("CAR-T", "(?i)" + r"\bcar-?t\b"),
]


@pytest.mark.parametrize(("text", "pattern"), PATTERNS)
def test_matches_regex_reads_a_pattern_as_re2_does(spark, text: str, pattern: str) -> None:  # noqa: ANN001
    create_functions(spark)
    with duckdb.connect() as con:
        create_macros(con, load_graph())
        duck = con.execute("SELECT matches_regex(?, ?)", [text, pattern]).fetchone()[0]
    got = spark.sql(f"SELECT matches_regex({sql_string(text)}, {sql_string(pattern)})"
                    ).collect()[0][0]
    assert got == duck


def test_the_macro_check_catches_a_difference(spark) -> None:  # noqa: ANN001
    """A Spark function that casts '2021-06' as Spark does is told apart from DuckDB's."""
    naive = spark.sql("SELECT CAST(try_cast('2021-06' AS DATE) AS STRING)").collect()[0][0]
    assert naive != _duck("local_date(?)", "2021-06")


def test_latest_key_takes_the_later_result_then_the_larger_value(spark) -> None:  # noqa: ANN001
    """Two results of one day given without a time tie on time: the larger value is taken,
    on both engines, whatever order the rows come in; a NULL time or value is skipped."""
    create_functions(spark)
    rows = ["(TIMESTAMP '2021-01-01 00:00:00', 3.0)", "(TIMESTAMP '2021-01-01 00:00:00', 5.0)",
            "(TIMESTAMP '2020-12-31 08:00:00', 9.0)", "(TIMESTAMP '2021-01-01 00:00:00', NULL)",
            "(CAST(NULL AS TIMESTAMP), 99.0)"]
    with duckdb.connect() as con:
        con.execute("SET TimeZone = 'UTC'")
        create_macros(con, load_graph())
        for order in (rows, rows[::-1]):
            duck = con.execute("SELECT CAST(max_by(v, latest_key(t, v)) AS DOUBLE) FROM "
                               f"(VALUES {', '.join(order)}) AS x(t, v)").fetchall()[0][0]
            got = spark.sql("SELECT CAST(max_by(v, latest_key(t, v)) AS DOUBLE) FROM "
                            f"VALUES {', '.join(order)} AS x(t, v)").collect()[0][0]
            assert duck == got == 5.0

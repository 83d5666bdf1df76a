"""table_diff: equal when only type spellings differ, unequal on any real difference."""

from __future__ import annotations

import duckdb
import pytest

from cartfhir.graph import load_graph
from cartfhir.spark.compare import table_diff
from cartfhir.spark.models import model_sql, split_statements

pytestmark = pytest.mark.spark

DUCK_TYPED = ("SELECT 1 AS a, CAST(1.5 AS DECIMAL(4,2)) AS b, "
              "TIMESTAMPTZ '2021-01-01 10:00:00+02' AS t, DATE '2021-01-01' AS d, "
              "[1, 2] AS l, {'x': 1.0} AS st, 'q' AS s, true AS bo")
SPARK_TYPED = ("SELECT 1L AS a, 1.5D AS B, timestamp'2021-01-01 08:00:00' AS t, "
               "date'2021-01-01' AS d, array(1, 2) AS l, named_struct('x', 1) AS st, "
               "'q' AS s, true AS bo")


def test_type_spellings_do_not_count(spark) -> None:
    diff = table_diff(duckdb.connect(), DUCK_TYPED, spark, SPARK_TYPED)
    assert diff.equal, str(diff)
    assert (diff.rows_duckdb, diff.rows_spark) == (1, 1)


@pytest.mark.parametrize("spark_sql", [
    SPARK_TYPED.replace("08:00:00", "10:00:00"),  # the same wall clock, another instant
    SPARK_TYPED.replace("array(1, 2)", "array(2, 1)"),  # list order counts
    SPARK_TYPED.replace("1.5D", "1.5001D"),
    SPARK_TYPED.replace("'q' AS s", "CAST(NULL AS STRING) AS s"),
])
def test_a_real_difference_counts(spark, spark_sql: str) -> None:
    diff = table_diff(duckdb.connect(), DUCK_TYPED, spark, spark_sql)
    assert not diff.equal
    assert (diff.count_only_duckdb, diff.count_only_spark) == (1, 1)


def test_duplicates_and_missing_columns(spark) -> None:
    con = duckdb.connect()
    diff = table_diff(con, "SELECT * FROM (VALUES (1), (1), (2)) AS t(a)",
                      spark, "SELECT * FROM VALUES (1), (2), (2) AS t(a)")
    assert (diff.count_only_duckdb, diff.count_only_spark) == (1, 1)
    assert diff.only_duckdb == [(1.0,)] and diff.only_spark == [(2.0,)]
    diff = table_diff(con, "SELECT 1 AS a, 2 AS b", spark, "SELECT 1 AS a")
    assert not diff.equal and diff.missing_columns == ["b"]
    assert table_diff(con, "SELECT 1 AS a WHERE false", spark,
                      "SELECT 1 AS a WHERE false").equal


def test_statements_split_outside_strings_and_comments() -> None:
    text = "SELECT ';' -- a ; here\n; /* ; */ SELECT 'it\\'s;' ;\n-- only a comment;"
    assert split_statements(text) == ["SELECT ';' -- a ; here", "/* ; */ SELECT 'it\\'s;'"]


def test_model_sql_is_the_base_file_without_an_override() -> None:
    node = load_graph().node("harmonized.lab")
    assert model_sql(node, "duckdb") == model_sql(node, "spark")
    with pytest.raises(ValueError, match="unknown engine"):
        model_sql(node, "sqlite")


def test_json_key_order_does_not_count_but_values_do(spark) -> None:
    con = duckdb.connect()
    same = table_diff(
        con, """SELECT '{"system":"s","code":"1"}' AS j, ['{"a":1,"b":[2]}'] AS l""",
        spark, """SELECT '{"code":"1","system":"s"}' AS j, array('{"b":[2],"a":1}') AS l""")
    assert same.equal, same
    other = table_diff(con, """SELECT '{"system":"s","code":"1"}' AS j""",
                       spark, """SELECT '{"code":"2","system":"s"}' AS j""")
    assert (other.count_only_duckdb, other.count_only_spark) == (1, 1)
    text = table_diff(con, "SELECT '{not json' AS j", spark, "SELECT '{not json' AS j")
    assert text.equal

"""quality: the report's run ids, validation outcome and data-quality counts, including a
pooled database that lacks raw.* (an absent table is said, never counted as zero)."""

from __future__ import annotations

import duckdb

from cartfhir.analyze import quality


def _db(with_raw: bool) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("CREATE SCHEMA qa; CREATE SCHEMA meta; CREATE SCHEMA raw")
    con.execute("CREATE TABLE qa.quarantine (site TEXT, resource_id TEXT)")
    con.execute("INSERT INTO qa.quarantine VALUES ('a', 'o1'), ('a', 'o2'), ('b', 'o3')")
    con.execute("CREATE TABLE qa.unmapped_codes (site TEXT, code TEXT, count BIGINT)")
    con.execute("INSERT INTO qa.unmapped_codes VALUES ('b', 'x', 4), ('b', 'y', 1)")
    if with_raw:
        con.execute("CREATE TABLE raw.rejected (site TEXT, line_no BIGINT)")
        con.execute("INSERT INTO raw.rejected VALUES ('c', 1)")
    con.execute("CREATE TABLE meta.runs (run_id TEXT, started TIMESTAMP, finished TIMESTAMP, "
                "status TEXT, stage TEXT)")
    con.execute("INSERT INTO meta.runs VALUES "
                "('t1', '2026-01-01 10:00', '2026-01-01 10:01', 'success', 'transform'), "
                "('v1', '2026-01-01 10:02', '2026-01-01 10:03', 'success', 'validate'), "
                "('v2', '2026-01-01 11:00', '2026-01-01 11:01', 'invalid', 'validate')")
    con.execute("CREATE TABLE qa.validation_result (run_id TEXT, severity TEXT, "
                "success BOOLEAN)")
    con.execute("INSERT INTO qa.validation_result VALUES ('v1', 'error', true), "
                "('v2', 'error', false), ('v2', 'warn', false), ('v2', 'error', true)")
    return con


def test_counts_by_site_with_every_table() -> None:
    frame = quality.data_quality(_db(with_raw=True), ["a"]).frame.set_index("site")
    assert frame.loc["a"].tolist() == [0, 2, 0, 0]
    assert frame.loc["b"].tolist() == [0, 1, 2, 5]
    assert frame.loc["c"].tolist() == [1, 0, 0, 0]


def test_a_pooled_database_without_raw_says_so() -> None:
    frame = quality.data_quality(_db(with_raw=False), ["a"]).frame.set_index("site")
    assert frame["lines rejected on landing"].eq(quality.ABSENT).all()
    assert frame.loc["b", "records quarantined"] == 1


def test_the_latest_validation_and_its_outcome() -> None:
    frame = quality.runs(_db(with_raw=True), "a1").frame.set_index("stage")
    assert frame.loc["analysis", "run id"] == "a1"
    assert frame.loc["transform", "run id"] == "t1"
    assert (frame.loc["validate", "run id"], frame.loc["validate", "status"]) == ("v2", "invalid")
    assert frame.loc["validate", "detail"] == ("3 expectations: 1 passed, 1 failed (error), "
                                               "1 failed (warning)")


def test_no_runs_table_is_no_runs_recorded() -> None:
    frame = quality.runs(duckdb.connect(), "a1").frame.set_index("stage")
    assert frame.loc["validate", "status"] == "no run recorded"

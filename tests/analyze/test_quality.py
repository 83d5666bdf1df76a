"""quality: the report's run ids, validation outcome and data-quality counts, including a
pooled database that lacks raw.* (an absent table is said, never counted as zero)."""

from __future__ import annotations

from datetime import datetime

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


def test_a_validation_older_than_the_last_transform_is_flagged() -> None:
    con = _db(with_raw=True)
    con.execute("INSERT INTO meta.runs VALUES ('t2', '2026-01-01 12:00', '2026-01-01 12:01', "
                "'success', 'transform')")
    stale = quality.stale_validation(con)
    assert stale is not None
    assert "not validated since the last transform" in stale
    assert "v2" in stale and "2026-01-01 11:00" in stale
    frame = quality.runs(con, "a1").frame.set_index("stage")
    assert "not validated since the last transform" in frame.loc["validate", "status"]


def test_a_validation_after_the_last_transform_is_current() -> None:
    con = _db(with_raw=True)
    assert quality.stale_validation(con) is None
    frame = quality.runs(con, "a1").frame.set_index("stage")
    assert frame.loc["validate", "status"] == "invalid"


def test_the_analysis_row_is_this_run_and_the_extract_is_listed() -> None:
    con = _db(with_raw=True)
    con.execute("INSERT INTO meta.runs VALUES ('e1', '2026-01-01 09:00', '2026-01-01 09:01', "
                "'partial', 'extract')")
    frame = quality.runs(con, "a1").frame.set_index("stage")
    assert frame.loc["analysis", "status"] == quality.THIS_RUN
    assert "running" not in frame.loc["analysis", "status"]
    assert (frame.loc["extract", "run id"], frame.loc["extract", "status"]) == ("e1", "partial")


def _pooled() -> duckdb.DuckDBPyConnection:
    """A pooled database: qa.site_completeness and meta.pool_package, no raw.* detail."""
    con = duckdb.connect()
    con.execute("CREATE SCHEMA qa; CREATE SCHEMA meta")
    con.execute("CREATE TABLE qa.site_completeness (site TEXT, episodes BIGINT, "
                "quarantined BIGINT, unmapped BIGINT, out_of_scope BIGINT, rejected BIGINT)")
    con.execute("INSERT INTO qa.site_completeness VALUES ('a', 5, 3, 7, 1, 2), "
                "('b', 4, 0, 1, 0, 0)")
    con.execute("CREATE TABLE meta.pool_package (site TEXT, created TEXT, manifest JSON)")
    manifest = ('{"site": "%s", "created": "2026-02-01T10:00:00+00:00", "validation": '
                '{"run_id": "%s", "failed_error": %d, "forced": %s, %s'
                '"transform_run_id": "t-%s", "transform_finished": "2026-02-01 09:00:00"}}')
    con.execute("INSERT INTO meta.pool_package VALUES ('a', '2026-02-01T10:00:00+00:00', ?), "
                "('b', '2026-02-01T11:00:00+00:00', ?)",
                [manifest % ("a", "va", 0, "false", "", "a"),
                 manifest % ("b", "vb", 2, "true", '"problem": "2 error expectations '
                             'failed", ', "b")])
    return con


def test_a_pooled_database_reads_quality_from_site_completeness() -> None:
    frame = quality.data_quality(_pooled(), ["a", "b"]).frame.set_index("site")
    assert frame.loc["a", "lines rejected on landing"] == 2
    assert frame.loc["a", "records quarantined"] == 3
    assert frame.loc["a", "records with unmapped codes"] == 8  # unmapped + out of scope
    assert frame.loc["b"].tolist()[:2] == [0, 0]
    assert frame.loc["a", "unmapped codes"] == quality.ABSENT  # distinct codes do not travel


def test_a_pooled_database_shows_each_package_validation() -> None:
    frame = quality.site_runs(_pooled()).frame.set_index("site")
    assert frame.loc["a", "validation run"] == "va"
    assert frame.loc["b", "validation"].startswith("forced")
    assert "2 error expectations failed" in frame.loc["b", "validation"]
    assert frame.loc["a", "transform run"] == "t-a"
    assert quality.site_runs(_db(with_raw=True)) is None


def test_every_time_in_the_report_reads_the_same_way() -> None:
    """One format for every time the report shows, whatever form the manifest or the
    database hands it in; a value that is no time is shown as written."""
    frame = quality.site_runs(_pooled()).frame.set_index("site")
    assert frame.loc["a", "exported"] == "2026-02-01 10:00 UTC"
    assert frame.loc["a", "transform finished"] == "2026-02-01 09:00 UTC"
    assert quality.when(datetime(2026, 2, 1, 9, 0, 59)) == "2026-02-01 09:00 UTC"
    assert quality.when("2026-02-01T11:00:00+01:00") == "2026-02-01 10:00 UTC"
    assert quality.when("soon") == "soon" and quality.when(None) == ""

"""Spark's raw input equals DuckDB's: the ``cartfhir export --raw`` layout (and the store's
own raw.resources, staged the same way) read back by Spark, row for row; the export keeps
every file inside its folder and overwrites nothing unasked."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest

from cartfhir import api
from cartfhir.config import Config
from cartfhir.db import connect
from cartfhir.errors import ConfigError, DatabaseError, UsageError
from cartfhir.spark.raw import export_raw, register_raw
from cartfhir.synth import generate
from tests import testbed

pytestmark = pytest.mark.spark

SITES = ("site_a", "site_b", "site_c")
REJECTED = "site, source_uri, line_no, resource_type, reason, payload, run_id"
COLUMNS = ("SELECT site, resource_type, id, resource::VARCHAR, source_uri, line_no, "
           "version_id, last_updated FROM raw.resources")


def _resource_row(row: tuple) -> tuple:
    site, rtype, rid, text, uri, line_no, version_id, stamp = row
    moment = None if stamp is None else stamp.replace(tzinfo=None).isoformat()
    return (site, rtype, rid, json.dumps(json.loads(text), sort_keys=True), uri,
            int(line_no), version_id, moment)


@pytest.fixture(scope="module")
def extracted(tmp_path_factory: pytest.TempPathFactory) -> Config:
    root = tmp_path_factory.mktemp("raw")
    generate(root / "data", patients=6, seed=3, sites=list(SITES), bad_rate=0.05)
    config = testbed.make_config(root, SITES)
    api.extract(config)
    return config


def test_export_raw_round_trips_through_spark(spark, extracted: Config,  # noqa: ANN001
                                              tmp_path: Path) -> None:
    config = extracted
    out = tmp_path / "export"
    con = connect(config.output.duckdb, read_only=True)
    try:
        rows = export_raw(con, out)
        duck = {_resource_row(r) for r in con.execute(COLUMNS).fetchall()}
        duck_rejected = sorted(con.execute(f"SELECT {REJECTED} FROM raw.rejected").fetchall())
        with pytest.raises(UsageError, match="not empty"):
            export_raw(con, out)
        assert export_raw(con, out, force=True) == rows
    finally:
        con.close()
    assert rows == len(duck) > 50
    site_dirs = sorted(p.name for p in (out / "raw.resources").iterdir())
    assert site_dirs == [f"site={s}" for s in SITES]
    assert (out / "raw.resources" / "site=site_a" / "resource_type=Patient").is_dir()

    engine = config.engine_for("spark").model_copy(update={"raw": str(out)})
    result = register_raw(spark, config, None, engine)
    assert result.source == "folder"
    back = spark.sql(COLUMNS.replace("::VARCHAR", "")).collect()
    assert {_resource_row(tuple(r)) for r in back} == duck
    assert len(back) == rows
    # raw.rejected (qa.site_completeness counts it) comes along, row for row
    rejected = sorted(spark.sql(f"SELECT {REJECTED} FROM raw.rejected").collect())
    assert [tuple(r) for r in rejected] == duck_rejected and duck_rejected
    # and the store itself, exported to <tables>/_raw by DuckDB
    result = register_raw(spark, config, config.output.duckdb, config.engine_for("spark"))
    assert result.source == "store"
    assert result.location.startswith(str(Path(config.engine_for("spark").tables) / "_raw"))
    back = spark.sql(COLUMNS.replace("::VARCHAR", "")).collect()
    assert {_resource_row(tuple(r)) for r in back} == duck


def test_an_export_is_all_or_nothing(spark, extracted: Config, tmp_path: Path) -> None:  # noqa: ANN001
    """The manifest goes in last; an export without it (cut short) is refused as input."""
    out = tmp_path / "export"
    con = connect(extracted.output.duckdb, read_only=True)
    try:
        export_raw(con, out)
    finally:
        con.close()
    assert sorted(p.name for p in out.iterdir()) == ["raw.export.json", "raw.rejected",
                                                     "raw.resources"]
    engine = extracted.engine_for("spark").model_copy(update={"raw": str(out)})
    (out / "raw.export.json").unlink()
    with pytest.raises(ConfigError, match="no complete export"):
        register_raw(spark, extracted, None, engine)
    (out / "raw.export.json").write_text("not json")
    with pytest.raises(ConfigError, match="not an export manifest"):
        register_raw(spark, extracted, None, engine)


def test_a_missing_export_folder_is_a_config_error(spark, tmp_path: Path) -> None:  # noqa: ANN001
    config = testbed.make_config(tmp_path, ["site_a"], engine={"kind": "spark",
                                                               "raw": "nowhere"})
    with pytest.raises(ConfigError, match="export --raw"):
        register_raw(spark, config, None, config.engine_for())


def test_the_export_refuses_links_files_and_rows_that_cannot_name_a_folder(
        extracted: Config, tmp_path: Path) -> None:
    con = connect(extracted.output.duckdb, read_only=True)
    try:
        (tmp_path / "real").mkdir()
        (tmp_path / "link").symlink_to(tmp_path / "real")
        with pytest.raises(UsageError, match="symbolic link"):
            export_raw(con, tmp_path / "link", force=True)
        (tmp_path / "file").write_text("x")
        with pytest.raises(UsageError, match="is a file"):
            export_raw(con, tmp_path / "file", force=True)
        # --force replaces raw.resources only, and leaves the folder's other files
        (tmp_path / "mine").mkdir()
        (tmp_path / "mine" / "notes.txt").write_text("keep")
        assert export_raw(con, tmp_path / "mine", force=True) > 0
        assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"
    finally:
        con.close()
    assert list((tmp_path / "real").iterdir()) == []
    # a site id that would climb out of the folder is refused before anything is written
    bad = duckdb.connect()
    bad.execute("CREATE SCHEMA raw")
    bad.execute("CREATE TABLE raw.resources AS SELECT '../../evil' AS site, "
                "'Patient' AS resource_type, 'p' AS id, NULL::VARCHAR AS version_id, "
                "NULL::TIMESTAMPTZ AS last_updated, '{}'::JSON AS resource, "
                "'file:///x' AS source_uri, 1::BIGINT AS line_no")
    bad.execute("CREATE TABLE raw.rejected (site VARCHAR, source_uri VARCHAR, line_no BIGINT, "
                "resource_type VARCHAR, reason VARCHAR, payload VARCHAR, run_id VARCHAR, "
                "rejected_at TIMESTAMPTZ)")
    with pytest.raises(DatabaseError, match="cannot name a folder"):
        export_raw(bad, tmp_path / "evil")
    bad.close()
    assert not (tmp_path / "evil").exists() or list((tmp_path / "evil").iterdir()) == []
    assert not (tmp_path.parent / "evil").exists()

"""Site packages and pooling: nothing identifying leaves, tampering is refused, pooling adds up."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from cartfhir import api
from cartfhir.cli import run_cli
from cartfhir.errors import PoolError
from cartfhir.multisite.pool import parquet_folder
from tests.testbed import make_config

from .helpers import SITES, assert_same_comparison, identifiers, leaked, sha256, truth_comparison


def test_no_identifier_of_the_cohort_is_in_a_package(packaged: dict, tmp_path: Path) -> None:
    secrets = identifiers(packaged["root"] / "data")
    assert len(secrets) > 100
    folder = packaged["packages"]["site_a"]
    assert not leaked(folder, secrets)
    shutil.unpack_archive(packaged["packages"]["site_c"], tmp_path / "c")
    assert not leaked(tmp_path / "c", secrets)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["disclosure"]["emptied_columns"]["cohort.patient"] == ["birth_date"]
    assert manifest["validation"]["failed_error"] == 0 and not manifest["validation"]["forced"]
    assert {t["file"] for t in manifest["tables"].values()} == {
        p.name for p in folder.glob("*.parquet")}
    # the site's file paths stay at the site: origins are package files or bare file names
    assert str(packaged["root"]) not in (folder / "manifest.json").read_text()
    assert {r["origin"] for r in manifest["reference"] if "map" in r["name"]} >= {
        "site_a_map.csv"}


def test_date_shift_keeps_intervals(packaged: dict, tmp_path: Path) -> None:
    shutil.unpack_archive(packaged["packages"]["site_c"], tmp_path / "c")
    con = duckdb.connect()
    file = tmp_path / "c" / "cohort.episode_endpoints.parquet"
    shifted = con.execute(
        f"SELECT patient_key, round, infusion_date, date_diff('day', infusion_date, "
        f"last_contact_date) FROM read_parquet('{file}')").fetchall()
    con.close()
    con = duckdb.connect(str(packaged["config"].output.duckdb), read_only=True)
    original = {(k, r): (d, n) for k, r, d, n in con.execute(
        "SELECT patient_key, round, infusion_date, date_diff('day', infusion_date, "
        "last_contact_date) FROM cohort.episode_endpoints WHERE site = 'site_c'").fetchall()}
    con.close()
    moved = [(original[(k, r)][0] != d) for k, r, d, _ in shifted]
    assert any(moved)  # dates moved ...
    assert all(original[(k, r)][1] == n for k, r, _, n in shifted)  # ... intervals did not


def test_pooled_analysis_equals_the_analysis_of_the_combined_truth(
        packaged: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Genuine signed packages pool through 'cartfhir pool --keys' as a coordinator runs it."""
    out = tmp_path / "pooled.duckdb"
    capsys.readouterr()
    assert run_cli(["pool", *map(str, packaged["packages"].values()), "--out", str(out),
                    *packaged["pool_args"]]) == 0, capsys.readouterr().err
    assert f"pooled sites: {', '.join(SITES)}" in capsys.readouterr().out
    con = duckdb.connect(str(out), read_only=True)
    failed = con.execute("SELECT suite, expectation, column_name FROM qa.validation_result "
                         "WHERE NOT success").fetchall()
    signed_by = [r[0] for r in con.execute("SELECT signed_by FROM meta.pool_package").fetchall()]
    assert not failed and all(s.startswith("ed25519:") for s in signed_by), (failed, signed_by)
    pooled = con.execute("SELECT * FROM analysis.comparison").df()
    thresholds = con.execute("SELECT * FROM ref.threshold").df()
    sites = {r[0] for r in con.execute("SELECT DISTINCT site FROM analysis.comparison").fetchall()}
    heterogeneity = con.execute("SELECT count(*) FROM analysis.heterogeneity").fetchone()[0]
    validations = [json.loads(r[0])["validation"]["run_id"] for r in con.execute(
        "SELECT manifest FROM meta.pool_package ORDER BY site").fetchall()]
    con.close()
    assert sites == {"all", *SITES} and heterogeneity > 0
    # the pooled report: each package's validation, per-site quality from the packages'
    # qa.site_completeness, and the heterogeneity test, which is exported too
    report = (tmp_path / "pooled_report" / "report.html").read_text("utf-8")
    assert all(run_id in report for run_id in validations)
    quality = pd.read_csv(tmp_path / "pooled_report" / "tables" / "data_quality.csv",
                          dtype=str).set_index("site")
    assert set(quality.index) == set(SITES)
    assert quality[["lines rejected on landing", "records quarantined"]].map(
        str.isdigit).all().all(), quality
    assert "Breslow" in report and "Heterogeneity between sites" in report
    assert (tmp_path / "pooled_report" / "analysis" / "heterogeneity.csv").exists()
    truth = truth_comparison([packaged["root"] / "data" / "truth" / "episodes.csv"], thresholds)
    assert_same_comparison(pooled, truth)


def _pool_refuses(packaged: dict, packages: list[Path], out: Path, match: str) -> None:
    before = sha256(out)
    with pytest.raises(PoolError, match=match):
        api.pool(packages, out, analyse=False, **packaged["pool_kwargs"])
    assert sha256(out) == before  # the existing pooled database is untouched


def test_tampered_packages_are_refused_and_the_pool_is_untouched(packaged: dict,
                                                                 tmp_path: Path) -> None:
    out = tmp_path / "pooled.duckdb"
    api.pool([packaged["packages"]["site_a"]], out, analyse=False, **packaged["pool_kwargs"])
    changed = tmp_path / "changed"
    shutil.copytree(packaged["packages"]["site_a"], changed)
    parquet = changed / "cohort.episode_endpoints.parquet"
    parquet.write_bytes(parquet.read_bytes()[:-20] + b"x" * 20)
    _pool_refuses(packaged, [changed], out, "does not match its SHA-256")

    missing = tmp_path / "missing"
    shutil.copytree(packaged["packages"]["site_a"], missing)
    (missing / "harmonized.lab.parquet").unlink()
    _pool_refuses(packaged, [missing], out, "harmonized.lab.parquet .* is missing")

    version = tmp_path / "version"
    shutil.copytree(packaged["packages"]["site_a"], version)
    manifest = json.loads((version / "manifest.json").read_text())
    manifest["schema_version"] = "cartfhir-site-package/0"
    (version / "manifest.json").write_text(json.dumps(manifest))
    _pool_refuses(packaged, [version], out, "schema version")

    twin = tmp_path / "twin"
    shutil.copytree(packaged["packages"]["site_a"], twin)
    _pool_refuses(packaged, [packaged["packages"]["site_a"], twin], out, "given twice")
    manifest = json.loads((twin / "manifest.json").read_text())
    manifest["created"] = "2099-01-01T00:00:00+00:00"
    (twin / "manifest.json").write_text(json.dumps(manifest))
    packaged["resign"](twin, "site_a")
    _pool_refuses(packaged, [packaged["packages"]["site_a"], twin], out, "both claim site 'site_a'")


def test_a_newer_package_replaces_only_its_site(packaged: dict, tmp_path: Path) -> None:
    out = tmp_path / "pooled.duckdb"
    api.pool(list(packaged["packages"].values()), out, analyse=False, **packaged["pool_kwargs"])
    con = duckdb.connect(str(out), read_only=True)
    before = dict(con.execute("SELECT site, count(*) FROM harmonized.lab GROUP BY site")
                  .fetchall())
    con.close()
    time.sleep(1.1)  # a later 'created' second
    newer = api.export_site(packaged["config"], "site_a", tmp_path / "site_a_v2").path
    api.pool([newer], out, analyse=False, **packaged["pool_kwargs"])
    con = duckdb.connect(str(out), read_only=True)
    after = dict(con.execute("SELECT site, count(*) FROM harmonized.lab GROUP BY site")
                 .fetchall())
    sources = dict(con.execute("SELECT site, source FROM meta.pool_package").fetchall())
    con.close()
    assert after == before and sources["site_a"] == str(newer)
    _pool_refuses(packaged, [packaged["packages"]["site_a"]], out, "newer package")


def test_export_refuses_invalid_data_unless_forced(packaged: dict, tmp_path: Path) -> None:
    root = tmp_path / "copy"
    shutil.copytree(packaged["root"], root, ignore=shutil.ignore_patterns("pkg"))
    config = make_config(root, SITES)
    con = duckdb.connect(str(config.output.duckdb))
    con.execute("UPDATE qa.validation_result SET success = false WHERE expectation_index = 0 "
                "AND suite = 'cohort.episode'")
    con.close()
    with pytest.raises(PoolError, match="error expectations failed"):
        api.export_site(config, "site_a", tmp_path / "refused")
    forced = api.export_site(config, "site_a", tmp_path / "forced", force=True)
    manifest = json.loads((forced.path / "manifest.json").read_text())
    assert forced.forced and manifest["validation"]["forced"] is True


def test_pooling_into_a_database_with_a_pending_wal_keeps_its_data(
        packaged: dict, pooled_a: Path, tmp_path: Path) -> None:
    out = tmp_path / "pooled.duckdb"
    shutil.copy2(pooled_a, out)
    con = duckdb.connect(str(out))
    con.execute("PRAGMA disable_checkpoint_on_shutdown")
    con.execute("CREATE TABLE main.operator_notes AS SELECT 'important' AS note")
    con.close()
    wal = tmp_path / "pooled.duckdb.wal"
    assert wal.exists()  # the note lives only in the WAL
    api.pool([packaged["packages"]["site_c"]], out, analyse=False, **packaged["pool_kwargs"])
    assert not wal.exists()  # a stale WAL next to the new file would be replayed into it
    con = duckdb.connect(str(out), read_only=True)
    assert con.execute("SELECT note FROM main.operator_notes").fetchall() == [("important",)]
    assert con.execute("SELECT site FROM meta.pool_package ORDER BY site").fetchall() == [
        ("site_a",), ("site_c",)]
    con.close()
    # beside the database only its Parquet twin (no staged or old folder left behind),
    # which holds the pooled graph tables of both sites and not the operator's own table
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pooled.duckdb", "pooled_parquet"]
    folder = parquet_folder(out)
    assert folder == tmp_path / "pooled_parquet"
    assert "main.operator_notes" not in {p.name for p in folder.iterdir()}
    with duckdb.connect() as con:
        assert con.execute(
            "SELECT DISTINCT site FROM read_parquet(?, hive_partitioning = true) ORDER BY site",
            [str(folder / "meta.pool_package" / "**" / "*.parquet")]).fetchall() == [
            ("site_a",), ("site_c",)]


def test_a_relative_out_puts_the_report_next_to_the_pooled_file(
        packaged: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    assert run_cli(["pool", str(packaged["packages"]["site_c"]), "--out",
                    "center/pooled.duckdb", *packaged["pool_args"]]) == 0
    out = capsys.readouterr().out
    report = next(line for line in out.splitlines() if line.startswith("report"))
    assert Path(report.split(":", 1)[1].strip()).exists(), out
    assert (tmp_path / "center" / "pooled_report").is_dir()


def test_report_dir_takes_the_pooled_report_and_exports(
        packaged: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a_file").write_text("")
    assert run_cli(["pool", str(packaged["packages"]["site_c"]), "--out", "center/p.duckdb",
                    "--report-dir", "a_file", *packaged["pool_args"]]) == 2
    assert "--report-dir" in capsys.readouterr().err
    assert not (tmp_path / "center").exists()  # refused before anything was written
    assert run_cli(["pool", str(packaged["packages"]["site_c"]), "--out", "center/p.duckdb",
                    "--report-dir", "shared/pool", *packaged["pool_args"]]) == 0
    out = capsys.readouterr().out
    report = next(line for line in out.splitlines() if line.startswith("report"))
    assert Path(report.split(":", 1)[1].strip()) == tmp_path / "shared" / "pool" / "report.html"
    assert (tmp_path / "shared" / "pool" / "report.html").exists()
    assert (tmp_path / "shared" / "pool" / "analysis").is_dir()
    # the report and analysis go to --report-dir; only the database and its Parquet twin
    # (<stem>_parquet, the pooled tables, site-partitioned) stay beside --out
    assert sorted(p.name for p in (tmp_path / "center").iterdir()) == ["p.duckdb", "p_parquet"]
    folder = tmp_path / "center" / "p_parquet"
    assert sorted(p.name for p in (folder / "cohort.episode_endpoints").iterdir()) == [
        "site=site_c"]
    assert not (folder / "report.html").exists() and not (folder / "analysis").exists()


def test_validate_and_analyze_run_on_a_pooled_store_without_any_config(
        pooled_a: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The stages take the store and their own config sections: no site config is forged."""
    from cartfhir.analyze import analyze
    from cartfhir.config import Analysis, Config, Expectations
    from cartfhir.expectations import validate
    from cartfhir.expectations.suites import expectation_suites
    from cartfhir.multisite.pool import pooled_suite_names
    from cartfhir.store import Store

    def no_config(*args: object, **kwargs: object) -> None:
        raise AssertionError("a Config was made")

    monkeypatch.setattr(Config, "__init__", no_config)
    monkeypatch.setattr(Config, "model_validate", no_config)
    store = Store(tmp_path / "pooled.duckdb", memory_limit="256MB")
    shutil.copy2(pooled_a, store.path)

    settings = Expectations()
    suites = expectation_suites(settings, names=pooled_suite_names())
    report = validate(store, suites, settings, command="test")
    result = analyze(store, Analysis(), out=tmp_path / "report", study="Pooled study",
                     command="test")

    assert report.valid and report.outcomes, [o for o in report.outcomes if not o.success]
    assert result.report is not None and "Pooled study" in result.report.read_text()
    assert "sites: site_a." in result.report.read_text()
    with store.session(read_only=True) as con:
        runs = con.execute("SELECT stage, status FROM meta.runs WHERE command = 'test' "
                           "ORDER BY started").fetchall()
        stored = con.execute("SELECT count(*) FROM qa.validation_result WHERE run_id = ?",
                             [report.run_id]).fetchone()[0]
        sites = {r[0] for r in con.execute("SELECT site FROM analysis.comparison").fetchall()}
    assert runs == [("validate", "success"), ("analyze", "success")]
    assert stored == len(report.outcomes) and sites == {"all", "site_a"}


def test_every_connection_the_pool_opens_has_its_memory_limit(
        packaged: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    opened = []
    connect = duckdb.connect

    def recording(database: str = ":memory:", *args: object, **kwargs: object):  # noqa: ANN202
        opened.append((database, (kwargs.get("config") or {}).get("memory_limit")))
        return connect(database, *args, **kwargs)

    monkeypatch.setattr(duckdb, "connect", recording)
    api.pool([packaged["packages"]["site_a"]], tmp_path / "pooled.duckdb",
             memory_limit="300MB", **packaged["pool_kwargs"])
    assert opened and {limit for _, limit in opened} == {"300MB"}, opened

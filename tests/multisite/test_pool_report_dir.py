"""'cartfhir pool --report-dir' is checked before anything is read or written.

The report folder may not be the pooled database (or its WAL), nor lie inside it, nor
be or lie inside a package being pooled: the report must never overwrite the database
it describes or write into a package it is verifying. These refusals come before any
package is opened, so the packages here are plain folders and zips with no content.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.multisite.helpers import files_under, pool_cli


@pytest.fixture
def coordinator(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A coordinator's folder (the cwd) with a package folder and a zip package."""
    (tmp_path / "site_a").mkdir()
    (tmp_path / "site_a" / "manifest.json").write_text("{}")
    (tmp_path / "site_c.zip").write_bytes(b"PK")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _refused(args: list[str], watch: Path, capsys: pytest.CaptureFixture[str],
             *words: str) -> str:
    before = files_under(watch)
    dirs = sorted(p for p in watch.rglob("*") if p.is_dir())
    code, err = pool_cli(["site_a", "site_c.zip", "--allow-unsigned", *args], capsys)
    assert code == 2, err
    assert "internal error" not in err
    for word in words:
        assert word in err, err
    assert files_under(watch) == before
    assert sorted(p for p in watch.rglob("*") if p.is_dir()) == dirs
    return err


@pytest.mark.parametrize("report_dir", ["p2.duckdb", "./p2.duckdb", "p2.duckdb.wal",
                                        "p2.duckdb/report"])
def test_report_dir_may_not_be_the_pooled_database(
        coordinator: Path, capsys: pytest.CaptureFixture[str], report_dir: str) -> None:
    _refused(["--out", "p2.duckdb", "--report-dir", report_dir], coordinator, capsys,
             "--report-dir", "p2.duckdb")
    assert not (coordinator / "p2.duckdb").exists()


@pytest.mark.parametrize("report_dir", ["site_a", "site_a/report", "site_a/../site_a/x",
                                        "site_c.zip/report"])
def test_report_dir_may_not_be_inside_a_package(
        coordinator: Path, capsys: pytest.CaptureFixture[str], report_dir: str) -> None:
    name = report_dir.split("/")[0] if "zip" in report_dir else "site_a"
    _refused(["--out", "p.duckdb", "--report-dir", report_dir], coordinator, capsys,
             "--report-dir", name, "package")


def test_report_dir_reached_through_a_symlink_into_a_package_is_refused(
        coordinator: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (coordinator / "link").symlink_to(coordinator / "site_a")
    _refused(["--out", "p.duckdb", "--report-dir", "link/report"], coordinator, capsys,
             "--report-dir", "package")

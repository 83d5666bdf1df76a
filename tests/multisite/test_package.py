"""export-site writes a package where the user said: a new folder, an empty one, or a zip."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from cartfhir.cli import run_cli
from cartfhir.multisite.package import package_files

from .helpers import site_a_config


def test_export_into_an_existing_empty_folder_writes_the_files_there(
        packaged: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "outbox"
    empty.mkdir()
    assert run_cli(["export-site", "--config", str(site_a_config(packaged, tmp_path)), "--site",
                    "site_a", "--out", str(empty)]) == 0, capsys.readouterr().err
    assert sorted(p.name for p in empty.iterdir()) == sorted(package_files())
    assert run_cli(["pool", str(empty), "--out", str(tmp_path / "pooled.duckdb"),
                    *packaged["pool_args"]]) == 0, capsys.readouterr().err


def test_export_refuses_a_folder_that_is_not_empty(
        packaged: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    capsys.readouterr()
    assert run_cli(["export-site", "--config", str(site_a_config(packaged, tmp_path)), "--site",
                    "site_a", "--out", str(full)]) == 1
    assert "already exists" in capsys.readouterr().err
    assert [p.name for p in full.iterdir()] == ["keep.txt"]


def test_export_refuses_a_validation_older_than_the_latest_transform(
        packaged: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A transform after 'validate' makes new tables the validation never saw: the package
    would certify them. export-site refuses, --force records it, a fresh validate clears it."""
    root = packaged["root"]
    db = tmp_path / "t.duckdb"
    shutil.copy(root / "out" / "t.duckdb", db)
    config = site_a_config(packaged, tmp_path, output={"duckdb": str(db)})
    assert run_cli(["transform", "--config", str(config)]) == 0, capsys.readouterr().err
    capsys.readouterr()

    assert run_cli(["export-site", "--config", str(config), "--site", "site_a", "--out",
                    str(tmp_path / "stale")]) == 1
    err = capsys.readouterr().err
    assert "older than transform run" in err and "Run 'cartfhir validate'" in err, err
    assert not (tmp_path / "stale").exists()

    assert run_cli(["export-site", "--config", str(config), "--site", "site_a", "--out",
                    str(tmp_path / "forced"), "--force"]) == 0
    validation = json.loads((tmp_path / "forced" / "manifest.json").read_text())["validation"]
    assert validation["forced"] is True
    assert "older than transform run" in validation["problem"]

    assert run_cli(["validate", "--config", str(config)]) == 0, capsys.readouterr().err
    assert run_cli(["export-site", "--config", str(config), "--site", "site_a", "--out",
                    str(tmp_path / "fresh")]) == 0, capsys.readouterr().err
    validation = json.loads((tmp_path / "fresh" / "manifest.json").read_text())["validation"]
    assert validation["forced"] is False and "problem" not in validation

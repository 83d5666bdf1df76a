"""Kill a real ``cartfhir transform`` part-way: nothing changes, and later stages refuse.

The transform logs ``building <table>`` (JSON on stderr with ``--log-format json``)
before each table; the test kills the process with SIGKILL as soon as the line for
``flat.observation`` appears. Everything from there to the commit (the largest view,
the patient keys, every harmonized, cohort and qa model) is still to come, so the
kill lands mid-transform; the test checks that it did (the process died by the signal).
"""

from __future__ import annotations

import signal
from pathlib import Path

import duckdb
import pytest

from cartfhir.api import extract, transform
from cartfhir.cli import run_cli
from cartfhir.config import load_config
from cartfhir.synth import generate
from tests.snapshots import fingerprint, runs
from tests.stopping import signal_transform_at
from tests.testbed import write_config

SITES = ("site_a", "site_b")
KILL_AT = "flat.observation"  # built after flat.condition and before every model


def kill_transform_at(config: Path, table: str) -> None:
    """SIGKILL 'cartfhir transform' when it logs that ``table`` is being built."""
    code, err = signal_transform_at(config, table, signal.SIGKILL)
    assert code == -signal.SIGKILL, (
        f"the transform was not killed part-way (exit {code}); stderr:\n{err}")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A transformed two-site database whose raw data then changed (site_b re-landed empty)."""
    root = tmp_path_factory.mktemp("atomic")
    generate(root / "data", patients=30, seed=5, sites=list(SITES))
    path = write_config(root, list(SITES))
    config = load_config(path)
    extract(config)
    transform(config)
    con = duckdb.connect(str(config.output.duckdb))
    con.execute("DELETE FROM raw.resources WHERE site = 'site_b'")  # the next transform differs
    con.close()
    return path, config.output.duckdb


def test_killed_transform_leaves_every_table_as_it_was_and_later_stages_refuse(
        site: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config, db = site
    before = fingerprint(db)

    kill_transform_at(config, KILL_AT)

    assert fingerprint(db) == before  # flat, harmonized, cohort, qa, ref: all as they were
    *finished, killed = [r for r in runs(db) if r[1] == "transform"]
    assert [r[2] for r in finished] == ["success"]
    assert killed[1:3] == ("transform", "running")  # nothing has opened the database since

    # The next command marks the dead run, then refuses: the tables are not from the raw data.
    assert run_cli(["validate", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert f"transform run {killed[0]} was interrupted" in err
    assert "Re-run 'cartfhir transform'" in err
    assert f"from transform run {finished[0][0]}" in err
    status = {r[0]: r[2] for r in runs(db)}
    assert status[killed[0]] == "interrupted"
    assert "interrupted" in dict((r[0], r[3]) for r in runs(db))[killed[0]]

    for command in (["analyze"], ["export-site", "--site", "site_a", "--out",
                                  str(tmp_path / "site_a.zip")],
                    ["export", "--out", str(tmp_path / "store")]):
        assert run_cli([command[0], "--config", str(config), *command[1:]]) == 1, command
        err = capsys.readouterr().err
        assert f"transform run {killed[0]} was interrupted" in err, (command, err)
        assert "Re-run 'cartfhir transform'" in err, command
    assert not (tmp_path / "site_a.zip").exists() and not (tmp_path / "store").exists()

    # A complete transform clears it: the tables now follow the raw data, exports work.
    assert run_cli(["transform", "--config", str(config)]) == 0
    assert fingerprint(db) != before
    assert runs(db)[-1][1:3] == ("transform", "success")
    capsys.readouterr()
    assert run_cli(["export", "--config", str(config), "--out", str(tmp_path / "store"),
                    "--tables", "cohort.*"]) == 0
    assert (tmp_path / "store" / "cohort" / "episode").is_dir()


def test_failed_transform_is_rolled_back_and_later_stages_refuse(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    generate(tmp_path / "data", patients=3, seed=8, sites=list(SITES))
    path = write_config(tmp_path, list(SITES))
    config = load_config(path)
    extract(config)
    first = transform(config)
    con = duckdb.connect(str(config.output.duckdb))
    con.execute("DELETE FROM raw.resources WHERE site = 'site_b' AND resource_type = 'Condition'")
    con.close()
    before = fingerprint(config.output.duckdb)
    # site_a loses its pseudonym key: the transform fails after the flat tables, at the keys
    write_config(tmp_path, list(SITES), site_a={"pseudonym_key": None})

    assert run_cli(["transform", "--config", str(path)]) == 2
    assert "sites[site_a].pseudonym_key is not set" in capsys.readouterr().err
    assert fingerprint(config.output.duckdb) == before
    failed = runs(config.output.duckdb)[-1]
    assert failed[1:3] == ("transform", "failed")

    assert run_cli(["analyze", "--config", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"transform run {failed[0]} failed (sites[site_a].pseudonym_key is not set" in err
    assert f"still those from transform run {first.run_id}" in err
    assert runs(config.output.duckdb)[-1][1:3] == ("analyze", "failed")  # and says why

"""One pipeline run and two signed site packages shared by every pooling test (the run is slow)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from cartfhir import api
from cartfhir.cli import run_cli
from cartfhir.synth import generate
from tests.multisite.helpers import SITES
from tests.testbed import make_config


@pytest.fixture(scope="session")
def packaged(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """site_a as a folder, site_c as a date-shifted zip, both signed by their site's key
    (sites[].signing_key); the coordinator holds the public keys in ``keys``. site_a has
    a concept map of its own. ``resign(folder)`` signs an edited copy as site_c would."""
    root = tmp_path_factory.mktemp("pool")
    generate(root / "data", patients=16, seed=41, sites=SITES)
    (root / "maps").mkdir()
    (root / "maps" / "site_a_map.csv").write_text("resource_type,system,code,concept\n")
    keys = root / "center_keys"
    keys.mkdir()
    for site in SITES:
        assert run_cli(["keygen", "--site", site, "--out", str(root / "site_keys")]) == 0
        shutil.copy(root / "site_keys" / f"{site}.pub", keys)
    signed = {s: {"signing_key": {"file": f"site_keys/{s}.key"}} for s in SITES}
    config = make_config(root, SITES, site_a={"concept_maps": ["maps/site_a_map.csv"],
                                              **signed["site_a"]}, site_c=signed["site_c"])
    assert api.run(config).status == "success"
    packages = {"site_a": api.export_site(config, "site_a", root / "pkg" / "site_a").path,
                "site_c": api.export_site(config, "site_c", root / "pkg" / "site_c.zip",
                                          date_shift_days=30).path}

    def resign(folder: Path, site: str = "site_c") -> None:
        assert run_cli(["sign", str(folder), "--key",
                        str(root / "site_keys" / f"{site}.key")]) == 0

    return {"root": root, "config": config, "packages": packages, "keys": keys,
            "site_keys": root / "site_keys", "pool_args": ["--keys", str(keys)],
            "pool_kwargs": {"keys": keys}, "resign": resign}


@pytest.fixture(scope="session")
def pooled_a(packaged: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A pooled database holding site_a only (not analysed: copied by tests that add to it)."""
    out = tmp_path_factory.mktemp("pooled_a") / "pooled.duckdb"
    api.pool([packaged["packages"]["site_a"]], out, analyse=False, **packaged["pool_kwargs"])
    return out


@pytest.fixture
def center(pooled_a: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The coordinator's folder with a pooled database holding site_a; the cwd is there."""
    folder = tmp_path / "center"
    folder.mkdir()
    shutil.copy2(pooled_a, folder / "pooled.duckdb")
    monkeypatch.chdir(folder)
    return folder

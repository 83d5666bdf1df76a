"""End to end across two sites: one pulled by REST from HAPI, one from NDJSON; then pooled.

Each site extracts, transforms, validates and exports its package on its own; the
coordinating center pools both, and the pooled analysis equals the analysis of the
two sites' combined ground truth.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import orjson
import pytest

from cartfhir import api
from cartfhir.synth import generate
from tests.integration import hapi
from tests.multisite.helpers import assert_same_comparison, truth_comparison
from tests.testbed import fhir_source, make_config, ndjson_source

pytestmark = pytest.mark.integration


def site_config(root: Path, site: str, source: dict, center_keys: Path) -> object:
    """A hospital's own config; its signing key's public half goes to the center."""
    pair = api.keygen(site, root / "signing")
    center_keys.mkdir(exist_ok=True)
    shutil.copy(pair.public, center_keys)
    return make_config(root, [site], **{site: {"source": source,
                                              "signing_key": {"file": f"signing/{site}.key"}}},
                       study={"name": "pooled-e2e"}, output={"duckdb": "out/site.duckdb"})


def test_two_sites_rest_and_ndjson_pool_to_the_combined_truth(
        hapi_base_url: str, tmp_path: Path) -> None:
    hapi.reset(hapi_base_url)
    generate(tmp_path / "a", patients=6, seed=51, sites=["site_a"], bundles=True)
    hapi.load_bundles(hapi_base_url, tmp_path / "a" / "site_a")
    ids = [e["resource"]["id"] for b in sorted((tmp_path / "a" / "site_a" / "bundles")
                                               .glob("*.json"))
           for e in orjson.loads(b.read_bytes())["entry"]
           if e["resource"]["resourceType"] == "Patient"]
    (tmp_path / "ids.txt").write_text("\n".join(ids) + "\n")
    rest = site_config(tmp_path / "hospital_a", "site_a", fhir_source(
        hapi_base_url, cohort={"patient_ids_file": str(tmp_path / "ids.txt")},
        patients_per_query=3), tmp_path / "center_keys")
    generate(tmp_path / "c", patients=6, seed=52, sites=["site_c"])
    files = site_config(tmp_path / "hospital_c", "site_c",
                        ndjson_source(tmp_path / "c" / "site_c"),
                        tmp_path / "center_keys")

    packages = []
    for config, site in ((rest, "site_a"), (files, "site_c")):
        result = api.run(config)
        assert result.status == "success", (site, result.status, [
            (o.suite, o.column, o.error) for o in result.validation.failed_errors])
        packages.append(api.export_site(config, site, tmp_path / f"{site}.zip").path)

    out = tmp_path / "center" / "pooled.duckdb"
    pooled = api.pool(packages, out, keys=tmp_path / "center_keys")
    assert pooled.sites == ["site_a", "site_c"]
    con = duckdb.connect(str(out), read_only=True)
    table = con.execute("SELECT * FROM analysis.comparison").df()
    thresholds = con.execute("SELECT * FROM ref.threshold").df()
    con.close()
    truth = truth_comparison([tmp_path / "a" / "truth" / "episodes.csv",
                              tmp_path / "c" / "truth" / "episodes.csv"], thresholds)
    assert_same_comparison(table, truth)

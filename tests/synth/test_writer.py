"""The writer's injected bad lines (truth/injected.csv) are exactly those landing rejects."""

from __future__ import annotations

import csv
from pathlib import Path

import duckdb

from cartfhir.api import extract
from cartfhir.synth import generate
from tests.testbed import make_config


def test_landing_rejects_exactly_the_injected_lines(tmp_path: Path) -> None:
    synth = generate(tmp_path / "data", patients=12, seed=21, bad_rate=0.02, compress=True)
    config = make_config(tmp_path, ["site_a", "site_b"], landing={"validation": "full"})
    result = extract(config)
    assert result.status == "success"

    with (tmp_path / "data" / "truth" / "injected.csv").open() as fh:
        injected = list(csv.DictReader(fh))
    expected = {(i["site"], i["file"], int(i["line_no"])) for i in injected
                if i["kind"] != "unknown_unit"}
    con = duckdb.connect(str(config.output.duckdb), read_only=True)
    rejected = {(site, uri.rsplit("/", 1)[1], line_no) for site, uri, line_no in con.execute(
        "select site, source_uri, line_no from raw.rejected").fetchall()}
    assert rejected == expected

    # Every distinct valid resource landed once; unknown units are valid FHIR and land too.
    landed = dict(con.execute("select site || '/' || resource_type, count(*) from raw.resources "
                              "group by all").fetchall())
    for site, by_type in synth.resources.items():
        for rtype, n in by_type.items():
            assert landed[f"{site}/{rtype}"] == n, (site, rtype)
    unknown_units = con.execute("select count(*) from raw.resources where id like 'bad-%'")
    assert unknown_units.fetchone()[0] == sum(i["kind"] == "unknown_unit" for i in injected)

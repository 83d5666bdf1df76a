"""extract(): landing NDJSON folders into a real DuckDB file, end to end.

Each test writes small NDJSON files, runs ``extract`` against a DuckDB file in
tmp_path and reads the tables back.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import duckdb
import pytest

from cartfhir.api import extract
from cartfhir.config import Config
from cartfhir.errors import ConfigError, SourceError, StrictLandingError
from cartfhir.extract import ExtractResult
from tests.testbed import make_config

from .recording import RecordingProgress

ZERO = {"received": 0, "inserted": 0, "replaced": 0, "unchanged": 0, "stale": 0, "rejected": 0}


# --- input builders -------------------------------------------------------------


def resource(
    resource_type: str = "Patient",
    rid: str = "p1",
    version: str | None = None,
    updated: str | None = None,
    **fields: Any,
) -> str:
    body: dict[str, Any] = {"resourceType": resource_type, "id": rid}
    meta = {k: v for k, v in (("versionId", version), ("lastUpdated", updated)) if v}
    if meta:
        body["meta"] = meta
    body.update(fields)
    return json.dumps(body)


def observation(rid: str = "o1", **fields: Any) -> str:
    return resource(
        "Observation", rid, status="final",
        code={"coding": [{"system": "http://loinc.org", "code": "718-7"}]}, **fields,
    )


def observation_without_code(rid: str = "bad-obs") -> str:
    return resource("Observation", rid, status="final")


def write_ndjson(folder: Path, name: str, *lines: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return path


def site_folder(tmp_path: Path, site: str = "a") -> Path:
    folder = tmp_path / "sources" / site
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def config_for(
    tmp_path: Path,
    sites: tuple[str, ...] = ("a",),
    strict: bool = False,
    validation: str = "full",
    batch_size: int = 5000,
) -> Config:
    """Sites reading NDJSON under tmp_path/sources/<site>, with these landing settings."""
    return make_config(tmp_path, sites, data="sources", landing={
        "strict": strict, "validation": validation, "batch_size": batch_size})


# --- reading the database back --------------------------------------------------


def query(config: Config, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
    con = duckdb.connect(str(config.output.duckdb), read_only=True)
    try:
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()


def stored(config: Config) -> list[tuple[Any, ...]]:
    """raw.resources with instants as UTC text (no pytz needed)."""
    return query(
        config,
        "SELECT site, resource_type, id, version_id, "
        "CAST(timezone('UTC', last_updated) AS VARCHAR), resource::VARCHAR, "
        "regexp_extract(source_uri, '[^/]+$'), line_no, run_id, "
        "epoch_us(loaded_at), content_hash "
        "FROM raw.resources ORDER BY site, resource_type, id",
    )


def stored_versions(config: Config) -> dict[str, str | None]:
    return {f"{rt}/{rid}": vid for _, rt, rid, vid, *_ in stored(config)}


def rejected(config: Config, run_id: str | None = None) -> list[tuple[Any, ...]]:
    return query(
        config,
        "SELECT site, regexp_extract(source_uri, '[^/]+$'), line_no, resource_type, reason, "
        "payload FROM raw.rejected WHERE run_id = coalesce(?, run_id) "
        "ORDER BY source_uri, line_no",
        [run_id],
    )


def counts(result: ExtractResult, site: str = "a") -> dict[str, dict[str, int]]:
    return result.counts[site]


def c(**outcomes: int) -> dict[str, int]:
    return {**ZERO, **outcomes}


# --- first landing ----------------------------------------------------------------


def test_first_landing_stores_every_resource_with_provenance(tmp_path: Path) -> None:
    folder = site_folder(tmp_path)
    write_ndjson(folder, "Patient.ndjson",
                 resource("Patient", "p1", "1", "2024-01-01T10:00:00+02:00"),
                 resource("Patient", "p2"))
    write_ndjson(folder, "Observation.ndjson", observation("o1"))
    config = config_for(tmp_path)

    result = extract(config)

    assert result.status == "success"
    assert result.duckdb_path == tmp_path / "out" / "t.duckdb"
    assert counts(result) == {"Observation": c(received=1, inserted=1),
                              "Patient": c(received=2, inserted=2)}
    rows = stored(config)
    assert [r[:5] for r in rows] == [
        ("a", "Observation", "o1", None, None),
        ("a", "Patient", "p1", "1", "2024-01-01 08:00:00"),
        ("a", "Patient", "p2", None, None),
    ]
    p1 = rows[1]
    assert p1[5] == resource("Patient", "p1", "1", "2024-01-01T10:00:00+02:00")  # as received
    assert (p1[6], p1[7], p1[8]) == ("Patient.ndjson", 1, result.run_id)
    assert rejected(config) == []


def test_landing_the_same_input_twice_changes_nothing(tmp_path: Path) -> None:
    folder = site_folder(tmp_path)
    write_ndjson(folder, "Patient.ndjson",
                 resource("Patient", "p1", "1", "2024-01-01T00:00:00Z"), resource("Patient", "p2"))
    write_ndjson(folder, "sub/Observation.ndjson", observation("o1"), observation("o2"))
    config = config_for(tmp_path)

    first = extract(config)
    before = stored(config)
    second = extract(config)

    assert stored(config) == before  # same rows, same run_id and loaded_at
    assert {row[8] for row in before} == {first.run_id}
    assert counts(second) == {"Observation": c(received=2, unchanged=2),
                              "Patient": c(received=2, unchanged=2)}
    runs = query(config, "SELECT run_id, status FROM meta.runs ORDER BY started")
    assert runs == [(first.run_id, "success"), (second.run_id, "success")]


# --- versions -------------------------------------------------------------------


def test_newer_version_replaces_the_stored_one(tmp_path: Path) -> None:
    folder = site_folder(tmp_path)
    config = config_for(tmp_path)
    write_ndjson(folder, "p.ndjson", resource("Patient", "p1", "1", "2024-01-01T00:00:00Z"))
    first = extract(config)
    write_ndjson(folder, "p.ndjson",
                 resource("Patient", "p1", "2", "2024-02-01T00:00:00Z", active=True))

    second = extract(config)

    assert counts(second) == {"Patient": c(received=1, replaced=1)}
    (row,) = stored(config)
    assert row[3:5] == ("2", "2024-02-01 00:00:00")
    assert json.loads(row[5])["active"] is True
    assert row[8] == second.run_id != first.run_id


def test_older_version_is_stale_and_the_stored_one_kept(tmp_path: Path) -> None:
    folder = site_folder(tmp_path)
    config = config_for(tmp_path)
    write_ndjson(folder, "p.ndjson", resource("Patient", "p1", "2", "2024-02-01T00:00:00Z"))
    extract(config)
    before = stored(config)
    write_ndjson(folder, "p.ndjson", resource("Patient", "p1", "1", "2024-01-01T00:00:00Z"))

    second = extract(config)

    assert counts(second) == {"Patient": c(received=1, stale=1)}
    assert stored(config) == before


def test_version_ids_compare_as_numbers(tmp_path: Path) -> None:
    folder = site_folder(tmp_path)
    config = config_for(tmp_path)
    write_ndjson(folder, "p.ndjson",
                 resource("Patient", "p1", "10"), resource("Patient", "p1", "9"))

    result = extract(config)

    assert counts(result) == {"Patient": c(received=2, inserted=1, stale=1)}
    assert stored_versions(config) == {"Patient/p1": "10"}


def test_same_version_with_other_content_is_rejected_and_stored_kept(tmp_path: Path) -> None:
    folder = site_folder(tmp_path)
    config = config_for(tmp_path)
    write_ndjson(folder, "p.ndjson", resource("Patient", "p1", "1", "2024-01-01T00:00:00Z"))
    extract(config)
    before = stored(config)
    liar = resource("Patient", "p1", "1", "2024-01-01T00:00:00Z", gender="female")
    write_ndjson(folder, "p.ndjson", liar)

    second = extract(config)

    assert counts(second) == {"Patient": c(received=1, rejected=1)}
    assert stored(config) == before
    assert rejected(config, second.run_id) == [(
        "a", "p.ndjson", 1, "Patient",
        "conflicts with stored version (versionId 1, lastUpdated 2024-01-01T00:00:00Z) of "
        "Patient/p1 (same version, different content)",
        liar,
    )]


def test_without_meta_the_newly_landed_copy_wins(tmp_path: Path) -> None:
    folder = site_folder(tmp_path)
    config = config_for(tmp_path)
    write_ndjson(folder, "p.ndjson", resource("Patient", "p1", gender="male"))
    extract(config)
    write_ndjson(folder, "p.ndjson", resource("Patient", "p1", gender="female"))

    second = extract(config)

    assert counts(second) == {"Patient": c(received=1, replaced=1)}
    assert json.loads(stored(config)[0][5])["gender"] == "female"


def test_duplicates_in_one_file_follow_the_same_rules_in_input_order(tmp_path: Path) -> None:
    folder = site_folder(tmp_path)
    config = config_for(tmp_path)
    v1 = resource("Patient", "p1", "1", "2024-01-01T00:00:00Z")
    v2 = resource("Patient", "p1", "2", "2024-02-01T00:00:00Z")
    v2_other = resource("Patient", "p1", "2", "2024-02-01T00:00:00Z", active=False)
    write_ndjson(folder, "p.ndjson", v1, v2, v1, v2, v2_other,
                 resource("Patient", "n1", gender="male"),
                 resource("Patient", "n1", gender="female"))

    result = extract(config)

    assert counts(result) == {
        "Patient": c(received=7, inserted=2, replaced=2, stale=1, unchanged=1, rejected=1)
    }
    rows = {r[2]: r for r in stored(config)}
    assert (rows["p1"][5], rows["p1"][7]) == (v2, 2)  # the first copy of v2, line 2
    assert json.loads(rows["n1"][5])["gender"] == "female"  # last one wins without meta
    assert [r[2] for r in rejected(config)] == [5]


def test_batches_give_the_same_result_as_one_big_batch(tmp_path: Path) -> None:
    folder = site_folder(tmp_path)
    lines = []
    for i in range(120):  # v1 of each patient early, v2 later: pairs straddle batches
        lines.append(resource("Patient", f"p{i}", "1", "2024-01-01T00:00:00Z"))
    for i in range(120):
        lines.append(resource("Patient", f"p{i}", "2", "2024-02-01T00:00:00Z", active=True))
    lines += ["not json"] * 30
    write_ndjson(folder, "p.ndjson", *lines)

    results = {}
    for batch_size in (100, 5000):
        base = tmp_path / f"b{batch_size}"
        (base / "sources").mkdir(parents=True)
        (base / "sources" / "a").symlink_to(folder, target_is_directory=True)
        config = config_for(base, batch_size=batch_size)
        results[batch_size] = (counts(extract(config)),
                               [r[:8] for r in stored(config)], rejected(config))
    assert results[100] == results[5000]
    assert results[100][0] == {"Patient": c(received=240, inserted=120, replaced=120),
                               "unknown": c(received=30, rejected=30)}


# --- rejected lines ---------------------------------------------------------------


def test_rejected_lines_are_stored_with_exact_reasons(tmp_path: Path) -> None:
    folder = site_folder(tmp_path)
    write_ndjson(
        folder, "mixed.ndjson",
        '{"resourceType": "Patient", "id": ',          # 1 broken JSON
        "[1, 2]",                                       # 2 an array
        '{"id": "x"}',                                  # 3 no resourceType
        '{"resourceType": "Foo", "id": "x"}',           # 4 unknown type
        '{"resourceType": "Patient"}',                  # 5 no id
        '{"resourceType": "Patient", "id": "x y"}',     # 6 bad id
        observation_without_code(),                     # 7 invalid resource
        resource("Patient", "ok"),                      # 8 fine
    )
    config = config_for(tmp_path)

    result = extract(config)

    assert rejected(config) == [
        ("a", "mixed.ndjson", 1, None,
         "not valid JSON: unexpected end of data: line 1 column 35 (char 34)",
         '{"resourceType": "Patient", "id": '),
        ("a", "mixed.ndjson", 2, None, "not a JSON object (got array)", "[1, 2]"),
        ("a", "mixed.ndjson", 3, None, "missing resourceType", '{"id": "x"}'),
        ("a", "mixed.ndjson", 4, None, "unknown resourceType 'Foo'",
         '{"resourceType": "Foo", "id": "x"}'),
        ("a", "mixed.ndjson", 5, "Patient", "missing id", '{"resourceType": "Patient"}'),
        ("a", "mixed.ndjson", 6, "Patient",
         "id 'x y' does not match the FHIR id pattern [A-Za-z0-9-.]{1,64}",
         '{"resourceType": "Patient", "id": "x y"}'),
        ("a", "mixed.ndjson", 7, "Observation",
         "fails FHIR R4B validation: code: Field required", observation_without_code()),
    ]
    assert counts(result) == {
        "Observation": c(received=1, rejected=1),
        "Patient": c(received=3, inserted=1, rejected=2),
        "unknown": c(received=4, rejected=4),
    }
    assert result.totals() == c(received=8, inserted=1, rejected=7)


def test_structural_validation_lands_what_full_validation_rejects(tmp_path: Path) -> None:
    write_ndjson(site_folder(tmp_path), "o.ndjson", observation_without_code())
    config = config_for(tmp_path, validation="structural")

    result = extract(config)

    assert counts(result) == {"Observation": c(received=1, inserted=1)}
    assert stored_versions(config) == {"Observation/bad-obs": None}


def test_long_payloads_are_cut(tmp_path: Path) -> None:
    write_ndjson(site_folder(tmp_path), "x.ndjson", "x" * 100_000)
    config = config_for(tmp_path)
    extract(config)
    (row,) = rejected(config)
    assert len(row[5]) == 65_536


def test_blank_lines_are_skipped_not_rejected(tmp_path: Path) -> None:
    write_ndjson(site_folder(tmp_path), "p.ndjson",
                 "", resource("Patient", "p1"), "   ", "", resource("Patient", "p2"), "")
    config = config_for(tmp_path)

    result = extract(config)

    assert counts(result) == {"Patient": c(received=2, inserted=2)}
    assert [r[7] for r in stored(config)] == [2, 5]  # line numbers count blank lines
    assert rejected(config) == []


def test_gzip_input_and_a_truncated_gzip_file(tmp_path: Path) -> None:
    folder = site_folder(tmp_path)
    with gzip.open(folder / "Patient.ndjson.gz", "wt", encoding="utf-8") as handle:
        handle.write(resource("Patient", "p1") + "\n")
    lines = [resource("Patient", f"t{i}", text={"status": "generated", "div": f"{i * 7919:x}"})
             for i in range(3000)]
    broken = folder / "Truncated.ndjson.gz"
    with gzip.open(broken, "wt", encoding="utf-8") as handle:
        handle.writelines(line + "\n" for line in lines)
    broken.write_bytes(broken.read_bytes()[:-2000])
    config = config_for(tmp_path, validation="structural")

    result = extract(config)

    landed = counts(result)["Patient"]["inserted"]
    assert 1 < landed < 3001
    (corrupt,) = rejected(config)
    assert corrupt[1:4] == ("Truncated.ndjson.gz", landed, None)  # line after the last good one
    assert corrupt[4].startswith("gzip file is corrupt or truncated: ")
    assert counts(result)["unknown"] == c(received=1, rejected=1)
    assert "Patient/p1" in stored_versions(config)
    # The file could not be read to its end: the run is incomplete, and says where.
    assert result.status == "partial"
    (problem,) = result.problems
    assert problem.startswith("site a: file://") and "Truncated.ndjson.gz from line" in problem


# --- the run: strictness, bookkeeping, errors -----------------------------------


def test_strict_mode_raises_after_landing_the_valid_lines(tmp_path: Path) -> None:
    write_ndjson(site_folder(tmp_path), "p.ndjson", resource("Patient", "p1"), "[]", "{}")
    config = config_for(tmp_path, strict=True)

    with pytest.raises(StrictLandingError) as caught:
        extract(config)

    ((run_id, status, message),) = query(config, "SELECT run_id, status, message FROM meta.runs")
    assert status == "failed"
    assert str(caught.value) == message
    assert message.startswith("2 line(s) were rejected and landing.strict is on")
    assert f"select * from raw.rejected where run_id = '{run_id}'" in message
    assert stored_versions(config) == {"Patient/p1": None}
    assert len(rejected(config, run_id)) == 2


def test_strict_mode_with_nothing_rejected_succeeds(tmp_path: Path) -> None:
    write_ndjson(site_folder(tmp_path), "p.ndjson", resource("Patient", "p1"))
    assert extract(config_for(tmp_path, strict=True)).status == "success"


def test_run_row_records_status_counts_and_config_hash(tmp_path: Path) -> None:
    write_ndjson(site_folder(tmp_path), "p.ndjson", resource("Patient", "p1"), "[]")
    config = config_for(tmp_path)

    result = extract(config, command="extract --site a")

    ((run_id, status, command, config_hash, run_counts, message, finished),) = query(
        config,
        "SELECT run_id, status, command, config_hash, counts::VARCHAR, message, "
        "finished IS NOT NULL FROM meta.runs",
    )
    assert (run_id, status, command) == (result.run_id, "success", "extract --site a")
    assert config_hash == config.config_hash != ""
    assert json.loads(run_counts) == {"a": {"Patient": c(received=1, inserted=1),
                                            "unknown": c(received=1, rejected=1)}}
    assert message == "2 lines: 1 inserted, 0 replaced, 0 unchanged, 0 stale, 1 rejected"
    assert finished


def test_a_failure_while_landing_marks_the_run_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_ndjson(site_folder(tmp_path), "p.ndjson", resource("Patient", "p1"))
    config = config_for(tmp_path)

    def broken_land_folder(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr("cartfhir.extract.land_folder", broken_land_folder)
    with pytest.raises(RuntimeError, match="disk on fire"):
        extract(config)
    assert query(config, "SELECT status, message FROM meta.runs") == [
        ("failed", "RuntimeError: disk on fire")
    ]


def test_sites_are_kept_apart_and_can_be_selected(tmp_path: Path) -> None:
    write_ndjson(site_folder(tmp_path, "a"), "p.ndjson", resource("Patient", "p1", gender="male"))
    write_ndjson(site_folder(tmp_path, "b"), "p.ndjson", resource("Patient", "p1", gender="female"))
    config = config_for(tmp_path, sites=("a", "b"))

    only_b = extract(config, site_ids=["b"])
    assert list(only_b.counts) == ["b"]
    both = extract(config)

    assert counts(both, "a") == {"Patient": c(received=1, inserted=1)}
    assert counts(both, "b") == {"Patient": c(received=1, unchanged=1)}
    assert both.totals() == c(received=2, inserted=1, unchanged=1)
    assert both.totals("b") == c(received=1, unchanged=1)
    assert [(r[0], json.loads(r[5])["gender"]) for r in stored(config)] == [
        ("a", "male"), ("b", "female"),
    ]


def test_unknown_site_is_a_config_error(tmp_path: Path) -> None:
    write_ndjson(site_folder(tmp_path), "p.ndjson", resource())
    with pytest.raises(ConfigError, match="no site 'nope' in the config"):
        extract(config_for(tmp_path), site_ids=["nope"])


def test_missing_or_empty_folder_fails_before_the_database_is_created(tmp_path: Path) -> None:
    config = config_for(tmp_path)
    with pytest.raises(ConfigError, match="does not exist"):
        extract(config)
    site_folder(tmp_path)
    write_ndjson(site_folder(tmp_path), "manifest.json", "{}")
    with pytest.raises(SourceError, match="no \\*\\.ndjson or \\*\\.ndjson\\.gz files found"):
        extract(config)
    assert not config.output.duckdb.exists()


def test_progress_is_reported_in_bytes_per_site(tmp_path: Path) -> None:
    folder = site_folder(tmp_path)
    a = write_ndjson(folder, "a.ndjson", *[resource("Patient", f"p{i}") for i in range(3000)])
    b = write_ndjson(folder, "b.ndjson", resource("Patient", "q"))
    progress = RecordingProgress()

    extract(config_for(tmp_path), progress=progress)

    size = a.stat().st_size + b.stat().st_size
    assert progress.tasks == [("landing a", size, "bytes")]
    assert progress.advanced == size


@pytest.mark.slow
def test_a_process_pool_gives_the_same_result_as_checking_inline(tmp_path: Path) -> None:
    folder = site_folder(tmp_path)
    lines = [observation(f"o{i}", meta={"versionId": str(i % 3 + 1)}) for i in range(2500)]
    lines += [observation_without_code(f"bad{i}") for i in range(10)] + ["{"] * 5
    lines += [observation(f"o{i}", meta={"versionId": "9"}) for i in range(0, 2500, 7)]
    write_ndjson(folder, "o.ndjson", *lines)

    outcomes = []
    for workers in (0, 2):
        base = tmp_path / f"w{workers}"
        (base / "sources").mkdir(parents=True)
        (base / "sources" / "a").symlink_to(folder, target_is_directory=True)
        config = config_for(base, batch_size=1000)
        result = extract(config, workers=workers)
        outcomes.append((counts(result), [r[:8] for r in stored(config)], rejected(config)))

    assert outcomes[0] == outcomes[1]
    assert outcomes[0][0]["Observation"]["replaced"] == len(range(0, 2500, 7))

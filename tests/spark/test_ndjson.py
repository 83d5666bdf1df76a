"""``engine.raw: ndjson``: Spark lands the sites' NDJSON folders itself, and its raw.resources
and raw.rejected equal what ``cartfhir extract`` lands in the store from the same files, row
for row, both ways: same line numbers and file URIs, the same reasons for every hostile line
(oversize, not JSON, not an object, no resourceType or id, unknown type, invalid UTF-8, too
deep, a key twice, a truncated gzip, a version conflict), the same winner among versions of
one resource, and the same files skipped (symbolic links are not followed out of a folder).
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pytest

from cartfhir import api
from cartfhir.config import Config
from cartfhir.errors import ConfigError
from cartfhir.spark.compare import table_diff
from cartfhir.spark.raw import RawInput, register_raw
from cartfhir.synth import generate
from tests import testbed

pytestmark = pytest.mark.spark

SITES = ("site_a", "site_b")
LANDING = {"workers": 0, "max_line_bytes": 8192}
# Text columns prefixed so table_diff compares them exactly as written (it would otherwise
# re-serialise JSON-looking text, which fails on the too-deep line).
RESOURCES = ("SELECT site, resource_type, id, version_id, last_updated, "
             "'~' || CAST(resource AS STRING) AS resource, source_uri, line_no "
             "FROM raw.resources")
RESOURCE_COLUMNS = ["site", "resource_type", "id", "version_id", "last_updated", "resource",
                    "source_uri", "line_no"]
# run_id and rejected_at differ between any two landings, by design.
REJECTED = ("SELECT site, source_uri, line_no, resource_type, reason, '~' || payload AS payload "
            "FROM raw.rejected")
REJECTED_COLUMNS = ["site", "source_uri", "line_no", "resource_type", "reason", "payload"]


def patient(pid: str, version: str | None = "1", stamp: str | None = "2025-06-01T00:00:00Z",
            **fields: Any) -> bytes:
    meta = {k: v for k, v in (("versionId", version), ("lastUpdated", stamp)) if v}
    return orjson.dumps({"resourceType": "Patient", "id": pid, **({"meta": meta} if meta else {}),
                         **fields})


def deeply_nested(pid: str, levels: int = 130) -> bytes:
    extension: dict[str, Any] = {"url": "u", "valueString": "leaf"}
    for _ in range(levels):
        extension = {"url": "u", "extension": [extension]}
    return json.dumps({"resourceType": "Patient", "id": pid, "extension": [extension]}).encode()


def hostile_lines() -> bytes:
    """One of every kind of line landing rejects, among lines it lands, with a BOM, CRLF
    endings and blank lines (which count for line numbers but are not rows)."""
    lines = [
        b"\xef\xbb\xbf" + patient("h1"),
        b"",
        b"   ",
        b"not json at all",
        b"[1, 2, 3]",
        b'"just a string"',
        b'{"resourceType": "Patient"}',
        b'{"id": "no-type"}',
        b'{"resourceType": "Spaceship", "id": "s1"}',
        b'{"resourceType": 7, "id": "n1"}',
        b'{"resourceType": "Patient", "id": "bad id!"}',
        b'{"resourceType": "Patient", "id": "utf8bad", "name": [{"text": "\xff\xfe"}]}',
        patient("big", name=[{"family": "x" * 9000}]),  # over max_line_bytes (8192)
        deeply_nested("deep"),
        b'{"resourceType":"Patient","id":"dup","gender":"male","id":"zz"}',
        patient("v1", birthDate="not-a-date"),  # fails R4B validation
        patient("h2", stamp="2025-13-01T00:00:00Z"),
        # versions of one resource: a newer one replaces, an older one is stale, the
        # same version with other content is a conflict, an identical copy is unchanged
        patient("ver", "1", "2025-01-01T00:00:00Z"),
        patient("ver", "2", "2025-02-01T00:00:00Z", gender="female"),
        patient("ver", "1", "2025-01-01T00:00:00Z"),
        patient("ver", "2", "2025-02-01T00:00:00Z", gender="male"),
        patient("ver", "2", "2025-02-01T00:00:00Z", gender="female"),
        # nothing orders two copies without meta: the later one wins
        patient("nometa", None, None, gender="male"),
        patient("nometa", None, None, gender="female"),
    ]
    return b"\r\n".join(lines) + b"\r\n"


def add_hostile_files(data: Path, outside: Path) -> None:
    """Hand-written files beside the synthetic ones: plain, gzip, a truncated gzip, and
    links (to a file and to a folder outside the site) that neither landing follows."""
    site_a, site_b = data / "site_a", data / "site_b"
    (site_a / "zz_hostile.ndjson").write_bytes(hostile_lines())
    nested = site_a / "zz_more" / "deeper"  # after zz_hostile.ndjson
    nested.mkdir(parents=True)
    (nested / "gz.ndjson.gz").write_bytes(gzip.compress(
        patient("gz1") + b"\n" + b"{broken\n" + patient("ver", "3", "2025-03-01T00:00:00Z")))
    cut = gzip.compress(b"\n".join(patient(f"cut{i}") for i in range(400)))
    (site_a / "cut.ndjson.gz").write_bytes(cut[: len(cut) // 2])
    # site_b: the same ids as site_a (another site, so other resources)
    (site_b / "same_ids.NDJSON").write_bytes(patient("h1") + b"\n" + patient("ver", "9"))
    outside.mkdir()
    (outside / "secret.ndjson").write_bytes(patient("outside"))
    (site_b / "link.ndjson").symlink_to(outside / "secret.ndjson")
    (site_b / "linked_folder").symlink_to(outside)


def configs(root: Path) -> tuple[Config, Config]:
    duck = testbed.make_config(root, SITES, landing=LANDING)
    spark = testbed.make_config(root, SITES, landing=LANDING,
                                output={"duckdb": "spark/t.duckdb"},
                                engine={"kind": "spark", "raw": "ndjson",
                                        "tables": "spark/parquet"})
    return duck, spark


@pytest.fixture(scope="module")
def landed(spark, tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN001, ANN201
    """Two synthetic sites (with bad lines) and the hostile files, landed once by extract
    into DuckDB and once by Spark (engine.raw: ndjson)."""
    root = tmp_path_factory.mktemp("spark_ndjson")
    generate(root / "data", patients=3, seed=5, sites=list(SITES), bad_rate=0.1)
    add_hostile_files(root / "data", root / "outside")
    duck, spark_config = configs(root)
    extracted = api.extract(duck)
    raw = register_raw(spark, spark_config, None, spark_config.engine_for())
    return duck, extracted, raw


def test_raw_resources_equal_what_extract_lands(spark, landed) -> None:  # noqa: ANN001
    duck, _, raw = landed
    assert isinstance(raw, RawInput) and raw.source == "ndjson"
    with duckdb.connect(str(duck.output.duckdb), read_only=True) as con:
        diff = table_diff(con, RESOURCES, spark, RESOURCES, columns=RESOURCE_COLUMNS)
        assert diff.equal, str(diff)
        assert diff.rows_spark > 50
        winner = con.execute("SELECT version_id, line_no FROM raw.resources "
                             "WHERE site = 'site_a' AND id = 'ver'").fetchall()
    # the gzip's version 3 (a later file) beat the hostile file's, on Spark too
    assert winner == [("3", 3)]
    back = spark.sql("SELECT version_id, line_no, resource FROM raw.resources "
                     "WHERE site = 'site_a' AND id IN ('ver', 'nometa') ORDER BY id").collect()
    assert [(r[0], r[1]) for r in back] == [(None, 24), ("3", 3)]
    assert json.loads(back[0][2])["gender"] == "female"
    # nothing from outside the site folders
    assert not spark.sql("SELECT 1 FROM raw.resources WHERE id = 'outside'").collect()


def test_raw_rejected_equals_what_extract_lands(spark, landed) -> None:  # noqa: ANN001
    duck, extracted, _ = landed
    with duckdb.connect(str(duck.output.duckdb), read_only=True) as con:
        diff = table_diff(con, REJECTED, spark, REJECTED, columns=REJECTED_COLUMNS)
        assert diff.equal, str(diff)
    reasons = [r[0] for r in spark.sql(
        "SELECT reason FROM raw.rejected WHERE source_uri LIKE '%hostile%' OR "
        "source_uri LIKE '%.gz' ORDER BY source_uri, line_no").collect()]
    for start in ("not valid JSON", "not a JSON object (got array)",
                  "not a JSON object (got string)", "missing id", "missing resourceType",
                  "unknown resourceType 'Spaceship'", "resourceType must be a string",
                  "id 'bad id!' does not match", "line is ", "nested deeper than",
                  "JSON object has the key 'id' twice", "fails FHIR R4B validation",
                  "meta.lastUpdated '2025-13-01T00:00:00Z'",
                  "conflicts with stored version (versionId 2, lastUpdated 2025-02-01",
                  "gzip file is corrupt or truncated"):
        assert any(reason.startswith(start) for reason in reasons), (start, reasons)
    # invalid UTF-8 is rejected, its payload shown with U+FFFD
    utf8 = spark.sql("SELECT reason, payload FROM raw.rejected WHERE payload LIKE '%utf8bad%'"
                     ).collect()
    assert utf8 and "\ufffd" in utf8[0][1] and utf8[0][0].startswith("not valid JSON")
    # every rejected line has a row (the run knew it was partial: the cut gzip, the links)
    assert extracted.status == "partial"
    assert spark.sql("SELECT count(*) FROM raw.rejected").collect()[0][0] == \
        extracted.totals()["rejected"]


def test_ndjson_is_an_engine_raw_for_spark_only(tmp_path: Path) -> None:
    config = testbed.make_config(tmp_path, ["site_a"], engine={"kind": "spark", "raw": "ndjson"})
    engine = config.engine_for()
    assert engine.raw == "ndjson" and engine.raw_kind == "ndjson"
    # a folder of that name is still a folder when written as a path
    folder = testbed.make_config(tmp_path, ["site_a"], engine={"kind": "spark",
                                                               "raw": "./ndjson"})
    assert folder.engine_for().raw_kind == "folder"
    # DuckDB lands NDJSON with 'cartfhir extract'; it has no engine.raw at all
    with pytest.raises(ConfigError, match="raw"):
        testbed.make_config(tmp_path, ["site_a"], engine={"kind": "duckdb", "raw": "ndjson"})


def test_sites_that_are_not_ndjson_folders_are_refused(spark, tmp_path: Path) -> None:  # noqa: ANN001
    engine = {"kind": "spark", "raw": "ndjson"}
    config = testbed.make_config(tmp_path, ["site_a", "site_b"], engine=engine,
                                 site_b={"source": testbed.fhir_source(
        "https://fhir.example", cohort={"search": ["Patient?active=true"]})})
    with pytest.raises(ConfigError, match="site_b"):
        register_raw(spark, config, None, config.engine_for())
    missing = testbed.make_config(tmp_path, ["site_a"], engine=engine)
    with pytest.raises(ConfigError, match="site_a"):
        register_raw(spark, missing, None, missing.engine_for())

"""Config loading: the example config works, and every mistake names its key path."""

from __future__ import annotations

from pathlib import Path

import pytest

from cartfhir.config import SecretRef, load_config, parse_config
from cartfhir.errors import ConfigError, SecretError

ROOT = Path(__file__).resolve().parents[1]


def minimal(**overrides: object) -> dict:
    data = {
        "study": {"name": "t"},
        "sites": [{"id": "site_a", "source": {"kind": "ndjson", "path": "data/site_a"}}],
        "output": {"duckdb": "out/t.duckdb"},
    }
    data.update(overrides)
    return data


def problems(data: dict, tmp_path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(data, base_dir=tmp_path)
    assert info.value.exit_code == 2
    return str(info.value)


def test_example_config_is_complete_and_resolves_paths() -> None:
    config = load_config(ROOT / "config.yaml")
    assert [s.id for s in config.sites] == ["site_a", "site_b", "site_c"]
    assert config.sites[0].source.path == ROOT / "data" / "site_a"
    assert config.sites[0].pseudonym_key.file == ROOT / "secrets" / "site_a.key"
    assert config.sites[1].concept_maps == [ROOT / "maps" / "site_b_lab.csv"]
    assert config.transform.windows["cytokine"] == (0, 14)
    assert config.output.duckdb == ROOT / "out" / "cartfhir.duckdb"
    assert config.output.folder == ROOT / "out"
    assert len(config.config_hash) == 64


def test_relative_paths_resolve_against_the_config_folder(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    path = tmp_path / "sub" / "c.yaml"
    path.write_text("study: {name: t}\nsites: [{id: s, source: {kind: ndjson, path: ../d}}]\n"
                    "output: {duckdb: o.duckdb}\n")
    config = load_config(path)
    assert config.sites[0].source.path == tmp_path / "d"
    assert config.output.duckdb == tmp_path / "sub" / "o.duckdb"


def test_absolute_paths_are_kept(tmp_path: Path) -> None:
    config = parse_config(minimal(output={"duckdb": "/var/x.duckdb"}), base_dir=tmp_path)
    assert config.output.duckdb == Path("/var/x.duckdb")


def test_errors_name_the_key_path(tmp_path: Path) -> None:
    data = minimal()
    data["sites"].append({"id": "site_b", "source": {"kind": "ndjson"}})
    assert "sites[1].source.path: required key is missing" in problems(data, tmp_path)


def test_every_problem_is_listed_at_once(tmp_path: Path) -> None:
    data = minimal(extra_key=1)
    data["sites"][0]["id"] = "Site A"
    data["sites"][0]["source"]["kind"] = "ftp"
    text = problems(data, tmp_path)
    assert "sites[0].id: string should match pattern" in text
    assert "sites[0].source: unknown kind 'ftp' (expected one of 'ndjson', 'fhir', 'bulk')" in text
    assert "extra_key: unknown key" in text


def test_duplicate_site_ids_are_refused(tmp_path: Path) -> None:
    data = minimal()
    data["sites"].append(dict(data["sites"][0]))
    assert "site id 'site_a' appears twice" in problems(data, tmp_path)


def test_landing_batch_size_is_bounded(tmp_path: Path) -> None:
    text = problems(minimal(landing={"batch_size": 5}), tmp_path)
    assert "landing.batch_size: input should be greater than or equal to 100" in text


def test_at_least_one_site(tmp_path: Path) -> None:
    assert "sites: list should have at least 1 item" in problems(minimal(sites=[]), tmp_path)


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        parse_config(["a"], base_dir=tmp_path)  # type: ignore[arg-type]


def test_missing_file_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found; pass --config PATH"):
        load_config(tmp_path / "nope.yaml")


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("study:\n  name: t\nsites: [\n")
    with pytest.raises(ConfigError, match=r"c\.yaml line \d+, column \d+: not valid YAML"):
        load_config(path)


def test_hash_ignores_comments_and_key_order(tmp_path: Path) -> None:
    a = tmp_path / "a.yaml"
    b = tmp_path / "b.yaml"
    a.write_text("study: {name: t}\nsites: [{id: s, source: {kind: ndjson, path: d}}]\n"
                 "output: {duckdb: o.duckdb}\n")
    b.write_text("# comment\noutput: {duckdb: o.duckdb}\nstudy: {name: t}\n"
                 "sites: [{source: {path: d, kind: ndjson}, id: s}]\n")
    assert load_config(a).config_hash == load_config(b).config_hash
    b.write_text(b.read_text().replace("name: t", "name: u"))
    assert load_config(a).config_hash != load_config(b).config_hash


def test_secret_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARTFHIR_TEST_SECRET", "s3cret-value")
    ref = SecretRef(env="CARTFHIR_TEST_SECRET")
    assert ref.resolve() == "s3cret-value"
    assert "s3cret-value" not in repr(ref) and "s3cret-value" not in ref.describe()


def test_secret_env_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CARTFHIR_TEST_SECRET", raising=False)
    with pytest.raises(SecretError, match="CARTFHIR_TEST_SECRET is not set"):
        SecretRef(env="CARTFHIR_TEST_SECRET").resolve()


def test_secret_from_file_relative_to_config(tmp_path: Path) -> None:
    (tmp_path / "key.txt").write_text("abc\n")
    ref = SecretRef.model_validate({"file": "key.txt"}, context={"base_dir": tmp_path})
    assert ref.resolve() == "abc"
    (tmp_path / "key.txt").write_text("  \n")
    with pytest.raises(SecretError, match="is empty"):
        ref.resolve()


def test_secret_needs_exactly_one_source(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="exactly one"):
        SecretRef(env="A", file=tmp_path / "x")
    with pytest.raises(ValueError, match="exactly one"):
        SecretRef()


def test_memory_limit_and_workers(tmp_path: Path) -> None:
    config = parse_config(minimal(), base_dir=tmp_path)
    assert config.output.memory_limit == "512MB" and config.landing.workers == "auto"
    config = parse_config(minimal(output={"duckdb": "x", "memory_limit": "2GB"},
                                  landing={"workers": 0}), base_dir=tmp_path)
    assert config.output.memory_limit == "2GB" and config.landing.workers == 0
    assert "output.memory_limit: string should match pattern" in problems(
        minimal(output={"duckdb": "x", "memory_limit": "lots"}), tmp_path)
    assert "landing.workers: must be 'auto' or a whole number from 0 to 32" in problems(
        minimal(landing={"workers": 99}), tmp_path)


def test_fhir_source_errors_name_the_key(tmp_path: Path) -> None:
    site = {"id": "s", "source": {"kind": "fhir", "base_url": "not a url",
                                  "cohort": {"group_id": "g", "search": ["Patient?x=1"]},
                                  "auth": {"kind": "bearer"}}}
    text = problems(minimal(sites=[site]), tmp_path)
    assert "sites[0].source.base_url: not a URL" in text
    assert "sites[0].source.auth.token: required key is missing" in text
    assert ("sites[0].source.cohort: give exactly one of group_id, patient_ids_file or search"
            in text)


def test_bulk_group_level_needs_a_group(tmp_path: Path) -> None:
    site = {"id": "s", "source": {"kind": "bulk", "base_url": "https://h.test/fhir"}}
    assert "group_id is required for level 'group'" in problems(minimal(sites=[site]), tmp_path)


def test_tls_key_without_cert(tmp_path: Path) -> None:
    site = {"id": "s", "source": {"kind": "fhir", "base_url": "https://h.test/fhir",
                                  "cohort": {"group_id": "g"},
                                  "http": {"tls": {"client_key": "k.pem"}}}}
    assert "client_key given without client_cert" in problems(minimal(sites=[site]), tmp_path)


def test_the_site_id_all_is_reserved_for_the_pooled_rows(tmp_path: Path) -> None:
    data = minimal()
    data["sites"][0]["id"] = "all"
    assert "sites[0].id: 'all' is reserved" in problems(data, tmp_path)
    data["sites"][0]["id"] = "site_a\n"
    assert "sites[0].id: string should match pattern" in problems(data, tmp_path)


def test_site_id_problem_matches_the_whole_id() -> None:
    from cartfhir.config import site_id_problem

    assert site_id_problem("site_a") is None
    assert site_id_problem("site_a\n") and site_id_problem("Site") and site_id_problem("all")


def test_a_site_time_zone_is_an_iana_name_or_absent(tmp_path: Path) -> None:
    assert parse_config(minimal(), base_dir=tmp_path).sites[0].timezone is None
    data = minimal()
    data["sites"][0]["timezone"] = "America/New_York"
    assert parse_config(data, base_dir=tmp_path).sites[0].timezone == "America/New_York"


# A fixed offset misses daylight saving; 'localtime' is the host's zone, not the site's.
@pytest.mark.parametrize("value", ["Mars/Olympus_Mons", "+08:00", "UTC+8", "asia/shanghai",
                                   "localtime", "../../etc/passwd", ""])
def test_an_unknown_time_zone_is_refused_naming_value_and_key(tmp_path: Path,
                                                              value: str) -> None:
    data = minimal()
    data["sites"][0]["timezone"] = value
    text = problems(data, tmp_path)
    assert f"sites[0].timezone: unknown time zone {value!r}" in text
    assert "IANA" in text


# Names tzdata knows that are no hospital's place: 'Etc/GMT+8' is UTC-8 (POSIX signs), the
# abbreviations are fixed offsets or US rules, 'Factory' is a placeholder Java lacks.
@pytest.mark.parametrize("value", ["Etc/GMT+8", "Etc/GMT-14", "Etc/UTC", "EST", "EST5EDT",
                                   "MST", "UTC", "GMT", "Factory", "PRC", "US/Eastern"])
def test_a_zone_that_names_no_place_is_refused(tmp_path: Path, value: str) -> None:
    data = minimal()
    data["sites"][0]["timezone"] = value
    text = problems(data, tmp_path)
    assert f"sites[0].timezone: {value!r} names no place" in text
    assert "Europe/London" in text


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")])
def test_a_threshold_must_be_a_finite_number(tmp_path: Path, value: float) -> None:
    text = problems(minimal(transform={"thresholds": {"organ_injury_min_grade": value}}),
                    tmp_path)
    assert "transform.thresholds" in text and "finite" in text


@pytest.mark.parametrize("name", ["post_event_round", "severe_min_grade", "horizon_days"])
def test_a_threshold_declared_whole_must_be_a_whole_number(tmp_path: Path, name: str) -> None:
    text = problems(minimal(transform={"thresholds": {name: 2.5}}), tmp_path)
    assert "transform.thresholds" in text and name in text and "whole" in text


def test_other_thresholds_may_be_fractions(tmp_path: Path) -> None:
    config = parse_config(minimal(transform={"thresholds": {"mrd_negative_below": 0.05,
                                                            "post_event_round": 3}}),
                          base_dir=tmp_path)
    assert config.transform.thresholds == {"mrd_negative_below": 0.05, "post_event_round": 3}


# ---- engine -----------------------------------------------------------------------------

def test_engine_defaults_to_duckdb_and_spark_means_its_defaults(site_config) -> None:
    assert site_config(["site_a"]).engine.kind == "duckdb"
    spark = site_config(["site_a"], engine="spark")
    engine = spark.engine_for()
    assert (engine.kind, engine.master, engine.raw, engine.conf) == ("spark", "local[2]",
                                                                     "store", {})
    assert engine.tables == str(spark.output.folder / "parquet")
    assert site_config(["site_a"]).engine_for("spark").kind == "spark"  # --engine spark
    assert spark.engine_for("duckdb").kind == "duckdb"


def test_spark_engine_keys_resolve_like_other_paths(site_config, tmp_path) -> None:
    config = site_config(["site_a"], engine={
        "kind": "spark", "master": "spark://head:7077", "raw": "exported",
        "tables": "s3a://bucket/tables", "conf": {"spark.executor.memory": "4g",
                                                  "spark.sql.adaptive.enabled": False}})
    engine = config.engine_for()
    assert engine.raw == str(tmp_path / "exported") and engine.raw_kind == "folder"
    assert engine.tables == "s3a://bucket/tables"  # a URI stays as written
    assert engine.conf == {"spark.executor.memory": "4g", "spark.sql.adaptive.enabled": "false"}


@pytest.mark.parametrize(("engine", "words"), [
    ({"kind": "spark", "conf": {"spark.sql.session.timeZone": "Europe/Paris"}},
     "engine.conf: spark.sql.session.timeZone cannot be set here"),
    ({"kind": "spark", "conf": {"spark.sql.ansi.enabled": False}}, "engine.conf: spark.sql.ansi"),
    ({"kind": "spark", "conf": {"spark.sql.files.ignoreCorruptFiles": True}},
     "spark.sql.files.ignoreCorruptFiles cannot be set here"),
    ({"kind": "spark", "conf": {"spark.sql.parser.escapedStringLiterals": "true"}},
     "escapedStringLiterals cannot be set here"),
    ({"kind": "spark", "conf": {"spark.sql.legacy.timeParserPolicy": "LEGACY"}},
     "a legacy behaviour changes"),
    ({"kind": "spark", "conf": {"executor.memory": "4g"}}, "is not a Spark setting"),
    ({"kind": "spark", "conf": {"spark.x": [1, 2]}}, "give a string, number or true/false"),
    ({"kind": "spark", "master": "local[2"}, "engine.master: 'local[2' is not a Spark master"),
    ({"kind": "spark", "tabels": "x"}, "engine.tabels: unknown key"),
    ("sparkle", "unknown engine 'sparkle'"),
])
def test_hostile_engine_settings_are_refused(site_config, engine, words) -> None:
    with pytest.raises(ConfigError) as caught:
        site_config(["site_a"], engine=engine)
    assert words in str(caught.value)

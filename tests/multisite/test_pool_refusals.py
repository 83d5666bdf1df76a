"""'cartfhir pool' treats every package as hostile: each refusal leaves every file as it was.

Each test edits a copy of a genuine package the way an attacker (or a careless site)
would, recomputes its checksums and signs it again with the site's own key, so the
content checks are what must catch it. The coordinator's folder (the working
directory) and the pooled database are compared file by file before and after.
"""

from __future__ import annotations

import os
import re
import shutil
import zipfile
from pathlib import Path

import pytest

from .helpers import (
    assert_refused,
    edit_manifest,
    manifest_of,
    rehash,
    rewrite_table,
    sha256,
    unpack,
    zip_folder,
)


def _args(packaged: dict, packages: list[Path], out: Path) -> list[str]:
    return [*map(str, packages), "--out", str(out), *packaged["pool_args"]]


def _site_c(packaged: dict, to: Path) -> Path:
    return unpack(packaged["packages"]["site_c"], to)


def test_a_table_name_from_the_manifest_never_reaches_sql(
        packaged: dict, center: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    package = _site_c(packaged, tmp_path / "evil")
    evil = ("cohort.x AS SELECT 1; COPY (SELECT 'owned') TO 'pwned.csv' (FORMAT csv); "
            "CREATE TABLE cohort.y")
    edit_manifest(package, lambda m: m["tables"].__setitem__(
        evil, dict(m["tables"]["cohort.patient"])))
    packaged["resign"](package)
    assert_refused(_args(packaged, [package], center / "pooled.duckdb"), tmp_path, capsys,
                   r"manifest\.json: [\"']cohort\.x AS SELECT 1.*[\"'] is not a table of a site "
                   r"package")
    assert not (center / "pwned.csv").exists()


def test_rows_labelled_with_another_site_are_refused(
        packaged: dict, center: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    package = _site_c(packaged, tmp_path / "mixed")
    other = packaged["packages"]["site_a"] / "cohort.patient.parquet"
    rewrite_table(package, "cohort.patient",
                  f"SELECT * FROM t UNION ALL SELECT * FROM read_parquet('{other}')")
    packaged["resign"](package)
    assert_refused(_args(packaged, [package], center / "pooled.duckdb"), tmp_path, capsys,
                   r"cohort\.patient has \d+ row\(s\) of site 'site_a'.*package of site 'site_c'")


def test_study_definitions_must_equal_the_pooled_ones_and_each_other(
        packaged: dict, center: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    package = _site_c(packaged, tmp_path / "lenient")
    rewrite_table(package, "ref.threshold",
                  "SELECT name, CASE WHEN name = 'organ_injury_min_grade' THEN CAST(0 AS DOUBLE) "
                  "ELSE value END AS value FROM t")
    packaged["resign"](package)
    why = r"ref\.threshold .*organ_injury_min_grade"
    err = assert_refused(_args(packaged, [package], center / "pooled.duckdb"), tmp_path,
                         capsys, why)
    assert "pooled database" in err
    err = assert_refused(_args(packaged, [packaged["packages"]["site_a"], package],
                               center / "new.duckdb"), tmp_path, capsys, why)
    assert "site_a" in err and "site_c" in err


def test_files_named_outside_the_package_are_never_read(
        packaged: dict, center: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    outside = _site_c(packaged, tmp_path / "outside")
    target = outside / "cohort.patient.parquet"
    for name, file in (("absolute", str(target)),
                       ("dotdot", "../outside/cohort.patient.parquet")):
        package = _site_c(packaged, tmp_path / name)
        (package / "cohort.patient.parquet").unlink()
        edit_manifest(package, lambda m, f=file: m["tables"]["cohort.patient"].update(file=f))
        packaged["resign"](package)
        assert_refused(_args(packaged, [package], center / "pooled.duckdb"), tmp_path, capsys,
                       r"tables\.cohort\.patient\.file' must be 'cohort\.patient\.parquet'")
    package = _site_c(packaged, tmp_path / "symlink")
    (package / "cohort.patient.parquet").unlink()
    os.symlink(target, package / "cohort.patient.parquet")
    packaged["resign"](package)
    assert_refused(_args(packaged, [package], center / "pooled.duckdb"), tmp_path, capsys,
                   r"cohort\.patient\.parquet is not a regular file")


def test_zip_members_are_read_by_name_with_their_size_capped(
        packaged: dict, center: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    folder = _site_c(packaged, tmp_path / "c")
    packaged["resign"](folder)
    escaping = zip_folder(folder, tmp_path / "escaping.zip")
    with zipfile.ZipFile(escaping, "a") as zf:
        zf.writestr("../escaped.txt", "x")
    assert_refused(_args(packaged, [escaping], center / "pooled.duckdb"), tmp_path, capsys,
                   r"escaping\.zip: member '\.\./escaped\.txt' is not a file of a site package")

    linked = tmp_path / "linked.zip"
    with zipfile.ZipFile(linked, "w") as zf:
        for path in sorted(folder.iterdir()):
            if path.name == "cohort.patient.parquet":
                info = zipfile.ZipInfo(path.name)
                info.external_attr = 0o120777 << 16  # a symbolic link
                zf.writestr(info, str(tmp_path / "outside.parquet"))
            else:
                zf.write(path, path.name)
    assert_refused(_args(packaged, [linked], center / "pooled.duckdb"), tmp_path, capsys,
                   r"member 'cohort\.patient\.parquet' is a symbolic link")

    genuine = zip_folder(folder, tmp_path / "genuine.zip")
    from cartfhir.multisite import intake

    monkeypatch.setattr(intake, "MAX_FILE_BYTES", 4096)
    assert_refused(_args(packaged, [genuine], center / "pooled.duckdb"), tmp_path, capsys,
                   r"genuine\.zip: member '[a-z_.]+\.parquet' declares \d+ bytes, more than "
                   r"the 4096 a package file may hold; refused before copying")


def test_columns_beyond_the_declared_schema_are_refused(
        packaged: dict, center: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    package = _site_c(packaged, tmp_path / "mrn")
    rewrite_table(package, "cohort.patient", "SELECT *, 'MRN-' || patient_key AS mrn, "
                                             "'Jane Doe' AS patient_name FROM t")
    packaged["resign"](package)
    assert_refused(_args(packaged, [package], center / "fresh.duckdb"), tmp_path, capsys,
                   r"cohort\.patient\.parquet: unexpected column\(s\) 'mrn', 'patient_name'")
    assert not (center / "fresh.duckdb").exists()

    package = _site_c(packaged, tmp_path / "retyped")
    rewrite_table(package, "cohort.patient",
                  "SELECT * REPLACE (CAST(rounds AS VARCHAR) AS rounds) FROM t")
    packaged["resign"](package)
    assert_refused(_args(packaged, [package], center / "pooled.duckdb"), tmp_path, capsys,
                   r"column rounds is 'VARCHAR', expected BIGINT")


@pytest.mark.parametrize(("edit", "message"), [
    (lambda m: m.pop("site"), r"manifest\.json: field 'site' is missing"),
    (lambda m: m.update(created=5), r"manifest\.json: field 'created' must be a string "
                                    r"\(ISO 8601 timestamp\), got 5"),
    (lambda m: m.update(created="yesterday"), r"field 'created' must be an ISO 8601 timestamp"),
    (lambda m: m["tables"]["cohort.patient"].update(rows="many"),
     r"field 'tables\.cohort\.patient\.rows' must be a whole number, got 'many'"),
    (lambda m: m.update(tables=[]), r"field 'tables' must be an object"),
    (lambda m: m.update(site="Site A; DROP"), r"field 'site' must be a site id"),
    (lambda m: m.update(site="site_c\n"), r"field 'site' must be a site id"),
    (lambda m: m.update(site="all"), r"field 'site' 'all' is reserved"),
], ids=["no-site", "numeric-created", "text-created", "text-rows", "list-tables", "bad-site",
        "newline-site", "reserved-site"])
def test_malformed_manifests_are_refused_naming_the_field(
        packaged: dict, center: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        edit, message: str) -> None:
    package = _site_c(packaged, tmp_path / "malformed")
    edit_manifest(package, edit)
    if "site" in manifest_of(package):  # 'cartfhir sign' refuses a manifest without a site
        packaged["resign"](package)
    assert_refused(_args(packaged, [package], center / "pooled.duckdb"), tmp_path, capsys,
                   message)


def test_a_genuine_package_still_pools_next_to_the_refusals(
        packaged: dict, center: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The same checks pass a package nobody touched (without analysis, for speed)."""
    from cartfhir import api

    before = sha256(center / "pooled.duckdb")
    result = api.pool([packaged["packages"]["site_c"]], center / "pooled.duckdb",
                      analyse=False, **packaged["pool_kwargs"])
    assert result.sites == ["site_a", "site_c"]
    assert sha256(center / "pooled.duckdb") != before


def test_a_zip_with_a_damaged_stream_is_refused_not_an_internal_error(
        packaged: dict, center: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    damaged = tmp_path / "damaged.zip"
    shutil.copy(packaged["packages"]["site_c"], damaged)
    with zipfile.ZipFile(damaged) as zf:
        info = zf.getinfo("cohort.patient.parquet")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    data = bytearray(damaged.read_bytes())
    data[start:start + 16] = b"\xff" * 16  # not a deflate stream any more
    damaged.write_bytes(bytes(data))
    assert_refused(_args(packaged, [damaged], center / "pooled.duckdb"), tmp_path, capsys,
                   r"damaged\.zip: not a readable zip file")


def test_an_encrypted_zip_member_is_refused_not_an_internal_error(
        packaged: dict, center: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    locked = zip_folder(_site_c(packaged, tmp_path / "c"), tmp_path / "locked.zip")
    data = bytearray(locked.read_bytes())
    with zipfile.ZipFile(locked) as zf:
        info = zf.getinfo("manifest.json")
        central = zf.start_dir
    data[info.header_offset + 6] |= 0x1  # the local header's flag: encrypted
    while data[central:central + 4] == b"PK\x01\x02":  # and the central directory's
        name_len, extra_len, comment_len = (int.from_bytes(data[central + i:central + i + 2],
                                                           "little") for i in (28, 30, 32))
        if data[central + 46:central + 46 + name_len] == b"manifest.json":
            data[central + 8] |= 0x1
        central += 46 + name_len + extra_len + comment_len
    locked.write_bytes(bytes(data))
    assert_refused(_args(packaged, [locked], center / "pooled.duckdb"), tmp_path, capsys,
                   r"locked\.zip: member 'manifest\.json' is encrypted")


@pytest.fixture
def copied(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the package files intake copies (in order), recorded as they are copied."""
    from cartfhir.multisite import intake

    names: list[str] = []
    real = intake._copy_capped

    def spy(source, target: Path, cap: int, what: str) -> int:
        names.append(target.name)
        return real(source, target, cap, what)

    monkeypatch.setattr(intake, "_copy_capped", spy)
    return names


def test_an_unsigned_zip_bomb_is_refused_before_any_table_file_is_copied(
        packaged: dict, center: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        copied: list[str]) -> None:
    folder = _site_c(packaged, tmp_path / "c")
    (folder / "manifest.sig").unlink()
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for path in sorted(folder.iterdir()):
            if path.name == "cohort.lab_daily.parquet":
                with zf.open(path.name, "w", force_zip64=True) as member:
                    for _ in range(64):
                        member.write(b"\0" * (1 << 20))
            else:
                zf.write(path, path.name)
    assert bomb.stat().st_size < 1024**2
    assert_refused(_args(packaged, [bomb], center / "pooled.duckdb"), tmp_path, capsys,
                   r"bomb\.zip: the package is not signed")
    assert copied == ["manifest.json"]

    forged = unpack(packaged["packages"]["site_c"], tmp_path / "forged")
    edit_manifest(forged, lambda m: m.update(created="2099-01-01T00:00:00+00:00"))
    copied.clear()
    assert_refused(_args(packaged, [forged], center / "pooled.duckdb"), tmp_path, capsys,
                   r"forged: bad signature")
    assert sorted(copied) == ["manifest.json", "manifest.sig"]


def test_a_member_declaring_more_than_the_cap_is_refused_before_copying(
        packaged: dict, center: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        copied: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from cartfhir.multisite import intake

    monkeypatch.setattr(intake, "MAX_FILE_BYTES", 4096)
    assert_refused(_args(packaged, [packaged["packages"]["site_c"]], center / "pooled.duckdb"),
                   tmp_path, capsys, r"site_c\.zip: member '[a-z_.]+\.parquet' declares \d+ "
                                     r"bytes, more than the 4096")
    assert not [n for n in copied if n.endswith(".parquet")]


def _raw_manifest(folder: Path, edit) -> None:
    """Rewrite manifest.json's bytes with ``edit`` (text to text): JSON json.dumps cannot make."""
    path = folder / "manifest.json"
    path.write_bytes(edit(path.read_text(encoding="utf-8")).encode("utf-8"))


@pytest.mark.parametrize(("edit", "message"), [
    (lambda t: "[" * 200_000, r"manifest\.json is nested more than \d+ deep"),
    (lambda t: t.replace('"validation": {', '"validation": {"deep": ' + "[" * 900 + "]" * 900
                         + ",", 1), r"manifest\.json is nested more than \d+ deep"),
    (lambda t: re.sub(r'"rows": \d+', '"rows": ' + "9" * 5000, t, count=1),
     r"manifest\.json is not valid JSON"),
    (lambda t: t.replace('"tool_version": "', '"tool_version": "\\ud800', 1),
     r"manifest\.json holds text that is not valid Unicode"),
], ids=["deep-list", "deep-validation", "5000-digit-rows", "lone-surrogate"])
def test_hostile_manifest_json_is_refused_with_a_message(
        packaged: dict, center: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        edit, message: str) -> None:
    package = _site_c(packaged, tmp_path / "json")
    _raw_manifest(package, edit)
    from cartfhir.cli import run_cli

    capsys.readouterr()
    code = run_cli(["sign", str(package), "--key", str(packaged["site_keys"] / "site_c.key")])
    err = capsys.readouterr().err
    assert "internal error" not in err
    if code != 0:  # 'cartfhir sign' reads the manifest too: it must refuse it the same way
        assert code == 1 and re.search(message, err), err
    assert_refused(_args(packaged, [package], center / "pooled.duckdb"), tmp_path, capsys,
                   message)


def test_a_bzip2_member_is_refused_not_an_internal_error(
        packaged: dict, center: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = _site_c(packaged, tmp_path / "c")
    packed = tmp_path / "bzip.zip"
    with zipfile.ZipFile(packed, "w", zipfile.ZIP_BZIP2) as zf:
        for path in sorted(folder.iterdir()):
            zf.write(path, path.name)
    assert_refused(_args(packaged, [packed], center / "pooled.duckdb"), tmp_path, capsys,
                   r"bzip\.zip: member 'cohort\.[a-z_]+\.parquet' uses a compression other "
                   r"than deflate")


def _damage_text(folder: Path) -> None:
    """Invalid UTF-8 inside a VARCHAR value of cohort.episode (uncompressed, so findable)."""
    rewrite_table(folder, "cohort.episode", "SELECT * REPLACE ('QQQQMARKQQQQ' AS target) FROM t")
    file = folder / "cohort.episode.parquet"
    import duckdb

    old = folder / "o.parquet"
    file.rename(old)
    con = duckdb.connect()
    con.execute(f"COPY (SELECT * FROM read_parquet('{old}')) TO '{file}' "
                "(FORMAT parquet, COMPRESSION uncompressed)")
    con.close()
    old.unlink()
    data = file.read_bytes()
    assert b"QQQQMARKQQQQ" in data
    file.write_bytes(data.replace(b"QQQQMARKQQQQ", b"QQQQ\xff\xfeRKQQQQ"))
    rehash(folder, "cohort.episode")


def _damage_page(folder: Path) -> None:
    file = folder / "cohort.episode.parquet"
    data = bytearray(file.read_bytes())
    for k in range(len(data) // 3, len(data) // 3 + 64):
        data[k] ^= 0xA5
    file.write_bytes(bytes(data))
    rehash(folder, "cohort.episode")


@pytest.mark.parametrize("damage", [_damage_text, _damage_page], ids=["bad-utf8", "bad-page"])
def test_unreadable_table_content_is_refused_naming_package_and_table(
        packaged: dict, center: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        damage) -> None:
    package = _site_c(packaged, tmp_path / "damaged")
    damage(package)
    packaged["resign"](package)
    assert_refused(_args(packaged, [package], center / "pooled.duckdb"), tmp_path, capsys,
                   r"damaged: cohort\.episode\.parquet cannot be read")


def test_out_pointing_at_a_folder_is_refused(
        packaged: dict, center: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from .helpers import files_under, pool_cli

    (center / "folder").mkdir()
    before = files_under(tmp_path)
    code, err = pool_cli(_args(packaged, [packaged["packages"]["site_c"]], center / "folder"),
                         capsys)
    assert code == 2 and "internal error" not in err
    assert re.search(r"--out .*folder is a folder", err), err
    assert files_under(tmp_path) == before


def test_a_package_of_another_study_is_refused_by_the_pooled_database(
        packaged: dict, center: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    package = _site_c(packaged, tmp_path / "other_study")
    edit_manifest(package, lambda m: m.update(study="a completely different study"))
    packaged["resign"](package)
    assert_refused(_args(packaged, [package], center / "pooled.duckdb"), tmp_path, capsys,
                   r"other_study .*study 'a completely different study'.*the pooled database "
                   r".*holds study '[^']+'")


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_a_study_definition_that_is_not_a_finite_number_is_refused(
        packaged: dict, center: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        value: str) -> None:
    package = _site_c(packaged, tmp_path / "nan")
    rewrite_table(package, "ref.threshold",
                  f"SELECT name, CASE WHEN name = 'organ_injury_min_grade' THEN "
                  f"'{value}'::DOUBLE ELSE value END AS value FROM t")
    packaged["resign"](package)
    assert_refused(_args(packaged, [package], center / "new.duckdb"), tmp_path, capsys,
                   r"ref\.threshold\.parquet: value of 'organ_injury_min_grade' is -?(nan|inf), "
                   r"not a finite number")


def test_study_definitions_are_compared_treating_nan_as_equal_to_nan() -> None:
    from cartfhir.errors import PoolError
    from cartfhir.multisite.pool import _same_definitions

    nan = float("nan")
    _same_definitions("ref.threshold", ("a", [("x", nan), ("y", 1.0)]),
                      ("b", [("x", float("nan")), ("y", 1.0)]))
    with pytest.raises(PoolError, match=r"a has \(name='x', value=nan\) where b has "
                                        r"\(name='x', value=2\.0\)"):
        _same_definitions("ref.threshold", ("a", [("x", nan)]), ("b", [("x", 2.0)]))


def test_a_table_over_the_row_cap_is_refused_before_it_is_read(
        packaged: dict, center: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    from cartfhir.multisite import pool

    package = _site_c(packaged, tmp_path / "many")
    rewrite_table(package, "cohort.lab_daily",
                  "SELECT t.* FROM t, range(20)")  # few bytes, many rows
    packaged["resign"](package)
    rows = manifest_of(package)["tables"]["cohort.lab_daily"]["rows"]
    monkeypatch.setattr(pool, "MAX_TABLE_ROWS", rows - 1)
    assert_refused(_args(packaged, [package], center / "pooled.duckdb"), tmp_path, capsys,
                   rf"many: cohort\.lab_daily\.parquet holds {rows} rows, more than the "
                   rf"{rows - 1} a package table may hold")


def test_package_text_in_messages_is_shown_escaped(
        packaged: dict, center: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A column name, a struct field or a manifest key cannot drive the terminal."""
    package = _site_c(packaged, tmp_path / "escape")
    rewrite_table(package, "cohort.episode", 'SELECT *, 1 AS "\x1b]0;PWNED\x07\x1b[31mRED" FROM t')
    packaged["resign"](package)
    err = assert_refused(_args(packaged, [package], center / "pooled.duckdb"), tmp_path, capsys,
                         r"unexpected column\(s\) '\\x1b\]0;PWNED\\x07\\x1b\[31mRED'")
    assert "\x1b" not in err and "\x07" not in err

    package = _site_c(packaged, tmp_path / "struct")
    rewrite_table(package, "cohort.episode",
                  "SELECT * REPLACE ({'\x1b[31mRED': site} AS site) FROM t")
    packaged["resign"](package)
    err = assert_refused(_args(packaged, [package], center / "pooled.duckdb"), tmp_path, capsys,
                         r"column site is .*\\x1b\[31mRED")
    assert "\x1b" not in err

    package = _site_c(packaged, tmp_path / "key")
    edit_manifest(package, lambda m: m.update({"\x1b[2Jwiped": 1}))
    packaged["resign"](package)
    err = assert_refused(_args(packaged, [package], center / "pooled.duckdb"), tmp_path, capsys,
                         r"field '\\x1b\[2Jwiped' is not a field of a site package manifest")
    assert "\x1b" not in err


def test_a_package_of_the_previous_format_is_refused_with_re_export_advice(
        packaged: dict, center: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Version 2 packages carried no ref.target or ref.post_event (the pooled suites now
    # join them) and another column order for cohort.episode_endpoints.
    package = _site_c(packaged, tmp_path / "old")
    for table in ("ref.target", "ref.post_event"):
        (package / f"{table}.parquet").unlink()

    def older(manifest: dict) -> None:
        manifest["schema_version"] = "cartfhir-site-package/2"
        for table in ("ref.target", "ref.post_event"):
            del manifest["tables"][table]

    edit_manifest(package, older)
    packaged["resign"](package)
    assert_refused(_args(packaged, [package], center / "pooled.duckdb"), tmp_path, capsys,
                   r"schema version.*re-export")


def test_a_pooled_database_of_the_previous_format_is_not_added_to(
        packaged: dict, center: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # A pooled database made by the previous format holds its tables and definitions:
    # adding a current package must say so, not blame the sites' study configs.
    import duckdb

    pooled = center / "pooled.duckdb"
    with duckdb.connect(str(pooled)) as con:
        con.execute("UPDATE meta.pool_package SET manifest = json_merge_patch(manifest, "
                    "'{\"schema_version\": \"cartfhir-site-package/2\"}')")
    assert_refused(_args(packaged, [packaged["packages"]["site_c"]], pooled), tmp_path, capsys,
                   r"schema version 'cartfhir-site-package/2' \(sites 'site_a'\).*new database")

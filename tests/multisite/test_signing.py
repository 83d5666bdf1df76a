"""Signed packages: keygen, sign and 'pool --keys' stop anyone but a site from speaking for it."""

from __future__ import annotations

import os
import re
import shutil
import stat
from pathlib import Path

import duckdb
import pytest

from cartfhir import api
from cartfhir.cli import run_cli

from .helpers import (
    assert_refused,
    edit_manifest,
    pool_cli,
    sha256,
    site_a_config,
    unpack,
    zip_folder,
)


def test_keygen_writes_a_private_key_only_its_owner_reads_and_never_overwrites(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["keygen", "--site", "site_b", "--out", str(tmp_path / "keys")]) == 0
    out = capsys.readouterr().out
    private, public = tmp_path / "keys" / "site_b.key", tmp_path / "keys" / "site_b.pub"
    assert stat.S_IMODE(os.stat(private).st_mode) == 0o600
    assert "PRIVATE KEY" in private.read_text() and "PUBLIC KEY" in public.read_text()
    assert private.read_text().splitlines()[1] not in out  # the key itself is never printed
    before = sha256(private), sha256(public)
    assert run_cli(["keygen", "--site", "site_b", "--out", str(tmp_path / "keys")]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (sha256(private), sha256(public)) == before
    assert run_cli(["keygen", "--site", "../b", "--out", str(tmp_path / "keys")]) == 2
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["keys", "site_b.key", "site_b.pub"]


def test_unsigned_forged_and_unknown_packages_are_refused(
        packaged: dict, center: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = center / "pooled.duckdb"
    keys = packaged["pool_args"]

    unsigned = unpack(packaged["packages"]["site_c"], tmp_path / "unsigned")
    (unsigned / "manifest.sig").unlink()
    assert_refused([str(unsigned), "--out", str(out), *keys], tmp_path, capsys,
                   r"unsigned: the package is not signed \(manifest\.sig is missing\)")

    edited = unpack(packaged["packages"]["site_c"], tmp_path / "edited")
    edit_manifest(edited, lambda m: m.update(created="2099-01-01T00:00:00+00:00"))
    assert_refused([str(edited), "--out", str(out), *keys], tmp_path, capsys,
                   r"bad signature: it does not verify with the key of site 'site_c'")

    # site_c's package claiming to be site_a, signed with site_c's own key
    impostor = unpack(packaged["packages"]["site_c"], tmp_path / "impostor")
    edit_manifest(impostor, lambda m: m.update(site="site_a"))
    packaged["resign"](impostor, "site_c")
    assert_refused([str(impostor), "--out", str(out), *keys], tmp_path, capsys,
                   r"bad signature: it does not verify with the key of site 'site_a'")

    # a key signs for its own site only: site_a's key on site_c's package
    crossed = unpack(packaged["packages"]["site_c"], tmp_path / "crossed")
    packaged["resign"](crossed, "site_a")
    assert_refused([str(crossed), "--out", str(out), *keys], tmp_path, capsys,
                   r"bad signature: it does not verify with the key of site 'site_c'")

    only_a = tmp_path / "only_a"
    only_a.mkdir()
    shutil.copy(packaged["keys"] / "site_a.pub", only_a)
    assert_refused([str(packaged["packages"]["site_c"]), "--out", str(out), "--keys",
                    str(only_a)], tmp_path, capsys, r"no public key for site 'site_c'")

    code, err = pool_cli([str(packaged["packages"]["site_c"]), "--out", str(out)], capsys)
    assert code == 2 and "give --keys DIR" in err


def test_sign_adds_a_signature_to_a_zip_made_elsewhere(
        packaged: dict, center: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = unpack(packaged["packages"]["site_c"], tmp_path / "rebuilt")
    (folder / "manifest.sig").unlink()
    rebuilt = zip_folder(folder, tmp_path / "rebuilt.zip")
    out = center / "pooled.duckdb"
    assert_refused([str(rebuilt), "--out", str(out), *packaged["pool_args"]], tmp_path, capsys,
                   "not signed")
    assert run_cli(["sign", str(rebuilt), "--key",
                    str(packaged["site_keys"] / "site_c.key")]) == 0
    assert "signed" in capsys.readouterr().out
    assert not list(tmp_path.glob(".*partial"))
    result = api.pool([rebuilt], out, analyse=False, **packaged["pool_kwargs"])
    assert result.sites == ["site_a", "site_c"] and not result.unsigned
    con = duckdb.connect(str(out), read_only=True)
    signed_by = dict(con.execute("SELECT site, signed_by FROM meta.pool_package").fetchall())
    con.close()
    assert all(v.startswith("ed25519:") for v in signed_by.values()), signed_by


def test_allow_unsigned_is_recorded_in_the_pooled_database_and_the_report(
        packaged: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    unsigned = unpack(packaged["packages"]["site_a"], tmp_path / "unsigned_a")
    (unsigned / "manifest.sig").unlink()
    out = tmp_path / "center" / "pooled.duckdb"
    code, err = pool_cli([str(unsigned), "--out", str(out), "--allow-unsigned"], capsys)
    assert code == 0, err
    assert "WARNING: pooled without signature verification (--allow-unsigned): site_a" in err
    con = duckdb.connect(str(out), read_only=True)
    signed_by = con.execute("SELECT signed_by FROM meta.pool_package").fetchall()
    con.close()
    assert signed_by == [("unsigned (--allow-unsigned)",)]
    report = (tmp_path / "center" / "pooled_report" / "report.html").read_text()
    assert "site_a were pooled without signature verification (--allow-unsigned)" in report


def test_export_site_signs_with_a_key_from_an_environment_variable(
        packaged: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    config = site_a_config(packaged, tmp_path,
                           site_a={"signing_key": {"env": "SITE_A_SIGNING_KEY"}})
    pem = (packaged["site_keys"] / "site_a.key").read_text()
    monkeypatch.setenv("SITE_A_SIGNING_KEY", pem)
    package = tmp_path / "site_a.zip"
    assert run_cli(["export-site", "--config", str(config), "--site", "site_a",
                    "--out", str(package)]) == 0, capsys.readouterr().err
    assert "not signed" not in capsys.readouterr().err
    result = api.pool([package], tmp_path / "pooled.duckdb", analyse=False,
                      **packaged["pool_kwargs"])
    assert result.sites == ["site_a"] and not result.unsigned
    monkeypatch.setenv("SITE_A_SIGNING_KEY", "not a key")
    assert run_cli(["export-site", "--config", str(config), "--site", "site_a",
                    "--out", str(tmp_path / "again.zip")]) == 1
    err = capsys.readouterr().err
    assert "env var SITE_A_SIGNING_KEY" in err and "not an unencrypted PEM private key" in err
    assert not (tmp_path / "again.zip").exists()


def test_sign_never_writes_through_a_planted_symlink(
        packaged: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = str(packaged["site_keys"] / "site_c.key")
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    folder = unpack(packaged["packages"]["site_c"], tmp_path / "planted")
    os.symlink(victim, folder / ".manifest.sig.partial")
    assert run_cli(["sign", str(folder), "--key", key]) == 0, capsys.readouterr().err
    assert victim.read_text() == "precious"
    assert not (folder / "manifest.sig").is_symlink()
    assert sorted(p.name for p in folder.glob(".*")) == [".manifest.sig.partial"]

    (folder / "manifest.sig").unlink()
    os.symlink(victim, folder / "manifest.sig")
    capsys.readouterr()
    assert run_cli(["sign", str(folder), "--key", key]) == 1
    assert re.search(r"planted: manifest\.sig is a symbolic link", capsys.readouterr().err)
    assert victim.read_text() == "precious"

    packed = zip_folder(unpack(packaged["packages"]["site_c"], tmp_path / "z"),
                        tmp_path / "z.zip")
    os.symlink(victim, tmp_path / ".z.zip.partial")
    assert run_cli(["sign", str(packed), "--key", key]) == 0, capsys.readouterr().err
    assert victim.read_text() == "precious"


@pytest.mark.parametrize(("site", "message"), [
    ("site_a\n", r"site id 'site_a\n' is not valid"),
    ("all", "site id 'all' is not valid: 'all' is reserved"),
])
def test_keygen_refuses_a_site_id_with_a_trailing_newline_or_reserved(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], site: str, message: str) -> None:
    assert run_cli(["keygen", "--site", site, "--out", str(tmp_path / "keys")]) == 2
    assert message in capsys.readouterr().err
    assert not list(tmp_path.rglob("*.key")) and not list(tmp_path.rglob("*.pub"))


def test_an_unsigned_package_never_replaces_a_sites_signed_rows(
        packaged: dict, center: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    unsigned = unpack(packaged["packages"]["site_a"], tmp_path / "unsigned_a")
    (unsigned / "manifest.sig").unlink()
    out = str(center / "pooled.duckdb")
    for args in ([*packaged["pool_args"], "--allow-unsigned"], ["--allow-unsigned"]):
        assert_refused([str(unsigned), "--out", out, *args], tmp_path, capsys,
                       r"unsigned_a: site 'site_a' was pooled from a signed package; an unsigned "
                       r"package cannot replace its rows")

"""``cartfhir init``: a valid commented config and the site's keys, never replacing files;
and the hints the CLI prints work exactly as printed."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

from cartfhir.cli import run_cli
from cartfhir.config import SOURCE_KINDS, load_config
from cartfhir.multisite.signing import read_private_key

REPO = Path(__file__).resolve().parents[1]
CARTFHIR = REPO / ".venv" / "bin" / "cartfhir"


def _init(tmp_path: Path, kind: str, *args: str) -> int:
    return run_cli(["init", "--kind", kind, "--out", str(tmp_path / "config.yaml"), *args])


def _make_what_it_names(config: Path) -> None:
    """The data folder, the SMART client key: what a site provides before a run."""
    cfg = load_config(config)
    for site in cfg.sites:
        if site.source.kind == "ndjson":
            site.source.path.mkdir(parents=True)
            (site.source.path / "Patient.ndjson").write_text('{"resourceType":"Patient"}\n')
        key = getattr(getattr(site.source, "auth", None), "private_key", None)
        if key is not None:
            key.file.write_text("-----BEGIN PRIVATE KEY-----\n")


@pytest.mark.parametrize("kind", SOURCE_KINDS)
def test_init_writes_a_valid_commented_config_and_the_keys(
        tmp_path: Path, kind: str, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    assert _init(tmp_path, kind, "--site", "site_q") == 0
    config = tmp_path / "config.yaml"
    text = config.read_text()
    data = yaml.safe_load(text)
    source = data["sites"][0]["source"]
    assert data["sites"][0]["id"] == "site_q" and source["kind"] == kind
    # every key with a value says what it is for, on its line or in a comment just above
    lines = text.splitlines()
    uncommented = [line for above, line in zip(["", *lines], lines, strict=False)
                   if re.match(r"^\s+[a-z_]+: \S", line) and "#" not in line
                   and not above.strip().startswith("#")]
    assert not uncommented, uncommented
    # secrets only as references
    assert data["sites"][0]["pseudonym_key"] == {"file": "secrets/site_q.key"}
    assert data["sites"][0]["signing_key"] == {"file": "keys/site_q.key"}
    if kind != "ndjson":
        assert set(source["auth"]) & {"token", "private_key"}
        secret = source["auth"].get("token") or source["auth"]["private_key"]
        assert set(secret) <= {"env", "file"}

    pseudonym = tmp_path / "secrets" / "site_q.key"
    assert re.fullmatch(r"[0-9a-f]{64}\n", pseudonym.read_text())
    assert pseudonym.stat().st_mode & 0o777 == 0o600
    read_private_key(tmp_path / "keys" / "site_q.key")  # an Ed25519 key cartfhir can sign with
    assert (tmp_path / "keys" / "site_q.pub").exists()

    _make_what_it_names(config)
    monkeypatch.setenv("SITE_Q_FHIR_TOKEN", "tok-0123456789")
    capsys.readouterr()
    assert run_cli(["check", "--config", str(config), "--no-network"]) == 0, \
        capsys.readouterr().out


def test_two_inits_give_different_random_keys(tmp_path: Path) -> None:
    assert _init(tmp_path / "one", "ndjson") == 0 and _init(tmp_path / "two", "ndjson") == 0
    assert ((tmp_path / "one" / "secrets" / "site_a.key").read_text()
            != (tmp_path / "two" / "secrets" / "site_a.key").read_text())


def test_init_never_replaces_files_and_force_replaces_only_the_config(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _init(tmp_path, "ndjson") == 0
    config = tmp_path / "config.yaml"
    keys = [tmp_path / "secrets" / "site_a.key", tmp_path / "keys" / "site_a.key",
            tmp_path / "keys" / "site_a.pub"]
    before = [p.read_bytes() for p in keys]
    config.write_text("# my edits\n")
    capsys.readouterr()

    assert _init(tmp_path, "fhir") == 2
    assert "already exists; pass --force" in capsys.readouterr().err
    assert config.read_text() == "# my edits\n"

    assert _init(tmp_path, "fhir", "--force") == 0
    out = capsys.readouterr().out
    assert "kind: fhir" in config.read_text()
    assert [p.read_bytes() for p in keys] == before
    assert out.count("kept:") == 3


def test_init_refuses_a_bad_site_id(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _init(tmp_path, "ndjson", "--site", "Site-A") == 2
    assert "not valid" in capsys.readouterr().err
    assert not (tmp_path / "config.yaml").exists()


# --- hints work exactly as printed, from the repo's folder ---

def _hint(out: str, prefix: str) -> str:
    lines = [line for line in out.splitlines() if line.startswith(prefix)]
    assert len(lines) == 1, out
    return lines[0].removeprefix(prefix)


@pytest.mark.skipif(not CARTFHIR.exists(), reason="needs the repo's .venv (make test makes it)")
def test_the_printed_hints_run_as_printed(tmp_path: Path) -> None:
    def sh(command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(command, shell=True, cwd=REPO, capture_output=True, text=True,
                              timeout=300, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})

    config = tmp_path / "config.yaml"
    init = sh(f".venv/bin/cartfhir init --kind ndjson --out {shlex.quote(str(config))}")
    assert init.returncode == 0, init.stderr
    next_step = _hint(init.stdout, f"next: edit {config}, then ")
    assert next_step.startswith(".venv/bin/cartfhir check")  # cartfhir is not on PATH here

    demo = sh(f".venv/bin/cartfhir demo --config {shlex.quote(str(config))} --patients 3")
    assert demo.returncode == 0, demo.stderr
    query = sh(_hint(demo.stdout, "try: "))
    assert query.returncode == 0, query.stderr
    assert "crs_any" in query.stdout
    check = sh(next_step)
    assert check.returncode == 0, check.stdout + check.stderr


# --- symbolic links in the way: refused before anything is written, never followed ---

@pytest.mark.parametrize("link", ["secrets", "keys", "secrets/site_a.key", "keys/site_a.pub",
                                  "config.yaml"])
@pytest.mark.parametrize("dangling", [True, False], ids=["dangling", "pointing"])
def test_a_symlink_in_the_way_is_refused_before_anything_is_written(
        tmp_path: Path, link: str, dangling: bool, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "sl"
    (folder / link).parent.mkdir(parents=True, exist_ok=True)
    target = tmp_path / "elsewhere" / Path(link).name
    if not dangling:
        if "." in target.name:
            target.parent.mkdir(parents=True)
            target.write_text("not ours\n")
        else:
            target.mkdir(parents=True)
    (folder / link).symlink_to(target)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    code = run_cli(["init", "--kind", "ndjson", "--out", str(folder / "config.yaml"),
                    *(["--force"] if link == "config.yaml" else [])])
    captured = capsys.readouterr()
    assert code == 2, captured.err
    assert str(folder / link) in captured.err and "symbolic link" in captured.err
    assert "internal error" not in captured.err and "kept" not in captured.out
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    assert not dangling or not target.exists()


def test_half_a_key_pair_is_refused_before_the_config_is_written(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "site_a.pub").write_text("a public key without its private key\n")
    assert _init(tmp_path, "ndjson") == 2
    assert str(tmp_path / "keys" / "site_a.pub") in capsys.readouterr().err
    assert not (tmp_path / "config.yaml").exists()
    assert not (tmp_path / "secrets").exists()

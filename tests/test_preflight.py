"""``cartfhir check``: one line per item, exit 2 on any problem, and ``run`` checks first."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest

from cartfhir import preflight
from cartfhir.cli import run_cli
from cartfhir.errors import FhirServerError, TlsError
from tests.extract.cli_site import patient
from tests.extract.stub_server import FakeFhir, outcome, serve
from tests.testbed import fhir_source

TOKEN = "tok-3f9a1c77e2b04d18a6"  # a bearer token that must never be printed


def _site_files(root: Path, site: str = "site_a") -> None:
    folder = root / "data" / site
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "Patient.ndjson").write_text('{"resourceType": "Patient", "id": "p1"}\n')


def _check(path: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = run_cli(["check", "--config", str(path), *args])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def _line(out: str, tag: str, name: str) -> str:
    """The one line of item ``name``, which must have outcome ``tag``."""
    found = [line for line in out.splitlines() if line.split("  ")[0].strip() == f"{tag} {name}"
             or line.startswith(f"{tag:<4} {name} ")]
    assert len(found) == 1, f"no single '{tag} {name}' line in:\n{out}"
    return found[0]


def test_an_all_good_config_exits_0_with_one_line_per_item(
        tmp_path: Path, config_file: Callable[..., Path],
        capsys: pytest.CaptureFixture[str]) -> None:
    _site_files(tmp_path)
    code, out = _check(config_file(["site_a"]), capsys)
    assert code == 0, out
    assert "(1 file)" in _line(out, "ok", "site_a source")
    _line(out, "ok", "site_a pseudonym key")
    _line(out, "ok", "study definitions")
    _line(out, "ok", "output database folder")
    assert f"duckdb {duckdb.__version__}" in _line(out, "ok", "engine")
    assert "FAIL" not in out


def test_a_site_time_zone_is_named_with_its_offset_and_an_unknown_one_fails(
        tmp_path: Path, config_file: Callable[..., Path], capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    _site_files(tmp_path)
    _site_files(tmp_path, "site_b")
    code, out = _check(config_file(["site_a", "site_b"], site_a={"timezone": "Asia/Shanghai"}),
                       capsys)
    assert code == 0, out
    assert "Asia/Shanghai (UTC+08:00 now)" in _line(out, "ok", "site_a time zone")
    assert "not set" in _line(out, "n/a", "site_b time zone")
    # A name the host's tzdata knows but DuckDB's (ICU) does not, as after a tzdata update.
    monkeypatch.setattr(preflight, "time_zone_problem", lambda con, site, zone: "too new")
    code, out = _check(config_file(["site_a"], site_a={"timezone": "Asia/Shanghai"}), capsys)
    assert code == 2 and "too new" in _line(out, "FAIL", "site_a time zone")


def test_a_missing_pseudonym_key_file_fails_and_run_does_nothing(
        tmp_path: Path, config_file: Callable[..., Path],
        capsys: pytest.CaptureFixture[str]) -> None:
    _site_files(tmp_path)
    path = config_file(["site_a"])
    (tmp_path / "secrets" / "site_a.key").unlink()
    code, out = _check(path, capsys)
    assert code == 2
    assert "secrets/site_a.key" in _line(out, "FAIL", "site_a pseudonym key")
    assert run_cli(["run", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "pre-flight check failed" in err and "site_a pseudonym key" in err
    assert not (tmp_path / "out" / "t.duckdb").exists()  # nothing was run


def test_a_missing_concept_map_file_fails_before_transform(
        tmp_path: Path, config_file: Callable[..., Path],
        capsys: pytest.CaptureFixture[str]) -> None:
    _site_files(tmp_path)
    path = config_file(["site_a"], site_a={"concept_maps": ["maps/none.csv"]})
    code, out = _check(path, capsys)
    assert code == 2
    assert "maps/none.csv does not exist" in _line(out, "FAIL", "site_a concept map")
    _line(out, "n/a", "study definitions")


def test_a_concept_map_that_does_not_parse_fails(
        tmp_path: Path, config_file: Callable[..., Path],
        capsys: pytest.CaptureFixture[str]) -> None:
    _site_files(tmp_path)
    (tmp_path / "maps").mkdir()
    (tmp_path / "maps" / "bad.csv").write_text("nothing,useful\n1,2\n")
    code, out = _check(config_file(["site_a"], site_a={"concept_maps": ["maps/bad.csv"]}),
                       capsys)
    assert code == 2
    _line(out, "ok", "site_a concept map")
    assert "bad.csv" in _line(out, "FAIL", "study definitions")


def test_a_unit_map_is_checked_like_a_concept_map(
        tmp_path: Path, config_file: Callable[..., Path],
        capsys: pytest.CaptureFixture[str]) -> None:
    _site_files(tmp_path)
    code, out = _check(config_file(["site_a"], site_a={"unit_maps": ["maps/none.csv"]}), capsys)
    assert code == 2
    assert "maps/none.csv does not exist" in _line(out, "FAIL", "site_a unit map")
    (tmp_path / "maps").mkdir()
    (tmp_path / "maps" / "units.csv").write_text("concept,unit,ucum\nanc,109/L,g/L\n")
    code, out = _check(config_file(["site_a"], site_a={"unit_maps": ["maps/units.csv"]}),
                       capsys)
    assert code == 2
    _line(out, "ok", "site_a unit map")
    assert "'g/L'" in _line(out, "FAIL", "study definitions")


def test_a_missing_site_folder_exits_2_in_check_and_extract(
        tmp_path: Path, config_file: Callable[..., Path],
        capsys: pytest.CaptureFixture[str]) -> None:
    _site_files(tmp_path, "site_a")
    path = config_file(["site_a", "site_b"])
    code, out = _check(path, capsys)
    assert code == 2
    _line(out, "ok", "site_a source")
    assert "data/site_b does not exist" in _line(out, "FAIL", "site_b source")
    assert run_cli(["extract", "--config", str(path)]) == 2
    assert "data/site_b does not exist" in capsys.readouterr().err


def test_an_unset_env_secret_fails_and_no_secret_value_is_printed(
        tmp_path: Path, config_file: Callable[..., Path], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    _site_files(tmp_path, "site_a")
    _site_files(tmp_path, "site_b")
    secret = "s3cr3t-value-9d2e7b41aa0c5f"
    monkeypatch.setenv("CARTFHIR_TEST_KEY_A", secret)
    monkeypatch.delenv("CARTFHIR_TEST_KEY_B", raising=False)
    path = config_file(["site_a", "site_b"],
                       site_a={"pseudonym_key": {"env": "CARTFHIR_TEST_KEY_A"}},
                       site_b={"pseudonym_key": {"env": "CARTFHIR_TEST_KEY_B"}})
    code, out = _check(path, capsys)
    assert code == 2
    assert "CARTFHIR_TEST_KEY_A" in _line(out, "ok", "site_a pseudonym key")
    assert "CARTFHIR_TEST_KEY_B is not set" in _line(out, "FAIL", "site_b pseudonym key")
    assert secret not in out
    assert run_cli(["run", "--config", str(path)]) == 2
    assert secret not in "".join(capsys.readouterr())


def test_unwritable_output_and_an_unreadable_database_fail(
        tmp_path: Path, config_file: Callable[..., Path],
        capsys: pytest.CaptureFixture[str]) -> None:
    _site_files(tmp_path)
    (tmp_path / "blocker").write_text("a file where the output folder should be\n")
    path = config_file(["site_a"], output={"duckdb": "blocker/out/t.duckdb"})
    code, out = _check(path, capsys)
    assert code == 2
    assert "is a file, not a folder" in _line(out, "FAIL", "output database folder")

    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "t.duckdb").write_text("not a database\n")
    code, out = _check(config_file(["site_a"]), capsys)
    assert code == 2
    assert "cannot be opened" in _line(out, "FAIL", "output database")


@pytest.fixture()
def fhir_server() -> Iterator[FakeFhir]:
    """FakeFhir over real HTTP: metadata for anyone, Patient searches only with TOKEN."""
    fake = FakeFhir(resources=[patient("p1")])

    def needs_token(request: Any) -> Any:
        if "/metadata" in request.url:
            return None
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return outcome("invalid token", 401)
        return None

    fake.faults.append(needs_token)
    server = serve(fake)
    yield fake
    server.shutdown()


def _fhir_config(config_file: Callable[..., Path], base: str) -> Path:
    source = fhir_source(base, cohort={"group_id": "g1"},
                         auth={"kind": "bearer", "token": {"env": "CARTFHIR_TEST_TOKEN"}})
    return config_file(["site_f"], site_f={"source": source})


def test_a_fhir_server_answers_metadata_and_accepts_the_token(
        fhir_server: FakeFhir, config_file: Callable[..., Path],
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("CARTFHIR_TEST_TOKEN", TOKEN)
    code, out = _check(_fhir_config(config_file, fhir_server.base), capsys)
    assert code == 0, out
    assert "FHIR 4.0.1, FakeFhir 1.0" in _line(out, "ok", "site_f server")
    assert "answered 200" in _line(out, "ok", "site_f auth")
    _line(out, "ok", "site_f auth.token")
    assert TOKEN not in out


def test_a_refused_token_is_named_an_auth_failure(
        fhir_server: FakeFhir, config_file: Callable[..., Path],
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("CARTFHIR_TEST_TOKEN", "tok-wrong-51c0de99aa7e")
    path = _fhir_config(config_file, fhir_server.base)
    code, out = _check(path, capsys)
    assert code == 2
    _line(out, "ok", "site_f server")
    auth = _line(out, "FAIL", "site_f auth")
    assert "auth failure" in auth and "401" in auth
    assert "tok-wrong-51c0de99aa7e" not in out
    served = fhir_server.served
    code, out = _check(path, capsys, "--no-network")  # offline: the server is not asked
    assert code == 0 and fhir_server.served == served
    _line(out, "n/a", "site_f server")


def test_an_unreachable_server_fails_the_server_item(
        config_file: Callable[..., Path], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("CARTFHIR_TEST_TOKEN", TOKEN)
    path = _fhir_config(config_file, "http://127.0.0.1:9/fhir")
    code, out = _check(path, capsys)
    assert code == 1  # transient: a scheduler may retry; it is not a config mistake
    _line(out, "FAIL", "site_f server")
    _line(out, "n/a", "site_f auth")
    assert run_cli(["--log-format", "json", "run", "--config", str(path)]) == 1
    error = json.loads(capsys.readouterr().err.splitlines()[-1])
    assert error["error_type"] == "FhirServerError" and error["exit_code"] == 1
    assert "site_f server" in error["msg"]
    # the probe tries on purpose only briefly: it must not send the user to http.max_retries
    assert "raise http.max_retries" not in _line(out, "FAIL", "site_f server")
    assert "pre-flight" in _line(out, "FAIL", "site_f server")


def test_a_tls_failure_needs_a_fix_not_a_retry() -> None:
    """A certificate the client does not trust stays untrusted: exit 2, like refused
    credentials; a server that did not answer may answer later: exit 1."""
    tls = preflight._failed("site_f server", TlsError("TLS with https://x failed"))
    down = preflight._failed("site_f server", FhirServerError("giving up on https://x"))
    assert tls.transient is None and down.transient is FhirServerError


WRITER = ("import duckdb, sys, time; con = duckdb.connect(sys.argv[1]); "
          "print('ready', flush=True); time.sleep(float(sys.argv[2]))")


def test_run_waits_for_a_writing_holder_and_then_fails_as_busy_not_as_config(
        tmp_path: Path, config_file: Callable[..., Path],
        capsys: pytest.CaptureFixture[str]) -> None:
    _site_files(tmp_path)
    path = config_file(["site_a"])
    database = tmp_path / "out" / "t.duckdb"
    database.parent.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", WRITER, str(database), "30"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        started = time.monotonic()
        code = run_cli(["--log-format", "json", "--wait", "2", "run", "--config", str(path)])
        waited = time.monotonic() - started
    finally:
        holder.kill()
        holder.wait()
    records = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert code == 1, records
    assert waited >= 1.8  # --wait applies to the pre-flight's look at the database too
    assert [r["event"] for r in records if r.get("event") == "db.lock_wait"]
    error = records[-1]
    assert error["error_type"] == "DatabaseBusyError" and error["exit_code"] == 1
    assert f"PID {holder.pid}" in error["msg"]


def test_an_invalid_config_is_one_failed_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("study: {name: x}\nsites: []\n")
    code, out = _check(path, capsys)
    assert code == 2 and out.startswith("FAIL config ")


def test_smart_auth_gets_a_token_even_when_metadata_needs_one(
        tmp_path: Path, config_file: Callable[..., Path],
        capsys: pytest.CaptureFixture[str]) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from tests.extract.token_server import TokenServer

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (tmp_path / "secrets").mkdir(exist_ok=True)
    (tmp_path / "secrets" / "client.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    server = TokenServer(public_key=key.public_key(), algorithm="RS384",
                         fhir=FakeFhir(resources=[patient("p1")])).start()
    try:
        source = fhir_source(server.base_url, cohort={"group_id": "g1"},
                             auth={"kind": "smart", "client_id": server.client_id,
                                   "private_key": {"file": "secrets/client.pem"}})
        code, out = _check(config_file(["site_s"], site_s={"source": source}), capsys)
        refused = server.fhir_refused
    finally:
        server.stop()
    assert code == 0, out
    assert refused >= 1  # /metadata refused without a token: asked again with one
    _line(out, "ok", "site_s server")
    assert "token obtained" in _line(out, "ok", "site_s auth")
    assert server.issued and not any(token in out for token in server.issued)
    assert "PRIVATE KEY" not in out


def test_a_spark_engine_line_names_pyspark_java_and_master(
        tmp_path: Path, config_file: Callable[..., Path],
        capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("pyspark")
    _site_files(tmp_path)
    code, out = _check(config_file(["site_a"], engine={"kind": "spark",
                                                       "master": "local[*]"}), capsys)
    line = _line(out, "ok", "engine")
    assert "pyspark 4.0" in line and "java 1" in line and "master local[*]" in line
    assert code == 0, out


def test_an_old_java_is_a_fix_exit_2(tmp_path: Path, config_file: Callable[..., Path],
                                     capsys: pytest.CaptureFixture[str],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("pyspark")
    _site_files(tmp_path)
    old = tmp_path / "jdk" / "bin" / "java"
    old.parent.mkdir(parents=True)
    old.write_text('#!/bin/sh\necho \'java version "1.8.0_392"\' >&2\n')
    old.chmod(0o755)
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "jdk"))
    code, out = _check(config_file(["site_a"], engine="spark"), capsys)
    assert "needs Java 17 or 21" in _line(out, "FAIL", "engine") and "Java 8" in out
    assert code == 2

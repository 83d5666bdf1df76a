"""Benchmark: the validation stage (GX suites) on a cohort with N lab Observations.

Builds the same replicated three-site cohort as ``bench/transform.py`` (its
``make_data``), lands and transforms it, then times ``cartfhir validate`` (every
suite, GX pandas engine on hash-partitioned batches of ``expectations.chunk_rows``
rows read from DuckDB) in a fresh child process, and prints seconds, rows of
``harmonized.lab`` and peak RSS (the child and its descendants, sampled every 20 ms)
for two batch sizes. The point: a million-row lab table is never in memory at once.

    python bench/validate.py --observations 1000000
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))

from transform import make_data, write_config  # noqa: E402  (bench/transform.py)


def _config(work: Path, chunk_rows: int | None = None):
    from cartfhir.config import parse_config

    data = json.loads((work / "config.json").read_text())
    if chunk_rows:
        data["expectations"] = {"chunk_rows": chunk_rows, "data_docs": False}
    return parse_config(data, base_dir=work)


def child(role: str, work: Path, chunk_rows: int) -> dict:
    if role == "prepare":
        from cartfhir.api import extract, transform

        config = _config(work)
        extract(config, command="bench")
        transform(config, command="bench")
        return {}
    import duckdb

    from cartfhir.api import validate

    config = _config(work, chunk_rows)
    started = time.perf_counter()
    report = validate(config, command="bench")
    seconds = time.perf_counter() - started
    con = duckdb.connect(str(config.output.duckdb), read_only=True)
    lab_rows = con.execute("SELECT count(*) FROM harmonized.lab").fetchone()[0]
    con.close()
    return {"seconds": seconds, "lab_rows": lab_rows, **report.summary(),
            "failed": [f"{o.suite} {o.expectation} {o.column}" for o in report.failed_errors]}


def run(role: str, work: Path, chunk_rows: int = 0) -> dict:
    import psutil

    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(HERE)]))
    proc = subprocess.Popen([sys.executable, __file__, "--child", role, "--work", str(work),
                             "--chunk-rows", str(chunk_rows)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    watched, peak = psutil.Process(proc.pid), 0
    while proc.poll() is None:
        total = 0
        for p in [watched, *watched.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                total += p.memory_info().rss
        peak = max(peak, total)
        time.sleep(0.02)
    out, err = proc.communicate()
    if proc.returncode != 0:
        sys.exit(f"{role} failed:\n{err[-3000:]}")
    figures = json.loads(out.strip().splitlines()[-1])
    figures["peak_rss_mb"] = peak / 2**20
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--observations", type=int, default=1_000_000)
    parser.add_argument("--memory-limit", default="512MB")
    parser.add_argument("--child", choices=["prepare", "validate"], help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--chunk-rows", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.work, args.chunk_rows)))
        return
    work = Path(tempfile.mkdtemp(prefix="cartfhir-bench-validate-"))
    try:
        make_data(work, args.observations, 60, 11)
        write_config(work, args.memory_limit)
        print("landing and transforming ...", file=sys.stderr, flush=True)
        run("prepare", work)
        rows = []
        for chunk_rows in (100_000, 250_000):
            print(f"validating in batches of {chunk_rows:,} ...", file=sys.stderr, flush=True)
            rows.append((chunk_rows, run("validate", work, chunk_rows)))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nvalidation of every suite; {os.cpu_count()} CPUs; DuckDB memory_limit "
          f"{args.memory_limit}")
    print(f"{'batch rows':>10} {'lab rows':>10} {'expectations':>12} {'failed':>7} "
          f"{'seconds':>8} {'peak RSS MB':>12}")
    for chunk_rows, f in rows:
        print(f"{chunk_rows:>10,} {f['lab_rows']:>10,} {f['expectations']:>12} "
              f"{f['failed_error']:>7} {f['seconds']:>8.1f} {f['peak_rss_mb']:>12,.0f}")
        for failure in f["failed"]:
            print(f"  failed: {failure}")


if __name__ == "__main__":
    main()

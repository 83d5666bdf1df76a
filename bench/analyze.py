"""Benchmark: the analysis stage on a 10,000-patient cohort.

Generates a 100-patient synthetic cohort (three sites), lands and transforms it,
then replicates its cohort tables (patients, episodes, endpoints, daily labs) with
new patient keys until the cohort has N patients, and times ``cartfhir analyze``
(comparison with every test, EFS with Kaplan-Meier, count dynamics, the HTML
report with its figures, CSV/JSON exports) in a fresh child process: seconds and
peak RSS (ru_maxrss of the child).

    python bench/analyze.py --patients 10000
"""

from __future__ import annotations

import argparse
import json
import resource
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SITES = ["site_a", "site_b", "site_c"]
BASE_PATIENTS = 100
REPLICATED = ("cohort.patient", "cohort.episode", "cohort.episode_endpoints", "cohort.lab_daily")


def config_for(work: Path):
    from cartfhir.config import parse_config

    sites = []
    for site in SITES:
        key = work / "secrets" / f"{site}.key"
        key.parent.mkdir(parents=True, exist_ok=True)
        if not key.exists():
            key.write_text(secrets.token_hex(32))
        sites.append({"id": site, "source": {"kind": "ndjson", "path": f"data/{site}"},
                      "pseudonym_key": {"file": f"secrets/{site}.key"}})
    return parse_config({"study": {"name": "bench-analyze"}, "sites": sites,
                         "output": {"duckdb": "cartfhir.duckdb", "dir": "out"}},
                        base_dir=work)


def prepare(work: Path, patients: int) -> dict:
    import duckdb

    from cartfhir.api import extract, transform
    from cartfhir.synth import generate

    generate(work / "data", patients=BASE_PATIENTS, seed=17, sites=SITES)
    config = config_for(work)
    extract(config)
    transform(config)
    copies = max(1, round(patients / BASE_PATIENTS))
    con = duckdb.connect(str(config.output.duckdb))
    for table in REPLICATED:
        con.execute(f"CREATE OR REPLACE TABLE {table} AS "
                    f"SELECT * REPLACE (patient_key || '-' || r AS patient_key) "
                    f"FROM {table}, range({copies}) AS copies(r)")
    counts = {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in REPLICATED}
    con.close()
    return counts


def child(work: Path) -> dict:
    # The analysis libraries are imported before the clock starts, as interpreter start
    # is: analyze() imports them where it runs (start-up), and what is timed is the work.
    import cartfhir.analyze.compare  # noqa: F401
    import cartfhir.analyze.report  # noqa: F401
    from cartfhir.api import analyze

    config = config_for(work)
    started = time.perf_counter()
    result = analyze(config, command="bench")
    return {"seconds": time.perf_counter() - started, "tables": result.tables,
            "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patients", type=int, default=10_000)
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child)))
        return
    work = Path(tempfile.mkdtemp(prefix="cartfhir-bench-analyze-"))
    try:
        counts = prepare(work, args.patients)
        done = subprocess.run([sys.executable, __file__, "--child", str(work)],
                              capture_output=True, text=True, check=False)
        if done.returncode:
            sys.exit(f"analysis failed:\n{done.stderr[-3000:]}")
        figures = json.loads(done.stdout.strip().splitlines()[-1])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\ncohort: {counts['cohort.patient']:,} patients, "
          f"{counts['cohort.episode']:,} episodes, {counts['cohort.lab_daily']:,} daily lab rows")
    print(f"{'stage':<22} {'seconds':>8} {'peak RSS MB':>12}")
    print(f"{'analyze (all of it)':<22} {figures['seconds']:>8.1f} {figures['rss_mb']:>12,.0f}")
    for table, rows in figures["tables"].items():
        print(f"  {table:<30} {rows:>10,} rows")


if __name__ == "__main__":
    main()

"""Benchmark: the whole transform on Spark (local[2]) next to DuckDB, same input, same run.

The input is bench/transform.py's: a three-site synthetic cohort replicated until the
NDJSON holds N lab Observations (each replica with new ids). It is landed once with
``cartfhir extract`` (structural validation; shown, not measured) into a DuckDB file that
is then copied, so both engines transform the same ``raw.resources``:

- ``duckdb``: ``cartfhir.api.transform`` with the default engine, the reference;
- ``spark``: the same call with ``engine: {kind: spark, master: local[N]}``: raw.resources
  exported to Parquet by DuckDB, views and models on Spark, tables written as Parquet
  partitioned by site, and the store given views over them.

Each run is a fresh child process; seconds are the wall time of the transform call (for
Spark this includes starting the JVM: a user pays it too), peak RSS is the sampled sum over
the child and its descendants (the JVM is a child of the Python process). Afterwards the
row counts of every table are compared between the two stores, so a fast wrong run cannot
pass unnoticed (the parity tests compare the rows themselves on a smaller cohort).

Spark on 2 cores is expected to be slower than DuckDB: what it buys is that the same
definitions run on a cluster. The table shows what that costs on one machine.

    python bench/spark.py --observations 1000000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import transform as base  # noqa: E402 - bench/transform.py: data, config and child helpers


def _write_configs(work: Path, memory_limit: str, master: str, spark_memory: str) -> None:
    """config.json (DuckDB, also used to land) and spark.json: the same with engine: spark."""
    base.write_config(work, memory_limit)
    data = json.loads((work / "config.json").read_text())
    for name, engine in (("duckdb", "duckdb"),
                         ("spark", {"kind": "spark", "master": master,
                                    "conf": {"spark.driver.memory": spark_memory}})):
        folder = work / name
        folder.mkdir(exist_ok=True)
        config = {**data, "engine": engine,
                  "output": {**data["output"], "duckdb": f"{name}/cartfhir.duckdb",
                             "dir": f"{name}/out"},
                  "sites": [{**s, "source": {**s["source"], "path": f"data/{s['id']}"}}
                            for s in data["sites"]]}
        (work / f"{name}.json").write_text(json.dumps(config, indent=2))


def child_transform(work: Path, name: str) -> dict:
    """Transform with the config ``<name>.json``; seconds, per-table rows and rusage."""
    from cartfhir.api import transform

    config = base._config(work / f"{name}.json")
    started = time.perf_counter()
    try:
        result = transform(config, command="bench")
    except Exception as exc:  # noqa: BLE001 - the row reports why
        return {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0]}",
                "seconds": time.perf_counter() - started, **base._rusage()}
    return {"seconds": time.perf_counter() - started,
            "tables": {k: list(v) for k, v in result.tables.items()},
            "episodes": [list(e) for e in result.episodes], **base._rusage()}


def run_child(role: str, work: Path, memory_limit: str) -> dict:
    """bench/transform.py's child runner, pointed at this file's roles."""
    original = base.__file__
    base.__file__ = __file__  # run_child starts `python <base.__file__> --child <role>`
    try:
        return base.run_child(role, work, memory_limit)
    finally:
        base.__file__ = original


def report(args: argparse.Namespace, info: dict, land: dict, runs: dict[str, dict]) -> None:
    n = args.observations
    print()
    print(f"cartfhir at {base.code_version()}; {os.cpu_count()} CPUs; DuckDB memory_limit "
          f"{args.memory_limit}; Spark {args.master}, driver memory {args.spark_memory}")
    print(f"input: {n:,} Observation lines ({info['bytes'] / 2**20:,.0f} MB NDJSON, 3 sites)")
    if "error" not in land:
        t = land["totals"]
        print(f"landing (DuckDB, not measured): {t['inserted']:,} resources in "
              f"{land['seconds']:.1f} s")
    print()
    print(f"{'engine':<10} {'seconds':>9} {'obs/s':>10} {'peak RSS MB':>12} {'x duckdb':>9}")
    ref = runs["duckdb"].get("seconds") if "error" not in runs["duckdb"] else None
    for name, fig in runs.items():
        if "error" in fig:
            print(f"{name:<10} FAILED: {fig['error']}")
            continue
        ratio = f"{fig['seconds'] / ref:.1f}" if ref else "-"
        print(f"{name:<10} {fig['seconds']:>9.1f} {n / fig['seconds']:>10,.0f} "
              f"{fig['peak_rss_mb']:>12,.0f} {ratio:>9}")
    if any("error" in f for f in runs.values()):
        return
    duck, spark = runs["duckdb"]["tables"], runs["spark"]["tables"]
    differ = {t: (duck[t][0], spark.get(t, [None])[0]) for t in duck
              if spark.get(t, [None])[0] != duck[t][0]}
    print()
    if differ:
        print(f"ROW COUNTS DIFFER in {len(differ)} tables:")
        for table, (a, b) in differ.items():
            print(f"  {table}: duckdb {a}, spark {b}")
    else:
        print(f"row counts equal in all {len(duck)} tables")
    print()
    print(f"{'step':<38} {'rows':>10} {'duckdb s':>9} {'spark s':>9}")
    for table, (rows, seconds) in duck.items():
        other = spark.get(table, [None, None])[1]
        print(f"{table:<38} {rows:>10,} {seconds:>9.2f} "
              f"{other if other is None else f'{other:.2f}':>9}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--observations", type=int, default=1_000_000)
    parser.add_argument("--patients", type=int, default=60)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--memory-limit", default="512MB", help="DuckDB memory limit")
    parser.add_argument("--master", default="local[2]", help="Spark master (default local[2])")
    parser.add_argument("--spark-memory", default="4g", help="spark.driver.memory")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--child", choices=["land", "duckdb", "spark"], help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        figures = (base.child_land(args.work) if args.child == "land"
                   else child_transform(args.work, args.child))
        print(json.dumps(figures))
        return

    work = (args.workdir.resolve() if args.workdir
            else Path(tempfile.mkdtemp(prefix="cartfhir-bench-spark-")))
    work.mkdir(parents=True, exist_ok=True)
    try:
        started = time.perf_counter()
        info = base.make_data(work, args.observations, args.patients, args.seed)
        print(f"generated {args.observations:,} Observations in {work} "
              f"({time.perf_counter() - started:.1f} s)", file=sys.stderr)
        _write_configs(work, args.memory_limit, args.master, args.spark_memory)
        print("landing ...", file=sys.stderr, flush=True)
        land = run_child("land", work, args.memory_limit)
        if "error" in land:
            sys.exit(f"landing failed: {land['error']}")
        for name in ("duckdb", "spark"):  # the same landed raw.resources for both
            shutil.copy(work / "cartfhir.duckdb", work / name / "cartfhir.duckdb")
        runs = {}
        for name in ("duckdb", "spark"):
            print(f"transform on {name} ...", file=sys.stderr, flush=True)
            runs[name] = run_child(name, work, args.memory_limit)
        report(args, info, land, runs)
    finally:
        base.release_workdir(work, args.keep)


if __name__ == "__main__":
    main()

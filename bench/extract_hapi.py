"""Benchmark: pull a synthetic cohort out of a real HAPI FHIR server.

Starts the project's HAPI server (servers/hapi), loads N synthetic patients,
then times three pulls of the same data and prints a table:

- ``rest``: ``cartfhir extract`` by REST search (the site's max_connections);
- ``bulk``: ``cartfhir extract`` by system-level ``$export``;
- ``bare loop``: the same search pages fetched one after another with plain
  ``requests`` and ``json`` and nothing else: the floor the server allows.

For each: resources, seconds, resources/s and client CPU seconds per 1,000
resources (this process only; the server's CPU is not counted).

    python bench/extract_hapi.py --patients 40 --connections 4
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cartfhir.api import extract  # noqa: E402
from cartfhir.config import parse_config  # noqa: E402
from cartfhir.extract.rest import plan  # noqa: E402
from cartfhir.synth import generate  # noqa: E402
from tests.integration import hapi  # noqa: E402


def timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    n = fn()
    return n, time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patients", type=int, default=40)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--patients-per-query", type=int, default=10)
    parser.add_argument("--page-size", type=int, default=200)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="cartfhir-bench-"))
    jar = hapi.build_jar(work / "build.log")
    server = hapi.HapiServer(jar, hapi.free_port(), work / "server.log")
    server.start()
    try:
        server.wait_ready(300)
        base = server.base_url
        generate(work / "data", patients=args.patients, seed=5, sites=["site_a"], bundles=True)
        started = time.perf_counter()
        hapi.load_bundles(base, work / "data" / "site_a")
        print(f"loaded {args.patients} patients into HAPI in {time.perf_counter() - started:.0f} s",
              file=sys.stderr)
        ids = [p["id"] for p in hapi.search_all(base, "Patient", _elements="id")[1]]
        (work / "ids.txt").write_text("\n".join(ids) + "\n")

        def cfg(db: str, **source: object):
            return parse_config({
                "study": {"name": "bench"},
                "sites": [{"id": "site_a", "source": {"base_url": base, **source}}],
                "output": {"duckdb": str(work / db)}, "landing": {"workers": 0}},
                base_dir=work)

        rest_cfg = cfg("rest.duckdb", kind="fhir",
                       cohort={"patient_ids_file": str(work / "ids.txt")},
                       patients_per_query=args.patients_per_query, page_size=args.page_size,
                       http={"max_connections": args.connections})
        bulk_cfg = cfg("bulk.duckdb", kind="bulk", level="system")
        rows = []
        n, wall, cpu = timed(lambda: extract(rest_cfg).totals()["received"])
        rows.append(("rest", n, wall, cpu))
        n, wall, cpu = timed(lambda: extract(bulk_cfg).totals()["received"])
        rows.append(("bulk", n, wall, cpu))

        source = rest_cfg.sites[0].source
        tasks = plan(source, ids, set(), {}, None)

        def bare() -> int:
            total = 0
            with requests.Session() as session:
                for task in tasks:
                    url = requests.Request("GET", f"{base}/{task.query.type}",
                                           params=task.params).prepare().url
                    while url:
                        bundle = session.get(url, headers={"Accept": "application/fhir+json"},
                                             timeout=120).json()
                        total += len(bundle.get("entry", []))
                        url = next((link["url"] for link in bundle.get("link", [])
                                    if link["relation"] == "next"), None)
            return total

        n, wall, cpu = timed(bare)
        rows.append(("bare loop", n, wall, cpu))
    finally:
        server.stop()

    print(f"HAPI on loopback, {args.patients} patients, {os.cpu_count()} CPUs, "
          f"{args.connections} connections, {args.patients_per_query} patients/query")
    print(f"{'pull':<10} {'resources':>10} {'seconds':>8} {'resources/s':>12} "
          f"{'CPU s/1k':>9} {'CPU % wall':>11}")
    for name, n, wall, cpu in rows:
        print(f"{name:<10} {n:>10,} {wall:>8.1f} {n / wall:>12,.0f} {1000 * cpu / max(n, 1):>9.3f} "
              f"{100 * cpu / wall:>10.0f}%")


if __name__ == "__main__":
    main()

"""Benchmark: land N synthetic FHIR resources from NDJSON into a fresh DuckDB file.

Generates realistic-looking R4 NDJSON (mostly lab Observations, plus Patients,
Conditions and Procedures) with a small deterministic generator, lands it with
``cartfhir.extract.extract`` in a child process per validation mode, and prints
resources, seconds, resources/s and the peak RSS of that child.

    python bench/land_ndjson.py --resources 1000000 --validation both
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cartfhir.config import LANDING_BATCH_ROWS

REPO = Path(__file__).resolve().parents[1]
OBS_PER_FILE = 200_000
# (LOINC code, display, UCUM unit, low, high): common CAR-T follow-up labs.
LABS = [
    ("718-7", "Hemoglobin [Mass/volume] in Blood", "g/dL", 7.0, 17.0),
    ("6690-2", "Leukocytes [#/volume] in Blood by Automated count", "10*3/uL", 0.1, 15.0),
    ("777-3", "Platelets [#/volume] in Blood by Automated count", "10*3/uL", 5.0, 450.0),
    ("751-8", "Neutrophils [#/volume] in Blood by Automated count", "10*3/uL", 0.0, 10.0),
    ("731-0", "Lymphocytes [#/volume] in Blood by Automated count", "10*3/uL", 0.0, 5.0),
    ("2160-0", "Creatinine [Mass/volume] in Serum or Plasma", "mg/dL", 0.4, 3.0),
    ("1742-6", "Alanine aminotransferase [Enzymatic activity/volume] in Serum or Plasma",
     "U/L", 5.0, 300.0),
    ("1988-5", "C reactive protein [Mass/volume] in Serum or Plasma", "mg/L", 0.1, 250.0),
    ("2276-4", "Ferritin [Mass/volume] in Serum or Plasma", "ng/mL", 10.0, 20000.0),
    ("26881-3", "Interleukin 6 [Mass/volume] in Serum or Plasma", "pg/mL", 1.0, 5000.0),
]
OBS_PER_PATIENT = 17


def _instant(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _meta(rng: random.Random, base: datetime) -> dict:
    version = rng.randint(1, 3)
    stamp = base + timedelta(days=rng.randint(0, 30), seconds=rng.randint(0, 86_399))
    return {"versionId": str(version), "lastUpdated": _instant(stamp)}


def patient(rng: random.Random, pid: str, base: datetime) -> dict:
    birth = datetime(1940, 1, 1) + timedelta(days=rng.randint(0, 25_000))
    return {
        "resourceType": "Patient",
        "id": pid,
        "meta": _meta(rng, base),
        "identifier": [{"system": "urn:oid:1.2.36.146.595.217.0.1", "value": f"MRN{pid[4:]}"}],
        "name": [{"family": rng.choice(["Smith", "Müller", "Rossi", "Garcia", "Nguyen"]),
                  "given": [rng.choice(["Ana", "Ben", "Chloé", "Dara", "Eli"])]}],
        "gender": rng.choice(["female", "male"]),
        "birthDate": birth.strftime("%Y-%m-%d"),
    }


def condition(rng: random.Random, pid: str, base: datetime) -> dict:
    code, display = rng.choice([
        ("C83.3", "Diffuse large B-cell lymphoma"),
        ("C90.0", "Multiple myeloma"),
        ("C91.0", "Acute lymphoblastic leukaemia"),
    ])
    return {
        "resourceType": "Condition",
        "id": f"cond-{pid[4:]}",
        "meta": _meta(rng, base),
        "clinicalStatus": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
            "code": "active"}]},
        "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": code,
                             "display": display}]},
        "subject": {"reference": f"Patient/{pid}"},
        "onsetDateTime": _instant(base - timedelta(days=rng.randint(30, 900))),
    }


def procedure(rng: random.Random, pid: str, base: datetime) -> dict:
    return {
        "resourceType": "Procedure",
        "id": f"proc-{pid[4:]}",
        "meta": _meta(rng, base),
        "status": "completed",
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "1268935005",
                             "display": "Infusion of CAR-T cells"}]},
        "subject": {"reference": f"Patient/{pid}"},
        "performedDateTime": _instant(base),
    }


def observation(rng: random.Random, oid: str, pid: str, base: datetime) -> dict:
    code, display, unit, low, high = rng.choice(LABS)
    taken = base + timedelta(days=rng.randint(-14, 90), minutes=rng.randint(0, 1439))
    return {
        "resourceType": "Observation",
        "id": oid,
        "meta": _meta(rng, taken),
        "status": "final",
        "category": [{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
            "code": "laboratory", "display": "Laboratory"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": code, "display": display}],
                 "text": display},
        "subject": {"reference": f"Patient/{pid}"},
        "effectiveDateTime": _instant(taken),
        "issued": _instant(taken + timedelta(hours=2)),
        "valueQuantity": {"value": round(rng.uniform(low, high), 2), "unit": unit,
                          "system": "http://unitsofmeasure.org", "code": unit},
        "referenceRange": [{"low": {"value": low, "unit": unit},
                            "high": {"value": high, "unit": unit}}],
    }


def generate(folder: Path, n: int, seed: int = 7) -> None:
    """Write exactly ``n`` resources as NDJSON under ``folder``."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    per_patient = 3 + OBS_PER_PATIENT
    patients = max(1, n // per_patient)
    handles: dict[str, object] = {}
    obs_written = 0

    def out(name: str):
        if name not in handles:
            handles[name] = (folder / f"{name}.ndjson").open("w", encoding="utf-8")
        return handles[name]

    written = 0
    for p in range(patients):
        pid = f"pat-{p:07d}"
        base = datetime(2021, 1, 1, tzinfo=UTC) + timedelta(days=rng.randint(0, 900))
        for kind, make in (("Patient", patient), ("Condition", condition),
                           ("Procedure", procedure)):
            if written < n:
                out(kind).write(json.dumps(make(rng, pid, base), ensure_ascii=False) + "\n")
                written += 1
        remaining = OBS_PER_PATIENT if p < patients - 1 else n - written
        for _ in range(remaining):
            if written >= n:
                break
            oid = f"obs-{obs_written:08d}"
            chunk = obs_written // OBS_PER_FILE
            out(f"Observation.{chunk:03d}").write(
                json.dumps(observation(rng, oid, pid, base), ensure_ascii=False) + "\n"
            )
            obs_written += 1
            written += 1
    for handle in handles.values():
        handle.close()
    # Bulk exports ship a manifest; the lander must ignore it.
    (folder / "manifest.json").write_text(json.dumps({"output": sorted(handles)}))


def land_child(
    data: Path, db: Path, validation: str, batch_size: int, workers: int | None,
    memory_limit: str,
) -> None:
    """Run in a fresh interpreter: land ``data`` into ``db`` and print JSON figures."""
    from cartfhir.api import extract
    from cartfhir.config import parse_config
    from cartfhir.extract.landing import auto_workers

    config = parse_config(
        {
            "study": {"name": "bench"},
            "sites": [{"id": "bench", "source": {"kind": "ndjson", "path": str(data)}}],
            "output": {"duckdb": str(db), "memory_limit": memory_limit},
            "landing": {"validation": validation, "batch_size": batch_size},
        },
        base_dir=data,
    )
    if workers is None:  # what extract() would pick; resolved here to report it
        workers = auto_workers(sum(p.stat().st_size for p in data.glob("*.ndjson")))
    started = time.perf_counter()
    result = extract(config, command="bench", workers=workers)
    seconds = time.perf_counter() - started
    figures = {
        "seconds": seconds,
        "totals": result.totals(),
        "workers": workers,
        # ru_maxrss is in KiB on Linux. CHILDREN: the largest worker, once they have exited.
        "main_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "worker_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }
    print(json.dumps(figures))


def run_mode(
    data: Path, workdir: Path, validation: str, batch_size: int, workers: int | None,
    memory_limit: str,
) -> dict:
    db = workdir / f"bench-{validation}.duckdb"
    for stale in (db, db.with_name(db.name + ".wal")):
        stale.unlink(missing_ok=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    command = [sys.executable, __file__, "--child", "--data", str(data), "--db", str(db),
               "--validation", validation, "--batch-size", str(batch_size),
               "--memory-limit", memory_limit]
    if workers is not None:
        command += ["--workers", str(workers)]
    proc = subprocess.run(
        command,
        capture_output=True, text=True, env=env, check=False,
    )
    if proc.returncode != 0:
        sys.exit(f"landing child failed ({validation}):\n{proc.stderr}")
    figures = json.loads(proc.stdout.strip().splitlines()[-1])
    figures["db_mb"] = db.stat().st_size / 2**20
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--resources", type=int, default=1_000_000)
    parser.add_argument("--validation", choices=["full", "structural", "both"], default="both")
    parser.add_argument("--workdir", type=Path, default=REPO / "bench" / "out")
    parser.add_argument("--batch-size", type=int, default=LANDING_BATCH_ROWS,
                        help="landing.batch_size (default: the config's)")
    parser.add_argument("--workers", type=int, default=None,
                        help="check processes (default: what extract() picks for this machine)")
    parser.add_argument("--memory-limit", default="512MB",
                        help="DuckDB memory limit (output.memory_limit in the config)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--db", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        land_child(args.data, args.db, args.validation, args.batch_size, args.workers,
                   args.memory_limit)
        return

    workdir = args.workdir.resolve()
    data = workdir / f"ndjson-{args.resources}"
    if not (data / "manifest.json").exists():
        started = time.perf_counter()
        generate(data, args.resources)
        print(f"generated {args.resources:,} resources in {data} "
              f"({time.perf_counter() - started:.1f} s)", file=sys.stderr)
    size_mb = sum(p.stat().st_size for p in data.glob("*.ndjson")) / 2**20

    modes = ["structural", "full"] if args.validation == "both" else [args.validation]
    print(f"input: {args.resources:,} resources, {size_mb:,.0f} MB NDJSON; "
          f"batch_size {args.batch_size}; {os.cpu_count()} CPUs")
    print(f"{'validation':<11} {'resources':>10} {'seconds':>8} {'resources/s':>12} "
          f"{'workers':>7} {'peak RSS MB':>12} {'worker RSS MB':>14} {'db MB':>6}")
    for mode in modes:
        f = run_mode(data, workdir, mode, args.batch_size, args.workers, args.memory_limit)
        n = f["totals"]["received"]
        if f["totals"]["inserted"] != args.resources:
            print(f"warning: not everything was inserted: {f['totals']}", file=sys.stderr)
        worker_rss = f"{f['worker_rss_mb']:,.0f}" if f["workers"] else "-"
        print(f"{mode:<11} {n:>10,} {f['seconds']:>8.1f} {n / f['seconds']:>12,.0f} "
              f"{f['workers']:>7} {f['main_rss_mb']:>12,.0f} {worker_rss:>14} "
              f"{f['db_mb']:>6,.0f}", flush=True)


if __name__ == "__main__":
    main()

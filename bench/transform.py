"""Benchmark: the whole transform (views, harmonization, cohort tables) on N lab Observations.

Builds a three-site synthetic cohort with ``cartfhir.synth.generate`` (site_a,
site_b and site_c keep their own coding: LOINC, local Chinese LIS codes, ...)
for a modest number of patients, then replicates it block by block: every
replica gets new ids for every resource (the first 8 hex digits of each UUID,
in ids and references alike), so patients, their CAR-T infusions, conditions
and labs all grow in proportion until the NDJSON holds N Observation lines.
That is landed with ``cartfhir.extract.extract`` (structural validation; its
time is shown but is not what is measured), and then three things are timed,
each in a fresh child process whose peak RSS is recorded:

- ``transform (cartfhir)``: ``cartfhir.api.transform(config)``, the whole
  stage from raw.resources to the cohort and qa tables;
- ``floor: read_ndjson flatten``: one hand-written DuckDB query that reads the
  same Observation NDJSON with ``read_json`` and flattens the columns the
  ``flat.observation`` view makes (id, patient id, status, code text, first
  coding system/code/display, effectiveDateTime, valueQuantity value, unit,
  system, code and comparator, valueString, first referenceRange low/high)
  into a table: the least any tool must spend on this input;
- ``fhiry``: the peer tool (PyPI ``fhiry``, FHIR NDJSON to pandas) on a 20,000
  Observation slice, one file per CPU with its ``parallel.ndjson``; its time
  is scaled linearly to N.

Seconds are wall time of the measured call inside the child (interpreter start
and imports excluded). Peak RSS is the largest of the child's own ru_maxrss and
the summed RSS of the child and its descendants sampled every 20 ms. Both
DuckDB runs use the same memory_limit and DuckDB's default thread count.

    python bench/transform.py --observations 1000000
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import resource
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SITES = ("site_a", "site_b", "site_c")
SITE_MAPS = {"site_b": [REPO / "maps" / "site_b_lab.csv"]}  # as in config.yaml
OBS_PER_FILE = 100_000
FHIRY_SLICE = 20_000
# Goals from the issue.
GOAL_RATIO = 5.0
GOAL_RSS_MB = 2048
# The first 8 hex digits of a UUID (ids and references are all UUIDs in synth output).
UUID_HEAD = re.compile(rb"[0-9a-f]{8}(?=-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})")


# --------------------------------------------------------------------------- data


def _read_site(folder: Path) -> dict[str, list[bytes]]:
    """Lines of a synth site folder by resource type (from the file names)."""
    by_type: dict[str, list[bytes]] = {}
    for path in sorted(folder.glob("*.ndjson")):
        kind = path.name.split(".", 1)[0]
        with path.open("rb") as fh:
            by_type.setdefault(kind, []).extend(
                line if line.endswith(b"\n") else line + b"\n" for line in fh if line.strip())
    return by_type


def _partial_counts(sizes: dict[str, int], want: int) -> dict[str, int]:
    """Split ``want`` lines over sites in proportion to ``sizes`` (sums to ``want``)."""
    total = sum(sizes.values())
    counts = {s: sizes[s] * want // total for s in sizes}
    for s in sizes:  # hand out the rounding remainder
        if sum(counts.values()) >= want:
            break
        if counts[s] < sizes[s]:
            counts[s] += 1
    return counts


def make_data(work: Path, observations: int, patients: int, seed: int, *,
              fhiry_slice: bool = True) -> dict:
    """Write the replicated cohort to ``work/data/<site>/``; return what was written.

    ``fhiry_slice``: also write the slice the fhiry row reads (benches without it skip it).
    """
    from cartfhir.synth import generate

    synth = work / "synth"
    generate(synth, patients=patients, seed=seed, sites=list(SITES), overwrite=True)
    block = {site: _read_site(synth / site) for site in SITES}
    obs_sizes = {site: len(block[site].get("Observation", [])) for site in SITES}
    per_block = sum(obs_sizes.values())
    full, rest = divmod(observations, per_block)
    replicas = full + (1 if rest else 0)
    written: dict[str, dict[str, int]] = {s: {} for s in SITES}

    for site in SITES:
        folder = work / "data" / site
        folder.mkdir(parents=True, exist_ok=True)
        others = {kind: (folder / f"{kind}.ndjson").open("wb")
                  for kind in block[site] if kind != "Observation"}
        obs_file, obs_in_file, chunk = None, 0, 0
        try:
            for k in range(replicas):
                head = b"%08x" % k

                def renamed(lines: list[bytes], head: bytes = head, k: int = k) -> list[bytes]:
                    return lines if k == 0 else [UUID_HEAD.sub(head, line) for line in lines]

                for kind, handle in others.items():
                    lines = renamed(block[site][kind])
                    handle.writelines(lines)
                    written[site][kind] = written[site].get(kind, 0) + len(lines)
                obs = block[site].get("Observation", [])
                if k == full:  # the last, partial replica
                    obs = obs[:_partial_counts(obs_sizes, rest)[site]]
                lines = renamed(obs)
                written[site]["Observation"] = written[site].get("Observation", 0) + len(lines)
                start = 0
                while start < len(lines):
                    if obs_file is None or obs_in_file >= OBS_PER_FILE:
                        if obs_file is not None:
                            obs_file.close()
                        obs_file = (folder / f"Observation.{chunk:03d}.ndjson").open("wb")
                        chunk, obs_in_file = chunk + 1, 0
                    take = lines[start:start + OBS_PER_FILE - obs_in_file]
                    obs_file.writelines(take)
                    obs_in_file += len(take)
                    start += len(take)
        finally:
            for handle in others.values():
                handle.close()
            if obs_file is not None:
                obs_file.close()

    # The fhiry slice: the first FHIRY_SLICE Observation lines, in proportion over the
    # sites (one block holds enough), split into one file per CPU for its process pool.
    take = _partial_counts(obs_sizes, min(FHIRY_SLICE, per_block, observations))
    sliced = [line for site in SITES for line in block[site].get("Observation", [])[:take[site]]]
    if fhiry_slice:
        slice_dir = work / "fhiry_slice"
        slice_dir.mkdir(parents=True, exist_ok=True)
        parts = max(1, os.cpu_count() or 1)
        for i in range(parts):
            (slice_dir / f"part-{i}.ndjson").write_bytes(b"".join(sliced[i::parts]))
    shutil.rmtree(synth)
    return {"replicas": replicas, "patients_per_block": patients, "written": written,
            "slice": len(sliced),
            "bytes": sum(p.stat().st_size for p in (work / "data").rglob("*.ndjson"))}


def write_config(work: Path, memory_limit: str) -> Path:
    """A config for the three replicated sites, random pseudonym keys in files."""
    keys = work / "secrets"
    keys.mkdir(parents=True, exist_ok=True)
    sites = []
    for site in SITES:
        key = keys / f"{site}.key"
        key.write_text(secrets.token_hex(32) + "\n")
        key.chmod(0o600)
        entry = {"id": site, "source": {"kind": "ndjson", "path": f"data/{site}"},
                 "pseudonym_key": {"file": f"secrets/{site}.key"}}
        maps = [str(p) for p in SITE_MAPS.get(site, []) if p.exists()]
        if maps:
            entry["concept_maps"] = maps
        sites.append(entry)
    data = {
        "study": {"name": "bench-transform"},
        "sites": sites,
        "output": {"duckdb": "cartfhir.duckdb", "dir": "out", "memory_limit": memory_limit},
        "landing": {"validation": "structural"},
    }
    path = work / "config.json"
    path.write_text(json.dumps(data, indent=2))
    return path


def _config(path: Path):
    from cartfhir.config import parse_config

    return parse_config(json.loads(path.read_text()), base_dir=path.parent, source_file=path)


# ----------------------------------------------------------------------- children


def _rusage() -> dict:
    # ru_maxrss is in KiB on Linux; CHILDREN: the largest reaped descendant.
    return {"self_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "children_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}


def child_land(work: Path, config_name: str = "config.json") -> dict:
    """Land with ``work/<config_name>`` (other benches land with derived configs)."""
    from cartfhir.api import extract

    config = _config(work / config_name)
    started = time.perf_counter()
    result = extract(config, command="bench")
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "totals": result.totals(), "status": str(result.status),
            **_rusage()}


def child_transform(work: Path, config_name: str = "config.json") -> dict:
    """Transform with ``work/<config_name>``; seconds, per-table figures, what was landed."""
    from cartfhir.api import transform

    config = _config(work / config_name)
    started = time.perf_counter()
    try:
        result = transform(config, command="bench")
    except Exception as exc:  # noqa: BLE001 - the row reports why
        return {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0]}",
                "seconds": time.perf_counter() - started, **_rusage()}
    seconds = time.perf_counter() - started
    import duckdb

    con = duckdb.connect(str(config.output.duckdb), read_only=True)
    try:
        observations = con.execute("SELECT count(*) FROM raw.resources "
                                   "WHERE resource_type = 'Observation'").fetchone()[0]
        landed = dict(con.execute("SELECT resource_type, count(*) FROM raw.resources "
                                  "GROUP BY ALL").fetchall())
    finally:
        con.close()
    return {"seconds": seconds, "tables": {k: list(v) for k, v in result.tables.items()},
            "episodes": [list(e) for e in result.episodes], "quarantined": result.quarantined,
            "unmapped_codes": result.unmapped_codes, "observations": observations,
            "landed": landed, **_rusage()}


# Types given explicitly: no sampling, and other keys are skipped, as a hand-tuned job would.
FLOOR_COLUMNS = {
    "id": "VARCHAR",
    "status": "VARCHAR",
    "subject": "STRUCT(reference VARCHAR)",
    "code": "STRUCT(text VARCHAR, coding STRUCT(system VARCHAR, code VARCHAR, "
            "display VARCHAR)[])",
    "effectiveDateTime": "VARCHAR",
    "valueQuantity": "STRUCT(value DOUBLE, unit VARCHAR, system VARCHAR, code VARCHAR, "
                     "comparator VARCHAR)",
    "valueString": "VARCHAR",
    "referenceRange": "STRUCT(low STRUCT(value DOUBLE), high STRUCT(value DOUBLE))[]",
}


def floor_sql(data: Path) -> str:
    columns = ", ".join(f"{name}: '{kind}'" for name, kind in FLOOR_COLUMNS.items())
    files = str(data / "*" / "Observation.*.ndjson").replace("'", "''")
    return f"""
        CREATE TABLE observation AS
        SELECT regexp_extract(filename, '([^/]+)/[^/]+$', 1)     AS site,
               id                                                AS observation_id,
               regexp_extract(subject.reference, 'Patient/([^/]+)$', 1) AS patient_id,
               status,
               code.text                                         AS code_text,
               code.coding[1].system                             AS code_system,
               code.coding[1].code                               AS code,
               code.coding[1].display                            AS code_display,
               effectiveDateTime                                 AS effective_datetime,
               valueQuantity.value                               AS value_number,
               valueQuantity.unit                                AS value_unit,
               valueQuantity.system                              AS value_unit_system,
               valueQuantity.code                                AS value_unit_code,
               valueQuantity.comparator                          AS value_comparator,
               valueString                                       AS value_string,
               referenceRange[1].low.value                       AS reference_low,
               referenceRange[1].high.value                      AS reference_high
        FROM read_json('{files}', format = 'newline_delimited', filename = true,
                       columns = {{{columns}}})
    """


def child_floor(work: Path, memory_limit: str, sql: str | None = None) -> dict:
    """Time ``sql`` (default: ``floor_sql``), which must create the table ``observation``,
    in a fresh DuckDB file; other benches pass their own floor query."""
    import duckdb

    db = work / "floor.duckdb"
    db.unlink(missing_ok=True)
    started = time.perf_counter()
    con = duckdb.connect(str(db), config={"memory_limit": memory_limit})
    con.execute(sql if sql is not None else floor_sql(work / "data"))
    rows = con.execute("SELECT count(*) FROM observation").fetchone()[0]
    con.close()
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "rows": rows, **_rusage()}


def child_fhiry(work: Path) -> dict:
    os.environ.setdefault("TQDM_DISABLE", "1")  # progress bars only; no effect on the work
    try:
        import fhiry
        from fhiry.parallel import ndjson
    except Exception as exc:  # noqa: BLE001 - the row reports why
        return {"error": f"cannot import fhiry: {type(exc).__name__}: {exc}"}
    started = time.perf_counter()
    try:
        df = ndjson(str(work / "fhiry_slice"))
    except Exception as exc:  # noqa: BLE001
        return {"error": f"fhiry failed: {type(exc).__name__}: {exc}"[:300]}
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "rows": len(df), "columns": len(df.columns),
            "version": getattr(fhiry, "__version__", "?"), **_rusage()}


def _children(process, psutil) -> list:
    try:
        return process.children(recursive=True)
    except psutil.Error:
        return []


def _last_error(stderr: str) -> str:
    """The exception line of a traceback (not DuckDB's advice that follows it)."""
    errors = [line for line in stderr.splitlines()
              if re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Exit)\b.*", line)]
    lines = errors or stderr.strip().splitlines() or ["no output"]
    return lines[-1][:300]


def run_child(role: str, work: Path, memory_limit: str, script: Path | None = None) -> dict:
    """Run one role in a fresh interpreter; its JSON figures plus the sampled peak RSS.

    The child is ``python <script> --child <role> --work <work> --memory-limit <limit>``
    (default script: this file), so other benches reuse the runner for their own roles.
    """
    try:
        import psutil
    except ImportError:  # then the child's own ru_maxrss is all there is
        psutil = None

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    command = [sys.executable, str(script or __file__), "--child", role, "--work", str(work),
               "--memory-limit", memory_limit]
    out_path, err_path = work / f"{role}.out", work / f"{role}.err"
    peak = 0
    with out_path.open("w") as out, err_path.open("w") as err:
        proc = subprocess.Popen(command, stdout=out, stderr=err, env=env)
        watched = psutil.Process(proc.pid) if psutil else None
        while proc.poll() is None:
            if watched is not None:
                total = 0
                for p in [watched, *_children(watched, psutil)]:
                    with contextlib.suppress(psutil.Error):  # it may have just exited
                        total += p.memory_info().rss
                peak = max(peak, total)
            time.sleep(0.02)
    stderr = err_path.read_text(errors="replace")
    lines = out_path.read_text().strip().splitlines()
    if proc.returncode != 0 or not lines:
        return {"error": f"child exited {proc.returncode}: {_last_error(stderr)}",
                "stderr": stderr}
    figures = json.loads(lines[-1])
    figures["peak_rss_mb"] = max(peak / 2**20, figures.get("self_rss_mb", 0.0))
    return figures


# ----------------------------------------------------------------------- report


def _fmt_row(name: str, n: object, seconds: object, rate: object, rss: object,
             ratio: object) -> str:
    return f"{name:<28} {n:>10} {seconds:>9} {rate:>12} {rss:>12} {ratio:>9}"


def code_version() -> str:
    """The commit the cartfhir under test is at (read-only git calls), or 'unknown'."""
    try:
        commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "--no-optional-locks", "-C", str(REPO), "status",
                                "--porcelain", "--untracked-files=no", "--", "cartfhir"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + (" + uncommitted changes in cartfhir/" if dirty else "")


def report(args, info: dict, land: dict, tr: dict, floor: dict, fh: dict) -> None:
    n = args.observations
    mb = info["bytes"] / 2**20
    print()
    print(f"cartfhir at {code_version()}; {os.cpu_count()} CPUs; "
          f"DuckDB memory_limit {args.memory_limit} (transform and floor)")
    print(f"input: {n:,} Observation lines ({mb:,.0f} MB NDJSON, 3 sites, "
          f"{info['replicas']} replicas of a {info['patients_per_block']}-patient synth cohort)")
    if "error" in land:
        print(f"landing: FAILED ({land['error']})")
    else:
        t = land["totals"]
        print(f"landing (not measured): {t['received']:,} lines, {t['inserted']:,} inserted, "
              f"{t['rejected']:,} rejected in {land['seconds']:.1f} s "
              f"({t['received'] / land['seconds']:,.0f} lines/s), peak RSS "
              f"{land['peak_rss_mb']:,.0f} MB")
    if "error" not in tr:
        landed = ", ".join(f"{v:,} {k}" for k, v in sorted(tr["landed"].items()))
        episodes = sum(e[2] for e in tr["episodes"])
        print(f"raw.resources: {landed}; cohort.episode: {episodes:,} infusions")
    print()
    print(_fmt_row("run", "resources", "seconds", "resources/s", "peak RSS MB", "x floor"))
    floor_s = floor.get("seconds") if "error" not in floor else None
    for name, fig in (("transform (cartfhir)", tr), ("floor: read_ndjson flatten", floor)):
        if "error" in fig:
            after = (f" after {fig['seconds']:.1f} s, peak RSS {fig['peak_rss_mb']:,.0f} MB"
                     if "seconds" in fig and "peak_rss_mb" in fig else "")
            print(f"{name:<28} FAILED{after}: {fig['error']}")
            continue
        ratio = f"{fig['seconds'] / floor_s:.1f}" if floor_s else "-"
        print(_fmt_row(name, f"{n:,}", f"{fig['seconds']:.1f}",
                       f"{n / fig['seconds']:,.0f}", f"{fig['peak_rss_mb']:,.0f}", ratio))
    name = "fhiry (20k slice, scaled)"
    if "error" in fh:
        print(f"{name:<28} no figure: {fh['error']}")
    else:
        rate = fh["rows"] / fh["seconds"]
        scaled = n / rate
        ratio = f"{scaled / floor_s:.0f}" if floor_s else "-"
        print(_fmt_row(name, f"{n:,}*", f"{scaled:,.0f}*", f"{rate:,.0f}",
                       f"{fh['peak_rss_mb']:,.0f}**", ratio))
        print(f"  * fhiry {fh['version']} measured on {fh['rows']:,} Observations in "
              f"{fh['seconds']:.1f} s ({fh['columns']} columns, {os.cpu_count()} processes); "
              f"seconds scaled linearly to {n:,}")
        print(f"  ** peak RSS of the {fh['rows']:,}-resource run (all its processes), not scaled")
    print()
    if "error" in tr:
        print(f"goal: transform within {GOAL_RATIO:.0f}x the floor: MISSED (transform failed)")
        print(f"goal: transform peak RSS under {GOAL_RSS_MB / 1024:.0f} GB: MISSED "
              "(transform failed)")
        return
    if floor_s:
        ratio = tr["seconds"] / floor_s
        print(f"goal: transform within {GOAL_RATIO:.0f}x the floor: {ratio:.1f}x  "
              f"{'MET' if ratio <= GOAL_RATIO else 'MISSED'}")
    rss = tr["peak_rss_mb"]
    print(f"goal: transform peak RSS under {GOAL_RSS_MB / 1024:.0f} GB: {rss:,.0f} MB  "
          f"{'MET' if rss < GOAL_RSS_MB else 'MISSED'}")
    print()
    print(f"{'transform step':<38} {'rows':>10} {'seconds':>9} {'% of total':>10}")
    total = tr["seconds"]
    for table, (rows, seconds) in tr["tables"].items():
        print(f"{table:<38} {rows:>10,} {seconds:>9.2f} {100 * seconds / total:>9.0f}%")
    other = total - sum(s for _, s in tr["tables"].values())
    print(f"{'(rest: ref.*, patient keys, runs)':<38} {'':>10} {other:>9.2f} "
          f"{100 * other / total:>9.0f}%")
    print(f"{'total':<38} {'':>10} {total:>9.2f} {100:>9.0f}%")


def release_workdir(work: Path, keep: bool) -> None:
    """Keep the bench's folder (and say where) or remove it."""
    if keep:
        print(f"\nkept {work}", file=sys.stderr)
    else:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--observations", type=int, default=1_000_000,
                        help="Observation lines to generate (default 1,000,000)")
    parser.add_argument("--patients", type=int, default=60,
                        help="patients of the synth cohort that is replicated (default 60)")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--memory-limit", default="512MB",
                        help="DuckDB memory limit for transform and floor (output.memory_limit)")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where to put data and databases (default: a new temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the generated files")
    parser.add_argument("--skip-fhiry", action="store_true", help="leave the fhiry row out")
    parser.add_argument("--child", choices=["land", "transform", "floor", "fhiry"],
                        help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        sys.path.insert(0, str(REPO))
        role = args.child
        if role == "land":
            figures = child_land(args.work)
        elif role == "transform":
            figures = child_transform(args.work)
        elif role == "floor":
            figures = child_floor(args.work, args.memory_limit)
        else:
            figures = child_fhiry(args.work)
        print(json.dumps(figures))
        return

    if args.observations < 1:
        parser.error("--observations must be at least 1")
    if args.workdir:
        work = args.workdir.resolve()
        if work.exists() and any(work.iterdir()):
            parser.error(f"--workdir {work} is not empty")
        work.mkdir(parents=True, exist_ok=True)
    else:
        work = Path(tempfile.mkdtemp(prefix="cartfhir-bench-transform-"))
    sys.path.insert(0, str(REPO))
    try:
        started = time.perf_counter()
        info = make_data(work, args.observations, args.patients, args.seed)
        print(f"generated {args.observations:,} Observations ({info['replicas']} replicas) in "
              f"{work} ({time.perf_counter() - started:.1f} s)", file=sys.stderr)
        write_config(work, args.memory_limit)
        steps = [("land", "landing"), ("transform", "transform"), ("floor", "floor")]
        if not args.skip_fhiry:
            steps.append(("fhiry", "fhiry slice"))
        figures: dict[str, dict] = {}
        for role, label in steps:
            print(f"{label} ...", file=sys.stderr, flush=True)
            figures[role] = run_child(role, work, args.memory_limit)
            if "error" in figures[role]:
                print(f"{label}: {figures[role]['error']}", file=sys.stderr)
            if role == "land" and "error" in figures[role]:
                sys.exit(f"landing failed, nothing to transform:\n"
                         f"{figures[role].get('stderr', '')}")
        fh = figures.get("fhiry", {"error": "skipped (--skip-fhiry)"})
        report(args, info, figures["land"], figures["transform"], figures["floor"], fh)
    finally:
        release_workdir(work, args.keep)


if __name__ == "__main__":
    main()

"""Benchmark: FHIR NDJSON to cohort tables end to end, next to what DuckDB alone costs.

The issue's goals are about the whole path a user pays for (land, then transform),
measured against a floor: the least any tool must spend reading the same input. One run
generates bench/transform.py's data (a three-site synthetic cohort replicated until the
NDJSON holds N Observation lines, patients, infusions and conditions growing with it) and
times, each in a fresh child process with its peak RSS (bench/transform.py's runner):

- ``floor``: DuckDB ``read_ndjson`` of 7 typed Observation columns (id, subject
  reference, status, first coding code, effectiveDateTime, valueQuantity value and unit)
  into a table, with the columns given, so nothing is sampled or skipped by inference;
- ``store lines as text``: DuckDB storing every NDJSON line's text in a table and
  nothing else, the least a landing that keeps each resource as sent can cost; with the
  view below it bounds from below what land+transform can reach on this machine;
- ``extract structural`` and ``extract full``: ``cartfhir.api.extract`` with
  ``landing.validation`` structural and full, each into a fresh DuckDB file;
- ``transform``: ``cartfhir.api.transform`` on the structural store;
- ``view``: ``cartfhir.api.view`` of a 7-column Observation ViewDefinition (the floor's
  columns) over the landed raw.resources into a table, i.e. what a user's own
  ViewDefinition costs next to the hand-written floor query;
- land+transform totals, structural and full (the same transform cost for both: the
  landed rows are the same).

Seconds are the wall time of the measured call inside the child (interpreter start and
imports excluded); peak RSS is the child's and its descendants'. cartfhir and the floor
use the same DuckDB memory_limit (cartfhir's default unless --memory-limit). Goals (from
the issue): land+transform structural within 5x the floor, full within 15x, every step's
peak RSS within 1024 MB. The bench reports PASS/FAIL and exits 0 either way.

``--scaling 250000,1000000,4000000`` instead runs the floor, extract structural and
transform at each size and prints seconds per million Observations and each size's cost
per row relative to the smallest size (1.00 everywhere is linear).

    python bench/end_to_end.py --observations 1000000
    python bench/end_to_end.py --scaling 250000,1000000,4000000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))

import transform as base  # noqa: E402  (bench/transform.py: data, configs, child runner)

GOAL_STRUCTURAL = 5.0  # land+transform structural, x the floor
GOAL_FULL = 15.0  # land+transform full, x the floor
GOAL_RSS_MB = 1024.0  # peak RSS of every step
VIEW_TABLE = "bench.observation7"
# The floor's columns with their types given: read_ndjson neither samples nor infers.
FLOOR_COLUMNS = {
    "id": "VARCHAR",
    "subject": "STRUCT(reference VARCHAR)",
    "status": "VARCHAR",
    "code": "STRUCT(coding STRUCT(code VARCHAR)[])",
    "effectiveDateTime": "VARCHAR",
    "valueQuantity": "STRUCT(value DOUBLE, unit VARCHAR)",
}
# The same 7 columns as a ViewDefinition (SQL on FHIR), as a user would write it.
VIEW = {
    "resourceType": "ViewDefinition",
    "name": "observation7",
    "status": "active",
    "resource": "Observation",
    "select": [{"column": [
        {"name": "id", "path": "id", "type": "id"},
        {"name": "subject_reference", "path": "subject.reference", "type": "string"},
        {"name": "status", "path": "status", "type": "code"},
        {"name": "code", "path": "code.coding.first().code", "type": "code"},
        {"name": "effective_datetime", "path": "effective.ofType(dateTime)",
         "type": "dateTime"},
        {"name": "value", "path": "value.ofType(Quantity).value", "type": "decimal"},
        {"name": "unit", "path": "value.ofType(Quantity).unit", "type": "string"},
    ]}],
}
FULL_ROLES = ("floor", "store-text", "extract-structural", "extract-full", "transform", "view")
# DuckDB alone, for comparison: no goal applies to these rows.
REFERENCE_ROWS = ("floor: read_ndjson 7 columns", "store lines as text (DuckDB)")
SCALING_ROLES = ("floor", "extract-structural", "transform")


# ------------------------------------------------------------------ setup and children


def floor_sql(data: Path) -> str:
    """The floor: the 7 Observation columns into the table ``observation``."""
    columns = ", ".join(f"{name}: '{kind}'" for name, kind in FLOOR_COLUMNS.items())
    files = str(data / "*" / "Observation.*.ndjson").replace("'", "''")
    return f"""
        CREATE TABLE observation AS
        SELECT id,
               subject.reference       AS subject_reference,
               status,
               code.coding[1].code     AS code,
               effectiveDateTime       AS effective_datetime,
               valueQuantity.value     AS value,
               valueQuantity.unit      AS unit
        FROM read_ndjson('{files}', columns = {{{columns}}})
    """


def store_text_sql(data: Path) -> str:
    """Every NDJSON line's text into the table ``observation``, nothing else: no checks,
    no keys, no versions. The least any landing that keeps each resource as sent costs
    on this machine (DuckDB compressing and writing the text), next to the floor, which
    keeps 7 columns only. A JSON line holds no raw control character, so \\x01 as the
    column separator never splits one."""
    files = str(data / "*" / "*.ndjson").replace("'", "''")
    return f"""
        CREATE TABLE observation AS
        SELECT line
        FROM read_csv('{files}', columns = {{'line': 'VARCHAR'}}, delim = chr(1), quote = '',
                      escape = '', header = false, auto_detect = false)
    """


def write_configs(work: Path, memory_limit: str) -> None:
    """structural.json and full.json: bench/transform.py's config, one DuckDB file each, so
    each extraction lands into a fresh database; and the ViewDefinition, view.json."""
    base.write_config(work, memory_limit)
    data = json.loads((work / "config.json").read_text())
    for validation in ("structural", "full"):
        config = {**data, "landing": {**data.get("landing", {}), "validation": validation},
                  "output": {**data["output"], "duckdb": f"{validation}.duckdb",
                             "dir": f"{validation}-out"}}
        (work / f"{validation}.json").write_text(json.dumps(config, indent=2))
    (work / "view.json").write_text(json.dumps(VIEW, indent=2))


def child_view(work: Path) -> dict:
    """Run the ViewDefinition over the structural store's raw.resources into a table."""
    from cartfhir.api import view

    config = base._config(work / "structural.json")
    started = time.perf_counter()
    result = view(config, work / "view.json", table=VIEW_TABLE)
    return {"seconds": time.perf_counter() - started, "rows": result.rows, **base._rusage()}


def child(role: str, work: Path, memory_limit: str) -> dict:
    """One measured step, in this (fresh) interpreter."""
    if role == "floor":
        return base.child_floor(work, memory_limit, sql=floor_sql(work / "data"))
    if role == "store-text":
        return base.child_floor(work, memory_limit, sql=store_text_sql(work / "data"))
    if role.startswith("extract-"):
        return base.child_land(work, f"{role.removeprefix('extract-')}.json")
    if role == "transform":
        return base.child_transform(work, "structural.json")
    if role == "view":
        return child_view(work)
    raise ValueError(f"unknown role {role!r}")


def measure(work: Path, observations: int, roles: tuple[str, ...],
            args: argparse.Namespace) -> dict[str, dict]:
    """Generate ``observations`` into ``work``, then run ``roles`` in order, each in a child;
    a step that needs a failed extraction is not run."""
    started = time.perf_counter()
    info = base.make_data(work, observations, args.patients, args.seed, fhiry_slice=False)
    print(f"generated {observations:,} Observations ({info['bytes'] / 2**20:,.0f} MB) in "
          f"{work} ({time.perf_counter() - started:.1f} s)", file=sys.stderr)
    write_configs(work, args.memory_limit)
    figures: dict[str, dict] = {"data": info}
    for role in roles:
        if role in ("transform", "view") and "error" in figures.get("extract-structural", {}):
            figures[role] = {"error": "not run: extract structural failed"}
            continue
        print(f"{role} ...", file=sys.stderr, flush=True)
        figures[role] = base.run_child(role, work, args.memory_limit, script=Path(__file__))
        if "error" in figures[role]:
            print(f"{role}: {figures[role]['error']}", file=sys.stderr)
    return figures


# ----------------------------------------------------------------------------- report


@dataclass(frozen=True)
class Row:
    """One line of the table: a step or a total, with the goal it is held to (if any)."""

    name: str
    resources: int | None
    seconds: float | None
    rss_mb: float | None
    goal_ratio: float | None = None
    error: str | None = None


def resources_of(role: str, fig: dict) -> int | None:
    """What a step processed: Observation rows for the floor and the view, NDJSON lines
    read for an extraction, raw.resources rows for the transform."""
    if "error" in fig:
        return None
    if role.startswith("extract-"):
        return fig["totals"]["received"]
    if role == "transform":
        return sum(fig["landed"].values())
    return fig["rows"]


def step_row(name: str, role: str, fig: dict) -> Row:
    return Row(name, resources_of(role, fig), fig.get("seconds"), fig.get("peak_rss_mb"),
               error=fig.get("error"))


def total_row(name: str, land: dict, transform: dict, goal: float) -> Row:
    """Land then transform: seconds add up, the peak is the larger of the two."""
    failed = land.get("error") or transform.get("error")
    if failed:
        return Row(name, None, None, None, goal, error=failed)
    return Row(name, resources_of("extract-", land), land["seconds"] + transform["seconds"],
               max(land["peak_rss_mb"], transform["peak_rss_mb"]), goal)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def format_row(row: Row, floor_s: float | None) -> str:
    """The row's figures; its goals: the ratio one (totals only) and peak RSS."""
    if row.error or row.seconds is None:
        return f"{row.name:<30} FAILED: {row.error}"
    ratio = row.seconds / floor_s if floor_s else None
    goals = []
    if row.goal_ratio is not None:
        met = ratio is not None and ratio <= row.goal_ratio
        goals.append(f"<={row.goal_ratio:.0f}x {verdict(met)}")
    if row.rss_mb is not None and row.name not in REFERENCE_ROWS:
        goals.append(f"RSS {verdict(row.rss_mb <= GOAL_RSS_MB)}")
    rate = f"{row.resources / row.seconds:,.0f}" if row.resources and row.seconds else "-"
    return (f"{row.name:<30} {row.resources or 0:>11,} {row.seconds:>9.1f} {rate:>12} "
            f"{row.rss_mb or 0:>12,.0f} {(f'{ratio:.1f}' if ratio else '-'):>8}  "
            f"{', '.join(goals)}")


def report(args: argparse.Namespace, figures: dict[str, dict]) -> None:
    """The table of steps and totals, then one PASS/FAIL line per goal."""
    info = figures["data"]
    floor = figures["floor"]
    floor_s = floor.get("seconds") if "error" not in floor else None
    full = figures.get("extract-full", {"error": "skipped (--skip-full)"})
    store = figures.get("store-text", {"error": "not run"})
    rows = [step_row(REFERENCE_ROWS[0], "floor", floor),
            step_row(REFERENCE_ROWS[1], "store-text", store),
            step_row("extract structural", "extract-", figures["extract-structural"]),
            step_row("extract full", "extract-", full),
            step_row("transform (structural store)", "transform", figures["transform"]),
            step_row("view: 7-column Observation", "view", figures["view"]),
            total_row("land+transform structural", figures["extract-structural"],
                      figures["transform"], GOAL_STRUCTURAL),
            total_row("land+transform full", full, figures["transform"], GOAL_FULL)]
    print()
    print(f"cartfhir at {base.code_version()}; {os.cpu_count()} CPUs; DuckDB memory_limit "
          f"{args.memory_limit} (cartfhir and floor)")
    print(f"input: {args.observations:,} Observation lines, "
          f"{sum(sum(w.values()) for w in info['written'].values()):,} resources "
          f"({info['bytes'] / 2**20:,.0f} MB NDJSON, 3 sites, {info['replicas']} replicas of "
          f"a {info['patients_per_block']}-patient synth cohort)")
    for role in ("extract-structural", "extract-full"):
        if "error" not in figures.get(role, {"error": "skipped"}):
            counts = ", ".join(f"{v:,} {k}" for k, v in figures[role]["totals"].items() if v)
            print(f"{role.replace('-', ' ')}: {counts}")
    print()
    print(f"{'step':<30} {'resources':>11} {'seconds':>9} {'resources/s':>12} "
          f"{'peak RSS MB':>12} {'x floor':>8}  goals")
    for row in rows:
        print(format_row(row, floor_s))
    print()
    for row in rows[-2:]:
        if row.error or row.seconds is None or not floor_s:
            print(f"goal: {row.name} <= {row.goal_ratio:.0f}x floor: FAIL "
                  f"(no figure: {row.error or 'floor failed'})")
            continue
        ratio = row.seconds / floor_s
        print(f"goal: {row.name} <= {row.goal_ratio:.0f}x floor: {ratio:.1f}x  "
              f"{verdict(ratio <= row.goal_ratio)}")
    if floor_s and "error" not in store and "error" not in figures["view"]:
        least = store["seconds"] + figures["view"]["seconds"]
        print(f"least land+transform that keeps the text: store lines + 7-column view = "
              f"{least:.1f} s = {least / floor_s:.1f}x the floor (before any check, "
              f"version rule or harmonized table)")
    measured = [r for r in rows[2:6] if r.rss_mb is not None and not r.error]
    if measured:
        worst = max(measured, key=lambda r: r.rss_mb or 0.0)
        print(f"goal: peak RSS <= {GOAL_RSS_MB:,.0f} MB: {worst.rss_mb:,.0f} MB "
              f"({worst.name})  {verdict((worst.rss_mb or 0.0) <= GOAL_RSS_MB)}")


def report_scaling(args: argparse.Namespace, runs: dict[int, dict[str, dict]]) -> None:
    """Seconds per million Observations by size; cost per row relative to the smallest."""
    sizes = sorted(runs)
    print()
    print(f"cartfhir at {base.code_version()}; {os.cpu_count()} CPUs; DuckDB memory_limit "
          f"{args.memory_limit}")
    print(f"{'step':<20} {'observations':>12} {'seconds':>9} {'s per 1M':>9} "
          f"{'cost/row vs ' + format(sizes[0], ','):>22} {'peak RSS MB':>12}")
    for role in SCALING_ROLES:
        base_rate = None
        for n in sizes:
            fig = runs[n][role]
            if "error" in fig:
                print(f"{role:<20} {n:>12,} FAILED: {fig['error']}")
                continue
            per_million = fig["seconds"] / n * 1e6
            base_rate = base_rate or per_million
            print(f"{role:<20} {n:>12,} {fig['seconds']:>9.1f} {per_million:>9.1f} "
                  f"{per_million / base_rate:>22.2f} {fig['peak_rss_mb']:>12,.0f}")


# ------------------------------------------------------------------------------- main


def workdir(args: argparse.Namespace, parser: argparse.ArgumentParser) -> Path:
    """--workdir (new or empty), or a new temporary folder."""
    if args.workdir is None:
        return Path(tempfile.mkdtemp(prefix="cartfhir-bench-e2e-"))
    work = args.workdir.resolve()
    if work.exists() and any(work.iterdir()):
        parser.error(f"--workdir {work} is not empty")
    work.mkdir(parents=True, exist_ok=True)
    return work


def parse_sizes(text: str) -> list[int]:
    sizes = sorted({int(part.replace("_", "")) for part in text.split(",") if part.strip()})
    if not sizes or sizes[0] < 1:
        raise argparse.ArgumentTypeError("--scaling takes sizes like 250000,1000000")
    return sizes


def main() -> None:
    from cartfhir.config import Output

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--observations", type=int, default=1_000_000,
                        help="Observation lines to generate (default 1,000,000)")
    parser.add_argument("--scaling", type=parse_sizes, default=None, metavar="N,N,...",
                        help="run floor, extract structural and transform at each size")
    parser.add_argument("--skip-full", action="store_true",
                        help="leave out the extraction with full validation")
    parser.add_argument("--patients", type=int, default=60,
                        help="patients of the synth cohort that is replicated (default 60)")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--memory-limit", default=Output.model_fields["memory_limit"].default,
                        help="DuckDB memory limit for cartfhir and the floor "
                             "(default: cartfhir's output.memory_limit default)")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where to put data and databases (default: a new temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the generated files")
    parser.add_argument("--child", choices=FULL_ROLES, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        print(json.dumps(child(args.child, args.work, args.memory_limit)))
        return
    if args.observations < 1:
        parser.error("--observations must be at least 1")
    work = workdir(args, parser)
    try:
        if args.scaling:
            runs = {}
            for n in args.scaling:
                folder = work / f"n{n}"
                folder.mkdir()
                runs[n] = measure(folder, n, SCALING_ROLES, args)
                if not args.keep:  # the largest sizes need the disk the smaller ones held
                    shutil.rmtree(folder, ignore_errors=True)
            report_scaling(args, runs)
        else:
            roles = tuple(r for r in FULL_ROLES if not (args.skip_full and r == "extract-full"))
            report(args, measure(work, args.observations, roles, args))
    finally:
        base.release_workdir(work, args.keep)


if __name__ == "__main__":
    main()

"""The ``cartfhir`` command line: parse, load config, call ``cartfhir.api``, render.

Exit codes are ``errors.ExitCode``. Data goes to stdout; logs, progress and errors
to stderr. With ``--log-format json`` every stderr line is a JSON object
(docs/logging.md) and the summary tables appear only on a terminal or with --human.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
import sys
import traceback
from pathlib import Path
from typing import Annotated

import click
from pydantic import TypeAdapter, ValidationError

from cartfhir import __version__, api
from cartfhir.config import DEFAULT_CONFIG, POOLED_SITE, SOURCE_KINDS, Config, Output
from cartfhir.db import set_lock_wait
from cartfhir.errors import CartfhirError, ExitCode, exit_code_epilog, exit_code_for
from cartfhir.exports import QUERY_FORMATS
from cartfhir.logs import configure, log_event, use_command_line
from cartfhir.progress import Progress, make_progress
from cartfhir.redact import redact
from cartfhir.render import file_format, render_result, render_rows, terminal_width
from cartfhir.runs import is_interrupt
from cartfhir.synth import DEFAULT_SITES
from cartfhir.synth.profiles import available_profiles

_state: dict = {"verbose": False, "log_format": "text", "human": False, "wait": 0.0,
                "args": None}
MemoryLimit = TypeAdapter(Annotated[str, Output.model_fields["memory_limit"]])
# cartfhir.multisite.pool's MEMORY_LIMIT (a site's default), read here from the config so
# that building the command line does not import the pool and the analysis behind it.
POOL_MEMORY_LIMIT: str = Output.model_fields["memory_limit"].default

config_option = click.option(
    "--config", "-c", "config", type=click.Path(path_type=Path), default=DEFAULT_CONFIG,
    show_default=True, help="Config file (YAML).")
json_option = click.option(
    "--json", "as_json", is_flag=True,
    help="Print the result as one JSON document on stdout (no tables); for schedulers.")


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
             epilog=exit_code_epilog())
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help="Logs on stderr: text or json (one object per line).")
@click.option("--verbose", "-v", is_flag=True, help="Debug logs, and tracebacks on errors.")
@click.option("--human", is_flag=True,
              help="With --log-format json: still print the summary tables on stdout "
                   "(they are printed anyway when stdout is a terminal).")
@click.option("--wait", type=click.FloatRange(0, 86_400), default=0, show_default=True,
              metavar="SECONDS",
              help="Wait up to this long for another process's lock on the DuckDB file "
                   "(e.g. an open analyst session) instead of failing at once.")
@click.version_option(__version__, prog_name="cartfhir", message="%(prog)s %(version)s")
def cli(log_format: str, verbose: bool, human: bool, wait: float) -> None:
    """Pull a CAR-T cohort out of FHIR data into validated DuckDB tables and compare
    first and second infusions.

    Start with 'cartfhir demo', then 'cartfhir query'.
    """
    configure(log_format, verbose)  # type: ignore[arg-type]
    _state.update(verbose=verbose, log_format=log_format, human=human, wait=wait)
    set_lock_wait(wait)
    use_command_line(_command_line())  # the 'command' of pool's and export-site's events


def _human() -> bool:
    """Whether to print the human summaries (tables, "see why" hints) on stdout.

    Always in text log mode; in JSON mode (a scheduler reads the output) only when
    stdout is a terminal or --human asked for them, so a log file stays JSON.
    """
    return (_state["log_format"] == "text" or _state["human"]
            or sys.stdout.isatty())


def _progress() -> Progress:
    """Progress bars on a terminal's stderr, never in JSON mode (every line must parse)."""
    return make_progress(False) if _state["log_format"] == "json" else make_progress()


def _warn(text: str, event: str, level: int = logging.WARNING, **fields: object) -> None:
    """A warning for the user: the plain line on stderr in text mode, a log record
    (``event``, ``fields``) in JSON mode, so a log file stays one JSON object a line."""
    if _state["log_format"] == "json":
        log_event(event, msg=text, level=level, logger="cartfhir.cli", **fields)
    else:
        click.echo(redact(text), err=True)


def _say(text: str, event: str, **fields: object) -> None:
    """A line for the user about what was done: on stdout when ``_human()``, else (JSON
    mode into a file) an info record (``event``, ``fields``), so stdout keeps only data."""
    if _human():
        click.echo(redact(text))
    else:
        log_event(event, msg=text, logger="cartfhir.cli", **fields)


def _print_json(result: object) -> None:
    """``result.to_dict()`` as one JSON document on stdout (``--json``)."""
    click.echo(redact(json.dumps(result.to_dict(), ensure_ascii=False)))  # type: ignore[attr-defined]


def _command_line() -> str:
    """This command line as a shell would take it: run_cli's arguments, else sys.argv."""
    args = _state["args"] if _state["args"] is not None else sys.argv[1:]
    return "cartfhir " + shlex.join(args)


def _counts_table(counts: dict) -> tuple[list[str], list[list]]:
    columns = ["site", "resource_type", "received", "inserted", "replaced", "unchanged", "stale",
               "rejected"]
    rows = []
    for site, by_type in sorted(counts.items()):
        for rtype, c in sorted(by_type.items(), key=lambda kv: str(kv[0])):
            rows.append([site, rtype, *(c.get(k, 0) for k in columns[2:])])
    return columns, rows


def _report_extract(result: api.ExtractResult) -> None:
    totals = result.totals()
    if _human():
        columns, rows = _counts_table(result.counts)
        render_rows(columns, rows, title=f"Landed into {result.duckdb_path}")
        if any(s.get("requests") is not None for s in result.sites.values()):
            fields = ["kind", "status", "requests", "retries", "resources", "seconds"]
            render_rows(["site", *fields],
                        [[site, *(s.get(f) for f in fields)] for site, s in result.sites.items()],
                        title="Sites")
        click.echo(f"run {result.run_id}: {result.status}; {totals.get('received', 0)} lines "
                   f"read, {totals.get('inserted', 0)} new, {totals.get('replaced', 0)} replaced, "
                   f"{totals.get('rejected', 0)} rejected ({result.seconds:.1f} s)")
    for problem in result.problems:
        _warn(f"INCOMPLETE: {problem}", "extract.incomplete", run_id=result.run_id)
    if totals.get("rejected") and _human():
        click.echo("see why: cartfhir query \"select site, source_uri, line_no, reason from "
                   f"raw.rejected where run_id = '{result.run_id}'\"")


@cli.command()
@click.option("--out", "-o", type=click.Path(path_type=Path), default=Path("data"),
              show_default=True, help="Folder to write into.")
@click.option("--patients", type=click.IntRange(1, 1_000_000), default=40, show_default=True,
              help="Patients in total, split over the sites.")
@click.option("--seed", type=int, default=42, show_default=True,
              help="Random seed; same seed, same files.")
@click.option("--sites", default=",".join(DEFAULT_SITES), show_default=True,
              help=f"Comma-separated site profiles ({', '.join(available_profiles())}).")
@click.option("--bad-rate", type=click.FloatRange(0.0, 0.5), default=0.0, show_default=True,
              help="Share of extra bad lines to inject: broken JSON, non-resources, invalid "
                   "resources, unknown units.")
@click.option("--bundles", is_flag=True, help="Also write FHIR transaction Bundles.")
@click.option("--gzip", "compress", is_flag=True, help="Write .ndjson.gz files.")
@click.option("--force", is_flag=True, help="Replace existing site folders.")
def synth(out: Path, patients: int, seed: int, sites: str, bad_rate: float, bundles: bool,
          compress: bool, force: bool) -> None:
    """Generate a synthetic multi-site CAR-T cohort as bulk-style NDJSON plus its truth.

    \b
    Example: cartfhir synth --out data --patients 100 --sites site_a,site_b,site_c,site_d
    """
    result = api.generate(out, patients=patients, seed=seed,
                          sites=[s.strip() for s in sites.split(",") if s.strip()],
                          bad_rate=bad_rate, bundles=bundles, compress=compress,
                          overwrite=force, progress=_progress())
    if _human():
        rows = [[site, rtype, n] for site, by_type in result.resources.items()
                for rtype, n in by_type.items()]
        render_rows(["site", "resource_type", "resources"], rows,
                    title=f"Synthetic cohort in {out}")
    _say(f"{sum(result.patients.values())} patients, {result.episodes} infusion episodes, "
         f"{result.injected} injected bad lines; truth: {result.truth_file}", "synth.written",
         out=str(out), patients=sum(result.patients.values()), episodes=result.episodes,
         injected=result.injected, truth=str(result.truth_file))


@cli.command("extract")
@config_option
@click.option("--site", "sites", multiple=True, help="Only this site (repeatable).")
@click.option("--full", is_flag=True, help="Ignore watermarks: pull everything again.")
@click.option("--since", default=None, metavar="INSTANT",
              help="Pull what changed after this FHIR instant (e.g. 2024-01-01T00:00:00Z).")
@json_option
def extract_cmd(config: Path, sites: tuple[str, ...], full: bool, since: str | None,
                as_json: bool) -> int:
    """Land each site's source into raw.resources (bad lines into raw.rejected).

    FHIR servers are pulled incrementally from the last watermark; exit code 3
    means the run is partial (some data is missing; see the messages).

    \b
    Example: cartfhir extract --config config.yaml --site site_a
    """
    cfg = api.load_config(config)
    if since is not None:
        _check_instant(since)
    result = api.extract(cfg, site_ids=list(sites) or None, progress=_progress(),
                         command=_command_line(), full=full, since=since)
    if as_json:
        _print_json(result)
    else:
        _report_extract(result)
    return exit_code_for(result.status)


def _check_instant(text: str) -> None:
    from cartfhir.extract.checks import parse_instant  # the extract stage's

    if parse_instant(text) is None:
        raise click.BadParameter(f"{text!r} is not a FHIR instant like 2024-01-01T00:00:00Z",
                                 param_hint="--since")


def _report_transform(result: api.TransformResult) -> None:
    if not _human():
        return
    render_rows(["site", "round", "episodes"], [list(e) for e in result.episodes],
                title="Infusion episodes per site and round (cohort.episode)")
    click.echo(f"transform {result.run_id}: {len(result.tables)} tables in "
               f"{result.seconds:.1f} s; {result.quarantined} records quarantined "
               f"(qa.quarantine), {result.unmapped_codes} unmapped codes (qa.unmapped_codes)")


engine_option = click.option(
    "--engine", type=click.Choice(["duckdb", "spark"]), default=None,
    help="Run on this engine instead of the config's (engine.kind); spark writes Parquet.")


@cli.command("transform")
@config_option
@json_option
@engine_option
def transform_cmd(config: Path, as_json: bool, engine: str | None) -> None:
    """Rebuild flat, harmonized, cohort and qa tables from raw.resources.

    Code maps, units, windows and thresholds come from the package's defaults plus
    the config (sites[].concept_maps, transform.windows, transform.thresholds).

    \b
    Example: cartfhir transform --config config.yaml --engine spark
    """
    cfg = api.load_config(config)
    result = api.transform(cfg, progress=_progress(), command=_command_line(), engine=engine)
    if as_json:
        _print_json(result)
    else:
        _report_transform(result)


@cli.command("view")
@click.argument("view_file", type=click.Path(path_type=Path, dir_okay=False))
@config_option
@click.option("--db", type=click.Path(path_type=Path), default=None,
              help="DuckDB file holding raw.resources, instead of the config's output.")
@click.option("--out", "-o", type=click.Path(path_type=Path), default=None,
              help="Write the rows to this .parquet or .csv file.")
@click.option("--table", default=None, metavar="SCHEMA.TABLE",
              help="Write the rows to this DuckDB table (default: views.<view name>).")
@engine_option
def view_cmd(view_file: Path, config: Path, db: Path | None, out: Path | None,
             table: str | None, engine: str | None) -> None:
    """Run a SQL-on-FHIR v2 ViewDefinition over raw.resources.

    On Spark (--engine spark or the config's engine) --out names a folder that gets the
    rows as Parquet partitioned by site.

    \b
    Example: cartfhir view my_view.json --out out/my_view.parquet
    """
    if engine == "spark" and db is not None:
        raise click.BadParameter("--engine spark reads the config's engine and output; "
                                 "give --config, not --db", param_hint="--db")
    cfg = None if db is not None else api.load_config(config)
    result = api.view(cfg, view_file, db=db, out=out, table=table, engine=engine)
    _say(f"{result.rows} rows ({', '.join(result.columns)}) -> {result.target} "
         f"({result.seconds:.1f} s)", "view.written", rows=result.rows,
         target=str(result.target))


def _report_validation(report: api.ValidationReport, allow_invalid: bool = False) -> None:
    if _human():
        rows = []
        for suite in dict.fromkeys(o.suite for o in report.outcomes):
            mine = [o for o in report.outcomes if o.suite == suite]
            errors = [o for o in mine if not o.success and o.severity == "error"]
            warns = [o for o in mine if not o.success and o.severity == "warn"]
            rows.append([suite, len(mine), sum(o.success for o in mine), len(errors),
                         len(warns), "FAIL" if errors else "warn" if warns else "pass"])
        render_rows(["suite", "expectations", "passed", "failed (error)", "failed (warn)",
                     "result"], rows, title="Validation (qa.validation_result)")
    for o in report.failed_errors + report.failed_warnings:
        what = o.error or (f"{o.unexpected_count} unexpected" if o.unexpected_count is not None
                           else f"observed {o.observed_value}")
        examples = f"; e.g. {o.unexpected_examples[:3]}" if o.unexpected_examples else ""
        _warn(f"{o.severity.upper()}: {o.suite} {o.expectation}"
              f"{f' [{o.column}]' if o.column else ''}: {what}{examples}",
              "validation.failed_expectation",
              level=logging.ERROR if o.severity == "error" else logging.WARNING,
              run_id=report.run_id, suite=o.suite, expectation=o.expectation,
              column=o.column, severity=o.severity, unexpected_count=o.unexpected_count)
    if _human():
        if report.docs_index:
            click.echo(f"Data Docs: {report.docs_index}")
        summary = report.summary()
        click.echo(f"validation {report.run_id}: {summary['passed']}/{summary['expectations']} "
                   f"expectations passed, {summary['failed_error']} failed (error), "
                   f"{summary['failed_warn']} failed (warn)")
    if not report.valid:
        if allow_invalid:
            _warn("WARNING: the data FAILED error expectations and --allow-invalid was "
                  "given; anything computed from it carries that warning",
                  "validation.invalid_allowed", run_id=report.run_id)
        else:
            _warn("INVALID: the data failed error expectations (see above); analysis is "
                  "not run. Fix the data or the mappings, or pass --allow-invalid",
                  "validation.invalid", run_id=report.run_id)


@cli.command("validate")
@config_option
@click.option("--list", "list_suites", is_flag=True,
              help="List the suites and their expectations instead of running them.")
@json_option
def validate_cmd(config: Path, list_suites: bool, as_json: bool) -> int:
    """Check the landed, flat, harmonized and cohort tables with the expectation suites.

    Exit code 1 when an 'error' expectation fails (or could not be evaluated).

    \b
    Example: cartfhir validate --config config.yaml
    """
    cfg = api.load_config(config)
    if list_suites:
        from cartfhir.expectations.gx import expectation_column  # pandas: when listing only

        rows = [[s.name, i, e["type"], expectation_column(e["kwargs"]) or "",
                 e.get("meta", {}).get("severity", "error")]
                for s in api.load_suites(cfg) for i, e in enumerate(s.expectations)]
        render_rows(["suite", "index", "expectation", "column", "severity"], rows)
        return 0
    report = api.validate(cfg, progress=_progress(), command=_command_line())
    if as_json:
        _print_json(report)
    else:
        _report_validation(report)
    return 0 if report.valid else 1


def _report_analysis(result: api.AnalysisResult, warn: bool = True) -> None:
    from cartfhir.analyze.stats import format_p

    table = result.comparison
    if table is not None and _human():
        rows = []
        for endpoint in (e for e in result.endpoints if e.headline):  # endpoints.yaml
            match = table[(table["site"] == POOLED_SITE) & (table["endpoint"] == endpoint.key)]
            if match.empty:
                continue
            r = match.iloc[0]
            if r["kind"] == "proportion":
                a, b = f"{r['cart1_events']}/{r['cart1_n']}", f"{r['cart2_events']}/{r['cart2_n']}"
            else:
                a = "–" if r["cart1_median"] is None else f"{r['cart1_median']:.1f}"
                b = "–" if r["cart2_median"] is None else f"{r['cart2_median']:.1f}"
            p = None if r["p_value"] is None else float(r["p_value"])
            rows.append([endpoint.key, endpoint.label, a, b, format_p(p)])
        render_rows(["endpoint", "label", "CART1", "CART2", "p"], rows,
                    title="CART1 vs CART2 (all sites; analysis.comparison)")
    if result.warning and warn:
        _warn(f"WARNING: {result.warning}", "analysis.warning", run_id=result.run_id)
    if _human():
        click.echo(f"report: {result.report}")


@cli.command("analyze")
@config_option
@json_option
def analyze_cmd(config: Path, as_json: bool) -> None:
    """Compare CART1 with CART2: analysis.* tables, report.html and CSV/JSON exports.

    Runs on the cohort tables as they are; 'cartfhir run' validates them first.

    \b
    Example: cartfhir analyze --config config.yaml
    """
    cfg = api.load_config(config)
    result = api.analyze(cfg, progress=_progress(), command=_command_line())
    if as_json:
        _print_json(result)
    else:
        _report_analysis(result)


@cli.command("export-site")
@config_option
@click.option("--site", "site_id", required=True, help="The site to package.")
@click.option("--out", "-o", type=click.Path(path_type=Path), required=True,
              help="Package folder, or a .zip file.")
@click.option("--date-shift", type=click.IntRange(0, 3650), default=0, show_default=True,
              help="Shift each patient's dates by a secret offset of up to N days (0: off).")
@click.option("--force", is_flag=True,
              help="Export without a passing validation newer than the latest transform "
                   "(the manifest says so).")
def export_site_cmd(config: Path, site_id: str, out: Path, date_shift: int, force: bool) -> None:
    """Write a pseudonymized site package (Parquet per table + manifest.json) for pooling.

    \b
    Example: cartfhir export-site --config config.yaml --site site_a --out site_a.zip
    """
    cfg = api.load_config(config)
    result = api.export_site(cfg, site_id, out, force=force, date_shift_days=date_shift)
    if _human():
        render_rows(["table", "rows"], [[t, n] for t, n in result.rows.items()],
                    title=f"Site package {result.path}")
    if result.forced:
        _warn("WARNING: exported without a passing validation of these tables (--force); "
              "the manifest records why", "export_site.forced", site=result.site)
    if not result.signed:
        _warn("note: the package is not signed (no sites[].signing_key); the pool will "
              "refuse it unless signed with 'cartfhir sign'", "export_site.unsigned",
              level=logging.INFO, site=result.site)


@cli.command("pool")
@click.argument("packages", nargs=-1, required=True,
                type=click.Path(path_type=Path, exists=False))
@click.option("--out", "-o", type=click.Path(path_type=Path), required=True,
              help="The pooled DuckDB file (created or updated).")
@click.option("--keys", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Folder of the sites' public keys (<site>.pub); each package must be "
                   "signed by its own site's key.")
@click.option("--allow-unsigned", is_flag=True,
              help="Local testing only: accept packages without a signature (recorded in "
                   "meta.pool_package and the report).")
@click.option("--memory-limit", default=POOL_MEMORY_LIMIT, show_default=True,
              callback=lambda ctx, param, value: _memory_limit(value),
              help="DuckDB's memory limit while pooling (as output.memory_limit at a site).")
@click.option("--report-dir", type=click.Path(path_type=Path), default=None,
              help="Folder for the pooled report.html and analysis/ exports "
                   "[default: <out stem>_report/ next to --out].")
def pool_cmd(packages: tuple[Path, ...], out: Path, keys: Path | None,
             allow_unsigned: bool, memory_limit: str, report_dir: Path | None) -> None:
    """Verify site packages and pool them; validate and analyse the pooled data.

    Every package is checked before anything is written: its site's signature, its
    files' SHA-256, each table's exact columns, only its own site's rows, and study
    definitions equal to the other packages' and the pooled database's. A newer
    package from a site replaces that site's rows only. Any refusal leaves an
    existing pooled database untouched.

    \b
    Example: cartfhir pool site_a.zip site_b.zip --out pooled.duckdb --keys keys/
    """
    result = api.pool(list(packages), out, keys=keys, allow_unsigned=allow_unsigned,
                      memory_limit=memory_limit, report_dir=report_dir)
    _say(f"pooled sites: {', '.join(result.sites)} -> {result.path}", "pool.pooled",
         sites=result.sites, path=str(result.path))
    # Said once: the analysis warning names unsigned packages too, so it speaks when it
    # has more to say (failed validation), and the pool's own line when it has not.
    invalid = result.validation is not None and not result.validation.valid
    if result.unsigned and not (invalid and result.analysis is not None):
        _warn(f"WARNING: pooled without signature verification (--allow-unsigned): "
              f"{', '.join(result.unsigned)}", "pool.unsigned", sites=result.unsigned)
    if result.analysis is not None:
        _report_analysis(result.analysis, warn=invalid or not result.unsigned)


def _memory_limit(value: str) -> str:
    try:
        return MemoryLimit.validate_python(value)
    except ValidationError:
        raise click.BadParameter(f"{value!r} is not a size like 512MB or 2GB",
                                 param_hint="--memory-limit") from None


@cli.command("keygen")
@click.option("--site", "site_id", required=True, help="The site the key signs for.")
@click.option("--out", "-o", type=click.Path(path_type=Path, file_okay=False), required=True,
              help="Folder for <site>.key (private, mode 600) and <site>.pub.")
def keygen_cmd(site_id: str, out: Path) -> None:
    """Make a site's Ed25519 signing key pair; existing keys are never overwritten.

    The site keeps <site>.key (name it in sites[].signing_key) and gives <site>.pub
    to the coordinating center, which pools with --keys <folder of .pub files>.

    \b
    Example: cartfhir keygen --site site_a --out keys/
    """
    pair = api.keygen(site_id, out)
    _say(f"private key: {pair.private} (keep it at the site)", "keygen.private",
         path=str(pair.private))
    _say(f"public key:  {pair.public} (give it to the coordinating center)", "keygen.public",
         path=str(pair.public))


@cli.command("sign")
@click.argument("package", type=click.Path(path_type=Path, exists=True))
@click.option("--key", "key_file", type=click.Path(path_type=Path, dir_okay=False),
              required=True, help="The site's private key file (from 'cartfhir keygen').")
def sign_cmd(package: Path, key_file: Path) -> None:
    """Sign an existing package folder or zip (e.g. one rebuilt by another tool).

    Writes manifest.sig next to manifest.json (into the zip for a .zip), replacing an
    older signature.

    \b
    Example: cartfhir sign site_a.zip --key keys/site_a.key
    """
    result = api.sign(package, key_file)
    _say(f"signed {result.path} for site {result.site}", "sign.signed", path=str(result.path),
         site=result.site)


def _report_run(result: api.RunResult, allow_invalid: bool = False) -> None:
    _report_extract(result.extract)
    if result.transform is not None:
        _report_transform(result.transform)
    if result.validation is not None:
        _report_validation(result.validation, allow_invalid)
    if result.analysis is not None:
        _report_analysis(result.analysis)


@cli.command("run")
@config_option
@click.option("--allow-invalid", is_flag=True,
              help="Go on to analysis even when error expectations fail (the report says so).")
@json_option
def run_cmd(config: Path, allow_invalid: bool, as_json: bool) -> int:
    """Run every stage in order: extract, transform, validate (then analysis).

    Exit codes: 0 complete; 1 failed, or data that failed error expectations
    (unless --allow-invalid); 3 partial extraction.

    \b
    Example: cartfhir run --config config.yaml
    """
    cfg = api.load_config(config)
    result = api.run(cfg, progress=_progress(), command=_command_line(),
                     allow_invalid=allow_invalid)
    if as_json:
        _print_json(result)
    else:
        _report_run(result, allow_invalid)
    return exit_code_for(result.status)


@cli.command()
@config_option
@click.option("--patients", type=click.IntRange(1, 100_000), default=40, show_default=True,
              help="Synthetic patients in total.")
@click.option("--seed", type=int, default=42, show_default=True, help="Random seed.")
@json_option
def demo(config: Path, patients: int, seed: int, as_json: bool) -> int:
    """Generate the example cohort into the config's site folders and run the pipeline.

    \b
    Example: cartfhir demo --config config.yaml --patients 40
    """
    cfg = api.load_config(config)
    result = api.demo(cfg, patients=patients, seed=seed, progress=_progress())
    if as_json:
        _print_json(result)
        return exit_code_for(result.status)
    if _human():
        click.echo(f"generated {sum(result.synth.patients.values())} patients "
          f"({result.synth.episodes} infusions) into "
          f"{', '.join(str(s.source.path) for s in cfg.sites)}")
    _report_extract(result.run.extract)
    if result.run.transform is not None:
        _report_transform(result.run.transform)
    if result.run.validation is not None:
        _report_validation(result.run.validation)
    if _human():
        click.echo(f"DuckDB file: {result.duckdb_path}")
    if _human():
        click.echo(f"try: {_cartfhir_command()} query \"select endpoint, cart1_events, cart1_n, "
                   f"cart2_events, cart2_n, p_value from analysis.comparison where site = "
                   f"'{POOLED_SITE}' and kind = 'proportion'\"{_config_argument(config)}")
    if result.run.analysis is not None:
        _report_analysis(result.run.analysis)
    return exit_code_for(result.status)


@cli.command()
@click.argument("sql")
@config_option
@click.option("--db", type=click.Path(path_type=Path), default=None,
              help="DuckDB file to query instead of the config's output.")
@click.option("--format", "-f", "fmt", type=click.Choice(["table", "csv", "json", "parquet"]),
              default=None,
              help="Output format [default: table; with --out, from the file's suffix].")
@click.option("--out", "-o", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Write the rows to this .csv, .json or .parquet file instead of stdout.")
@click.option("--types", "show_types", is_flag=True,
              help="Show each column's DuckDB type under its name (table format).")
def query(sql: str, config: Path, db: Path | None, fmt: str | None, out: Path | None,
          show_types: bool) -> None:
    """Run one SQL statement on a read-only connection to the output DuckDB.

    Read-only means the database file: the statement cannot change its tables. It
    runs with your own file access, as in the DuckDB CLI: read_csv('...'), COPY ... TO
    and INSTALL still read, write and download files as you could yourself.

    The table fits the terminal: long values end in '…' and columns that do not fit
    are left out behind a '…' column. Into a pipe or a file nothing is cut; COLUMNS=N
    sets the width. JSON columns come out as objects in --format json.

    \b
    Example: cartfhir query "select site, count(*) from raw.resources group by site" -f csv
    """
    if out is not None:
        fmt = file_format(out, QUERY_FORMATS, given=fmt)
    elif fmt == "parquet":
        raise click.UsageError("--format parquet writes a file: give --out FILE.parquet")
    cfg: Config | None = None if db is not None else api.load_config(config)
    if out is not None:  # to a file: cartfhir.exports
        _query_to_file(cfg, sql, db, fmt or "csv", out)
        return
    result = api.query(cfg, sql, db=db)
    if fmt in (None, "table"):
        render_result(result.columns, result.rows(), types=result.types if show_types else None,
                      width=terminal_width(sys.stdout))
    else:
        render_rows(result.columns, result.rows(), fmt=fmt,  # type: ignore[arg-type]
                    types=result.types)


# --- query to a file, schema, export (cartfhir.catalog, cartfhir.exports) ---

def _query_to_file(cfg: Config | None, sql: str, db: Path | None, fmt: str, out: Path) -> None:
    written = api.query_to_file(cfg, sql, out, fmt, db=db)
    _warn(f"{written.rows} row{'s' if written.rows != 1 else ''} -> {written.path}",
          "query.written", level=logging.INFO, rows=written.rows, path=str(written.path))


@cli.command("schema")
@click.option("--config", "-c", "config", type=click.Path(path_type=Path), default=None,
              help="Also list tables this config's database holds that cartfhir does not "
                   "document (e.g. views.* from 'cartfhir view').")
@click.option("--table", "table_name", default=None, metavar="NAME",
              help="Only this table: schema.table, or table when the name is unique.")
@click.option("--format", "-f", "fmt",
              type=click.Choice(["table", "csv", "json", "markdown"]), default="table",
              show_default=True, help="Output format on stdout (markdown: the data dictionary).")
def schema_cmd(config: Path | None, table_name: str | None, fmt: str) -> None:
    """Describe every table cartfhir writes: grain, columns, types and meanings.

    Read from the documentation next to each table's code, so it matches the code;
    docs/data-dictionary.md is this command's markdown output.

    \b
    Example: cartfhir schema --table cohort.episode_endpoints
    """
    import json

    from cartfhir import catalog

    tables = catalog.load_catalog()
    if config is not None:
        tables = catalog.add_database_tables(tables, api.load_config(config).output.duckdb)
    if table_name is not None:
        one = catalog.find_table(tables, table_name)
        if one is None:
            near = [t.full_name for t in tables if table_name.split(".")[-1] in t.name]
            raise click.BadParameter(
                f"no table {table_name!r}" + (f"; did you mean {', '.join(near)}?" if near
                                              else "; 'cartfhir schema' lists them all"),
                param_hint="--table")
        tables = [one]
    if fmt == "markdown":
        click.echo(catalog.render_markdown(tables), nl=False)
    elif fmt == "json":
        click.echo(json.dumps(catalog.as_json(tables), indent=1, ensure_ascii=False))
    else:
        title = None
        if len(tables) == 1:
            t = tables[0]
            title = f"{t.full_name}: {t.description} Grain: {t.grain or '?'}."
        render_rows(["table", "column", "type", "description"], catalog.column_rows(tables),
                    fmt=fmt, title=title)  # type: ignore[arg-type]


@cli.command("export")
@config_option
@click.option("--format", "-f", "fmt", type=click.Choice(["parquet", "csv"]),
              default="parquet", show_default=True, help="File format.")
@click.option("--out", "-o", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Folder to write <schema>/<table>/site=<id>/ files into.")
@click.option("--raw", "raw", type=click.Path(path_type=Path, file_okay=False), default=None,
              metavar="DIR", help="Instead of --out: write raw.resources (and raw.rejected) as "
              "Parquet to DIR/raw.resources/site=<id>/resource_type=<type>/, the input "
              "engine.raw: DIR reads on Spark.")
@click.option("--tables", "patterns", default="cohort.*,analysis.*", show_default=True,
              help="Comma-separated tables or patterns (schema.table, cohort.*).")
@click.option("--force", is_flag=True,
              help="Write into a non-empty folder, replacing the chosen tables' folders.")
def export_cmd(config: Path, fmt: str, out: Path | None, raw: Path | None, patterns: str,
               force: bool) -> None:
    """Write tables as Parquet or CSV files split by site (hive-style site=<id>/ folders).

    DuckDB, Spark, pandas and other engines read the folder directly, e.g.
    read_parquet('OUT/cohort/episode/**/*.parquet', hive_partitioning=true).
    A table without a site column is one file. The tables are written as they are
    in the database, with no small-cell suppression: for use inside the site.

    \b
    Example: cartfhir export --config config.yaml --out out/store --tables "cohort.*"
    Example: cartfhir export --config config.yaml --raw out/raw_export
    """
    if (out is None) == (raw is None):
        raise click.UsageError("give either --out (tables) or --raw DIR (raw.resources)")
    if raw is not None:
        source = click.get_current_context().get_parameter_source
        for name, hint in (("fmt", "--format"), ("patterns", "--tables")):
            if source(name) is not click.core.ParameterSource.DEFAULT:
                raise click.BadParameter("--raw writes raw.resources as Parquet; it takes "
                                         "no --format or --tables", param_hint=hint)
        cfg = api.load_config(config)
        rows = api.export_raw(cfg, raw, force=force)
        _warn(f"raw.resources: {rows} rows as Parquet in {Path(raw).absolute()} "
              "(raw.resources/site=<id>/resource_type=<type>/)", "export.raw_written",
              level=logging.INFO, rows=rows, out=str(Path(raw).absolute()))
        return
    cfg = api.load_config(config)
    chosen = [p.strip() for p in patterns.split(",") if p.strip()]
    if not chosen:
        raise click.BadParameter("name at least one table or pattern", param_hint="--tables")
    result = api.export(cfg, out, fmt, chosen, force=force)
    if _human():
        render_rows(["table", "site", "rows", "file"],
                    [[f.table, f.site or "", f.rows, str(f.path.relative_to(result.out))]
                     for f in result.files],
                    title=f"Exported to {result.out}")
    _warn(f"{len(result.tables)} tables, {result.rows} rows, {len(result.files)} files "
          f"({result.format}) in {result.out}", "export.written", level=logging.INFO,
          tables=len(result.tables), rows=result.rows, files=len(result.files),
          out=str(result.out))

@cli.command("check")
@config_option
@click.option("--no-network", is_flag=True,
              help="Skip the FHIR servers (metadata and auth); check files, secrets and output.")
def check_cmd(config: Path, no_network: bool) -> int:
    """Check a config before running it: one line per item; exit 2 when something needs
    fixing, 1 when every problem may pass by itself (a busy database, a server down).

    Checks the config, each site's source folder or server (CapabilityStatement and
    authentication), key files and secrets (never printing them), concept maps, text
    patterns and grade cuts (parsed as the transform parses them), the output folders
    and database, and the engine. 'cartfhir run' runs the same checks first.

    \b
    Example: cartfhir check --config config.yaml
    """
    try:
        cfg = api.load_config(config)
    except CartfhirError as exc:
        if not _human():
            raise  # JSON mode into a file: the one error record
        click.echo(redact(f"FAIL config  {exc}"))
        return exc.exit_code
    report = api.check(cfg, network=not no_network)
    if _human():
        for line in report.lines():
            click.echo(redact(line))
    else:  # JSON mode into a file: one record per item, the same words
        for item, line in zip(report.items, report.lines(), strict=True):
            log_event("check.item", msg=line, level=logging.INFO if item.ok else logging.ERROR,
                      logger="cartfhir.cli", item=item.name, outcome=item.outcome)
    return report.exit_code


@cli.command("init")
@click.option("--kind", type=click.Choice(SOURCE_KINDS), required=True,
              help="Where the site's data comes from: an NDJSON folder, FHIR REST search, "
                   "or Bulk Data $export.")
@click.option("--out", "-o", type=click.Path(path_type=Path, dir_okay=False),
              default=DEFAULT_CONFIG, show_default=True, help="The config file to write.")
@click.option("--site", "site_id", default="site_a", show_default=True,
              help="The site's id (lower-case letters, digits and _).")
@click.option("--force", is_flag=True,
              help="Replace an existing config file (key files are never replaced).")
def init_cmd(kind: str, out: Path, site_id: str, force: bool) -> None:
    """Write a commented config for one site and make its keys, to start from.

    Next to the config: secrets/<site>.key (random pseudonym key, mode 600) and
    keys/<site>.key + keys/<site>.pub (Ed25519 signing pair). Existing files are
    never replaced; the config only with --force.

    \b
    Example: cartfhir init --kind fhir --out config.yaml --site site_a
    """
    from cartfhir.init import write_config

    result = write_config(kind, out, site_id, force=force)
    _say(f"config: {result.config}", "init.config", path=str(result.config))
    for path in result.created:
        _say(f"created: {path}", "init.created", path=str(path))
    for path in result.kept:
        _say(f"kept:    {path} (exists; never replaced)", "init.kept", path=str(path))
    if _human():
        command = _cartfhir_command()
        click.echo(f"next: edit {result.config}, then {command} check"
                   f"{_config_argument(result.config)}")


def _cartfhir_command() -> str:
    """How to call cartfhir from here, for hints that must work as printed.

    'cartfhir' when that is this program on PATH; else the path of the running
    executable (e.g. .venv/bin/cartfhir, relative when under the working folder);
    else 'python -m cartfhir' with this interpreter.
    """
    argv0 = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    candidates = [argv0] if argv0 is not None and argv0.name == "cartfhir" else []
    candidates.append(Path(sys.executable).parent / "cartfhir")
    for exe in candidates:
        if exe.is_file() and os.access(exe, os.X_OK):
            found = shutil.which("cartfhir")
            if found and Path(found).resolve() == exe.resolve():
                return "cartfhir"
            absolute = Path(os.path.abspath(exe))
            try:
                return shlex.quote(str(absolute.relative_to(Path.cwd())))
            except ValueError:
                return shlex.quote(str(absolute))
    return shlex.join([sys.executable, "-m", "cartfhir"])


def _config_argument(config: Path) -> str:
    """' --config PATH' for a hint, or '' for the default config."""
    return "" if Path(config) == DEFAULT_CONFIG else f" --config {shlex.quote(str(config))}"


def run_cli(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code (the one place errors become exit codes).

    In JSON log mode an error is one JSON record (``event: error`` with its
    ``error_type`` and ``exit_code``), however early it happens: the log format is
    read from the arguments before click parses them.
    """
    args = sys.argv[1:] if argv is None else list(argv)
    _state.update(verbose=False, log_format=_log_format(args), human=False, wait=0.0,
                  args=tuple(args))  # click consumes the list it parses
    configure(_state["log_format"])
    try:
        code = _run(args)
        sys.stdout.flush()  # a reader gone by now must not fail the interpreter's exit
        return code
    except BrokenPipeError:
        return _broken_pipe()
    finally:
        set_lock_wait(0)  # --wait is this command's, not the process's (tests, notebooks)
        use_command_line(None)
        _state["args"] = None


def _broken_pipe() -> int:
    """The reader of stdout stopped early (``| head``): end quietly with 141 (128 +
    SIGPIPE) as a shell pipeline would, with stdout pointed at os.devnull so the
    interpreter's own flush at exit does not raise again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # not a real file (a test's capture): nothing to flush
        pass
    return ExitCode.BROKEN_PIPE


def _run(args: list[str]) -> int:
    try:
        # What cli.main(standalone_mode=False) does, less its blank line on stderr at
        # Ctrl-C, which would not be JSON (_interrupted writes it in text mode).
        with cli.make_context("cartfhir", args) as ctx:
            rv = cli.invoke(ctx)
        return rv if isinstance(rv, int) else ExitCode.SUCCESS
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        usage = isinstance(exc, click.UsageError)
        code = ExitCode.USAGE if usage else exc.exit_code
        if _state["log_format"] == "json":
            _error("UsageError" if usage else type(exc).__name__, code, exc.format_message())
        else:
            exc.show()
        return code
    except (click.exceptions.Abort, KeyboardInterrupt):
        return _interrupted()
    except BrokenPipeError:
        raise  # run_cli ends quietly
    except Exception as exc:
        if is_interrupt(exc):  # Ctrl-C inside a DuckDB statement comes out as an error
            return _interrupted()
        if isinstance(exc, CartfhirError):
            _error(type(exc).__name__, exc.exit_code, str(exc), prefix="error: ")
            return exc.exit_code
        # a bug: say so plainly, trace only when asked
        _error(type(exc).__name__, ExitCode.FAILURE,
               f"{type(exc).__name__}: {exc} (run with --verbose for the traceback, and "
               "please report it)", prefix="internal error: ")
        return ExitCode.FAILURE


def _log_format(args: list[str]) -> str:
    """The --log-format the arguments ask for (text unless json), before click parses them."""
    for i, arg in enumerate(args):
        if arg == "--":
            break
        value = (args[i + 1] if arg == "--log-format" and i + 1 < len(args) else
                 arg.partition("=")[2] if arg.startswith("--log-format=") else None)
        if value is not None:
            return "json" if value == "json" else "text"
    return "text"


def _error(error_type: str, code: int, text: str, prefix: str = "") -> None:
    """The one error line: plain on stderr (after ``prefix``), or a JSON record with
    its type and exit code."""
    trace = traceback.format_exc() if _state["verbose"] else None
    if _state["log_format"] == "json":
        log_event("error", msg=text, level=logging.ERROR, logger="cartfhir.cli",
                  error_type=error_type, exit_code=int(code),
                  **({"traceback": trace} if trace else {}))
        return
    click.echo(redact(prefix + text), err=True)
    if trace:
        click.echo(redact(trace), err=True, nl=False)


def _interrupted() -> int:
    if _state["log_format"] == "text":
        click.echo(err=True)  # ends the terminal's ^C echo
    _error("KeyboardInterrupt", ExitCode.INTERRUPTED, "interrupted")
    return ExitCode.INTERRUPTED


def main() -> None:
    sys.exit(run_cli())


__all__ = ["cli", "main", "run_cli"]

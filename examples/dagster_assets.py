"""cartfhir's stages as Dagster assets over ``cartfhir.api``.

Load with ``dagster dev -f examples/dagster_assets.py`` after setting CONFIG. Each
asset materializes one stage and records the result's status and counts as
metadata (``to_dict()``), so the asset catalog shows run ids and row counts:

- a partial extraction (status ``partial``) still materializes, with the problems
  in the metadata and a failing asset check, so the lineage continues but the
  check is red;
- failing error expectations (status ``invalid``) raise ``dg.Failure`` without
  retries: analysis must not run on that data;
- a config mistake is a ``Failure`` without retries too; anything else cartfhir
  raises fails the step and follows the job's retry policy.
"""

from __future__ import annotations

import dagster as dg

from cartfhir import api
from cartfhir.db import set_lock_wait
from cartfhir.errors import ConfigError

CONFIG = "/srv/cartfhir/config.yaml"
LOCK_WAIT_SECONDS = 600


def _config() -> api.Config:
    set_lock_wait(LOCK_WAIT_SECONDS)
    try:
        return api.load_config(CONFIG)
    except ConfigError as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from exc


def _metadata(result: dict) -> dict:
    """The scalar parts of a result's ``to_dict()`` as asset metadata; the rest as JSON."""
    return {key: value if isinstance(value, str | int | float | bool) else
            dg.MetadataValue.json(value) for key, value in result.items() if value is not None}


@dg.asset(group_name="cartfhir", check_specs=[dg.AssetCheckSpec("complete", asset="raw_resources")])
def raw_resources(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    """raw.resources: every site's resources as landed."""
    result = api.extract(_config(), command="dagster raw_resources")
    return dg.MaterializeResult(
        metadata=_metadata(result.to_dict()),
        check_results=[dg.AssetCheckResult(
            check_name="complete", passed=result.status == "success",
            metadata={"problems": dg.MetadataValue.json(list(result.problems))})])


@dg.asset(group_name="cartfhir", deps=[raw_resources])
def cohort_tables() -> dg.MaterializeResult:
    """flat, harmonized, cohort and qa tables rebuilt from raw.resources."""
    result = api.transform(_config(), command="dagster cohort_tables")
    return dg.MaterializeResult(metadata=_metadata(result.to_dict()))


@dg.asset(group_name="cartfhir", deps=[cohort_tables])
def validation() -> dg.MaterializeResult:
    """qa.validation_result: the expectation suites' outcomes."""
    report = api.validate(_config(), command="dagster validation")
    if report.status == "invalid":
        raise dg.Failure(description=f"{len(report.failed_errors)} error expectations failed "
                                     f"(validation run {report.run_id})",
                         metadata={"summary": dg.MetadataValue.json(report.summary())},
                         allow_retries=False)
    return dg.MaterializeResult(metadata={"run_id": report.run_id,
                                          "summary": dg.MetadataValue.json(report.summary())})


@dg.asset(group_name="cartfhir", deps=[validation])
def analysis() -> dg.MaterializeResult:
    """analysis.* tables, report.html and the CSV/JSON exports."""
    result = api.analyze(_config(), command="dagster analysis")
    return dg.MaterializeResult(metadata={
        "run_id": result.run_id, "status": result.status,
        "report": dg.MetadataValue.path(str(result.report)),
        "tables": dg.MetadataValue.json(result.tables)})


nightly = dg.define_asset_job("cartfhir_nightly", selection=dg.AssetSelection.groups("cartfhir"))

defs = dg.Definitions(
    assets=[raw_resources, cohort_tables, validation, analysis],
    jobs=[nightly],
    schedules=[dg.ScheduleDefinition(job=nightly, cron_schedule="15 2 * * *")],
)

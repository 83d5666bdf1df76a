"""A nightly cartfhir DAG for Airflow 3: TaskFlow tasks over ``cartfhir.api``.

Copy into your ``dags/`` folder and set CONFIG. Each task calls one stage and
returns its result's ``to_dict()`` (pushed to XCom: run id, status, counts), so the
next task and the Airflow UI see what happened. How the outcomes map to Airflow:

- a config mistake (``ConfigError``, exit code 2) fails the task without retries:
  retrying cannot fix it;
- a partial extraction (status ``partial``, exit code 3) is a soft failure here:
  what arrived is still transformed and validated, and the extract task is marked
  skipped so the DAG run shows it (raise ``AirflowFailException`` instead to stop);
- data that fails error expectations (status ``invalid``) fails the validate task,
  so analysis does not run on it;
- anything else cartfhir raises fails the task and is retried (e.g. the database
  still held by another process after LOCK_WAIT_SECONDS: ``DatabaseBusyError``).

The BashOperator at the end does the same with the CLI and its exit codes.
"""

from __future__ import annotations

import pendulum
from airflow.exceptions import AirflowFailException, AirflowSkipException
from airflow.providers.standard.operators.bash import BashOperator  # 2.x: airflow.operators.bash
from airflow.sdk import dag, task  # Airflow 2.x: from airflow.decorators import dag, task

from cartfhir import api
from cartfhir.db import set_lock_wait
from cartfhir.errors import ConfigError, ExitCode

CONFIG = "/srv/cartfhir/config.yaml"
LOCK_WAIT_SECONDS = 600  # an analyst's open DuckDB session: wait for it, then give up


def _config() -> api.Config:
    """The validated config; a mistake in it is not worth retrying."""
    set_lock_wait(LOCK_WAIT_SECONDS)
    try:
        return api.load_config(CONFIG)
    except ConfigError as exc:
        raise AirflowFailException(str(exc)) from exc


@dag(schedule="15 2 * * *", start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
     catchup=False, default_args={"retries": 2}, tags=["cartfhir"])
def cartfhir_nightly() -> None:
    @task
    def extract() -> dict:
        result = api.extract(_config(), command="airflow extract")
        if result.status == "partial":
            # soft failure: downstream still runs (trigger rule below), the run shows it
            raise AirflowSkipException("; ".join(result.problems))
        return result.to_dict()

    @task(trigger_rule="none_failed")
    def transform() -> dict:
        return api.transform(_config(), command="airflow transform").to_dict()

    @task
    def validate() -> dict:
        report = api.validate(_config(), command="airflow validate")
        if report.status == "invalid":
            raise AirflowFailException(
                f"{len(report.failed_errors)} error expectations failed (validation run "
                f"{report.run_id}); see qa.validation_result")
        return report.to_dict()

    @task
    def analyze() -> dict:
        result = api.analyze(_config(), command="airflow analyze")
        return {"status": result.status, "run_id": result.run_id,
                "report": str(result.report), "tables": result.tables}

    extract() >> transform() >> validate() >> analyze()


cartfhir_nightly()


# The same with the CLI: exit code 3 (partial) becomes a skip, 1 and 2 fail the task.
# JSON logs land in the task log one object per line.
@dag(schedule="15 2 * * *", start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
     catchup=False, tags=["cartfhir"])
def cartfhir_nightly_cli() -> None:
    BashOperator(
        task_id="cartfhir_run",
        bash_command="cd /srv/cartfhir && .venv/bin/cartfhir --log-format json --wait 600 "
                     "run --config config.yaml",
        skip_on_exit_code=int(ExitCode.PARTIAL),
    )


cartfhir_nightly_cli()

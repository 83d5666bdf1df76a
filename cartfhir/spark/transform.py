"""The transform on Spark: the stages ref .. qa of ``build.yaml`` as Parquet tables.

``spark_transform`` builds what ``cartfhir.transform.transform`` builds, from the same
definitions, on a SparkSession: ``ref.*`` by the DuckDB builders (in an in-memory DuckDB,
written as Parquet for Spark to read), ``flat.*`` by the ViewDefinitions compiled to Spark
SQL, ``raw.patient_key`` by HMAC in Spark SQL (``cartfhir.spark.identity``), and the
harmonized, cohort and qa models (``cartfhir.spark.models``). The tables go to the table
store ``engine.tables`` (``cartfhir.spark.tables``); the DuckDB store gets a view per table
reading them, so validate, analyze, export-site and pool run on it unchanged.

All or nothing, as on DuckDB: every table is written under ``<tables>/.staging-<run>/``;
only when all succeeded are the folders swapped into place (the previous ones kept in
``<tables>/.old-<run>/`` with a list of what moved), then the views, the reference
versions and the run's success are committed in one DuckDB transaction. A failure before
the commit puts the previous folders back; a process killed in between leaves the list,
and the next Spark transform puts them back (the run never committed) or drops them (it
did) before it starts.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb

from cartfhir.config import Config, Site, SparkEngine, is_uri
from cartfhir.errors import CartfhirError, ConfigError, TransformError, UsageError
from cartfhir.graph import BuildContext, Node, build_node, create_macros, load_graph, read_text
from cartfhir.progress import NullProgress, Progress
from cartfhir.spark.catalog import OWNED, drop_own_table
from cartfhir.spark.identity import sql_string, write_patient_keys
from cartfhir.spark.tables import KEPT_IN_STORE, register_parquet_tables, write_layout
from cartfhir.store import Store
from cartfhir.transform import STAGES, TransformResult, all_or_nothing
from cartfhir.transform.reference import Reference, reference_hash
from cartfhir.transform.views import ViewResult

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

STAGING = ".staging-"
OLD = ".old-"
SWAP_LIST = "swap.json"
# Marks a folder written by 'cartfhir view --engine spark' (a later run may replace it).
VIEW_MARK = ".cartfhir-view"
# Names the store whose tables a table store holds: one engine.tables a store.
OWNER_FILE = ".cartfhir-store"


def tables_root(engine: SparkEngine) -> Path:
    """``engine.tables`` as a local folder (the store's views read it with DuckDB)."""
    if engine.tables is None:
        raise ConfigError("engine.tables is not set; give the folder the Parquet tables go to")
    if is_uri(engine.tables):
        raise ConfigError(f"engine.tables {engine.tables} is a URI; the store reads the tables "
                          "with DuckDB, so give a folder both the cluster and this machine "
                          "see (a shared or mounted file system, e.g. /Volumes/... on "
                          "Databricks); docs/spark.md")
    root = Path(engine.tables).absolute()
    if root.is_symlink() or (root.exists() and not root.is_dir()):
        raise ConfigError(f"engine.tables {root} must be a folder (not a file or a link)")
    return root


def claim_tables(root: Path, store_path: Path) -> None:
    """Mark ``root`` as the table store of the DuckDB store at ``store_path``.

    Two stores sharing one engine.tables would replace each other's tables under each
    other's views; a folder that already names another store (which still exists) is
    refused.
    """
    owner = root / OWNER_FILE
    me = str(Path(store_path).absolute())
    if owner.is_symlink() or (owner.exists() and not owner.is_file()):
        raise ConfigError(f"engine.tables {root}: {OWNER_FILE} must be a plain file")
    if owner.is_file():
        other = owner.read_text(encoding="utf-8", errors="replace").strip()
        if other == me:
            return  # untouched: a failed run leaves the folder exactly as it was
        if Path(other).exists():
            raise ConfigError(f"engine.tables {root} holds the tables of the store {other}; "
                              "give each store its own engine.tables (or delete "
                              f"{owner} if that store is gone for good)")
    root.mkdir(parents=True, exist_ok=True)
    owner.write_text(me + "\n", encoding="utf-8")


def spark_transform(store: Store, reference: Reference, sites: Sequence[Site],
                    engine: SparkEngine, *, progress: Progress | None = None,
                    command: str = "transform", config: Config | None = None
                    ) -> TransformResult:
    """Rebuild ref, flat, harmonized, cohort and qa tables on Spark as Parquet.

    With ``engine.raw: store`` the store's raw.resources is exported to Parquet for Spark
    through the run's connection; otherwise Spark reads the ``cartfhir export --raw``
    folder. ``config`` is passed on to the raw registration (its memory limit).
    """
    from cartfhir.spark.session import get_spark

    progress = progress or NullProgress()
    started = time.perf_counter()
    root = tables_root(engine)
    claim_tables(root, store.path)
    spark = get_spark(engine.master, engine.conf)  # its FIXED_CONF: UTC micros in Parquet
    graph = load_graph()
    with store.run(command, stage="transform") as run:
        con = run.con
        recover(con, root)
        result = TransformResult(run_id=run.run_id, reference_hash=reference_hash(reference))
        staging = root / f"{STAGING}{run.run_id}"
        try:
            staging.mkdir(parents=True)
            steps = [step for stage in STAGES for step in graph.steps(stage)]
            with progress.task("transform", total=len(steps)) as bar:
                _register_raw(spark, con, engine, config, store, root, run.run_id)
                from cartfhir.spark.models import create_functions

                create_functions(spark)
                versions: list[tuple] = []
                for step in steps:
                    step_started = time.perf_counter()
                    node = step[0]
                    if node.stage == "ref":
                        versions = _build_reference(spark, reference, run.run_id, staging)
                    elif node.stage == "identity":
                        write_patient_keys(spark, sites, str(staging / node.table))
                    else:
                        rows = _build(spark, node, staging)
                        result.tables[node.table] = (rows, time.perf_counter() - step_started)
                    bar.advance()
            result.episodes = [tuple(r) for r in spark.sql(
                "SELECT site, round, count(*) FROM cohort.episode GROUP BY site, round "
                "ORDER BY site, round").collect()]
            result.quarantined = result.tables["qa.quarantine"][0]
            result.unmapped_codes = result.tables["qa.unmapped_codes"][0]
            names = sorted(p.name for p in staging.iterdir())
            old = swap_in(root, staging, names, run.run_id)
            try:
                with all_or_nothing(con):
                    register_parquet_tables(con, root, graph)
                    _record_versions(con, versions)
                    result.seconds = time.perf_counter() - started
                    run.counts = result.summary()
                    run.finish("success")  # inside the transaction: committed with the views
            except BaseException:
                restore(root, old)
                run.status = None  # rolled back with the views: failed_on_error records it
                raise
            finally:
                repoint(spark, root, names)
            shutil.rmtree(old, ignore_errors=True)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            _remove_staged_raw(engine, root)
    return result


def _raw_folder(root: Path) -> Path:
    from cartfhir.spark.raw import STAGING as RAW_STAGING

    return root / RAW_STAGING


def _remove_staged_raw(engine: SparkEngine, root: Path) -> None:
    """Remove the raw.resources a command staged under ``root`` (engine.raw ``store`` or
    ``ndjson``): patient data that must not outlive the command. An export folder stays."""
    if engine.raw_kind in ("store", "ndjson"):
        shutil.rmtree(_raw_folder(root), ignore_errors=True)


def _register_raw(spark: SparkSession, con: duckdb.DuckDBPyConnection, engine: SparkEngine,
                  config: Config | None, store: Store, root: Path, run_id: str) -> None:
    """raw.resources on Spark, from engine.raw. With ``store`` it is exported through the
    run's own connection (the store is open for writing: a second one may not open it)."""
    from cartfhir.spark.raw import export_raw, register_raw

    if engine.raw_kind == "store":
        folder = _raw_folder(root)
        export_raw(con, folder, force=True)
        engine = engine.model_copy(update={"raw": str(folder)})  # now a raw export folder
    register_raw(spark, config, store.path, engine, run_id=run_id)


def _build_reference(spark: SparkSession, reference: Reference, run_id: str,
                     staging: Path) -> list[tuple]:
    """ref.* by the DuckDB builder in memory, written as Parquet and read by Spark; the
    run's meta.reference_version rows (kept for the store)."""
    from cartfhir.spark.tables import store_tables

    refs = [n for n in store_tables() if n.stage == "ref"]
    graph = load_graph()
    with duckdb.connect() as mem:
        mem.execute("SET TimeZone = 'UTC'")
        create_macros(mem, graph)
        node = graph.node(refs[0].table)
        build_node(mem, node, BuildContext(run_id=run_id, reference=reference))
        write_layout(mem, [n.table for n in refs], staging)
        versions = mem.execute(f"SELECT * FROM {KEPT_IN_STORE[0]}").fetchall()
    spark.sql("CREATE DATABASE IF NOT EXISTS ref")
    for ref in refs:
        drop_own_table(spark, ref.table)
        spark.sql(f"CREATE TABLE {ref.table} USING parquet "
                  f"LOCATION {sql_string(str(staging / ref.table))} {OWNED}")
    return versions


def _record_versions(con: duckdb.DuckDBPyConnection, versions: list[tuple]) -> None:
    from cartfhir.catalog.sidecars import table_ddl

    table = KEPT_IN_STORE[0]
    con.execute("CREATE SCHEMA IF NOT EXISTS meta")
    con.execute(f"CREATE TABLE IF NOT EXISTS {table} ({table_ddl(table)})")
    if versions:
        marks = ", ".join("?" * len(versions[0]))
        con.executemany(f"INSERT INTO {table} VALUES ({marks})", [list(v) for v in versions])


def _build(spark: SparkSession, node: Node, staging: Path) -> int:
    """A view's or a model's table, written at ``staging/<table>``; its rows."""
    location = str(staging / node.table)
    if node.kind == "sql":
        from cartfhir.spark.models import build_model

        return build_model(spark, node, location)
    if node.kind != "view":
        raise TransformError(f"{node.table} ({node.source}) is a {node.kind}, which the "
                             "Spark transform does not build")
    from pyspark.errors import PySparkException

    from cartfhir.transform.sof import ERROR_MARK, compile_view

    view = json.loads(read_text(node.path))
    compiled = compile_view(view, "raw.resources", passthrough=("site",), dialect="spark")
    try:
        spark.sql(f"CREATE DATABASE IF NOT EXISTS {node.schema}")
        drop_own_table(spark, node.table)
        spark.sql(f"CREATE TABLE {node.table} USING parquet PARTITIONED BY (site) "
                  f"LOCATION {sql_string(location)} {OWNED} AS\n{compiled.sql}")
    except PySparkException as exc:
        message = str(exc)
        message = (message.split(ERROR_MARK, 1)[1] if ERROR_MARK in message else message)
        raise TransformError(f"view {view.get('name', '?')} -> {node.table} failed on Spark: "
                             f"{message.splitlines()[0]}") from None
    return spark.table(node.table).count()


# ---- the swap ---------------------------------------------------------------------------

def repoint(spark: SparkSession, root: Path, names: Sequence[str]) -> None:
    """Point the session's tables at ``root/<name>``, the folders live after a swap.

    The tables were created over the staging folders, which the swap moved away; a session
    that goes on (a notebook, ``cartfhir.api``) would otherwise read paths that no longer
    exist. A name with no live folder (a first run that failed) is dropped. The tables are
    external: dropping one never deletes its files.
    """
    from pyspark.errors import AnalysisException

    for name in names:
        if "." not in name:
            continue  # not a table folder (none today; the layout names tables schema.name)
        columns = partitions = None
        if spark.catalog.tableExists(name):  # its schema: an empty table has no file to read
            table = spark.table(name)
            columns = table.schema.toDDL()
            partitions = [c.name for c in spark.catalog.listColumns(name) if c.isPartition]
        drop_own_table(spark, name)
        folder = root / name
        if not folder.is_dir():
            continue
        clauses = [f"({columns})" if columns else "", "USING parquet"]
        if partitions:
            clauses.append(f"PARTITIONED BY ({', '.join(partitions)})")
        clauses.append(f"LOCATION {sql_string(str(folder))}")
        clauses.append(OWNED)
        try:
            spark.sql(f"CREATE TABLE {name} {' '.join(clauses)}")
        except AnalysisException:
            continue  # a previous run's empty folder, schema unknown: the store still reads it
        if partitions or any(p.name.startswith("site=") for p in folder.iterdir()):
            spark.sql(f"ALTER TABLE {name} RECOVER PARTITIONS")


def swap_in(root: Path, staging: Path, names: list[str], run_id: str) -> Path:
    """Move ``staging/<name>`` to ``root/<name>`` for every name, keeping the previous
    folders in ``root/.old-<run_id>``; return that folder. On failure, undo what moved."""
    old = root / f"{OLD}{run_id}"
    old.mkdir()
    existed = {name: (root / name).exists() for name in names}
    (old / SWAP_LIST).write_text(json.dumps(existed), encoding="utf-8")
    try:
        for name in names:
            if existed[name]:
                os.replace(root / name, old / name)
            os.replace(staging / name, root / name)
    except BaseException:
        restore(root, old)
        raise
    return old


def restore(root: Path, old: Path) -> None:
    """Put the folders kept in ``old`` back (a swap that did not commit) and remove it."""
    existed: dict[str, bool] = json.loads((old / SWAP_LIST).read_text(encoding="utf-8"))
    for name, was_there in existed.items():
        live, kept = root / name, old / name
        if was_there and not kept.exists():
            continue  # not moved yet: the live folder is still the previous one
        if live.is_dir() and not live.is_symlink():
            shutil.rmtree(live)
        elif live.exists() or live.is_symlink():
            live.unlink()
        if was_there:
            os.replace(kept, live)
    shutil.rmtree(old)


def recover(con: duckdb.DuckDBPyConnection, root: Path) -> None:
    """Finish what a killed Spark transform left in ``root``: a swap whose run committed
    is kept, one whose run did not is undone; staging folders are removed."""
    if not root.is_dir():
        return
    for folder in sorted(root.iterdir()):
        if folder.is_symlink() or not folder.is_dir():
            continue
        if folder.name.startswith(STAGING):
            shutil.rmtree(folder)
        elif folder.name.startswith(OLD) and (folder / SWAP_LIST).is_file():
            run_id = folder.name[len(OLD):]
            found = con.execute("SELECT status FROM meta.runs WHERE run_id = ?",
                                [run_id]).fetchone()
            if found is not None and found[0] == "success":
                shutil.rmtree(folder)
            else:
                restore(root, folder)


__all__ = ["recover", "repoint", "restore", "spark_transform", "swap_in", "tables_root"]


def spark_view(config: Config, engine: SparkEngine, view_file: Path, out: Path) -> ViewResult:
    """``cartfhir view --engine spark``: the ViewDefinition compiled to Spark SQL over
    ``engine.raw`` (``raw.resources``), written by the executors as Parquet into the folder
    ``out`` partitioned by site. The rows are written to a staging folder beside ``out``
    and moved into place only when complete; ``out`` may be a previous output of this
    command (it has ``VIEW_MARK``) or absent, anything else is refused rather than
    overwritten. Raw staged for the command (``store``, ``ndjson``) is removed after it."""
    from cartfhir.spark.raw import register_raw
    from cartfhir.spark.session import get_spark
    from cartfhir.transform.sof import compile_view
    from cartfhir.transform.views import read_view

    view = read_view(view_file)
    started = time.perf_counter()
    out = Path(out).absolute()
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise UsageError(f"{out} is a file or a link; on Spark --out names a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / VIEW_MARK).is_file():
        raise UsageError(f"{out} is a non-empty folder that is not the output of a "
                         "'cartfhir view --engine spark'; choose another --out")
    compiled = compile_view(view, "raw.resources", passthrough=("site",), dialect="spark")
    spark = get_spark(engine.master, engine.conf)  # its FIXED_CONF: UTC micros in Parquet
    out.parent.mkdir(parents=True, exist_ok=True)
    staged = out.parent / f".{out.name}.partial"
    shutil.rmtree(staged, ignore_errors=True)
    name = view.get("name", "?")
    try:
        register_raw(spark, config, config.output.duckdb, engine)
        spark.sql(compiled.sql).write.partitionBy("site").parquet(str(staged))
        rows = spark.read.parquet(str(staged)).count()
        (staged / VIEW_MARK).write_text(f"{name}\n", encoding="utf-8")
    except Exception as exc:  # pyspark's errors share no base class worth naming
        shutil.rmtree(staged, ignore_errors=True)
        if isinstance(exc, CartfhirError):
            raise
        first = next((line.strip() for line in str(exc).splitlines() if line.strip()),
                     type(exc).__name__)
        raise TransformError(f"view {name} failed on Spark: {first}") from None
    finally:
        _remove_staged_raw(engine, tables_root(engine))
    if out.exists():
        shutil.rmtree(out)
    os.replace(staged, out)
    return ViewResult(int(rows), ["site", *(c.name for c in compiled.columns)], str(out),
                      time.perf_counter() - started)

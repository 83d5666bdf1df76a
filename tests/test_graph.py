"""cartfhir/build.yaml: every table, in an order that builds, checked when it is read."""

from __future__ import annotations

import duckdb
import pytest

from cartfhir.errors import GraphError, TransformError
from cartfhir.graph import (
    STAGES,
    BuildContext,
    build_node,
    builder_function,
    load_graph,
    parse_graph,
    sql_tables,
)

WINDOW = "{table: cohort.episode_window, sql: transform/models/cohort/episode_window.sql}"
EPISODE = ("{table: cohort.episode, builder: 'tests.test_graph:episodes', depends: [], "
           "doc: transform/models/cohort/episode.yml}")
REF = ("{table: ref.window, builder: 'tests.test_graph:episodes', depends: [], "
       "doc: transform/ref/window.yml}")


def _graph(*entries: str, stage: str = "cohort") -> str:
    """A graph with ref.window and then ``entries`` in ``stage``."""
    return (f"stages:\n  ref:\n    - {REF}\n  {stage}:\n"
            + "".join(f"    - {e}\n" for e in entries))


def episodes(con: duckdb.DuckDBPyConnection, context: BuildContext) -> int:
    """A test builder: makes cohort.episode from context.extra['rows']."""
    con.execute("CREATE OR REPLACE TABLE cohort.episode AS SELECT range AS round FROM range(?)",
                [context.extra["rows"]])
    return context.extra["rows"]


def test_the_package_graph_lists_every_stage_in_order_and_each_table_once() -> None:
    graph = load_graph()
    assert [s for s in STAGES if graph.stage(s, pooled=True)] == list(STAGES)
    assert len(set(graph.tables)) == len(graph.tables)
    for table in ("raw.resources", "raw.patient_key", "meta.reference_version",
                  "qa.validation_result", "analysis.count_dynamics", "meta.pool_package"):
        assert table in graph.tables
    assert graph.node("analysis.heterogeneity").when == "pooled"
    assert "analysis.heterogeneity" not in [n.table for n in graph.stage("analysis")]


def test_sql_dependencies_are_derived_from_the_sql() -> None:
    graph = load_graph()
    assert graph.node("cohort.episode_window").depends == ("cohort.episode", "ref.window")
    assert graph.node("flat.patient").depends == ("raw.resources",)
    upstream = [n.table for n in graph.upstream("cohort.episode_window")]
    assert "raw.resources" in upstream and "cohort.episode_window" not in upstream
    assert upstream == [t for t in graph.tables if t in upstream]  # in build order


def test_sql_tables_ignores_comments_and_strings() -> None:
    sql = ("-- reads cohort.patient\nSELECT 'ref.window' AS x, '--' AS y "
           "FROM cohort.episode /* qa.quarantine */ JOIN ref.threshold USING (name)")
    assert sql_tables(sql) == {"cohort.episode", "ref.threshold"}


def test_every_builder_imports() -> None:
    for node in load_graph().nodes:
        if node.kind == "builder":
            assert callable(builder_function(node))


def test_a_builder_with_several_tables_is_one_step() -> None:
    steps = load_graph().steps("ref")
    assert len(steps) == 1 and len(steps[0]) == len(load_graph().stage("ref"))


@pytest.mark.parametrize(("text", "problem"), [
    (_graph(WINDOW), "reads cohort.episode, which no entry of cartfhir/build.yaml builds"),
    (_graph(EPISODE.replace("depends: []", "depends: [cohort.nothing]")),
     "depends on cohort.nothing, which no entry builds"),
    (_graph(WINDOW, EPISODE), "depends on cohort.episode, which is built later"),
    (_graph(EPISODE.replace("depends: []", "depends: [cohort.episode_window]"), WINDOW),
     "dependency cycle cohort.episode -> cohort.episode_window -> cohort.episode"),
    (_graph("{table: cohort.x, sql: transform/models/cohort/x.sql}"),
     "cartfhir/transform/models/cohort/x.sql does not exist"),
    (_graph("{table: cohort.x, builder: 'a:b'}"), "declares 'depends'"),
    (_graph("{table: cohort.x, sql: a.sql, view: b.json}"), "exactly one of"),
    (_graph("{table: cohort.x, sql: a.sql, after: y}"), "unknown key(s) after"),
    (_graph("{table: cohort.x, sql: ../a.sql}"), "stay inside it"),
    (_graph(EPISODE.replace("transform/models/cohort/episode.yml", "'../../x'")),
     "stay inside it"),
    (_graph(EPISODE.replace("transform/models/cohort/episode.yml", "../README.md")),
     "stay inside it"),  # a file that exists outside the package in a checkout
    (_graph(EPISODE.replace("transform/models/cohort/episode.yml", "/etc/hostname")),
     "stay inside it"),
    ("macros: ../README.md\n" + _graph(EPISODE), "stay inside it"),
    ("macros: [a]\n" + _graph(EPISODE), "stay inside it"),
    (_graph(EPISODE, WINDOW.replace("}", ", depends: [cohort.episode]}")), "declares depends"),
    (_graph(EPISODE, stage="later"), "stages must be some of"),
    ("stages:\n  cohort:\n    - " + EPISODE + "\n  ref:\n    - " + REF, "in that order"),
    (_graph(EPISODE, EPISODE), "cohort.episode is listed twice"),
])
def test_graph_mistakes_are_typed_errors(text: str, problem: str) -> None:
    with pytest.raises(GraphError) as caught:
        parse_graph(text)
    assert problem in str(caught.value)


def test_build_node_runs_sql_and_builders_and_names_the_file_on_failure() -> None:
    graph = parse_graph(_graph(EPISODE, WINDOW))
    con = duckdb.connect()
    con.execute("CREATE SCHEMA cohort")
    assert build_node(con, graph.node("cohort.episode"), BuildContext(extra={"rows": 3})) == 3
    with pytest.raises(TransformError, match=r"model cohort.episode_window \(cartfhir/transform/"
                                             r"models/cohort/episode_window.sql\) failed"):
        build_node(con, graph.node("cohort.episode_window"))

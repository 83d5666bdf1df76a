"""Sidecars are read strictly: a wrong key, type or grain is an error naming the file."""

from __future__ import annotations

import pytest

from cartfhir.catalog import load_sidecars, parse_sidecar, sidecars, table_columns, table_ddl
from cartfhir.errors import GraphError
from cartfhir.graph import load_graph

GOOD = """
table: s.t
description: what it is
grain: [a]
columns:
  - {name: a, type: text, description: the key}
  - {name: b, same_as: s.other, note: mg}
expectations:
  description: checks
  chunk_by: [a]
  rules:
    - {type: expect_column_values_to_not_be_null, kwargs: {column: a}, severity: error}
"""


def test_a_well_formed_sidecar_reads() -> None:
    sidecar = parse_sidecar(GOOD, "t.yml")
    assert sidecar.grain == ["a"] and sidecar.columns[1].same_as == "s.other"
    assert sidecar.expectations.rules[0].severity == "error"


@pytest.mark.parametrize(("change", "problem"), [
    (("description: what it is", "descriptoin: what it is"), "descriptoin"),
    (("type: text", "type: varchar"), "columns.0.type"),
    (("grain: [a]", "grain: [z]"), "grain column(s) z"),
    (("{name: b, same_as: s.other, note: mg}", "{name: b}"), "give a type"),
    (("severity: error", "severity: fatal"), "severity"),
    (("chunk_by: [a]", "chunk_by: [a]\n  limit: 3"), "limit"),
    (("- {name: b,", "- {name: a, type: text}\n  - {name: b,"), "listed twice"),
])
def test_mistakes_are_errors_naming_the_file_and_the_key(change, problem) -> None:
    with pytest.raises(GraphError, match="t.yml") as caught:
        parse_sidecar(GOOD.replace(*change), "t.yml")
    assert problem in str(caught.value)


def test_every_graph_table_has_its_sidecar() -> None:
    sidecars = load_sidecars()
    assert set(load_graph().tables) <= set(sidecars)
    for node in load_graph().nodes:
        assert sidecars[node.table][1].table == node.table


def test_ref_ddl_comes_from_the_sidecar_with_quoted_names() -> None:
    assert table_ddl("ref.window") == '"name" VARCHAR, "lo" INTEGER, "hi" INTEGER'
    assert '"offset" DOUBLE' in table_ddl("ref.unit")  # a keyword, quoted
    assert table_ddl("ref.concept_combination").endswith('"requires" VARCHAR[]')


def test_same_as_a_table_without_that_column_is_an_error_naming_both(
        monkeypatch: pytest.MonkeyPatch) -> None:
    other = parse_sidecar("table: s.other\ndescription: x\ngrain: [z]\n"
                          "columns:\n  - {name: z, type: text, description: z}\n", "o.yml")
    graph = {n.table: n for n in load_graph().nodes}
    fake = {"s.t": (graph["ref.window"], parse_sidecar(GOOD, "t.yml"), "t.yml"),
            "s.other": (graph["ref.window"], other, "o.yml")}
    monkeypatch.setattr(sidecars, "load_sidecars", lambda: fake)
    with pytest.raises(GraphError) as caught:
        table_columns("s.t")
    assert "s.t" in str(caught.value) and "s.other" in str(caught.value)
    assert "column b" in str(caught.value)

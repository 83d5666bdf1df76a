"""methods: what the report says about episodes the comparison leaves out and about the
grading and response definitions (read from the registry and the database, never restated)."""

from __future__ import annotations

import duckdb

from cartfhir.analyze import methods, registry


def _episodes(rounds: list[int]) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("CREATE SCHEMA cohort")
    con.execute("CREATE TABLE cohort.episode (site TEXT, patient_key TEXT, round BIGINT)")
    con.executemany("INSERT INTO cohort.episode VALUES ('a', ?, ?)",
                    [(f"p{i}", r) for i, r in enumerate(rounds)])
    return con


def test_episodes_after_the_second_round_are_counted_and_said() -> None:
    reg = registry.defaults()
    con = _episodes([1, 1, 2, 3, 3, 4])
    assert methods.later_episodes(con, reg) == 3
    sentence = methods.later_episodes_note(con, reg)
    assert "round ≥ 3" in sentence and "3" in sentence and "not compared" in sentence


def test_no_later_episodes_no_note() -> None:
    reg = registry.defaults()
    assert methods.later_episodes(_episodes([1, 2]), reg) == 0
    assert methods.later_episodes_note(_episodes([1, 2]), reg) == ""


def test_methods_tables_show_the_grading_scales_and_response_definitions() -> None:
    reg = registry.defaults()
    scales = methods.grading(reg).frame
    assert scales["grading scale"].str.contains("ASTCT 2019").any()
    assert scales["how the grade is obtained"].str.contains("as recorded").any()
    defined = methods.response(reg).frame.set_index("response")
    assert "0.01" in defined.loc["MRD-negative CR", "evaluated as"]
    assert "circulating blasts" in defined.loc["CR", "not evaluated"]

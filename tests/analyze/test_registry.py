"""The endpoint registry: labels and values rendered from the effective windows and thresholds."""

from __future__ import annotations

import duckdb
import pytest

from cartfhir.analyze import registry
from cartfhir.errors import ConfigError, DatabaseError

DEFAULT_WINDOWS = {"crs": (0, 30), "icans": (0, 30), "cytokine": (0, 14), "nadir": (0, 28),
                   "organ": (0, 30), "early_infection": (0, 30), "late_infection": (31, 90),
                   "febrile_neutropenia": (0, 30), "response": (0, 90),
                   "count_dynamics": (0, 30)}
DEFAULT_THRESHOLDS = {"severe_min_grade": 3.0, "organ_injury_min_grade": 2.0,
                      "post_event_round": 2.0, "blast_cr_below": 5.0, "cr_anc_min": 1.0,
                      "cr_platelets_min": 100.0, "count_lookback_days": 3.0,
                      "mrd_negative_below": 0.01}


def _render(**changes) -> registry.Registry:
    windows = {**DEFAULT_WINDOWS, **changes.get("windows", {})}
    thresholds = {**DEFAULT_THRESHOLDS, **changes.get("thresholds", {})}
    return registry.render(registry.load(), windows, thresholds)


def _labels(reg: registry.Registry) -> dict[str, str]:
    return {e.key: e.label for e in reg.endpoints}


def test_labels_follow_the_windows_and_thresholds() -> None:
    default = _labels(_render())
    assert default["early_infection"] == "Early infection (days 0-30)"
    assert default["severe_neutropenia"] == "Severe neutropenia (CTCAE >= 3)"
    assert default["crs_grade3plus"] == "CRS grade >= 3"
    changed = _labels(_render(windows={"early_infection": (0, 21)},
                              thresholds={"severe_min_grade": 4.0}))
    assert changed["early_infection"] == "Early infection (days 0-21)"
    assert changed["severe_neutropenia"] == "Severe neutropenia (CTCAE >= 4)"
    assert changed["crs_grade3plus"] == "CRS grade >= 4"  # the key stays, the words follow


def test_the_count_figure_names_its_window_and_the_nadir_window() -> None:
    """The plotted days and the nadirs' days differ; the title says both, from the data."""
    titles = {f.key: f.title for f in _render(windows={"nadir": (0, 21)}).figures}
    assert "days 0-30" in titles["count_dynamics"]
    assert "nadirs in the table are over days 0-21" in titles["count_dynamics"]


def test_values_take_their_thresholds_from_the_database() -> None:
    values = {e.key: e.value for e in _render(thresholds={"severe_min_grade": 4.0,
                                                          "organ_injury_min_grade": 1.0}
                                              ).endpoints}
    assert values["crs_grade3plus"] == "crs_max_grade >= 4"
    assert values["liver_injury"] == "liver_injury_grade >= 1"


def test_the_rounds_compared_come_from_post_event_round() -> None:
    assert _render().rounds == (1, 2)
    assert _render(thresholds={"post_event_round": 3.0}).rounds == (1, 3)


def test_an_unknown_window_or_threshold_in_a_template_is_an_error() -> None:
    raw = registry.load()
    broken = {**raw, "endpoints": [{**raw["endpoints"][0], "label": "x {window.no_such}"}]}
    with pytest.raises(ConfigError, match="no_such"):
        registry.render(broken, DEFAULT_WINDOWS, DEFAULT_THRESHOLDS)
    broken = {**raw, "endpoints": [{**raw["endpoints"][0], "value": "{threshold.typo} > 1"}]}
    with pytest.raises(ConfigError, match="typo"):
        registry.render(broken, DEFAULT_WINDOWS, DEFAULT_THRESHOLDS)


def test_the_flags_replace_the_lists_in_python() -> None:
    reg = _render()
    assert [e.key for e in reg.headline] == ["crs_any", "cres_any", "il17a_peak",
                                             "early_infection", "late_infection",
                                             "severe_neutropenia", "mrd_negative_cr"]
    assert [e.key for e in reg.heterogeneity] == ["crs_any", "cres_any", "early_infection",
                                                  "late_infection", "severe_neutropenia", "cr",
                                                  "mrd_negative_cr"]
    assert all(e.kind == "proportion" for e in reg.heterogeneity)
    assert [e.concept for e in reg.in_figure("count_dynamics")] == ["anc", "platelets",
                                                                    "hemoglobin"]
    assert {f.section for f in reg.figures} <= set(reg.sections)
    digits = {e.key: e.digits for e in reg.endpoints}  # the report's decimals, as data
    assert (digits["anc_nadir"], digits["crs_grade"], digits["il6_peak"]) == (2, 0, 1)
    assert {e.section for e in reg.endpoints} <= set(reg.sections)


def test_every_template_name_exists_in_the_study_defaults() -> None:
    """The registry names only windows and thresholds that study_defaults.yaml defines."""
    from importlib import resources

    import yaml

    defaults = yaml.safe_load(resources.files("cartfhir.transform").joinpath(
        "study_defaults.yaml").read_text("utf-8"))
    windows = {k: tuple(v) for k, v in defaults["windows"].items()}
    registry.render(registry.load(), windows, defaults["thresholds"])  # raises on a typo


def test_the_paper_definition_breaks_ties_as_ref_post_event() -> None:
    """Same-day events go to the one listed first; the paper's order is ref.post_event's."""
    import csv
    from importlib import resources

    text = resources.files("cartfhir.transform").joinpath(
        "terminology/post_events.csv").read_text("utf-8")
    by_priority = [r["event"] for r in sorted(csv.DictReader(text.splitlines()),
                                              key=lambda r: int(r["priority"]))]
    paper = next(d for d in _render().efs if d.name == "paper")
    assert [e.type for e in paper.events] == by_priority


def test_effective_reads_ref_and_writes_analysis_endpoint() -> None:
    con = duckdb.connect()
    with pytest.raises(DatabaseError, match="cartfhir transform"):
        registry.effective(con)
    con.execute("CREATE SCHEMA ref")
    con.execute("CREATE TABLE ref.window (name VARCHAR, lo INTEGER, hi INTEGER)")
    con.execute("CREATE TABLE ref.threshold (name VARCHAR, value DOUBLE)")
    con.executemany("INSERT INTO ref.window VALUES (?, ?, ?)",
                    [(k, lo, hi) for k, (lo, hi) in
                     {**DEFAULT_WINDOWS, "early_infection": (0, 21)}.items()])
    con.executemany("INSERT INTO ref.threshold VALUES (?, ?)",
                    list({**DEFAULT_THRESHOLDS, "severe_min_grade": 4.0}.items()))
    assert registry.build_endpoint(con) == len(registry.load()["endpoints"])
    rows = dict(con.execute("SELECT key, label FROM analysis.endpoint").fetchall())
    assert rows["early_infection"] == "Early infection (days 0-21)"
    assert rows["severe_anemia"] == "Severe anemia (CTCAE >= 4)"
    assert con.execute("SELECT list(key ORDER BY position) FROM analysis.endpoint "
                       "WHERE headline").fetchone()[0][0] == "crs_any"


@pytest.mark.parametrize("thresholds", [{"post_event_round": 2.5}, {"severe_min_grade": 3.5},
                                        {"severe_min_grade": float("inf")},
                                        {"organ_injury_min_grade": float("nan")},
                                        {"organ_injury_min_grade": None}])
def test_a_threshold_unfit_for_sql_is_a_config_error(thresholds) -> None:
    name = next(iter(thresholds))
    with pytest.raises(ConfigError, match=f"{name}.*cartfhir transform"):
        _render(thresholds=thresholds)


@pytest.mark.parametrize("bad", [("post_event_round", 2.5), ("organ_injury_min_grade", None),
                                 ("severe_min_grade", float("inf"))])
def test_a_database_with_an_unfit_threshold_is_a_config_error(bad) -> None:
    con = duckdb.connect()
    con.execute("CREATE SCHEMA ref")
    con.execute("CREATE TABLE ref.window (name VARCHAR, lo INTEGER, hi INTEGER)")
    con.execute("CREATE TABLE ref.threshold (name VARCHAR, value DOUBLE)")
    con.executemany("INSERT INTO ref.window VALUES (?, ?, ?)",
                    [(k, lo, hi) for k, (lo, hi) in DEFAULT_WINDOWS.items()])
    con.executemany("INSERT INTO ref.threshold VALUES (?, ?)",
                    list({**DEFAULT_THRESHOLDS, bad[0]: bad[1]}.items()))
    with pytest.raises(ConfigError, match=bad[0]):
        registry.build_endpoint(con)


def test_a_name_the_database_lacks_says_to_rebuild_it_not_to_edit_the_package() -> None:
    thresholds = {k: v for k, v in DEFAULT_THRESHOLDS.items() if k != "severe_min_grade"}
    with pytest.raises(ConfigError, match="cartfhir transform") as info:
        registry.render(registry.load(), DEFAULT_WINDOWS, thresholds)
    assert "study_defaults.yaml" not in str(info.value)


def test_only_endpoints_where_pairing_makes_sense_are_paired() -> None:
    # age always grows between a patient's rounds: a paired test of it says nothing
    unpaired = {e.key for e in _render().endpoints if not e.paired}
    assert unpaired == {"age"}


@pytest.mark.parametrize("value", ["no", 0, None])
def test_paired_must_be_a_flag(value) -> None:
    raw = registry.load()
    raw["endpoints"][0]["paired"] = value
    with pytest.raises(ConfigError, match="paired"):
        registry.render(raw, DEFAULT_WINDOWS, DEFAULT_THRESHOLDS)


def test_every_efs_event_has_one_label() -> None:
    reg = _render()
    types = {e.type for d in reg.efs for e in d.events}
    assert types <= set(reg.efs_labels) and reg.efs_labels["hsct"] == "HSCT"
    raw = registry.load()
    del raw["efs_labels"]["hsct"]
    with pytest.raises(ConfigError, match="hsct"):
        registry.render(raw, DEFAULT_WINDOWS, DEFAULT_THRESHOLDS)


def test_grading_and_response_definitions_are_data_with_thresholds_from_the_database() -> None:
    reg = _render(thresholds={"mrd_negative_below": 0.001, "blast_cr_below": 4.0})
    scales = " ".join(g.scale for g in reg.grading)
    assert "ASTCT" in scales and "CARTOX" in scales and "CAPD" in scales and "ICE" in scales
    assert all(g.how for g in reg.grading)  # how the grade is taken (as recorded, ...)
    response = {r.name: r for r in reg.response}
    assert {"CR", "CRi", "NR", "MRD-negative CR"} <= set(response)
    assert "0.001" in response["MRD-negative CR"].definition  # from ref.threshold
    assert "0.01" not in response["MRD-negative CR"].definition
    assert "4" in response["CR"].definition
    assert "circulating blasts" in response["CR"].not_evaluated


@pytest.mark.parametrize("block", ["grading", "response"])
def test_a_grading_or_response_entry_without_its_fields_is_refused(block) -> None:
    raw = registry.load()
    raw[block][0] = {"name": "x"}
    with pytest.raises(ConfigError, match=block):
        registry.render(raw, DEFAULT_WINDOWS, DEFAULT_THRESHOLDS)

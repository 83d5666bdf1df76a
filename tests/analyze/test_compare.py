"""compare_endpoint: the paired test only where the registry says pairing makes sense."""

from __future__ import annotations

import dataclasses

import pandas as pd

from cartfhir.analyze import registry
from cartfhir.analyze.compare import comparison


def test_an_unpaired_endpoint_gets_no_paired_test_but_keeps_its_unpaired_one() -> None:
    age = next(e for e in registry.defaults().endpoints if e.key == "age")
    paired_age = dataclasses.replace(age, key="age_paired", paired=True)
    frame = pd.DataFrame({"site": ["s"] * 8, "patient_key": [f"p{i}" for i in range(4)] * 2,
                          "round": [1] * 4 + [2] * 4,
                          "age": [5.0, 7.0, 9.0, 11.0, 6.0, 8.5, 10.0, 12.5]})
    frame["age_paired"] = frame["age"]
    table = comparison(frame, [age, paired_age], (1, 2)).set_index(["site", "endpoint"])
    row, control = table.loc[("all", "age")], table.loc[("all", "age_paired")]
    assert pd.isna(row["paired_test"]) and pd.isna(row["paired_p_value"])
    assert control["paired_test"] == "wilcoxon_signed_rank_approx"
    assert not pd.isna(control["paired_p_value"])
    assert row["test"] == control["test"] and row["p_value"] == control["p_value"]
    assert row["n_pairs"] == 4

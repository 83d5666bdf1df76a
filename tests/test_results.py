"""cartfhir/results.py: any stage result as plain JSON, whatever fields it grows."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from cartfhir.analyze import AnalysisResult
from cartfhir.results import ResultDict


@dataclass
class _Result(ResultDict):
    path: Path
    frame: pd.DataFrame
    nested: AnalysisResult
    pairs: dict[str, tuple[int, float]] = field(default_factory=dict)
    _private: str = "hidden"
    status = "partial"
    _derived = ("total",)

    def total(self) -> int:
        return sum(n for n, _ in self.pairs.values())


def test_to_dict_is_json_with_status_first_paths_as_text_and_frames_as_records() -> None:
    result = _Result(path=Path("out/report.html"),
                     frame=pd.DataFrame({"site": ["a", "b"], "p": [0.5, math.nan]}),
                     nested=AnalysisResult(run_id="r1", report=Path("out/r.html")),
                     pairs={"cohort.episode": (3, 0.25)})
    out = result.to_dict()
    assert list(out)[0] == "status" and out["status"] == "partial"
    assert out["path"] == "out/report.html"
    assert out["frame"] == [{"site": "a", "p": 0.5}, {"site": "b", "p": None}]
    assert out["nested"]["status"] == "success" and out["nested"]["report"] == "out/r.html"
    assert out["pairs"] == {"cohort.episode": [3, 0.25]} and out["total"] == 3
    assert "_private" not in out
    assert json.loads(json.dumps(out, allow_nan=False)) == out

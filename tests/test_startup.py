"""Start-up: importing the command line must not import the heavy libraries.

Every ``cartfhir`` command, ``--version`` and ``--help`` included, imports ``cartfhir.cli``
and through it ``cartfhir.api``. scipy, statsmodels and matplotlib (the analysis), pandas
and fhir.resources (the stages), pyspark and great_expectations once cost each command
~1.5 s before it did anything; they are imported where they are used. The check is on
the set of imported modules, not on time, so it holds on a busy machine.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

ANALYSIS = ("scipy", "statsmodels", "matplotlib")
OPTIONAL = ("pyspark", "great_expectations")
STAGES = ("pandas", "numpy", "fhir")  # what extract, transform and validate need


def imported(*modules: str) -> set[str]:
    """The top-level packages loaded after importing ``modules`` in a fresh interpreter."""
    code = ("import json, sys\n" + "".join(f"import {m}\n" for m in modules)
            + "print(json.dumps(sorted({name.split('.')[0] for name in sys.modules})))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, timeout=120)
    return set(json.loads(done.stdout))


@pytest.mark.parametrize("module", ["cartfhir.cli", "cartfhir.api", "cartfhir.__main__"])
def test_the_command_line_imports_no_heavy_library(module: str) -> None:
    loaded = imported(module)
    assert loaded.isdisjoint(ANALYSIS + OPTIONAL + STAGES), loaded & set(
        ANALYSIS + OPTIONAL + STAGES)


@pytest.mark.parametrize("stage", ["cartfhir.extract", "cartfhir.transform",
                                   "cartfhir.transform.views", "cartfhir.expectations",
                                   "cartfhir.analyze", "cartfhir.analyze.registry",
                                   "cartfhir.preflight"])
def test_a_stage_imports_no_analysis_library(stage: str) -> None:
    """``cartfhir extract`` or ``transform`` need pandas, not scipy or matplotlib; the
    analysis package loads them in ``analyze()``."""
    loaded = imported("cartfhir.api", stage)
    assert loaded.isdisjoint(ANALYSIS + OPTIONAL), loaded & set(ANALYSIS + OPTIONAL)


def test_the_api_still_re_exports_the_stage_names() -> None:
    """The names ``cartfhir.api`` re-exports load on first use, as they were before."""
    from cartfhir import api
    from cartfhir.analyze import AnalysisResult
    from cartfhir.multisite.pool import pool

    assert api.AnalysisResult is AnalysisResult
    assert api.pool is pool
    assert all(hasattr(api, name) for name in api.__all__)
    with pytest.raises(AttributeError):
        api.no_such_name  # noqa: B018

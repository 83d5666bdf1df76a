"""The demo as `make demo` runs it: the example config.yaml, its maps, the demo's defaults."""

from __future__ import annotations

import shutil
from pathlib import Path

from cartfhir import api
from cartfhir.config import load_config
from tests.transform.truth import quarantined_for_spelling

ROOT = Path(__file__).resolve().parents[1]


def test_the_demo_quarantines_no_record_for_how_it_is_written(tmp_path: Path) -> None:
    """What the demo's qa.quarantine holds is what its sites get wrong on purpose (no unit,
    a thousand-fold count, a retraction), never a unit spelling or a text result it could
    read."""
    text = (ROOT / "config.yaml").read_text(encoding="utf-8")
    # checked in this process rather than a pool of them: a test shares its machine
    (tmp_path / "config.yaml").write_text(text.replace("workers: auto", "workers: 0", 1),
                                          encoding="utf-8")
    shutil.copytree(ROOT / "maps", tmp_path / "maps")
    config = load_config(tmp_path / "config.yaml")
    assert config.landing.workers == 0
    api.demo(config)
    assert not quarantined_for_spelling(config)

"""Site coding profiles: how one synthetic hospital codes and measures things.

A profile is a YAML file under ``synth/site_profiles`` (data, not code): code
systems, local codes and display text per concept, units with their factor
from the canonical unit, how comparators and CRS/ICANS grades are recorded.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any

import yaml

from cartfhir.errors import UsageError

PROFILE_PACKAGE = "cartfhir.synth.site_profiles"
REQUIRED_KEYS = ("id", "name", "timezone", "names", "mrn_system", "unit_style",
                 "comparator_style", "grade_style", "observations", "conditions",
                 "procedures", "texts", "body_sites")
# How dateTimes are written: in the site's local time with its offset, or in UTC ('Z').
TIMESTAMP_STYLES = ("local", "utc")


def available_profiles() -> list[str]:
    folder = resources.files(PROFILE_PACKAGE)
    return sorted(p.name.removesuffix(".yaml") for p in folder.iterdir()
                  if p.name.endswith(".yaml"))


@cache
def load_profile(name: str) -> dict[str, Any]:
    if name not in available_profiles():
        raise UsageError(
            f"no synthetic site profile {name!r}; choose from {', '.join(available_profiles())}"
        )
    text = resources.files(PROFILE_PACKAGE).joinpath(f"{name}.yaml").read_text("utf-8")
    profile = yaml.safe_load(text)
    missing = [k for k in REQUIRED_KEYS if k not in profile]
    if missing:
        raise UsageError(f"synthetic profile {name} lacks keys: {', '.join(missing)}")
    if profile.get("timestamps", "local") not in TIMESTAMP_STYLES:
        raise UsageError(f"synthetic profile {name}: timestamps must be one of "
                         f"{', '.join(TIMESTAMP_STYLES)}")
    return profile


def to_site_unit(spec: dict[str, Any], canonical: float) -> float:
    """Convert a canonical value to the site's unit and round as the site reports it."""
    if spec.get("fahrenheit"):
        value = canonical * 9 / 5 + 32
    elif "divisor" in spec:
        value = canonical / spec["divisor"]
    else:
        value = canonical * spec.get("factor", 1)
    return round(value, spec["decimals"])


def to_canonical(spec: dict[str, Any], reported: float) -> float:
    """Inverse of ``to_site_unit`` (without rounding): what the site's value means."""
    if spec.get("fahrenheit"):
        return (reported - 32) * 5 / 9
    if "divisor" in spec:
        return reported * spec["divisor"]
    return reported / spec.get("factor", 1)

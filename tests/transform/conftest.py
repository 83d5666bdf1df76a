"""Shared set-up for transform tests: a site config, landing and transforming."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from cartfhir.config import Config, parse_config

SECRET = "0123456789abcdef0123456789abcdef"


def make_config(root: Path, sites: list[str], **extra: Any) -> Config:
    """A config with NDJSON sites under root/data/<site> and key files under root/secrets."""
    return parse_config(config_dict(root, sites, **extra), base_dir=root)


def write_config(root: Path, sites: list[str], **extra: Any) -> Path:
    """``make_config``'s config as root/config.yaml, for tests that run the CLI on a file."""
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(config_dict(root, sites, **extra)), encoding="utf-8")
    return path


def config_dict(root: Path, sites: list[str], **extra: Any) -> dict[str, Any]:
    """The config as data (site entries updated from ``extra[site]``); writes the key files."""
    (root / "secrets").mkdir(parents=True, exist_ok=True)
    site_list = []
    for site in sites:
        (root / "secrets" / f"{site}.key").write_text(f"{SECRET}-{site}\n")
        entry: dict[str, Any] = {"id": site, "source": {"kind": "ndjson",
                                                      "path": f"data/{site}"},
                                 "pseudonym_key": {"file": f"secrets/{site}.key"}}
        entry.update(extra.pop(site, {}))
        site_list.append(entry)
    return {"study": {"name": "test"}, "sites": site_list, "output": {"duckdb": "out/t.duckdb"},
            "landing": {"workers": 0}, **extra}

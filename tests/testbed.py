"""The test bed's one builder of site configs: as data, as a ``Config``, as a config file.

A site defaults to NDJSON under ``root/<data>/<site>`` with a pseudonym key file under
``root/secrets``; ``ndjson_source``/``fhir_source``/``bulk_source`` give other sources, passed
as ``<site>={"source": ...}``; any other keyword replaces that top-level config section.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from cartfhir.config import Config, parse_config

SECRET = "0123456789abcdef0123456789abcdef"


def ndjson_source(path: str | Path) -> dict[str, Any]:
    """An NDJSON folder source (relative paths are from the config's folder)."""
    return {"kind": "ndjson", "path": str(path)}


def fhir_source(base_url: str, **fields: Any) -> dict[str, Any]:
    """A FHIR REST source at base_url; fields are the rest of the source (cohort, paging…)."""
    return {"kind": "fhir", "base_url": base_url, **fields}


def bulk_source(base_url: str, **fields: Any) -> dict[str, Any]:
    """A Bulk Data ($export) source at base_url; fields are the rest of the source."""
    return {"kind": "bulk", "base_url": base_url, **fields}


def config_dict(root: Path, sites: list[str] | tuple[str, ...], *, data: str = "data",
                write_keys: bool = True, **extra: Any) -> dict[str, Any]:
    """The config as data: each site's entry is updated from ``extra[site]``; the other
    ``extra`` keys replace sections (study, output, landing…). The key files
    root/secrets/<site>.key are written unless write_keys is false (a test that has them made)."""
    if write_keys:
        (root / "secrets").mkdir(parents=True, exist_ok=True)
    site_list = []
    for site in sites:
        if write_keys:
            (root / "secrets" / f"{site}.key").write_text(f"{SECRET}-{site}\n")
        entry: dict[str, Any] = {"id": site, "source": ndjson_source(f"{data}/{site}"),
                                 "pseudonym_key": {"file": f"secrets/{site}.key"}}
        entry.update(extra.pop(site, {}))
        site_list.append(entry)
    return {"study": {"name": "test"}, "sites": site_list, "output": {"duckdb": "out/t.duckdb"},
            "landing": {"workers": 0}, **extra}


def make_config(root: Path, sites: list[str] | tuple[str, ...], **extra: Any) -> Config:
    """``config_dict``'s config, parsed with root as the config's folder."""
    return parse_config(config_dict(root, sites, **extra), base_dir=root)


def write_config(root: Path, sites: list[str] | tuple[str, ...], **extra: Any) -> Path:
    """``config_dict``'s config as root/config.yaml, for tests that run the CLI on a file."""
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(config_dict(root, sites, **extra)), encoding="utf-8")
    return path


def transformed_store(root: Path, sites: list[str], *, patients: int, seed: int,
                      bad_rate: float, extra: dict[str, list[dict[str, Any]]] | None = None,
                      **site_config: Any) -> Path:
    """The DuckDB store of a synthetic cohort under ``root``, extracted and transformed:
    the reference side the Spark tests compare with. ``extra`` adds resources to a site
    (``{site: [resource, ...]}``) for cases the generator does not make; ``site_config``
    as ``make_config``'s (``site_b={"timezone": ...}``)."""
    import json

    from cartfhir.api import extract, transform
    from cartfhir.synth import generate

    generate(root / "data", patients=patients, seed=seed, sites=sites, bad_rate=bad_rate)
    for site, resources in (extra or {}).items():
        (root / "data" / site / "extra.ndjson").write_text(
            "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in resources),
            encoding="utf-8")
    config = make_config(root, sites, **site_config)
    extract(config)
    transform(config)
    return Path(config.output.duckdb)

"""``cartfhir init``: a commented starting config for one site, and that site's keys.

A new site should not have to read the schema to write its first config. The
template names every key a site usually sets, with a comment saying what it does;
secrets appear only as ``{env: NAME}`` / ``{file: path}``. The keys are made here
too, so the first ``cartfhir check`` has nothing to complain about but the paths
and the server: a random pseudonym key (mode 600) and an Ed25519 signing key pair
(``cartfhir keygen``). Nothing that exists is replaced: the config only with
``force``, a key never.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from string import Template

import yaml

from cartfhir.config import SOURCE_KINDS, parse_config, site_id_problem
from cartfhir.errors import UsageError
from cartfhir.multisite.signing import generate_keypair

__all__ = ["InitResult", "render_config", "write_config"]

PSEUDONYM_KEY = "secrets/{site}.key"
SIGNING_KEYS = "keys"  # generate_keypair writes keys/<site>.key and keys/<site>.pub

_HEAD = """\
# cartfhir config, written by `cartfhir init --kind $kind`. Edit what is marked, then:
#   cartfhir check --config $config     (files, secrets, output, server: one line each)
#   cartfhir run --config $config       (extract, transform, validate, analyze)
# Relative paths resolve against this file's folder. Secrets are never values in this
# file: each names an environment variable ({env: NAME}) or a file ({file: path}).

study:
  name: my-cart-study                # short name of the study, shown in reports
  description: >-                    # optional
    CART1 versus CART2 toxicity, response and events after CART2.

sites:
  - id: $site                       # short slug, unique; becomes the `site` column
    name: My hospital                # optional display name
    source:
"""

_SOURCES = {
    "ndjson": """\
      kind: ndjson                   # a folder of FHIR NDJSON files (e.g. a bulk export)
      path: data/$site              # *.ndjson / *.ndjson.gz files, any names, any depth
""",
    "fhir": """\
      kind: fhir                     # FHIR REST search
      base_url: https://fhir.example.org/fhir   # EDIT: the FHIR base ([base]/metadata answers)
      auth:                          # kind: none | bearer | basic | smart
        kind: smart                  # SMART Backend Services: a signed JWT for a token
        client_id: cartfhir          # EDIT: the client id registered at the server
        private_key: {file: secrets/${site}_client.pem}   # EDIT: the client's PEM private key
        algorithm: RS384             # RS384 (RSA key) or ES384 (EC P-384 key)
        scope: system/*.rs           # what the token may read
      # auth: {kind: bearer, token: {env: $env_token}}   # a static token instead
      http:
        timeout: 60                  # seconds per request
        max_retries: 8               # connection errors, timeouts, 429, 502, 503, 504
        # tls: {ca_bundle: certs/hospital-ca.pem}   # when the server's CA is the hospital's
      cohort:                        # exactly one of group_id, patient_ids_file, search
        search: ["Condition?code=http://hl7.org/fhir/sid/icd-10-cm|C91.02"]   # B-ALL in relapse
      # resources: the default pulls Patient, Condition, Procedure,
      # MedicationAdministration and Observation (lab, vitals, survey, procedure, exam)
""",
    "bulk": """\
      kind: bulk                     # Bulk Data $$export
      base_url: https://fhir.example.org/fhir   # EDIT: the FHIR base
      auth:                          # kind: none | bearer | basic | smart
        kind: bearer                 # a static token (e.g. from the hospital's API gateway)
        token: {env: $env_token}     # export this variable before every run
      level: group                   # system | patient | group
      group_id: cart-cohort          # EDIT: the Group of the cohort (level group only)
      max_wait: 21600                # seconds to wait for the export to finish
""",
}

_TAIL = """\
    # patient_key = HMAC-SHA256(this secret, site/patient id). Keep it at the site and
    # never share it; `cartfhir init` wrote a random one, readable by you only.
    pseudonym_key: {file: $pseudonym_key}
    # Ed25519 private key that signs this site's packages (`cartfhir export-site`);
    # give $public_key to the coordinating center.
    signing_key: {file: $signing_key}
    # concept_maps: [maps/${site}_lab.csv]     # local codes -> study concepts (CSV or ConceptMap)
    # text_patterns: [maps/${site}_text.csv]   # local display texts -> study concepts
    # unit_maps: [maps/${site}_units.csv]      # unit spellings units.csv does not know
    # timezone: Asia/Shanghai                  # IANA zone; needed when the server sends UTC

output:
  duckdb: out/cartfhir.duckdb        # the one database every stage reads and writes
  dir: out                           # reports and exports
  memory_limit: 512MB                # DuckDB's memory cap; it spills to disk beyond it

# transform:                         # study definitions; the defaults are the study's
#   windows: {cytokine: [0, 28]}     # [first day, last day] relative to the infusion day
#   thresholds: {severe_min_grade: 3}

landing:
  strict: false                      # true: exit 1 when any input line is rejected
  validation: full                   # full (FHIR R4B definitions) | structural (faster)
  workers: auto                      # processes checking lines: auto | 0 | N
"""


@dataclass
class InitResult:
    """The config written, and each key file made or kept as it was."""

    config: Path
    created: list[Path] = field(default_factory=list)
    kept: list[Path] = field(default_factory=list)


def render_config(kind: str, site: str, config_name: str = "config.yaml") -> str:
    """The commented config text for one site with a ``kind`` source; always valid."""
    if kind not in SOURCE_KINDS:
        raise UsageError(f"--kind must be one of {', '.join(SOURCE_KINDS)}, not {kind!r}")
    problem = site_id_problem(site)
    if problem:
        raise UsageError(f"site id {site!r} is not valid: {problem}")
    values = {"kind": kind, "site": site, "config": config_name,
              "env_token": f"{site.upper()}_FHIR_TOKEN",
              "pseudonym_key": PSEUDONYM_KEY.format(site=site),
              "signing_key": f"{SIGNING_KEYS}/{site}.key",
              "public_key": f"{SIGNING_KEYS}/{site}.pub"}
    text = Template(_HEAD + _SOURCES[kind] + _TAIL).substitute(values)
    parse_config(yaml.safe_load(text), base_dir=Path("."))  # a template bug fails here, not later
    return text


def write_config(kind: str, out: Path, site: str = "site_a", *,
                 force: bool = False) -> InitResult:
    """Write the config to ``out`` and make the site's keys next to it.

    Every target is looked at before anything is written, so a refusal leaves no
    half-made site behind. Raises UsageError when ``out`` exists (unless ``force``),
    when any target or key folder is a symbolic link (dangling or not: never
    followed, whatever ``force`` says) or not the kind of file it should be, or when
    only one half of the signing key pair exists. Existing key files are kept.
    """
    out = Path(out)
    text = render_config(kind, site, out.name)
    base = out.parent
    pseudonym = base / PSEUDONYM_KEY.format(site=site)
    private = base / SIGNING_KEYS / f"{site}.key"
    public = base / SIGNING_KEYS / f"{site}.pub"
    _refuse_links(out, pseudonym.parent, pseudonym, private.parent, private, public)
    if out.is_dir():
        raise UsageError(f"{out} is a folder; --out names the config file to write")
    if out.exists() and not force:
        raise UsageError(f"{out} already exists; pass --force to replace it (keys are "
                         "never replaced), or --out to write elsewhere")
    for folder in (pseudonym.parent, private.parent):
        if folder.exists() and not folder.is_dir():
            raise UsageError(f"{folder} is not a folder; move it away, then run init again")
    for key in (pseudonym, private, public):
        if key.exists() and not key.is_file():
            raise UsageError(f"{key} is not a file; move it away, then run init again")
    if private.exists() != public.exists():
        half = private if private.exists() else public
        raise UsageError(f"{half} exists without its other half; keys are never replaced: "
                         "move it away (or put the matching key next to it), then run init "
                         "again")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    result = InitResult(config=out)
    _pseudonym_key(pseudonym, result)
    if private.exists():
        result.kept += [private, public]
    else:
        pair = generate_keypair(site, base / SIGNING_KEYS)  # refuses to replace either half
        result.created += [pair.private, pair.public]
    return result


def _refuse_links(*paths: Path) -> None:
    """UsageError naming the first path that is a symbolic link: init writes only real
    files in real folders, so a link cannot send a key or the config somewhere else."""
    for path in paths:
        if path.is_symlink():
            raise UsageError(f"{path} is a symbolic link; init never follows one (nothing "
                             "was written). Remove it, or choose another --out folder")


def _pseudonym_key(path: Path, result: InitResult) -> None:
    """A random 256-bit key, created with mode 600 from the start; an existing one is kept."""
    if path.exists():
        result.kept.append(path)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(secrets.token_hex(32) + "\n")
    result.created.append(path)

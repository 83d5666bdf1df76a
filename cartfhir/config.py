"""The config file: one pydantic model loaded from YAML.

Relative paths resolve against the config file's folder, so a config can be
run from anywhere. Secrets are never values in the file, only references to an
environment variable or a file (``SecretRef``); their values never reach a
repr, a log line or the database.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import zoneinfo
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    HttpUrl,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from cartfhir.errors import ConfigError, SecretError
from cartfhir.redact import register as register_secret
from cartfhir.spark.session import FIXED_CONF as SPARK_FIXED_CONF
from cartfhir.spark.session import FIXED_PREFIXES as SPARK_FIXED_PREFIXES

DEFAULT_CONFIG = Path("config.yaml")
SITE_ID_PATTERN = r"^[a-z][a-z0-9_]{0,31}$"
# The site of the pooled rows of every site in the analysis tables (site = 'all'); so no
# site may be called that.
POOLED_SITE = "all"
RESERVED_SITE_IDS = frozenset({POOLED_SITE})


def site_id_problem(value: str) -> str | None:
    """Why ``value`` cannot be a site id, or None: the one rule for config, keys and
    manifests (matched whole: ``re.match``'s ``$`` would let a trailing newline through)."""
    if not re.fullmatch(SITE_ID_PATTERN, value):
        return "lower-case letters, digits and _, starting with a letter, at most 32"
    if value in RESERVED_SITE_IDS:
        return f"{value!r} is reserved (it names the pooled rows of all sites)"
    return None


def _resolve_path(value: Path, info: ValidationInfo) -> Path:
    """Make a relative path absolute against the config file's folder."""
    base = (info.context or {}).get("base_dir")
    value = value.expanduser()
    if not value.is_absolute() and base is not None:
        value = Path(base) / value
    return Path(os.path.normpath(value))


ConfigPath = Annotated[Path, AfterValidator(_resolve_path)]


def _site_id(value: str) -> str:
    problem = site_id_problem(value)
    if problem:
        raise ValueError(problem)
    return value


# A site id wherever one is read (config, package manifest): the pattern, then the whole rule.
SiteId = Annotated[str, Field(pattern=SITE_ID_PATTERN), AfterValidator(_site_id)]


@cache
def _time_zones() -> frozenset[str]:
    """The IANA zone names this host knows (tzdata), without the host's own 'localtime'."""
    return frozenset(zoneinfo.available_timezones()) - {"localtime", "posixrules"}


# The areas of IANA zones that name a place (tzdata's own regions); 'Etc/GMT+8' (UTC-8 by
# POSIX's reversed sign), 'EST', 'US/Eastern', 'UTC' or 'Factory' name none.
PLACE_AREAS = ("Africa", "America", "Antarctica", "Arctic", "Asia", "Atlantic", "Australia",
               "Europe", "Indian", "Pacific")


def _time_zone(value: str) -> str:
    """An IANA zone name of a place, spelled exactly: a fixed offset ('+08:00', 'Etc/GMT-8',
    'EST') would miss daylight saving, and the name reaches both engines' zone databases
    as written."""
    if value not in _time_zones():
        raise ValueError(f"unknown time zone {value!r}: give an IANA name such as "
                         "'Asia/Shanghai' or 'America/New_York' (case matters)")
    if value.split("/", 1)[0] not in PLACE_AREAS or "/" not in value:
        raise ValueError(f"{value!r} names no place: give the IANA zone of the hospital's "
                         "city, such as 'Asia/Shanghai' or 'Europe/London' ('Etc/GMT+8' is "
                         "UTC-8, and fixed offsets or abbreviations miss daylight saving)")
    return value


TimeZoneName = Annotated[str, AfterValidator(_time_zone)]


class _Model(BaseModel):
    """Strict base: unknown keys are errors, so typos do not pass silently."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class SecretRef(_Model):
    """Where a secret lives: exactly one of an environment variable or a file.

    ``resolve()`` reads it at the moment it is needed; the value is never kept
    on the model and never printed.
    """

    env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    file: ConfigPath | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> SecretRef:
        if (self.env is None) == (self.file is None):
            raise ValueError("give exactly one of 'env' (a variable name) or 'file' (a path)")
        return self

    def describe(self) -> str:
        """Where the secret comes from, safe to show in messages."""
        return f"env var {self.env}" if self.env else f"file {self.file}"

    def resolve(self) -> str:
        """The secret's value, registered with ``cartfhir.redact`` so no message shows it."""
        if self.env:
            value = os.environ.get(self.env)
            if not value:
                raise SecretError(
                    f"environment variable {self.env} is not set or empty; "
                    "export it before running cartfhir"
                )
            register_secret(value)
            return value
        assert self.file is not None
        try:
            value = self.file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise SecretError(f"cannot read secret file {self.file}: {exc.strerror}") from exc
        if not value:
            raise SecretError(f"secret file {self.file} is empty")
        register_secret(value)
        return value


def require_source_folder(path: Path) -> Path:
    """``path``, or ConfigError (exit 2) when it is missing or not a folder.

    Not checked when the config loads: ``cartfhir demo`` and ``synth`` fill the folder
    after loading. A missing folder is a wrong path in the config, so every command that
    reads one (extract, run, check) fails the same way, with the config's exit code.
    """
    if not path.is_dir():
        what = "is not a folder" if path.exists() else "does not exist"
        raise ConfigError(
            f"NDJSON folder {path} {what}; check sites[].source.path in the config")
    return path


class NdjsonSource(_Model):
    """A folder of ``*.ndjson`` / ``*.ndjson.gz`` files (any names, any depth)."""

    kind: Literal["ndjson"]
    path: ConfigPath


class NoAuth(_Model):
    kind: Literal["none"] = "none"


class BearerAuth(_Model):
    """A static bearer token (e.g. issued by the hospital's API gateway)."""

    kind: Literal["bearer"]
    token: SecretRef


class BasicAuth(_Model):
    kind: Literal["basic"]
    username: str = Field(min_length=1)
    password: SecretRef


class SmartAuth(_Model):
    """SMART Backend Services: a signed JWT client assertion exchanged for a token."""

    kind: Literal["smart"]
    client_id: str = Field(min_length=1)
    private_key: SecretRef = Field(
        description="PEM private key (RSA for RS384, EC P-384 for ES384)")
    algorithm: Literal["RS384", "ES384"] = "RS384"
    key_id: str | None = Field(default=None, description="'kid' of the key in the client's JWKS")
    scope: str = Field(default="system/*.rs", min_length=1)
    token_url: HttpUrl | None = Field(
        default=None, description="skip discovery via .well-known/smart-configuration"
    )


AuthConfig = Annotated[
    NoAuth | BearerAuth | BasicAuth | SmartAuth, Field(discriminator="kind")
]


class Tls(_Model):
    """TLS to a hospital server: verified by default, never off without saying so."""

    insecure_skip_verify: bool = Field(
        default=False, description="turn certificate verification off (logged as a warning)"
    )
    ca_bundle: ConfigPath | None = Field(default=None, description="PEM bundle of trusted CAs")
    client_cert: ConfigPath | None = Field(default=None, description="PEM client certificate")
    client_key: ConfigPath | None = Field(default=None, description="PEM key of client_cert")

    @model_validator(mode="after")
    def _key_needs_cert(self) -> Tls:
        if self.client_key is not None and self.client_cert is None:
            raise ValueError("client_key given without client_cert")
        return self


class Http(_Model):
    """Per-site network policy: timeouts, concurrency, retries, allowed hosts."""

    timeout: float = Field(default=60.0, gt=0, le=3600, description="seconds per request")
    max_connections: int = Field(default=4, ge=1, le=32)
    max_retries: int = Field(default=8, ge=0, le=100, description="retries per request")
    retry_budget: float = Field(
        default=900.0, gt=0, description="seconds of waiting for retries per run, in total"
    )
    retry_after_cap: float = Field(
        default=300.0, gt=0, description="longest Retry-After honoured, in seconds"
    )
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="other hosts next links and file URLs may point to (host or host:port)",
    )
    tls: Tls = Tls()


class Cohort(_Model):
    """How the cohort's patients are found: exactly one of the three."""

    group_id: str | None = None
    patient_ids_file: ConfigPath | None = Field(
        default=None, description="text file, one patient id per line"
    )
    search: list[str] = Field(
        default_factory=list,
        description="FHIR searches whose matches name the patients, e.g. "
        "'Condition?code=http://hl7.org/fhir/sid/icd-10-cm|C91.02'",
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> Cohort:
        given = [self.group_id is not None, self.patient_ids_file is not None, bool(self.search)]
        if sum(given) != 1:
            raise ValueError("give exactly one of group_id, patient_ids_file or search")
        for query in self.search:
            if "?" not in query or not re.match(r"^[A-Z][A-Za-z]+\?", query):
                raise ValueError(f"search {query!r} should look like 'Condition?code=...'")
        return self


class ResourceQuery(_Model):
    """One resource type to pull for the cohort, narrowed by codes or categories."""

    type: str = Field(pattern=r"^[A-Z][A-Za-z]+$")
    codes: list[str] = Field(default_factory=list, description="system|code tokens")
    categories: list[str] = Field(default_factory=list, description="category tokens")


DEFAULT_RESOURCES = [
    ResourceQuery(type="Patient"),
    ResourceQuery(type="Condition"),
    ResourceQuery(type="Procedure"),
    ResourceQuery(type="MedicationAdministration"),  # some sites record the CAR-T infusion here
    ResourceQuery(type="Observation",
                  categories=["laboratory", "vital-signs", "survey", "procedure", "exam"]),
]


class FhirSource(_Model):
    """REST search against a FHIR server."""

    kind: Literal["fhir"]
    base_url: HttpUrl
    auth: AuthConfig = NoAuth()
    http: Http = Http()
    cohort: Cohort
    resources: list[ResourceQuery] = Field(default_factory=lambda: list(DEFAULT_RESOURCES))
    patients_per_query: int = Field(default=50, ge=1, le=500)
    page_size: int = Field(default=200, ge=1, le=5000)
    max_pages: int | None = Field(
        default=None, ge=1, le=1_000_000,
        description="most pages followed per search; default: what Bundle.total and the page "
        "size need plus slack (10,000 when the server gives no total). Beyond it the search "
        "stops and the run is partial")


class BulkSource(_Model):
    """Bulk Data $export (system, Patient or Group level)."""

    kind: Literal["bulk"]
    base_url: HttpUrl
    auth: AuthConfig = NoAuth()
    http: Http = Http()
    level: Literal["system", "patient", "group"] = "group"
    group_id: str | None = None
    types: list[str] = Field(
        default_factory=lambda: ["Patient", "Condition", "Procedure", "MedicationAdministration",
                                 "Observation"])
    type_filters: list[str] = Field(default_factory=list, description="_typeFilter queries")
    max_wait: float = Field(default=6 * 3600, gt=0, description="seconds to wait for the export")
    max_downloads: int = Field(default=4, ge=1, le=16)

    @model_validator(mode="after")
    def _group_needs_id(self) -> BulkSource:
        if (self.level == "group") != (self.group_id is not None):
            raise ValueError("group_id is required for level 'group' and only for it")
        return self


Source = Annotated[NdjsonSource | FhirSource | BulkSource, Field(discriminator="kind")]
SOURCE_KINDS = ("ndjson", "fhir", "bulk")


class Site(_Model):
    id: SiteId = Field(description="short slug, unique in the config")
    name: str | None = None
    source: Source
    pseudonym_key: SecretRef | None = Field(
        default=None,
        description="secret for patient_key = HMAC-SHA256(key, site/patient id); required by "
        "transform; keep it at the site, never share it",
    )
    signing_key: SecretRef | None = Field(
        default=None,
        description="Ed25519 private key (PEM, from 'cartfhir keygen') that signs this site's "
        "packages; the coordinating center holds the matching <site>.pub",
    )
    concept_maps: list[ConfigPath] = Field(
        default_factory=list,
        description="this site's own code maps: CSV (resource_type,system,code,concept[,grade]) "
        "or FHIR ConceptMap JSON; they win over study and default maps and patterns (precedence: "
        "harmonized.code_concept in docs/data-dictionary.md)",
    )
    text_patterns: list[ConfigPath] = Field(
        default_factory=list,
        description="this site's text patterns: CSV (resource_type,concept,priority,pattern"
        "[,refines]); they win over the default patterns, priority orders only the site's own "
        "rules (precedence: harmonized.code_concept in docs/data-dictionary.md)",
    )
    unit_maps: list[ConfigPath] = Field(
        default_factory=list,
        description="this site's own unit spellings: CSV (concept,unit,ucum or factor[,offset]); "
        "for its concept they win over terminology/units.csv",
    )
    timezone: TimeZoneName | None = Field(
        default=None,
        description="the site's IANA time zone (Asia/Shanghai): a date-time sent with another "
        "offset (a server that writes UTC) counts on its day in this zone; without it the "
        "day is the one written (docs/clinical-definitions.md, Episodes and study days)",
    )


@cache
def whole_thresholds() -> frozenset[str]:
    """The thresholds study_defaults.yaml declares whole numbers (grades, days, rounds)."""
    text = resources.files("cartfhir.transform").joinpath("study_defaults.yaml").read_text("utf-8")
    return frozenset(yaml.safe_load(text).get("whole_numbers", ()))


def threshold_problem(name: str, value: object) -> str | None:
    """Why ``value`` cannot be threshold ``name`` (None when it can): it must be a finite
    number, and a whole one when study_defaults.yaml lists the name under whole_numbers."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return f"threshold {name!r} must be a finite number, not {value!r}"
    if name in whole_thresholds() and not float(value).is_integer():
        return (f"threshold {name!r} counts grades, days or rounds: it must be a whole "
                f"number, not {value!r}")
    return None


class Transform(_Model):
    """Study definitions that override the defaults in cartfhir/transform/study_defaults.yaml."""

    windows: dict[str, tuple[int, int]] = Field(
        default_factory=dict, description="name: [first day, last day] relative to infusion"
    )
    thresholds: dict[str, float] = Field(default_factory=dict)
    concept_maps: list[ConfigPath] = Field(
        default_factory=list, description="study-wide code maps for every site (CSV or ConceptMap)"
    )
    grade_cuts: ConfigPath | None = Field(
        default=None, description="CSV replacing the CTCAE v5 cut-offs (terminology/grade_cuts.csv)"
    )

    @field_validator("windows")
    @classmethod
    def _ordered(cls, windows: dict[str, tuple[int, int]]) -> dict[str, tuple[int, int]]:
        for name, (lo, hi) in windows.items():
            if lo > hi:
                raise ValueError(f"window {name!r} starts after it ends ({lo} > {hi})")
        return windows

    @field_validator("thresholds")
    @classmethod
    def _usable(cls, thresholds: dict[str, float]) -> dict[str, float]:
        problems = [p for n, v in thresholds.items() if (p := threshold_problem(n, v))]
        if problems:
            raise ValueError("; ".join(problems))
        return thresholds


class Study(_Model):
    name: str = Field(min_length=1)
    description: str | None = None


class Output(_Model):
    duckdb: ConfigPath
    dir: ConfigPath | None = Field(
        default=None, description="folder for reports and exports; default: the DuckDB's folder"
    )
    memory_limit: str = Field(
        default="512MB",
        pattern=r"^\d+(\.\d+)?\s*(KB|MB|GB|TB|KiB|MiB|GiB|TiB)$",
        description="DuckDB's memory limit (e.g. 1GB); beyond it DuckDB spills to disk",
    )

    @property
    def folder(self) -> Path:
        return self.dir if self.dir is not None else self.duckdb.parent


# Resources written per statement when landing: large enough that the per-statement
# cost fades (measured: 5,000 -> 50,000 lands about 20 % faster), small enough to
# keep memory flat.
LANDING_BATCH_ROWS = 50_000


class Landing(_Model):
    strict: bool = Field(
        default=False, description="exit non-zero when any input line is rejected"
    )
    validation: Literal["full", "structural"] = Field(
        default="full",
        description=(
            "full: the structural checks and the FHIR R4B definitions of each resource; "
            "structural: JSON, resourceType, id and meta only (faster); "
            "README 'What landing checks' lists both"
        ),
    )
    batch_size: int = Field(
        default=LANDING_BATCH_ROWS, ge=100, le=1_000_000,
        description="resources per write; bounds memory (a batch of 50,000 lab results holds "
        "about 50 MB)",
    )
    workers: int | Literal["auto"] = Field(
        default="auto",
        description="processes that check lines in parallel; auto: by input size and CPUs; "
        "0: check in the main process",
    )
    # Caps on hostile input, for folders and bulk downloads alike.
    max_line_bytes: int = Field(
        default=64 * 2**20, ge=1024, le=2**31,
        description="longest NDJSON line landed (64 MiB: far above real resources, "
        "attachments included); a longer line becomes one raw.rejected row keeping its start",
    )
    max_decompressed_bytes: int = Field(
        default=8 * 2**30, ge=1024,
        description="most NDJSON bytes read from one file after decompression (8 GiB), so "
        "a gzip bomb cannot fill memory or disk; past it the file is cut and the run is partial",
    )

    @field_validator("workers")
    @classmethod
    def _workers_in_range(cls, value: int | str) -> int | str:
        if isinstance(value, int) and not 0 <= value <= 32:
            raise ValueError("must be 'auto' or a whole number from 0 to 32")
        return value


class ExpectationRule(_Model):
    """One expectation a study or site adds, or a change to a built-in one's severity."""

    suite: str = Field(description="suite name, e.g. cohort.episode (see cartfhir validate)")
    type: str = Field(pattern=r"^expect_[a-z_]+$", description="a GX 1.x expectation type")
    column: str | None = Field(default=None, description="for override: which column's rule")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="GX expectation kwargs")
    severity: Literal["error", "warn", "off"] = "error"
    site: str | None = Field(default=None, description="apply to this site's rows only")


class Expectations(_Model):
    """How cohort tables are checked before analysis (cartfhir/expectations/suites)."""

    max_quarantine_share: float = Field(
        default=0.05, ge=0, le=1,
        description="ceiling on quarantined study records per study record (mapped or ambiguous)")
    max_unmapped_share: float = Field(
        default=0.02, ge=0, le=1,
        description="ceiling on unmapped local-code or text-only records per study-relevant "
                    "record (standard codes no map knows are out of scope, not counted)")
    max_rejected_share: float = Field(
        default=0.01, ge=0, le=1, description="ceiling on input lines rejected at landing")
    chunk_rows: int = Field(default=100_000, ge=1_000, le=5_000_000,
                            description="rows per validation batch; bounds memory")
    data_docs: bool = Field(default=True, description="also write GX Data Docs HTML")
    add: list[ExpectationRule] = Field(default_factory=list)
    override: list[ExpectationRule] = Field(default_factory=list)


class Analysis(_Model):
    """How results are shown when they leave the site."""

    small_cell_k: int | None = Field(
        default=None, ge=2, le=100,
        description="show counts below k as '<k' in the report and exports (e.g. 5)")


# ---- engine ------------------------------------------------------------------------------

ENGINE_KINDS = ("duckdb", "spark")
# local, local[N], local[*], local[N,F], spark://host:port[,host:port...], yarn, k8s://URL
SPARK_MASTER_PATTERN = (r"^(local(\[(\*|[1-9][0-9]{0,3})(,[0-9]{1,3})?\])?"
                        r"|spark://[A-Za-z0-9.\-]+(:[0-9]{1,5})?(,[A-Za-z0-9.\-]+(:[0-9]{1,5})?)*"
                        r"|yarn|k8s://https?://[A-Za-z0-9.\-]+(:[0-9]{1,5})?)$")
SPARK_CONF_KEY = re.compile(r"spark(\.[A-Za-z0-9_\-]+)+")
# Keys engine.conf may not set: cartfhir fixes the first (results depend on them);
# the others have their own engine key.
_CONF_OWNED = {**{key.lower(): f"cartfhir fixes it to {value} (results depend on it)"
                  for key, value in SPARK_FIXED_CONF.items()},
               "spark.master": "set engine.master instead"}
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")


def _path_or_uri(value: str, info: ValidationInfo) -> str:
    """A URI (s3a://, hdfs://, abfss://, file://) as written; else a path resolved like
    every ConfigPath (against the config file's folder)."""
    if _URI.match(value):
        return value
    return str(_resolve_path(Path(value), info))


PathOrUri = Annotated[str, Field(min_length=1), AfterValidator(_path_or_uri)]


def is_uri(location: str) -> bool:
    """Whether ``location`` (engine.tables, engine.raw) is a URI rather than a local path."""
    return bool(_URI.match(location))


def _spark_conf_value(value: object) -> str:
    if isinstance(value, bool):  # Spark's spelling, not Python's True
        return "true" if value else "false"
    return str(value)


class DuckdbEngine(_Model):
    """DuckDB in-process: the default and the reference."""

    kind: Literal["duckdb"] = "duckdb"


class SparkEngine(_Model):
    """Apache Spark (4.0, Java 17): views and models on a cluster or local cores."""

    kind: Literal["spark"]
    master: str = Field(
        default="local[2]",
        description="local[N] | local[*] | spark://host:7077 | yarn | k8s://https://host; "
        "under spark-submit the launcher's master wins")
    conf: dict[str, Any] = Field(
        default_factory=dict,
        description="Spark settings, e.g. spark.executor.memory: 4g (session time zone and "
        "ANSI mode are fixed by cartfhir)")
    tables: PathOrUri | None = Field(
        default=None, description="where the Parquet tables go (a folder or a URI); "
        "default: <output folder>/parquet")
    raw: Literal["store", "ndjson"] | PathOrUri = Field(
        default="store",
        description="raw input: store (the DuckDB's raw.resources, exported to Parquet), "
        "ndjson (the sites' NDJSON folders, landed by Spark's executors as 'cartfhir "
        "extract' lands them) or the folder of a 'cartfhir export --raw'")

    @field_validator("master")
    @classmethod
    def _known_master(cls, master: str) -> str:
        if not re.fullmatch(SPARK_MASTER_PATTERN, master):
            raise ValueError(f"{master!r} is not a Spark master: local[2], local[*], "
                             "spark://host:7077, yarn or k8s://https://host:port")
        return master

    @field_validator("conf")
    @classmethod
    def _spark_keys(cls, conf: dict[str, Any]) -> dict[str, str]:
        problems = []
        for key, value in conf.items():
            if not SPARK_CONF_KEY.fullmatch(key):
                problems.append(f"{key!r} is not a Spark setting (they look like spark.x.y)")
            elif key.lower() in _CONF_OWNED:
                problems.append(f"{key} cannot be set here: {_CONF_OWNED[key.lower()]}")
            elif key.lower().startswith(tuple(p.lower() for p in SPARK_FIXED_PREFIXES)):
                problems.append(f"{key} cannot be set here: a legacy behaviour changes what "
                                "cartfhir's SQL means")
            elif not isinstance(value, str | int | float | bool) or (
                    isinstance(value, float) and not math.isfinite(value)):
                problems.append(f"{key}: give a string, number or true/false, not "
                                f"{type(value).__name__} {value!r:.40}")
        if problems:
            raise ValueError("; ".join(problems))
        return {key: _spark_conf_value(value) for key, value in conf.items()}

    @property
    def raw_kind(self) -> str:
        """'store', 'ndjson' (the sites' NDJSON folders) or 'folder' (a cartfhir export
        --raw folder; a folder named ndjson is written as a path, ./ndjson)."""
        return self.raw if self.raw in ("store", "ndjson") else "folder"


def _engine_shorthand(value: Any) -> Any:
    """``engine: spark`` means a Spark engine with every default (and ``duckdb`` DuckDB)."""
    if isinstance(value, str):
        if value not in ENGINE_KINDS:
            raise ValueError(f"unknown engine {value!r} (expected one of {ENGINE_KINDS})")
        return {"kind": value}
    return value


Engine = Annotated[DuckdbEngine | SparkEngine, Field(discriminator="kind"),
                   BeforeValidator(_engine_shorthand)]


class Config(_Model):
    study: Study
    sites: list[Site] = Field(min_length=1)
    output: Output
    landing: Landing = Landing()
    transform: Transform = Transform()
    expectations: Expectations = Expectations()
    analysis: Analysis = Analysis()
    engine: Engine = DuckdbEngine()

    source_file: Path | None = Field(default=None, exclude=True)
    config_hash: str = Field(default="", exclude=True)

    @field_validator("sites")
    @classmethod
    def _unique_site_ids(cls, sites: list[Site]) -> list[Site]:
        seen: set[str] = set()
        for site in sites:
            if site.id in seen:
                raise ValueError(f"site id {site.id!r} appears twice; site ids must be unique")
            seen.add(site.id)
        return sites

    def site(self, site_id: str) -> Site:
        for site in self.sites:
            if site.id == site_id:
                return site
        known = ", ".join(s.id for s in self.sites)
        raise ConfigError(f"no site {site_id!r} in the config (sites: {known})")

    def engine_for(self, name: str | None = None) -> DuckdbEngine | SparkEngine:
        """The engine to run on: the config's, or ``name`` (``--engine``) when given.

        ``spark`` without a Spark section in the config is Spark with its defaults. A
        Spark engine always comes back with ``tables`` set (default <output folder>/parquet).
        """
        engine: DuckdbEngine | SparkEngine = self.engine
        if name is not None and name != engine.kind:
            if name not in ENGINE_KINDS:
                raise ConfigError(f"unknown engine {name!r} (expected one of "
                                  f"{', '.join(ENGINE_KINDS)})")
            engine = DuckdbEngine() if name == "duckdb" else SparkEngine(kind="spark")
        if isinstance(engine, SparkEngine) and engine.tables is None:
            engine = engine.model_copy(update={"tables": str(self.output.folder / "parquet")})
        return engine


_UNION_TAGS = {"source": SOURCE_KINDS, "auth": ("none", "bearer", "basic", "smart"),
               "engine": ENGINE_KINDS}


def format_location(loc: tuple[Any, ...]) -> str:
    """('sites', 1, 'source', 'path') -> 'sites[1].source.path'.

    Discriminated unions add the chosen kind to the location
    ('source', 'fhir', 'base_url'); that tag is left out.
    """
    out = ""
    previous: Any = None
    for part in loc:
        if isinstance(previous, str) and part in _UNION_TAGS.get(previous, ()):
            previous = None
            continue
        previous = part
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _describe_error(err: dict[str, Any]) -> str:
    kind = err.get("type", "")
    if kind == "extra_forbidden":
        return "unknown key (check the spelling; see config.yaml for the schema)"
    if kind == "missing":
        return "required key is missing"
    if kind == "union_tag_invalid":
        ctx = err.get("ctx", {})
        return f"unknown kind {ctx.get('tag')!r} (expected one of {ctx.get('expected_tags')})"
    if kind.startswith("url_"):
        return f"not a URL ({err.get('ctx', {}).get('error', err.get('msg', ''))})"
    msg = str(err.get("msg", "invalid value"))
    msg = re.sub(r"^(Value error|Assertion failed), ", "", msg)
    return msg[0].lower() + msg[1:] if msg else msg


def config_errors(exc: ValidationError) -> list[str]:
    return [f"{format_location(tuple(e['loc']))}: {_describe_error(e)}" for e in exc.errors()]


def hash_config_data(data: Any) -> str:
    """A stable hash of the config's content (not its comments or key order)."""
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def parse_config(data: Any, base_dir: Path, source_file: Path | None = None) -> Config:
    """Validate already-parsed YAML/JSON data; raise ConfigError listing every problem."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source_file or 'config'}: the top level must be a mapping of keys")
    try:
        config = Config.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as exc:
        where = f"{source_file}" if source_file else "config"
        lines = "\n  ".join(config_errors(exc))
        raise ConfigError(f"{where} is not valid:\n  {lines}") from None
    return config.model_copy(
        update={"source_file": source_file, "config_hash": hash_config_data(data)}
    )


def load_config(path: str | Path = DEFAULT_CONFIG) -> Config:
    """Read and validate a config file."""
    path = Path(path).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"config file {path} not found; pass --config PATH or copy the example config.yaml"
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path}{where}: not valid YAML ({problem})") from None
    resolved = path.resolve()
    return parse_config(data, base_dir=resolved.parent, source_file=resolved)

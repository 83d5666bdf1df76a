"""Synthetic multi-site CAR-T cohort: realistic FHIR R4 plus the truth it encodes.

``generate`` simulates each patient's course (``clinical``), emits it as one
site's FHIR (``emit`` with a site profile from ``site_profiles/``), writes
bulk-style NDJSON (``writer``) and records per episode what the generator
intended (``truth``). Output is deterministic for a given seed: each patient
has its own random stream, so results do not depend on order or scale.
"""

from __future__ import annotations

import csv
import random
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path

from cartfhir.errors import UsageError
from cartfhir.progress import NullProgress, Progress
from cartfhir.results import ResultDict
from cartfhir.synth.clinical import simulate
from cartfhir.synth.emit import emit_course
from cartfhir.synth.profiles import available_profiles, load_profile
from cartfhir.synth.truth import TRUTH_COLUMNS, episode_truth
from cartfhir.synth.writer import Injected, SiteWriter

DEFAULT_SITES = ("site_a", "site_b")
FIRST_INFUSION_FROM = date(2019, 1, 1)
FIRST_INFUSION_TO = date(2023, 6, 30)
BUNDLE_SIZE = 1000


@dataclass(frozen=True)
class SynthResult(ResultDict):
    out: Path
    patients: dict[str, int]
    episodes: int
    resources: dict[str, dict[str, int]]  # site -> resource type -> distinct valid resources
    injected: int
    truth_file: Path
    status = "success"  # generation that fails raises

    @property
    def total_resources(self) -> int:
        return sum(sum(by_type.values()) for by_type in self.resources.values())


def split_patients(total: int, n_sites: int) -> list[int]:
    return [total // n_sites + (1 if i < total % n_sites else 0) for i in range(n_sites)]


def generate(
    out: Path,
    *,
    patients: int = 40,
    seed: int = 42,
    sites: Sequence[str] = DEFAULT_SITES,
    bad_rate: float = 0.0,
    bundles: bool = False,
    compress: bool = False,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> SynthResult:
    """Generate ``patients`` patients split evenly over ``sites`` into ``out/<site>/``.

    Truth goes to ``out/truth/episodes.csv`` (one row per infusion) and
    ``out/truth/injected.csv`` (every deliberately bad line).
    """
    if not 1 <= patients <= 1_000_000:
        raise UsageError(f"--patients must be between 1 and 1,000,000 (got {patients})")
    if not 0.0 <= bad_rate <= 0.5:
        raise UsageError(f"--bad-rate must be between 0 and 0.5 (got {bad_rate})")
    if not sites or len(set(sites)) != len(sites):
        raise UsageError("give one or more distinct site profiles")
    unknown = [s for s in sites if s not in available_profiles()]
    if unknown:
        raise UsageError(f"unknown site profile(s) {', '.join(unknown)}; "
                         f"available: {', '.join(available_profiles())}")
    out = Path(out)
    _prepare(out, sites, overwrite)
    progress = progress or NullProgress()
    request = f"cartfhir synth --patients {patients} --seed {seed} --bad-rate {bad_rate}"

    truth_dir = out / "truth"
    truth_dir.mkdir(parents=True, exist_ok=True)
    truth_path = truth_dir / "episodes.csv"
    injected = 0
    resources: dict[str, dict[str, int]] = {}
    per_site = dict(zip(sites, split_patients(patients, len(sites)), strict=True))
    episodes = 0
    with (truth_path.open("w", newline="", encoding="utf-8") as fh,
          (truth_dir / "injected.csv").open("w", newline="", encoding="utf-8") as bad_fh):
        truth = csv.DictWriter(fh, fieldnames=TRUTH_COLUMNS)
        truth.writeheader()
        bad_lines = csv.DictWriter(bad_fh, fieldnames=list(Injected.__dataclass_fields__))
        bad_lines.writeheader()
        for site in sites:
            profile = load_profile(site)
            writer = SiteWriter(out / site, site, compress=compress, bad_rate=bad_rate,
                                bundle_size=BUNDLE_SIZE if bundles else 0,
                                on_injected=lambda item: bad_lines.writerow(asdict(item)))
            bad_rng = random.Random(f"{seed}:{site}:bad")
            with progress.task(f"synth {site}", total=per_site[site]) as task:
                for index in range(per_site[site]):
                    rng = random.Random(f"{seed}:{site}:{index}")
                    course = simulate(rng, index, FIRST_INFUSION_FROM, FIRST_INFUSION_TO)
                    emitted = emit_course(profile, course, seed)
                    writer.write_patient(emitted.resources, emitted.repeated, bad_rng)
                    for ep in course.episodes:
                        truth.writerow(episode_truth(course, ep, site, emitted.patient_id))
                        episodes += 1
                    task.advance(1)
            writer.close(request)
            injected += writer.injected
            resources[site] = dict(sorted(writer.counts.items()))
    return SynthResult(out=out, patients=per_site, episodes=episodes, resources=resources,
                       injected=injected, truth_file=truth_path)


def _prepare(out: Path, sites: Sequence[str], overwrite: bool) -> None:
    """Refuse to mix a new cohort into old files unless asked to replace them."""
    existing = [out / s for s in sites if (out / s).exists() and any((out / s).iterdir())]
    if existing and not overwrite:
        raise UsageError(f"{existing[0]} already has files; pass --force to replace them")
    for folder in existing:
        shutil.rmtree(folder)
    shutil.rmtree(out / "truth", ignore_errors=True)



__all__ = ["DEFAULT_SITES", "SynthResult", "generate", "split_patients"]

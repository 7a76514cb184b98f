"""`mooer-data build-mt5k`: the whole recipe as resumable stages.

    prepare each corpus -> sample -> pseudolabel -> translate -> shard -> merge -> report

Every stage reads the files of the one before and writes its own directory under
``OUTPUT/work/part-R-of-W/`` (an unsplit build is part 0 of 1). Before it runs, a stage
writes a *started* marker holding the digest of its fingerprint (the recipe settings it
depends on plus the fingerprints of the stages it reads); when it finishes, a *done*
marker with the same digest. A rerun skips every stage whose done marker matches, resumes
an interrupted one (prepare skips finished corpus parts, pseudolabel and translate resume
from their ledgers, shard builds only the missing shards) and restarts cleanly one whose
settings changed. ``kill -9`` at any moment and a rerun end with the same result.

Parts (``--part R/W``): each machine builds one deterministic share (mooer_data.parts)
through the shard stage; ``merge`` then joins the W shares into ``OUTPUT`` (the final
manifest tables, shards, index) and ``report`` describes it. Two stages look at every
part: sample plans over all parts' prepared manifests, and shard plans over all parts'
labelled manifests, so each waits for (or names) the parts that are not there yet.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .labeling import RetryPolicy
from .manifest import SCHEMA_VERSION
from .parts import PartSpec
from .recipe import RecipeFile, RecipeError, check_roots
from .sampling import SAMPLE_RECORD_FILE

STAGES = ("prepare", "sample", "pseudolabel", "translate", "shard", "merge", "report")
PART_STAGES = STAGES[:5]  # run once per part
FINAL_STAGES = STAGES[5:]  # run once over all parts
MARKER_DIR = ".build"
WORK_DIR = "work"
REPORT_DIR = "report"
SAMPLE_RECORD = SAMPLE_RECORD_FILE  # the sampler writes it; the merge writes the global one under the same name
LABELLING_RECORD = "labelling.json"


class BuildError(RuntimeError):
    """A stage cannot run: its inputs are missing or stale (the message names what to run)."""


@dataclass(frozen=True)
class BuildOptions:
    from_stage: str | None = None
    to_stage: str | None = None
    dry_run: bool = False
    part: PartSpec = field(default_factory=PartSpec.whole)
    show_progress: bool = True
    retry_policy: RetryPolicy = RetryPolicy()
    wait_for_parts: float | None = None  # seconds to wait for other parts' stages (None: fail at once)
    poll_seconds: float = 10.0
    report_notes: tuple[str, ...] = ()  # shown at the top of the report (the demo says where its labels came from)


@dataclass(frozen=True)
class Missing:
    stage: str  # the stage whose output is missing
    part: PartSpec
    message: str


@dataclass
class BuildResult:
    output: Path
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    summaries: dict[str, dict] = field(default_factory=dict)
    report: Path | None = None


def digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(tmp, path)


class Markers:
    """started / done markers of the stages of one part (or of the final stages)."""

    def __init__(self, directory: Path):
        self.directory = directory

    def _read(self, name: str) -> dict | None:
        path = self.directory / name
        return json.loads(path.read_text()) if path.is_file() else None

    def done(self, stage: str) -> dict | None:
        return self._read(f"{stage}.done.json")

    def is_done(self, stage: str, fingerprint_digest: str) -> bool:
        marker = self.done(stage)
        return marker is not None and marker.get("digest") == fingerprint_digest

    def started_digest(self, stage: str) -> str | None:
        marker = self._read(f"{stage}.started.json")
        return marker.get("digest") if marker else None

    def mark_started(self, stage: str, fingerprint_digest: str) -> None:
        (self.directory / f"{stage}.done.json").unlink(missing_ok=True)
        _write_json(self.directory / f"{stage}.started.json", {"stage": stage, "digest": fingerprint_digest, "at": time.time()})

    def mark_done(self, stage: str, fingerprint_digest: str, summary: dict) -> None:
        _write_json(self.directory / f"{stage}.done.json", {"stage": stage, "digest": fingerprint_digest, "summary": summary, "at": time.time()})


@dataclass(frozen=True)
class BuildLayout:
    """Where every stage of every part writes, under the recipe's output directory."""

    output: Path

    def part_dir(self, part: PartSpec) -> Path:
        return self.output / WORK_DIR / part.name

    def prepared(self, part: PartSpec, corpus: str) -> Path:
        return self.part_dir(part) / "prepared" / corpus

    def sample(self, part: PartSpec) -> Path:
        return self.part_dir(part) / "sample"

    def pseudo(self, part: PartSpec) -> Path:
        return self.part_dir(part) / "pseudo"

    def labelled(self, part: PartSpec) -> Path:
        return self.part_dir(part) / "labelled"

    def shards(self, part: PartSpec) -> Path:
        return self.part_dir(part) / "shards"

    def markers(self, part: PartSpec | None) -> Markers:
        return Markers((self.part_dir(part) if part is not None else self.output) / MARKER_DIR)

    @property
    def report(self) -> Path:
        return self.output / REPORT_DIR


# -- fingerprints: what a stage's result depends on ------------------------------------
def fingerprint(recipe: RecipeFile, stage: str, part: PartSpec) -> dict:
    """The settings a stage's output depends on, and the digests of the stages it reads.
    Pure in the recipe, so any part can check any other part's markers."""
    siblings = part.siblings()
    if stage == "prepare":
        roots = {name: str(spec.root.resolve()) if spec.root else None for name, spec in recipe.corpora.items()}
        return {"stage": stage, "part": str(part), "roots": roots, "schema": SCHEMA_VERSION}
    if stage == "sample":
        return {"stage": stage, "part": str(part), "seed": recipe.seed, "budgets": recipe.budgets_hours,
                "after": [digest(fingerprint(recipe, "prepare", p)) for p in siblings]}
    if stage == "pseudolabel":
        options = recipe.pseudolabel
        return {"stage": stage, "providers": recipe.asr.names, "settings": recipe.asr.settings, "language": options.language,
                "verify_with": options.verify_with, "after": digest(fingerprint(recipe, "sample", part))}
    if stage == "translate":
        options = recipe.translate
        return {"stage": stage, "providers": recipe.mt.names, "settings": recipe.mt.settings, "source": options.source,
                "target": options.target, "after": digest(fingerprint(recipe, "pseudolabel", part))}
    if stage == "shard":
        shards = recipe.shards
        return {"stage": stage, "part": str(part), "seed": recipe.seed, "size": None if shards.max_count else shards.size,
                "max_count": shards.max_count, "audio_format": shards.audio_format, "features": shards.features,
                "after": [digest(fingerprint(recipe, "translate", p)) for p in siblings]}
    if stage == "merge":
        return {"stage": stage, "parts": part.count, "after": [digest(fingerprint(recipe, "shard", p)) for p in siblings]}
    if stage == "report":
        from .report import REPORT_VERSION

        return {"stage": stage, "version": REPORT_VERSION, "after": digest(fingerprint(recipe, "merge", part))}
    raise ValueError(f"unknown stage {stage!r}: expected one of {', '.join(STAGES)}")


# What each stage reads: (stage, whose parts) -- "same" is the stage's own part, "all" every part.
NEEDS = {
    "sample": [("prepare", "all")],
    "pseudolabel": [("sample", "same")],
    "translate": [("pseudolabel", "same")],
    "shard": [("translate", "all")],
    "merge": [("shard", "all"), ("translate", "all"), ("prepare", "all")],
    "report": [("merge", "final")],
}


def select_stages(from_stage: str | None, to_stage: str | None, part: PartSpec, merging: bool = False) -> list[str]:
    for name, value in (("--from", from_stage), ("--to", to_stage)):
        if value is not None and value not in STAGES:
            raise ValueError(f"{name}: expected one of {', '.join(STAGES)}, found {value!r}")
    available = FINAL_STAGES if merging else (PART_STAGES if not part.is_whole else STAGES)
    first = STAGES.index(from_stage) if from_stage else STAGES.index(available[0])
    last = STAGES.index(to_stage) if to_stage else STAGES.index(available[-1])
    chosen = [s for s in STAGES[first : last + 1] if s in available]
    if not chosen:
        if not part.is_whole and not merging:
            raise ValueError(
                f"with --part {part} a machine runs {', '.join(PART_STAGES)}; merge and report run once over all parts: "
                f"`mooer-data merge-parts --recipe RECIPE --parts {part.count}`"
            )
        raise ValueError(f"no stage between {from_stage or available[0]} and {to_stage or available[-1]}")
    return chosen


class Build:
    """One invocation: the chosen stages of one part (or the final stages over all parts)."""

    def __init__(self, recipe: RecipeFile, options: BuildOptions = BuildOptions(), log: Callable[[str], None] = print,
                 merging: bool = False):
        self.recipe = recipe
        self.options = options
        self.log = log
        self.part = options.part
        self.merging = merging
        self.layout = BuildLayout(Path(recipe.output))
        self.stages = select_stages(options.from_stage, options.to_stage, self.part, merging)

    # -- markers -----------------------------------------------------------------------
    def _markers(self, stage: str, part: PartSpec) -> Markers:
        return self.layout.markers(None if stage in FINAL_STAGES else part)

    def _complete(self, stage: str, part: PartSpec) -> bool:
        return self._markers(stage, part).is_done(stage, digest(fingerprint(self.recipe, stage, part)))

    def _how_to_run(self, stage: str, part: PartSpec) -> str:
        if stage in FINAL_STAGES:
            return f"`mooer-data merge-parts --recipe {self.recipe.path or 'RECIPE'} --parts {part.count}`"
        base = f"mooer-data build-mt5k --recipe {self.recipe.path or 'RECIPE'}"
        part_flag = f" --part {part}" if not part.is_whole else ""
        return f"`{base}{part_flag} --from {stage}`" + (" on its machine" if part != self.part else "")

    def missing_inputs(self, stage: str) -> list[Missing]:
        """What a stage needs and does not find complete; each message names the command
        that makes it."""
        problems = []
        for needed, whose in NEEDS.get(stage, []):
            parts = {"all": self.part.siblings(), "same": [self.part], "final": [self.part]}[whose]
            for part in parts:
                if not self._complete(needed, part):
                    where = f" of part {part}" if not part.is_whole and needed in PART_STAGES else ""
                    problems.append(Missing(needed, part, f"{stage} needs the {needed} stage{where}, which is not complete "
                                           f"(or was made with other settings): run {self._how_to_run(needed, part)}"))
        return problems

    def _wait_for_inputs(self, stage: str) -> None:
        """Fail at once when this part's own inputs are missing; wait (``wait_for_parts``
        seconds, polling) when only other machines' parts are not there yet."""
        deadline = time.monotonic() + (self.options.wait_for_parts or 0.0)
        while True:
            problems = self.missing_inputs(stage)
            if not problems:
                return
            others_only = self.merging or all(missing.part != self.part for missing in problems)
            if not others_only or self.options.wait_for_parts is None or time.monotonic() >= deadline:
                raise BuildError("\n".join(missing.message for missing in problems))
            self.log(f"{stage}: waiting for {len(problems)} stage(s) of other parts")
            time.sleep(self.options.poll_seconds)

    # -- the run -----------------------------------------------------------------------
    def run(self) -> BuildResult:
        from . import build_stages

        result = BuildResult(self.layout.output)
        if self.options.dry_run:
            from .build_plan import describe

            describe(self, self.log)
            return result
        for stage in self.stages:
            part = self.part
            fingerprint_digest = digest(fingerprint(self.recipe, stage, part))
            markers = self._markers(stage, part)
            if markers.is_done(stage, fingerprint_digest):
                self.log(f"== {stage}: complete, skipping")
                result.skipped.append(stage)
                continue
            self._wait_for_inputs(stage)
            fresh = markers.started_digest(stage) != fingerprint_digest
            self.log(f"== {stage}" + (f" (part {part})" if not part.is_whole and stage in PART_STAGES else "") + ("" if fresh else ": resuming"))
            markers.mark_started(stage, fingerprint_digest)
            summary = build_stages.RUNNERS[stage](self, fresh)
            markers.mark_done(stage, fingerprint_digest, summary)
            result.ran.append(stage)
            result.summaries[stage] = summary
        if "report" in self.stages:
            result.report = self.layout.report / "report.html"
        return result

    def provider_problems(self) -> list[str]:
        """The primary providers of the stages about to run must be configured (no network):
        finding a missing key after hours of preparing would waste them."""
        from .providers.errors import ProviderError
        from .pseudolabel import build_provider

        problems = []
        for stage, kind, chain in (("pseudolabel", "asr", self.recipe.asr), ("translate", "mt", self.recipe.mt)):
            if stage not in self.stages or not chain.names or self._complete(stage, self.part):
                continue
            try:
                build_provider(kind, chain.primary, chain.settings.get(chain.primary)).check_configured()
            except (ProviderError, ValueError) as error:
                problems.append(f"providers.{kind}: the primary provider {chain.primary!r} is not ready: {error}")
        return problems


def build_mt5k(recipe: RecipeFile, options: BuildOptions = BuildOptions(), log: Callable[[str], None] = print) -> BuildResult:
    """Check what the chosen stages need from this machine — the corpus roots (when prepare
    runs) and the primary providers' credentials — reporting every problem at once, then
    run the stages of one part."""
    build = Build(recipe, options, log)
    problems = check_roots(recipe) if "prepare" in build.stages else []
    if not options.dry_run:
        problems += build.provider_problems()
    if problems:
        raise RecipeError(recipe.path or recipe.name, problems)
    return build.run()


def merge_parts(recipe: RecipeFile, parts: int, options: BuildOptions = BuildOptions(), log: Callable[[str], None] = print) -> BuildResult:
    """Join the ``parts`` shares of a split build into the recipe's output, then report."""
    if parts < 1:
        raise ValueError(f"expected --parts W with W >= 1, found {parts}")
    merged = BuildOptions(from_stage=options.from_stage, to_stage=options.to_stage, dry_run=options.dry_run,
                          part=PartSpec(0, parts), show_progress=options.show_progress, wait_for_parts=options.wait_for_parts,
                          poll_seconds=options.poll_seconds, report_notes=options.report_notes)
    return Build(recipe, merged, log, merging=True).run()



def write_record(path: Path, payload: dict) -> None:
    _write_json(path, payload)

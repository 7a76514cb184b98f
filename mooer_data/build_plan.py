"""`build-mt5k --dry-run`: what each stage would read and write, how many items and hours,
and what the paid providers would cost — without writing, sending or paying anything.

Figures are exact where the stage before is complete (the sample plan, the items the
sample holds, the texts pseudolabel produced, the shard plan) and estimated from the
budgets otherwise; every estimate says so and on what it rests.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from .build import Build

# Mandarin is spoken at about 4 characters a second (read speech 4-5, conversation a
# little less): the basis of translation estimates before any text exists.
CHARS_PER_SECOND_ZH = 4.0


def _provider(kind: str, name: str, settings: dict):
    from .pseudolabel import build_provider

    return build_provider(kind, name, settings.get(name))


def _readiness(provider) -> str:
    from .providers.errors import ProviderError

    try:
        provider.check_configured()
        return "ready"
    except ProviderError as error:
        return f"NOT READY ({error})"


def _prepare(build: "Build") -> tuple[list[str], list[str]]:
    from .corpora.base import CorpusLayoutError
    from .corpora.registry import get_recipe

    lines = []
    for name, spec in build.recipe.corpora.items():
        corpus = get_recipe(name)
        try:
            parts = corpus.available_parts(corpus.locate(spec.root.resolve())) if spec.root else []
            found = f"parts {', '.join(parts)}"
        except CorpusLayoutError as error:
            found = f"NOT A {name} CORPUS: {str(error).splitlines()[1].strip()}"
        share = "" if build.part.is_whole else f", the files of share {build.part}"
        lines.append(f"{name}: read {spec.root} ({found}{share}) -> {build.layout.prepared(build.part, name)}")
    return lines, []


def _sample(build: "Build") -> tuple[list[str], list[str]]:
    from .sampling import SampleConfig, plan_sample

    recipe, part = build.recipe, build.part
    lines = []
    if all(build._complete("prepare", p) for p in part.siblings()):
        inputs = [build.layout.prepared(p, name) for name in recipe.corpora for p in part.siblings()]
        plan = plan_sample(inputs, SampleConfig(seed=recipe.seed, hours_per_source=dict(recipe.budgets_hours)))
        for name, group in sorted(plan.result.groups.items()):
            lines.append(f"{name:12s} requested {group.requested_hours:.4f} h, would reach {group.reached_hours:.4f} h "
                         f"({group.items} {group.unit}; {group.available_hours:.4f} h available)")
    else:
        for name, hours in sorted(recipe.budgets_hours.items()):
            lines.append(f"{name:12s} requested {hours:.4f} h (exact figures once prepare is complete)")
    share = "" if part.is_whole else f" (rows of share {part}; the plan covers every part)"
    lines.append(f"seed {recipe.seed} -> {build.layout.sample(part)}{share}")
    return lines, []


def _unlabelled_hours(build: "Build") -> float:
    from .corpora.registry import get_recipe

    sources = {spec.source for name, spec in build.recipe.corpora.items() if get_recipe(name).language is None}
    return sum(h for s, h in build.recipe.budgets_hours.items() if s in sources) / build.part.count


def _provider_chain(kind: str, chain, estimate, lines: list[str], costs: list[str]) -> None:
    """Readiness of each provider of a chain (primary, then fallbacks) and its cost estimate."""
    for position, name in enumerate(chain.names):
        role = "primary" if position == 0 else f"fallback {position}"
        try:
            provider = _provider(kind, name, chain.settings)
        except ValueError as error:
            lines.append(f"{role} {name}: cannot be loaded: {error}")
            continue
        lines.append(f"{role} {name}: {_readiness(provider)}")
        costs.append(estimate(provider, name, role))


def _pseudolabel(build: "Build") -> tuple[list[str], list[str]]:
    from .pseudolabel import select_items

    recipe, part = build.recipe, build.part
    source = build.layout.sample(part)
    if build._complete("sample", part):
        items, _ = select_items(source, recipe.pseudolabel.language)
        hours = sum(i.duration for i in items) / 3600.0
        lines = [f"{len(items)} items, {hours:.4f} h of audio without labels in {source}"]
    else:
        items, hours = None, _unlabelled_hours(build)
        lines = [f"about {hours:.4f} h of audio without labels (the budgets of the corpora without transcripts"
                 + ("" if part.is_whole else f", divided by {part.count} parts") + "; exact once sample is complete)"]
    costs = []
    if not recipe.asr.names:
        return lines + ["no providers.asr: nothing is sent"], costs
    def estimate(provider, name: str, role: str) -> str:
        cost = sum(provider.estimate_cost(i) for i in items) if items is not None else hours * provider.price("price_per_hour")
        return (f"pseudolabel via {name} ({role}): {cost:.2f} if it labels everything ({hours:.4f} h at "
                f"{provider.price('price_per_hour')} per hour)")

    _provider_chain("asr", recipe.asr, estimate, lines, costs)
    lines.append(f"-> {build.layout.pseudo(part)} (ledger: already-paid items are never sent again)")
    return lines, costs


def _translate(build: "Build") -> tuple[list[str], list[str]]:
    from .corpora.registry import get_recipe
    from .manifest import open_manifest_dirs

    recipe, part = build.recipe, build.part
    options = recipe.translate
    source = build.layout.pseudo(part)
    if build._complete("pseudolabel", part):
        rows = open_manifest_dirs([source])[0].read("segments", columns=["language", "text", "text_raw", "translation"]).to_pylist()
        texts = [r["text_raw"] or r["text"] for r in rows if r["language"] == options.source and (r["text"] or "").strip() and not r["translation"]]
        chars = sum(len(t) for t in texts)
        lines = [f"{len(texts)} {options.source} segments, {chars} characters -> {options.target}"]
    else:
        texts = None
        languages = {spec.source: get_recipe(name).language or recipe.pseudolabel.language for name, spec in recipe.corpora.items()}
        hours = sum(h for s, h in recipe.budgets_hours.items() if languages.get(s) == options.source) / part.count
        chars = int(hours * 3600 * CHARS_PER_SECOND_ZH)
        lines = [f"about {chars} characters: {hours:.4f} h of {options.source} speech at {CHARS_PER_SECOND_ZH:g} characters a second "
                 "(exact once pseudolabel is complete)"]
    costs = []
    if not recipe.mt.names:
        return lines + ["no providers.mt: nothing is translated (an ASR-only build)"], costs
    def estimate(provider, name: str, role: str) -> str:
        cost = provider.estimate_cost(texts) if texts is not None else chars / 1e6 * provider.price("price_per_million_chars")
        return (f"translate via {name} ({role}): {cost:.2f} if it translates everything ({chars} characters at "
                f"{provider.price('price_per_million_chars')} per million)")

    _provider_chain("mt", recipe.mt, estimate, lines, costs)
    lines.append(f"-> {build.layout.labelled(part)}")
    return lines, costs


def _shard(build: "Build") -> tuple[list[str], list[str]]:
    from .shards import BYTES_PER_SECOND, collect_refs, plan_shards

    recipe, part = build.recipe, build.part
    options = recipe.shards
    config = options.to_config(recipe.seed, show_progress=False)
    if all(build._complete("translate", p) for p in part.siblings()):
        dirs, refs, skipped = collect_refs([build.layout.labelled(p) for p in part.siblings()])
        tasks = plan_shards(dirs, refs, config) if refs else []
        mine = [t for position, t in enumerate(tasks) if part.owns_position(position)]
        seconds = sum(r.duration for r in refs)
        lines = [f"{len(tasks)} shards planned ({len(mine)} built by this part), {len(refs)} samples, {seconds / 3600:.4f} h, "
                 f"about {seconds * BYTES_PER_SECOND[options.audio_format] / 1e6:.1f} MB of {options.audio_format}; "
                 f"{len(skipped)} segments without a label left out"]
    else:
        seconds = sum(recipe.budgets_hours.values()) * 3600.0
        size = seconds * BYTES_PER_SECOND[options.audio_format]
        count = f"{options.max_count} samples a shard" if options.max_count else f"about {math.ceil(size / config.shard_size)} shards of {options.size}"
        lines = [f"about {seconds / 3600:.4f} h, {size / 1e6:.1f} MB of {options.audio_format} in all parts ({count}; exact once translate is complete)"]
    lines.append(f"-> {build.layout.shards(part)}" + ("" if part.is_whole else f" (shards at positions {part.index}, {part.index}+{part.count}, ... of the plan)"))
    return lines, []


def _merge(build: "Build") -> tuple[list[str], list[str]]:
    output = build.layout.output
    return [f"join {build.part.count} part(s) -> {output}/{{segments,recordings,rejects,quality}}.parquet, "
            f"{output}/<split>/shard-*.tar, index.parquet, data.list, sample.json"], []


def _report(build: "Build") -> tuple[list[str], list[str]]:
    return [f"-> {build.layout.report}/report.html, report.md and PNG plots"], []


DESCRIBERS = {"prepare": _prepare, "sample": _sample, "pseudolabel": _pseudolabel, "translate": _translate, "shard": _shard,
              "merge": _merge, "report": _report}


def describe(build: "Build", log: Callable[[str], None]) -> list[str]:
    """Log the plan; returns the cost lines."""
    from .build import digest, fingerprint

    recipe, part = build.recipe, build.part
    scope = "the whole build" if part.is_whole else (f"all {part.count} parts" if build.merging else f"part {part}")
    log(f"dry run of {recipe.name} ({scope}): {' -> '.join(build.stages)}; nothing is written or sent")
    costs: list[str] = []
    for stage in build.stages:
        fingerprint_digest = digest(fingerprint(recipe, stage, part))
        markers = build._markers(stage, part)
        if markers.is_done(stage, fingerprint_digest):
            log(f"== {stage}: complete, would be skipped")
            continue
        state = "would resume" if markers.started_digest(stage) == fingerprint_digest else "would run"
        log(f"== {stage}: {state}")
        earlier = build.stages[: build.stages.index(stage)]
        for missing in build.missing_inputs(stage):
            # a stage earlier in this run would make the input (for this part; other parts' come from their machines)
            if missing.stage not in earlier or missing.part != part:
                log(f"   WOULD FAIL: {missing.message}")
        lines, stage_costs = DESCRIBERS[stage](build)
        for line in lines:
            log(f"   {line}")
        costs += stage_costs
    if costs:
        log("provider cost estimate (list prices, each in its provider's currency; override with settings price_per_hour / price_per_million_chars):")
        for line in costs:
            log(f"   {line}")
    return costs

"""The stages of `build-mt5k`, one function each: ``run(build, fresh) -> summary``.

Each calls the library function of its command (prepare_corpus, sample_manifests,
pseudolabel, translate_manifest, write_shards, the merge and the report) on the build's
directories; ``fresh`` is False when the same stage with the same settings was
interrupted before, so work already done is reused rather than thrown away.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow.parquet as pq

from .manifest import INFO_FILE, SCHEMA_VERSION, ManifestDir, open_manifest_dirs
from .parts import MergeError, merge_manifest_parts, merge_shard_parts
from .pseudolabel import QUALITY_FILE

if TYPE_CHECKING:
    from .build import Build


def run_prepare(build: "Build", fresh: bool) -> dict:
    from .prepare import PrepareConfig, prepare_corpus

    recipe, part = build.recipe, build.part
    share = None if part.is_whole else part
    config = PrepareConfig(jobs=recipe.prepare.jobs, show_progress=build.options.show_progress, share=share)
    summary = {}
    for name, spec in recipe.corpora.items():
        result = prepare_corpus(name, spec.root, build.layout.prepared(part, name), config, log=build.log)
        summary[name] = result.counts
    return summary


def run_sample(build: "Build", fresh: bool) -> dict:
    from .sampling import SampleConfig, sample_manifests

    recipe, part = build.recipe, build.part
    inputs = [build.layout.prepared(p, name) for name in recipe.corpora for p in part.siblings()]
    config = SampleConfig(seed=recipe.seed, hours_per_source=dict(recipe.budgets_hours))
    result = sample_manifests(inputs, build.layout.sample(part), config, share=None if part.is_whole else part)
    for name, group in sorted(result.groups.items()):
        build.log(
            f"  {name:12s} requested {group.requested_hours:10.4f} h  reached {group.reached_hours:10.4f} h  "
            f"({group.items} {group.unit} in all parts; {group.available_hours:.4f} h available)"
        )
    build.log(f"  this part: {result.segments} segments, {result.recordings} recordings -> {build.layout.sample(part)}")
    return {"segments": result.segments, "recordings": result.recordings,
            "reached_hours": {k: g.reached_hours for k, g in result.groups.items()}}


def pass_through(source: Path, out: Path, quality_from: Path | None = None) -> dict[str, int]:
    """A stage with nothing to do still writes its directory (rows sorted by id, as the
    labelling stages write them), so the next stage always reads the same place."""
    for stale in (QUALITY_FILE, "pseudolabel.json", "translate.json"):  # from an earlier run that had work to do
        (out / stale).unlink(missing_ok=True)
    counts = merge_manifest_parts([source], out, extra_tables=[QUALITY_FILE] if quality_from is None else [])
    if quality_from is not None and (quality_from / QUALITY_FILE).is_file():
        shutil.copyfile(quality_from / QUALITY_FILE, out / QUALITY_FILE)
    (out / INFO_FILE).write_text(json.dumps({"passed_through_from": str(source), "schema_version": SCHEMA_VERSION}, indent=2) + "\n")
    return counts


def run_pseudolabel(build: "Build", fresh: bool) -> dict:
    from .pseudolabel import PseudolabelConfig, pseudolabel, select_items

    recipe, part = build.recipe, build.part
    source, out = build.layout.sample(part), build.layout.pseudo(part)
    options = recipe.pseudolabel
    items, _ = select_items(source, options.language)
    if not items:
        build.log("  nothing without a label in this part: passed through")
        return {"items": 0, "passed_through": pass_through(source, out)}
    if not recipe.asr.names:
        from .build import BuildError

        raise BuildError(f"{len(items)} item(s) in {source} need ASR labels, and the recipe names no providers.asr")
    config = PseudolabelConfig(
        provider=recipe.asr.primary, fallbacks=recipe.asr.fallbacks, concurrency=options.concurrency, rate=options.rate,
        verify_with=options.verify_with, language=options.language, stager_url_prefix=options.stager_url_prefix,
        provider_options=dict(recipe.asr.settings), timeout=options.timeout, policy=build.options.retry_policy,
        show_progress=build.options.show_progress,
    )
    result = pseudolabel(source, out, config, log=build.log)
    return {"items": result.items, "labelled": result.labelled, "failed": result.failed, "by_provider": result.by_provider,
            "requests": result.requests, "cost": result.cost}


def _to_translate(directory: Path, source_language: str) -> int:
    import pyarrow.compute as pc

    table = open_manifest_dirs([directory])[0].read("segments", columns=["language", "text", "translation"])
    wanted = pc.and_(pc.equal(table.column("language"), source_language), pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(table.column("text"))), 0))
    wanted = pc.and_(pc.fill_null(wanted, False), pc.is_null(table.column("translation")))
    return int(pc.sum(wanted).as_py() or 0)


def run_translate(build: "Build", fresh: bool) -> dict:
    from .translate import TranslateConfig, translate_manifest

    recipe, part = build.recipe, build.part
    source, out = build.layout.pseudo(part), build.layout.labelled(part)
    options = recipe.translate
    todo = _to_translate(source, options.source)
    if not recipe.mt.names or not todo:
        reason = "the recipe names no providers.mt" if not recipe.mt.names else f"no {options.source} text to translate"
        build.log(f"  {reason}: passed through")
        return {"segments": 0, "passed_through": pass_through(source, out, quality_from=source)}
    config = TranslateConfig(
        provider=recipe.mt.primary, fallbacks=recipe.mt.fallbacks, source=options.source, target=options.target,
        concurrency=options.concurrency, rate=options.rate, provider_options=dict(recipe.mt.settings), timeout=options.timeout,
        policy=build.options.retry_policy, show_progress=build.options.show_progress,
    )
    result = translate_manifest(source, out, config, log=build.log)
    # the labelled directory is the part's whole manifest: the ASR quality flags go along
    (out / QUALITY_FILE).unlink(missing_ok=True)
    if (source / QUALITY_FILE).is_file():
        shutil.copyfile(source / QUALITY_FILE, out / QUALITY_FILE)
    return {"segments": result.segments, "translated": result.translated, "failed": result.failed,
            "by_provider": result.by_provider, "requests": result.requests, "cost": result.cost}


def run_shard(build: "Build", fresh: bool) -> dict:
    from .shards import write_shards

    recipe, part = build.recipe, build.part
    out = build.layout.shards(part)
    if fresh and out.exists():
        # other settings may plan other shards under the same names: start clean
        shutil.rmtree(out)
    inputs = [build.layout.labelled(p) for p in part.siblings()]
    config = recipe.shards.to_config(recipe.seed, show_progress=build.options.show_progress)
    result = write_shards(inputs, out, config, log=build.log, share=part)
    return {"shards": result.shards, "samples": result.samples, "seconds": result.seconds, "bytes": result.bytes}


def _same_plan(a, b) -> bool:
    """Equal sample records, floats within rounding (DuckDB sums in parallel, so the last
    bits of an hour total may differ from one run to the next)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same_plan(a[k], b[k]) for k in a)
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, (int, float)) and isinstance(b, (int, float)) and math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def _sample_record(build: "Build") -> dict:
    """The global sampling record (every part holds the same plan) with the totals."""
    from .build import SAMPLE_RECORD  # build imports this module, so its names are imported late

    records = [json.loads((build.layout.sample(p) / SAMPLE_RECORD).read_text()) for p in build.part.siblings()]
    groups = [r["groups"] for r in records]
    if any(not _same_plan(g, groups[0]) for g in groups):
        raise MergeError("the parts' samples differ in their budgets reached: they were sampled with different inputs or settings")
    recording_ids: set[str] = set()
    for p in build.part.siblings():
        path = build.layout.sample(p) / "recordings.parquet"
        if path.is_file():
            recording_ids.update(pq.read_table(path, columns=["id"]).column("id").to_pylist())
    record = dict(records[0])
    record.update({"segments": sum(r["segments"] for r in records), "recordings": len(recording_ids), "share": None,
                   "parts": build.part.count, "recipe": build.recipe.name})
    return record


def _labelling_record(build: "Build") -> dict:
    """Pseudolabel and translate results summed over the parts (what the report shows)."""
    totals: dict[str, dict] = {}
    for stage, directory, name in (("pseudolabel", build.layout.pseudo, "pseudolabel.json"), ("translate", build.layout.labelled, "translate.json")):
        for part in build.part.siblings():
            path = directory(part) / name
            if not path.is_file():
                continue
            total = totals.setdefault(stage, {})
            for key, value in json.loads(path.read_text()).items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    total[key] = round(total.get(key, 0) + value, 6)
                elif isinstance(value, dict):
                    bucket = total.setdefault(key, {})
                    for k, v in value.items():
                        bucket[k] = round(bucket.get(k, 0) + v, 6) if isinstance(v, (int, float)) else v
    return totals


def run_merge(build: "Build", fresh: bool) -> dict:
    layout, parts = build.layout, build.part.siblings()
    output = layout.output
    prepared_rejects = [layout.prepared(p, name) / "rejects.parquet" for p in parts for name in build.recipe.corpora]
    counts = merge_manifest_parts([layout.labelled(p) for p in parts], output, extra_rejects=prepared_rejects, extra_tables=[QUALITY_FILE])
    rows = merge_shard_parts([layout.shards(p) for p in parts], output)
    from .build import LABELLING_RECORD, SAMPLE_RECORD, write_record

    write_record(output / SAMPLE_RECORD, _sample_record(build))
    write_record(output / LABELLING_RECORD, _labelling_record(build))
    info = {"built_by": "mooer-data build-mt5k", "recipe": build.recipe.name, "parts": build.part.count, "counts": counts,
            "shards": len(rows), "roots": ManifestDir(output).roots(), "schema_version": SCHEMA_VERSION}
    write_record(output / INFO_FILE, info)
    build.log(
        f"  {counts['segments']} segments, {counts.get('recordings', 0)} recordings, {counts['rejects']} rejects; "
        f"{len(rows)} shards, {sum(r['count'] for r in rows)} samples -> {output}"
    )
    return {"counts": counts, "shards": len(rows), "samples": sum(r["count"] for r in rows)}


def run_report(build: "Build", fresh: bool) -> dict:
    from .report import write_report

    page = write_report(build.layout.output, build.layout.report, notes=build.options.report_notes)
    build.log(f"  report: {page}")
    return {"page": str(page)}


RUNNERS = {
    "prepare": run_prepare,
    "sample": run_sample,
    "pseudolabel": run_pseudolabel,
    "translate": run_translate,
    "shard": run_shard,
    "merge": run_merge,
    "report": run_report,
}

__all__ = ["RUNNERS", "pass_through"]

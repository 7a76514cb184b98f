"""`mooer-data prepare`: run a corpus recipe part by part into a manifest directory.

Each part is written under ``OUT_DIR/.parts/<part>/`` and marked done with a fingerprint
of what produced it; the final tables are then merged from the parts. A killed run
leaves finished parts in place, and a rerun skips them and redoes only the rest.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .corpora.base import DUPLICATE_ID, PartWriters, PrepareContext
from .corpora.registry import Recipe, get_recipe
from .manifest import INFO_FILE, SCHEMA_VERSION, TABLE_FILES, TableSink
from .parts import PartSpec
from .progress import progress_factory

PARTS_DIR = ".parts"
DONE_FILE = "DONE.json"


@dataclass(frozen=True)
class PrepareConfig:
    jobs: int = 1
    parts: Sequence[str] | None = None
    show_progress: bool = True
    # `--part R/W`: only the corpus files of this share (see mooer_data.parts)
    share: PartSpec | None = None


@dataclass(frozen=True)
class PrepareResult:
    out_dir: Path
    parts_prepared: list[str]
    parts_skipped: list[str]
    counts: dict[str, int]


def _fingerprint(recipe: Recipe, corpus_dir: Path, part: str, share: PartSpec | None = None) -> dict:
    fingerprint = {
        "corpus": recipe.name,
        "recipe_version": recipe.version,
        "schema_version": SCHEMA_VERSION,
        "corpus_dir": str(corpus_dir),
        "part": part,
    }
    if share is not None and not share.is_whole:
        fingerprint["share"] = str(share)
    return fingerprint


def _select_parts(recipe: Recipe, available: list[str], requested: Sequence[str] | None) -> list[str]:
    if not requested:
        return available
    unknown = [p for p in requested if p not in recipe.all_parts]
    if unknown:
        raise ValueError(f"{recipe.name}: unknown part(s) {unknown}; expected some of {list(recipe.all_parts)}")
    absent = [p for p in requested if p not in available]
    if absent:
        raise ValueError(f"{recipe.name}: part(s) {absent} requested but not present; found {available}")
    return [p for p in available if p in requested]


def _part_is_done(part_dir: Path, fingerprint: dict) -> bool:
    done = part_dir / DONE_FILE
    return done.is_file() and json.loads(done.read_text()) == fingerprint


def _prepare_one_part(recipe: Recipe, layout, part: str, context: PrepareContext, part_dir: Path, fingerprint: dict) -> None:
    if part_dir.exists():
        shutil.rmtree(part_dir)  # a half-written part from a killed run
    roots = {context.source: str(context.root)}
    writers = PartWriters(
        recordings=TableSink(part_dir / TABLE_FILES["recordings"], "recordings", roots),
        segments=TableSink(part_dir / TABLE_FILES["segments"], "segments", roots),
        rejects=TableSink(part_dir / TABLE_FILES["rejects"], "rejects", roots),
    )
    try:
        recipe.prepare_part(layout, part, context, writers)
    except BaseException:
        for sink in (writers.recordings, writers.segments, writers.rejects):
            sink.abort()
        raise
    for sink in (writers.recordings, writers.segments, writers.rejects):
        sink.close()
    (part_dir / DONE_FILE).write_text(json.dumps(fingerprint, sort_keys=True))


def _merge_parts(part_dirs: list[Path], out_dir: Path, source: str, roots: dict[str, str]) -> dict[str, int]:
    """Stream the parts' tables into the final ones, row group by row group.

    Ids can only collide across parts when there are several; then an id seen in an
    earlier part wins and the later copy becomes a reject. A single part (WenetSpeech,
    whose segments number in the millions) is copied without holding its ids.
    """
    check_across_parts = len(part_dirs) > 1
    seen: dict[str, set[str]] = {"recordings": set(), "segments": set()}
    late_duplicates: list[dict] = []
    sinks = {kind: TableSink(out_dir / TABLE_FILES[kind], kind, roots) for kind in TABLE_FILES}
    try:
        for part_dir in part_dirs:
            for kind in TABLE_FILES:
                for batch in pq.ParquetFile(part_dir / TABLE_FILES[kind]).iter_batches(batch_size=65536):
                    table = pa.Table.from_batches([batch])
                    if check_across_parts and kind in seen:
                        ids = table.column("id").to_pylist()
                        clash = [i for i in ids if i in seen[kind]]
                        seen[kind].update(ids)
                        if clash:
                            table = table.filter(pc.invert(pc.is_in(table.column("id"), value_set=pa.array(clash))))
                            if kind == "segments":
                                late_duplicates += [
                                    {"source": source, "item": i, "reason": f"{DUPLICATE_ID}: {i} also appears in an earlier part; the first is kept"}
                                    for i in clash
                                ]
                    sinks[kind].add_table(table)
        sinks["rejects"].add_many(late_duplicates)
        for sink in sinks.values():
            sink.close()
    except BaseException:
        for sink in sinks.values():
            sink.abort()
        raise
    return {kind: sink.rows_written for kind, sink in sinks.items()}


def prepare_corpus(
    corpus: str,
    corpus_dir: Path | str,
    out_dir: Path | str,
    config: PrepareConfig = PrepareConfig(),
    log: Callable[[str], None] = print,
) -> PrepareResult:
    recipe = get_recipe(corpus)
    corpus_dir = Path(corpus_dir).resolve()
    out_dir = Path(out_dir)
    layout = recipe.locate(corpus_dir)
    parts = _select_parts(recipe, recipe.available_parts(layout), config.parts)
    if not parts:
        raise ValueError(f"{recipe.name}: no parts found under {corpus_dir}; expected some of {list(recipe.all_parts)}")
    context = PrepareContext(
        source=recipe.source,
        root=corpus_dir,
        language=recipe.language,
        jobs=max(1, config.jobs),
        sample_rate=recipe.sample_rate,
        progress=progress_factory(config.show_progress),
        share=config.share.owns if config.share is not None and not config.share.is_whole else None,
    )
    units = ["+".join(parts)] if recipe.combine_parts else parts
    prepared, skipped = [], []
    for part in units:
        part_dir = out_dir / PARTS_DIR / part
        fingerprint = _fingerprint(recipe, corpus_dir, part, config.share)
        if _part_is_done(part_dir, fingerprint):
            skipped.append(part)
            log(f"{recipe.name}/{part}: already prepared, skipping")
            continue
        log(f"{recipe.name}/{part}: preparing")
        _prepare_one_part(recipe, layout, part, context, part_dir, fingerprint)
        prepared.append(part)
    roots = {recipe.source: str(corpus_dir)}
    counts = _merge_parts([out_dir / PARTS_DIR / p for p in units], out_dir, recipe.source, roots)
    info = {
        "corpus": recipe.name,
        "source": recipe.source,
        "root": str(corpus_dir),
        "parts": parts,
        "share": str(config.share or PartSpec.whole()),
        "schema_version": SCHEMA_VERSION,
        "counts": counts,
    }
    tmp = out_dir / (INFO_FILE + ".tmp")
    tmp.write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n")
    os.replace(tmp, out_dir / INFO_FILE)
    log(
        f"{recipe.name}: {counts['segments']} segments, {counts['recordings']} recordings, "
        f"{counts['rejects']} rejects -> {out_dir}"
    )
    return PrepareResult(out_dir, prepared, skipped, counts)

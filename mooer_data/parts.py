"""Splitting a build across machines: deterministic shares (`--part R/W`) and the merge.

An item belongs to part R of W when ``part_key(id) % W == R``, where ``part_key`` is bytes
8–15 of MD5("part:<id>") read little-endian — the family of the sampler's rank key, with a
fixed salt instead of the seed so the split never changes with the recipe's seed. DuckDB
computes the same number (``md5_number('part:' || id) >> 64``), so a share of a table of
any size is one filtered scan.

Every stage honours the same rule on its own unit (a corpus file, a segment, a recording,
a shard's position in the global plan), so the union of the W shares is the unsplit
result. :func:`merge_manifest_parts` and :func:`merge_shard_parts` put the shares back
together and refuse anything missing, duplicated or planned differently.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from .manifest import (
    INFO_FILE,
    RECORDINGS_FILE,
    REJECTS_FILE,
    SCHEMA_VERSION,
    SEGMENTS_FILE,
    ManifestDir,
    ManifestError,
    TableSink,
    open_manifest_dirs,
)

PART_SALT = "part:"
_PART_PATTERN = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


def part_key(item_id: str) -> int:
    """The stable 64-bit key that assigns an item to a part (equal to :func:`part_key_sql`)."""
    return int.from_bytes(hashlib.md5((PART_SALT + item_id).encode("utf-8")).digest()[8:16], "little")


def part_key_sql(column: str = "id") -> str:
    """The same key as a DuckDB expression over ``column``."""
    return f"(md5_number('{PART_SALT}' || {column}) >> 64)::UBIGINT"


@dataclass(frozen=True)
class PartSpec:
    """Part ``index`` of ``count`` (printed and parsed as ``R/W``, R counted from 0)."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ValueError(f"expected a part R/W with 0 <= R < W, found {self.index}/{self.count}")

    @classmethod
    def parse(cls, text: str) -> "PartSpec":
        match = _PART_PATTERN.match(text or "")
        if not match:
            raise ValueError(f"expected --part R/W (e.g. 0/4: the first of four parts), found {text!r}")
        return cls(int(match.group(1)), int(match.group(2)))

    @classmethod
    def whole(cls) -> "PartSpec":
        return cls(0, 1)

    @property
    def is_whole(self) -> bool:
        return self.count == 1

    @property
    def name(self) -> str:
        """A directory name: ``part-0-of-4``."""
        return f"part-{self.index}-of-{self.count}"

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def owns(self, item_id: str) -> bool:
        return self.count == 1 or part_key(item_id) % self.count == self.index

    def owns_position(self, position: int) -> bool:
        """For things already in a global order (the shards of a plan): round robin."""
        return position % self.count == self.index

    def sql(self, column: str = "id") -> str:
        """A DuckDB predicate true for the rows of this part."""
        if self.count == 1:
            return "TRUE"
        return f"({part_key_sql(column)} % {self.count} = {self.index})"

    def siblings(self) -> list["PartSpec"]:
        return [PartSpec(index, self.count) for index in range(self.count)]


def sql_path(path: Path | str) -> str:
    """A path as a DuckDB string literal (quotes doubled, so any file name is safe)."""
    return "'" + str(path).replace("'", "''") + "'"


def _sql_paths(paths: Sequence[Path | str]) -> str:
    return "[" + ", ".join(sql_path(p) for p in paths) + "]"


def _copy_query(con, query: str | None, path: Path, kind: str, roots: dict[str, str]) -> int:
    """Stream a DuckDB query's rows into a manifest table (our schema, atomic rename);
    no query writes the empty table."""
    with TableSink(path, kind, roots) as sink:
        if query is not None:
            for batch in con.sql(query).to_arrow_reader(1_000_000):
                sink.add_table(pa.Table.from_batches([batch]))
    return sink.rows_written


def _connect(memory_limit: str = "1GB"):
    import duckdb

    con = duckdb.connect()
    # large manifests spill to disk rather than hold every row
    con.execute(f"SET memory_limit = '{memory_limit}'")
    return con


def _check_segments_name_recordings(con, segments: Path) -> None:
    """A segment without a recording_id breaks the manifest contract (the share could not
    even be written: the column is NOT NULL); say so up front instead of failing half-way."""
    rows = con.execute(f"SELECT id FROM read_parquet({sql_path(segments)}) WHERE recording_id IS NULL ORDER BY id").fetchall()
    if rows:
        examples = ", ".join(repr(r[0]) for r in rows[:5])
        raise ManifestError(f"{segments}: expected every segment to name its recording, found {len(rows)} with no recording_id ({examples})")


def _share_recordings_query(directory: ManifestDir, part: PartSpec, share_segments: Path) -> str:
    """The recordings of one share: those its segments use, plus the unreferenced ones by id.

    "Unreferenced" is NOT EXISTS rather than NOT IN: ``id NOT IN (...)`` is NULL for every
    row as soon as the list holds one NULL recording_id (or is the NULL of no segments),
    which would drop those recordings from every share.
    """
    recordings = sql_path(directory.table_path("recordings"))
    if not directory.has("segments"):
        return f"SELECT * FROM read_parquet({recordings}) WHERE {part.sql('id')}"
    segments = sql_path(directory.table_path("segments"))
    return (
        f"SELECT * FROM read_parquet({recordings}) AS r "
        f"WHERE r.id IN (SELECT recording_id FROM read_parquet({sql_path(share_segments)}) WHERE recording_id IS NOT NULL) "
        f"OR (NOT EXISTS (SELECT 1 FROM read_parquet({segments}) AS s WHERE s.recording_id = r.id) AND {part.sql('r.id')})"
    )


def write_share(manifest_dir: Path | str, part: PartSpec, out_dir: Path | str) -> dict[str, int]:
    """Part ``part`` of a manifest directory, as a manifest directory of its own.

    Segments go by their id; a recording goes with every share holding one of its
    segments (a WenetSpeech recording may be in several), and a recording without any
    segment (in-house audio before labelling) by its own id; rejects by their item. So the
    shares' segments and rejects partition the input, and their recordings cover it.
    """
    directory = open_manifest_dirs([manifest_dir])[0]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    roots = directory.roots()
    con = _connect()
    counts = {}
    segments = directory.table_path("segments")
    share_segments = out_dir / SEGMENTS_FILE
    if directory.has("segments"):
        _check_segments_name_recordings(con, segments)
    query = f"SELECT * FROM read_parquet({sql_path(segments)}) WHERE {part.sql('id')}" if directory.has("segments") else None
    counts["segments"] = _copy_query(con, query, share_segments, "segments", roots)
    if directory.has("recordings"):
        counts["recordings"] = _copy_query(con, _share_recordings_query(directory, part, share_segments), out_dir / RECORDINGS_FILE, "recordings", roots)
    if directory.has("rejects"):
        query = f"SELECT * FROM read_parquet({sql_path(directory.table_path('rejects'))}) WHERE {part.sql('item')}"
        counts["rejects"] = _copy_query(con, query, out_dir / REJECTS_FILE, "rejects", roots)
    info = directory.info()
    info.update({"share_of": str(directory.path), "part": str(part), "schema_version": SCHEMA_VERSION, "counts": counts})
    (out_dir / INFO_FILE).write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n")
    return counts


# -- merging ---------------------------------------------------------------------------
class MergeError(ValueError):
    """The parts do not add up to one result (missing, duplicated or planned differently)."""


def merged_roots(dirs: Sequence[ManifestDir]) -> dict[str, str]:
    roots: dict[str, str] = {}
    for directory in dirs:
        for source, root in directory.roots().items():
            if roots.setdefault(source, root) != root:
                raise MergeError(f"source {source!r} comes from two corpus roots in the parts ({roots[source]} and {root}); expected one")
    return roots


def _duplicates(con, files: list[str], column: str, limit: int = 5) -> list[str]:
    rows = con.execute(
        f"SELECT {column} FROM read_parquet({_sql_paths(files)}) GROUP BY 1 HAVING count(*) > 1 ORDER BY 1 LIMIT {limit}"
    ).fetchall()
    return [r[0] for r in rows]


def merge_manifest_parts(
    part_dirs: Sequence[Path | str], out_dir: Path | str, extra_rejects: Sequence[Path | str] = (), extra_tables: Sequence[str] = ()
) -> dict[str, int]:
    """Union of the parts' manifests into ``out_dir``, rows sorted by id.

    Segment ids must be unique across parts; a recording may appear in several parts
    only as the same row. ``extra_rejects`` (e.g. the prepare stage's rejects tables) are
    added to the rejects; ``extra_tables`` names further per-part Parquet files (such as
    ``quality.parquet``) that are concatenated and sorted by id.
    """
    dirs = open_manifest_dirs(part_dirs)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    roots = merged_roots(dirs)
    con = _connect()
    counts: dict[str, int] = {}

    segment_files = [str(d.table_path("segments")) for d in dirs if d.has("segments")]
    if segment_files:
        clash = _duplicates(con, segment_files, "id")
        if clash:
            raise MergeError(f"segment id(s) {clash} appear in more than one part; expected each segment in exactly one part")
    query = f"SELECT * FROM read_parquet({_sql_paths(segment_files)}) ORDER BY id" if segment_files else None
    counts["segments"] = _copy_query(con, query, out_dir / SEGMENTS_FILE, "segments", roots)

    recording_files = [str(d.table_path("recordings")) for d in dirs if d.has("recordings")]
    if recording_files:
        distinct = f"(SELECT DISTINCT * FROM read_parquet({_sql_paths(recording_files)}))"
        conflicting = con.execute(f"SELECT id FROM {distinct} GROUP BY id HAVING count(*) > 1 ORDER BY id LIMIT 5").fetchall()
        if conflicting:
            raise MergeError(f"recording(s) {[r[0] for r in conflicting]} differ between parts; expected the same row wherever a recording appears")
        counts["recordings"] = _copy_query(con, f"SELECT * FROM {distinct} ORDER BY id", out_dir / RECORDINGS_FILE, "recordings", roots)

    reject_files = [str(d.table_path("rejects")) for d in dirs if d.has("rejects")] + [str(p) for p in extra_rejects if Path(p).is_file()]
    query = f"SELECT * FROM read_parquet({_sql_paths(reject_files)}) ORDER BY source, item, reason" if reject_files else None
    counts["rejects"] = _copy_query(con, query, out_dir / REJECTS_FILE, "rejects", roots)

    for name in extra_tables:
        files = [str(d.path / name) for d in dirs if (d.path / name).is_file()]
        if not files:
            continue
        table = con.sql(f"SELECT * FROM read_parquet({_sql_paths(files)}) ORDER BY id").to_arrow_table()
        tmp = out_dir / (name + ".tmp")
        pq.write_table(table, tmp)
        os.replace(tmp, out_dir / name)
        counts[name] = table.num_rows
    return counts


def merge_shard_parts(part_dirs: Sequence[Path | str], out_dir: Path | str) -> list[dict]:
    """Bring the parts' shards together under ``out_dir`` and write the one index.

    Each part directory holds the shards it built (``<split>/shard-N.tar``), its own
    ``index.parquet`` and the ``plan.json`` every part computed from the same global plan.
    The plans must agree; every planned shard must come from exactly one part. Shards are
    hard-linked into place (copied across filesystems), so the parts stay complete and a
    rerun of the merge is cheap; shards of an older plan are removed.
    """
    from .shard_format import INDEX_FILE
    from .shards import PLAN_FILE, SKIPPED_FILE, write_index

    out_dir = Path(out_dir)
    plans, rows_by_path, owner = [], {}, {}
    skipped: dict[str, dict] = {}
    for part_dir in map(Path, part_dirs):
        if not (part_dir / PLAN_FILE).is_file() or not (part_dir / INDEX_FILE).is_file():
            raise MergeError(f"{part_dir}: expected {PLAN_FILE} and {INDEX_FILE} from the shard stage, found them missing (run that part's shard stage)")
        plans.append(json.loads((part_dir / PLAN_FILE).read_text())["shards"])
        for row in pq.read_table(part_dir / INDEX_FILE).to_pylist():
            if row["path"] in owner:
                raise MergeError(f"shard {row['path']} was built by two parts ({owner[row['path']]} and {part_dir}); expected one")
            owner[row["path"]], rows_by_path[row["path"]] = part_dir, row
        if (part_dir / SKIPPED_FILE).is_file():
            skipped.update({r["id"]: r for r in pq.read_table(part_dir / SKIPPED_FILE).to_pylist()})
    if any(plan != plans[0] for plan in plans):
        raise MergeError("the parts planned different shards (different inputs or shard settings); rerun their shard stages with the same recipe")
    plan = plans[0]
    missing = [path for path in plan if path not in rows_by_path]
    if missing:
        raise MergeError(f"{len(missing)} planned shard(s) were built by no part, e.g. {missing[:3]}; run the shard stage of every part")
    extra = sorted(set(rows_by_path) - set(plan))
    if extra:
        raise MergeError(f"shard(s) {extra[:3]} are not in the plan; expected only planned shards")
    for path in plan:
        _link_into_place(owner[path] / path, out_dir / path, rows_by_path[path]["bytes"])
    planned = set(plan)
    for stale in out_dir.glob("*/shard-*.tar"):
        if stale.relative_to(out_dir).as_posix() not in planned:
            stale.unlink()
    rows = [rows_by_path[path] for path in plan]
    write_index(out_dir, rows, list(skipped.values()))
    return rows


def _link_into_place(source: Path, target: Path, expected_bytes: int) -> None:
    if not source.is_file():
        raise MergeError(f"{source}: listed in its part's index but missing")
    if source.stat().st_size != expected_bytes:
        raise MergeError(f"{source}: {source.stat().st_size} bytes, its part's index says {expected_bytes}")
    if target.is_file() and os.path.samefile(source, target):
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".linking")
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError:  # another filesystem: copy
        import shutil

        shutil.copyfile(source, tmp)
    os.replace(tmp, target)

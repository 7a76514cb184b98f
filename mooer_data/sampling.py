"""Hour-budget sampling: deterministic, order-independent, and cheap on huge manifests.

Every segment gets a rank key: bytes 8–15 of MD5("<seed>:<id>") read as a little-endian
integer (DuckDB's ``md5_number_lower``; :func:`rank_key` is the same in Python). Within each
budget group (a source, or the whole pool for ``--hours``) the selection is the shortest
prefix in rank order whose duration reaches the budget. Because a segment's rank depends
only on the seed and its own id, row order never matters and, on a grown corpus, the
same seed keeps every earlier pick that still fits the budget's prefix.

Sources that have recordings but no segments yet (in-house audio before pseudo-labelling)
are sampled the same way by recording duration, so only the chosen hours are ever sent to
a paid labelling service.

Speed: the rank keys are computed by DuckDB in one scan; the prefix is found in numpy by
sorting only the candidates below a key threshold (keys are uniform, so a budget of 25%
of a source needs ~27% of it sorted; a threshold that turns out too tight falls back to a
full sort). The chosen rows are then streamed to Parquet by DuckDB with a key filter.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from .manifest import (
    INFO_FILE,
    RECORDINGS_FILE,
    SCHEMA_VERSION,
    SEGMENTS_FILE,
    ManifestDir,
    ManifestError,
    iter_parquet_files,
    open_manifest_dirs,
    table_metadata,
)

SAMPLE_RECORD_FILE = "sample.json"
POOL = "*"  # the budget group of --hours: every source together
_KEY_SPACE = float(2**64)


@dataclass(frozen=True)
class SampleConfig:
    seed: int
    hours: float | None = None
    hours_per_source: dict[str, float] | None = None
    threads: int | None = None

    def __post_init__(self) -> None:
        if (self.hours is None) == (self.hours_per_source is None):
            raise ValueError("give exactly one of hours (a total budget) or hours_per_source (SRC=H budgets)")
        budgets = [self.hours] if self.hours is not None else list(self.hours_per_source.values())
        if any(b is None or b < 0 for b in budgets):
            raise ValueError(f"hour budgets must be >= 0, found {budgets}")


@dataclass
class GroupResult:
    requested_hours: float
    reached_hours: float = 0.0
    available_hours: float = 0.0
    items: int = 0
    unit: str = "segments"
    cutoff_key: int | None = None


@dataclass
class SampleResult:
    seed: int
    rank_key: str
    inputs: list[str]
    groups: dict[str, GroupResult] = field(default_factory=dict)
    segments: int = 0
    recordings: int = 0

    def to_json(self) -> str:
        payload = asdict(self)
        payload["schema_version"] = SCHEMA_VERSION
        return json.dumps(payload, indent=2, sort_keys=True) + "\n"


def rank_key(seed: int, item_id: str) -> int:
    """The rank of an item for a seed (equal to DuckDB ``md5_number_lower(seed||':'||id)``)."""
    return int.from_bytes(hashlib.md5(f"{seed}:{item_id}".encode()).digest()[8:16], "little")


def parse_hours_per_source(spec: str) -> dict[str, float]:
    """``"aishell2=137,librispeech=131"`` -> ``{"aishell2": 137.0, "librispeech": 131.0}``."""
    budgets: dict[str, float] = {}
    for piece in filter(None, (p.strip() for p in spec.split(","))):
        name, sep, value = piece.partition("=")
        try:
            if not sep:
                raise ValueError
            budgets[name.strip()] = float(value)
        except ValueError:
            raise ValueError(f"expected SOURCE=HOURS pairs separated by commas, found {piece!r}") from None
    if not budgets:
        raise ValueError(f"expected SOURCE=HOURS pairs separated by commas, found {spec!r}")
    return budgets


def _sql_list(values: Sequence[str]) -> str:
    return "[" + ", ".join("'" + v.replace("'", "''") + "'" for v in values) + "]"


def _prefix_cutoff(keys: np.ndarray, durations: np.ndarray, budget_s: float) -> tuple[int | None, float, int]:
    """(cutoff key, seconds reached, items) of the shortest rank-order prefix reaching the budget."""
    if budget_s <= 0 or keys.size == 0:
        return None, 0.0, 0
    total = float(durations.sum(dtype=np.float64))
    if total <= budget_s:
        return int(keys.max()), total, int(keys.size)
    fraction = budget_s / total
    if fraction < 0.5:
        # Keys are uniform in [0, 2^64): the prefix lies below ~fraction * 2^64. Sort only the
        # candidates under a generous threshold; fall back to everything if it falls short.
        threshold = np.uint64(min(_KEY_SPACE - 1, (fraction * 1.15 + 0.002) * _KEY_SPACE))
        candidates = np.flatnonzero(keys < threshold)
        if float(durations[candidates].sum(dtype=np.float64)) < budget_s:
            candidates = np.arange(keys.size)
    else:
        candidates = np.arange(keys.size)
    order = candidates[np.argsort(keys[candidates], kind="stable")]
    cumulative = np.cumsum(durations[order], dtype=np.float64)
    last = int(np.searchsorted(cumulative, budget_s, side="left"))
    last = min(last, order.size - 1)
    return int(keys[order[last]]), float(cumulative[last]), last + 1


class _Sampler:
    def __init__(self, dirs: list[ManifestDir], config: SampleConfig):
        import duckdb

        self.dirs = dirs
        self.config = config
        self.con = duckdb.connect()
        if config.threads:
            self.con.execute(f"SET threads = {int(config.threads)}")
        self.segment_files = [str(p) for p in iter_parquet_files(dirs, "segments")]
        self.recording_files = [str(p) for p in iter_parquet_files(dirs, "recordings")]
        self.seed_prefix = f"{config.seed}:".replace("'", "''")

    def _key_sql(self, column: str = "id") -> str:
        return f"md5_number_lower('{self.seed_prefix}' || {column})"

    def _sources(self, files: list[str]) -> list[str]:
        if not files:
            return []
        rows = self.con.execute(f"SELECT DISTINCT source FROM read_parquet({_sql_list(files)}) ORDER BY source").fetchall()
        return [r[0] for r in rows]

    def _keys(self, files: list[str], sources: list[str]):
        """(source index, rank key, duration) arrays for the rows of the given sources."""
        arrays = self.con.execute(
            f"SELECT (list_position({_sql_list(sources)}, source) - 1)::UTINYINT AS g, {self._key_sql()} AS k, "
            f"duration::FLOAT AS d FROM read_parquet({_sql_list(files)}) WHERE source IN (SELECT unnest({_sql_list(sources)}))"
        ).fetchnumpy()
        return arrays["g"], arrays["k"], arrays["d"]

    def choose(self, tables: list[tuple[list[str], list[str], str]], result: SampleResult) -> dict[str, int | None]:
        """Cutoff key per budget group, over (files, sources, unit) tables ranked together."""
        names: list[str] = []
        units: dict[str, str] = {}
        pieces = []
        for files, sources, unit in tables:
            if not files or not sources:
                continue
            groups, keys, durations = self._keys(files, sources)
            pieces.append((groups.astype(np.int32) + len(names), keys, durations))
            names += sources
            units.update({source: unit for source in sources})
        if not pieces:
            return {}
        groups = np.concatenate([p[0] for p in pieces])
        keys = np.concatenate([p[1] for p in pieces])
        durations = np.concatenate([p[2] for p in pieces])
        if self.config.hours is not None:
            plan = [(POOL, self.config.hours, np.ones(keys.size, dtype=bool), "+".join(sorted(set(units.values()))))]
        else:
            plan = [
                (name, self.config.hours_per_source[name], groups == index, units[name])
                for index, name in enumerate(names)
                if name in self.config.hours_per_source
            ]
        cutoffs: dict[str, int | None] = {}
        for name, budget, mask, unit in plan:
            group_keys, group_durations = keys[mask], durations[mask]
            cutoff, reached_s, items = _prefix_cutoff(group_keys, group_durations, budget * 3600.0)
            result.groups[name] = GroupResult(
                requested_hours=budget,
                reached_hours=reached_s / 3600.0,
                available_hours=float(group_durations.sum(dtype=np.float64)) / 3600.0,
                items=items,
                unit=unit,
                cutoff_key=cutoff,
            )
            cutoffs[name] = cutoff
        return cutoffs

    def condition(self, cutoffs: dict[str, int | None], sources: list[str]) -> str:
        """SQL predicate selecting the rows of ``sources`` inside their group's prefix."""
        key = self._key_sql()
        if POOL in cutoffs:
            cutoff = cutoffs[POOL]
            if cutoff is None or not sources:
                return "FALSE"
            return f"(source IN (SELECT unnest({_sql_list(sources)})) AND {key} <= {cutoff}::UBIGINT)"
        clauses = [
            f"(source = {_sql_list([source])[1:-1]} AND {key} <= {cutoffs[source]}::UBIGINT)"
            for source in sources
            if cutoffs.get(source) is not None
        ]
        return "(" + (" OR ".join(clauses) or "FALSE") + ")"

    def copy(self, query: str, path: Path, kind: str, roots: dict[str, str]) -> int:
        metadata = table_metadata(kind, roots)
        kv = ", ".join(f"'{k.decode()}': '{v.decode().replace(chr(39), chr(39) * 2)}'" for k, v in metadata.items())
        tmp = path.with_name(path.name + ".tmp")
        self.con.execute(
            f"COPY ({query} ORDER BY id) TO '{str(tmp).replace(chr(39), chr(39) * 2)}' "
            f"(FORMAT parquet, COMPRESSION zstd, KV_METADATA {{{kv}}})"
        )
        os.replace(tmp, path)
        return self.con.execute(f"SELECT count(*) FROM read_parquet('{str(path).replace(chr(39), chr(39) * 2)}')").fetchone()[0]


def _merged_roots(dirs: list[ManifestDir]) -> dict[str, str]:
    roots: dict[str, str] = {}
    for manifest_dir in dirs:
        for source, root in manifest_dir.roots().items():
            if roots.setdefault(source, root) != root:
                raise ManifestError(
                    f"source {source!r} comes from two corpus roots ({roots[source]} and {root}); "
                    "prepare it into one manifest directory (e.g. `prepare multi_cn` over the common parent)"
                )
    return roots


def sample_manifests(manifest_dirs: Sequence[Path | str], out_dir: Path | str, config: SampleConfig) -> SampleResult:
    dirs = open_manifest_dirs(manifest_dirs)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sampler = _Sampler(dirs, config)
    roots = _merged_roots(dirs)
    result = SampleResult(
        seed=config.seed,
        rank_key="md5_number_lower('<seed>:' || id), shortest prefix reaching the budget",
        inputs=[str(d.path) for d in dirs],
    )

    segment_sources = sampler._sources(sampler.segment_files)
    recording_only = [s for s in sampler._sources(sampler.recording_files) if s not in segment_sources]
    if config.hours_per_source is not None:
        known = set(segment_sources) | set(recording_only)
        missing = sorted(set(config.hours_per_source) - known)
        if missing:
            raise ManifestError(f"budget given for source(s) {missing}, but the manifests hold only {sorted(known)}")
    cutoffs = sampler.choose(
        [(sampler.segment_files, segment_sources, "segments"), (sampler.recording_files, recording_only, "recordings")],
        result,
    )

    segments_path = out_dir / SEGMENTS_FILE
    if sampler.segment_files:
        query = f"SELECT * FROM read_parquet({_sql_list(sampler.segment_files)}) WHERE {sampler.condition(cutoffs, segment_sources)}"
        result.segments = sampler.copy(query, segments_path, "segments", roots)
    if sampler.recording_files:
        used = f"id IN (SELECT recording_id FROM read_parquet({_sql_list([str(segments_path)])}))" if sampler.segment_files else "FALSE"
        query = (
            f"SELECT * FROM read_parquet({_sql_list(sampler.recording_files)}) "
            f"WHERE {used} OR {sampler.condition(cutoffs, recording_only)}"
        )
        result.recordings = sampler.copy(query, out_dir / RECORDINGS_FILE, "recordings", roots)
    (out_dir / SAMPLE_RECORD_FILE).write_text(result.to_json())
    (out_dir / INFO_FILE).write_text(
        json.dumps({"sampled_from": result.inputs, "seed": config.seed, "schema_version": SCHEMA_VERSION, "roots": roots}, indent=2)
        + "\n"
    )
    return result

"""`mooer-data shard` and `mooer-data verify-shards`: manifests -> WebDataset tars + index.

The plan is deterministic: within each split, segments are ordered by the rank key of
(seed, id) — so every shard is a fair mix of sources, lengths and speakers — and cut
into shards by an estimated size (or a count). Each shard is built by a worker process,
written to ``<name>.tmp`` and renamed when complete, so a killed run leaves no half shard
and a rerun builds only the missing ones, byte-identical to an uninterrupted run (sorted
members, fixed mtime and owner, deterministic FLAC).

Audio is cut out of its recording and converted to 16 kHz mono 16-bit. Where the source
already is what the shard wants — a whole 16 kHz mono 16-bit file in the target format —
its bytes are copied, not decoded and re-encoded.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import soundfile as sf

from .manifest import open_manifest_dirs, resolve_audio_path
from .progress import progress_factory
from .sampling import rank_key
from .shard_format import DATA_LIST, FIXED_MTIME, INDEX_FILE, SHARD_PATTERN, iter_shard

if TYPE_CHECKING:
    from .parts import PartSpec

SAMPLE_RATE = 16000
# Planning uses an estimate, never the encoded size, so the plan (and every shard's
# content) does not depend on encoder details: FLAC of speech is ~55% of 16-bit PCM.
BYTES_PER_SECOND = {"flac": 17_600, "wav": 32_000}
SKIPPED_FILE = "skipped.parquet"
PLAN_FILE = "plan.json"  # with --part R/W: every shard of the global plan, for the merge
INDEX_SCHEMA = pa.schema(
    [
        ("path", pa.string()),
        ("split", pa.string()),
        ("count", pa.int64()),
        ("bytes", pa.int64()),
        ("sha256", pa.string()),
        ("seconds", pa.float64()),
        ("hours_by_source", pa.string()),  # JSON {source: hours}
        ("tasks", pa.string()),  # JSON {"asr": n, "ast": n}
    ]
)


def parse_size(text: str) -> int:
    """``"1GB"``, ``"500MB"``, ``"64KiB"``, ``"1000000"`` -> bytes."""
    units = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}
    value = text.strip().upper()
    number = value.rstrip("KMGIB")
    unit = value[len(number) :]
    try:
        size = int(float(number) * units[unit])
    except (ValueError, KeyError):
        raise ValueError(f"expected a size like 1GB, 500MB or 64MiB, found {text!r}") from None
    if size <= 0:
        raise ValueError(f"expected a positive shard size, found {text!r}")
    return size


@dataclass(frozen=True)
class ShardConfig:
    shard_size: int | None = 10**9
    max_count: int | None = None
    audio_format: str = "flac"
    features: str | None = None  # "fbank-lfr": precomputed fbank+LFR features in <id>.npy
    seed: int = 0
    jobs: int = 1
    show_progress: bool = True

    def __post_init__(self) -> None:
        if self.audio_format not in BYTES_PER_SECOND:
            raise ValueError(f"expected --audio-format flac or wav, found {self.audio_format!r}")
        if self.features not in (None, "fbank-lfr"):
            raise ValueError(f"expected --features fbank-lfr (or none), found {self.features!r}")
        if self.shard_size is None and self.max_count is None:
            raise ValueError("give a shard size or a maximum count per shard")


@dataclass(frozen=True)
class SegmentSource:
    """What a worker needs to produce one sample."""

    meta: dict  # the segment row (manifest schema)
    path: str  # the recording's audio file
    recording_duration: float
    recording_format: str
    recording_rate: int
    recording_channels: int


@dataclass(frozen=True)
class ShardTask:
    """One shard to build: which manifest rows go in it. Rows, not row contents, travel to
    the worker (pickling every segment's metadata cost the main process more than the
    workers' own reading of the manifest)."""

    split: str
    index: int
    rows: tuple[tuple[int, int], ...]  # (manifest directory index, segment row)
    manifest_dirs: tuple[str, ...]
    audio_format: str
    features: str | None

    @property
    def relative_path(self) -> str:
        return f"{self.split}/{SHARD_PATTERN.format(index=self.index)}"


@dataclass
class ShardResult:
    shards: int = 0
    built: int = 0
    skipped_existing: int = 0
    samples: int = 0
    seconds: float = 0.0
    bytes: int = 0
    copied: int = 0  # samples whose audio bytes were copied as they are
    skipped_segments: dict[str, int] = field(default_factory=dict)


# -- planning --------------------------------------------------------------------------
@dataclass(frozen=True)
class SegmentRef:
    """What planning needs of a segment."""

    directory: int
    row: int
    id: str
    split: str
    duration: float


def collect_refs(manifest_dirs: Sequence[Path | str]) -> tuple[list[str], list[SegmentRef], list[dict]]:
    """(directories, shardable segments, (id, reason) rows for those that are not),
    reading only the columns planning needs."""
    import pyarrow.compute as pc

    dirs = open_manifest_dirs(manifest_dirs)
    refs, skipped = [], []
    for index, directory in enumerate(dirs):
        segments = directory.read("segments", columns=["id", "split", "duration", "text", "recording_id"])
        recording_ids = directory.read("recordings", columns=["id"]).column("id")
        has_text = pc.fill_null(pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(segments.column("text"))), 0), False)
        has_recording = pc.is_in(segments.column("recording_id"), value_set=recording_ids)
        columns = segments.to_pydict()
        for row, (segment_id, split, duration, text_ok, recording_ok) in enumerate(
            zip(columns["id"], columns["split"], columns["duration"], has_text.to_pylist(), has_recording.to_pylist())
        ):
            if not text_ok:
                skipped.append({"id": segment_id, "reason": "no text: label it first (mooer-data pseudolabel)"})
            elif not recording_ok:
                skipped.append({"id": segment_id, "reason": f"recording {columns['recording_id'][row]} is not in {directory.path}/recordings.parquet"})
            else:
                refs.append(SegmentRef(index, row, segment_id, split or "train", duration or 0.0))
    return [str(d.path) for d in dirs], refs, skipped


def plan_shards(dirs: list[str], refs: list[SegmentRef], config: ShardConfig) -> list[ShardTask]:
    by_split: dict[str, list[SegmentRef]] = {}
    for ref in refs:
        by_split.setdefault(ref.split, []).append(ref)
    tasks = []
    for split in sorted(by_split):
        ordered = sorted(by_split[split], key=lambda r: (rank_key(config.seed, r.id), r.id))
        current: list[SegmentRef] = []
        size = 0.0
        for ref in ordered:
            estimate = ref.duration * BYTES_PER_SECOND[config.audio_format]
            full = (config.max_count is not None and len(current) >= config.max_count) or (
                config.shard_size is not None and current and size + estimate > config.shard_size
            )
            if full:
                tasks.append(_task(split, tasks, current, dirs, config))
                current, size = [], 0.0
            current.append(ref)
            size += estimate
        if current:
            tasks.append(_task(split, tasks, current, dirs, config))
    return tasks


def _task(split: str, tasks: list[ShardTask], refs: list[SegmentRef], dirs: list[str], config: ShardConfig) -> ShardTask:
    index = sum(1 for t in tasks if t.split == split)
    rows = tuple((r.directory, r.row) for r in sorted(refs, key=lambda r: r.id))
    return ShardTask(split, index, rows, tuple(dirs), config.audio_format, config.features)


# A worker reads each manifest once and keeps it for the shards it builds after (the
# same memory the main process used to spend on it).
_MANIFESTS: dict[str, tuple[list[dict], dict[str, dict], dict[str, str]]] = {}


def _manifest(directory: str) -> tuple[list[dict], dict[str, dict], dict[str, str]]:
    if directory not in _MANIFESTS:
        manifest = open_manifest_dirs([directory])[0]
        table = manifest.read("segments").to_pydict()
        names = list(table)
        segments = [dict(zip(names, values)) for values in zip(*table.values())]
        recordings = {r["id"]: r for r in manifest.read("recordings").to_pylist()}
        bases = {source: str(resolve_audio_path(root, "", source)) for source, root in manifest.roots().items()}
        _MANIFESTS[directory] = (segments, recordings, bases)
    return _MANIFESTS[directory]


def sources_of(task: ShardTask) -> list[SegmentSource]:
    """The task's segments with their audio, in member (id) order."""
    sources = []
    for directory_index, row in task.rows:
        segments, recordings, bases = _manifest(task.manifest_dirs[directory_index])
        segment = segments[row]
        recording = recordings[segment["recording_id"]]
        # string joins: a pathlib object per row cost more than the copy itself
        base = bases.get(recording["source"])
        path = recording["path"] if base is None or recording["path"].startswith("/") else os.path.join(base, recording["path"])
        sources.append(
            SegmentSource(segment, path, recording["duration"] or 0.0, recording["format"] or "", recording["sample_rate"] or 0,
                          recording["channels"] or 0)
        )
    return sources


# -- audio -----------------------------------------------------------------------------
def _could_copy(source: SegmentSource, audio_format: str) -> bool:
    """From the manifest alone: the recording is the whole sample, 16 kHz mono, target format."""
    meta = source.meta
    if source.recording_format != audio_format or source.recording_rate != SAMPLE_RATE or source.recording_channels != 1:
        return False
    return (meta["start"] or 0.0) <= 1e-6 and abs(meta["duration"] - source.recording_duration) <= 1e-3


def _is_pcm16(data: bytes, audio_format: str) -> bool:
    """16-bit samples, read from the header bytes already in hand (no second open)."""
    if audio_format == "flac":
        if data[:4] != b"fLaC" or len(data) < 42:
            return False
        info = data[8:42]
        return (((info[12] & 0x01) << 4) | (info[13] >> 4)) + 1 == 16
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return False
    offset = 12
    while offset + 8 <= min(len(data), 4096):
        chunk, size = data[offset : offset + 4], int.from_bytes(data[offset + 4 : offset + 8], "little")
        if chunk == b"fmt ":
            fmt, bits = int.from_bytes(data[offset + 8 : offset + 10], "little"), int.from_bytes(data[offset + 22 : offset + 24], "little")
            return fmt == 1 and bits == 16
        offset += 8 + size + (size & 1)
    return False


def _resample(samples: np.ndarray, rate: int) -> np.ndarray:
    """Band-limited resampling to 16 kHz (windowed-sinc via FFT), float32 in and out."""
    if rate == SAMPLE_RATE:
        return samples
    count = int(round(len(samples) * SAMPLE_RATE / rate))
    spectrum = np.fft.rfft(samples.astype(np.float64))
    keep = min(len(spectrum), count // 2 + 1)
    resized = np.zeros(count // 2 + 1, dtype=np.complex128)
    resized[:keep] = spectrum[:keep]
    return (np.fft.irfft(resized, n=count) * (count / len(samples))).astype(np.float32)


def _decode_with_av(path: str) -> tuple[np.ndarray, int]:
    import av

    with av.open(path) as container:
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        chunks = []
        for frame in container.decode(stream):
            for out in resampler.resample(frame):
                chunks.append(out.to_ndarray().reshape(-1))
        for out in resampler.resample(None):
            chunks.append(out.to_ndarray().reshape(-1))
    return (np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)), SAMPLE_RATE


def read_segment(source: SegmentSource) -> np.ndarray:
    """The segment as 16 kHz mono int16."""
    start, duration = source.meta["start"] or 0.0, source.meta["duration"]
    try:
        with sf.SoundFile(source.path) as handle:
            rate = handle.samplerate
            handle.seek(int(round(start * rate)))
            if rate == SAMPLE_RATE and handle.channels == 1:
                return handle.read(int(round(duration * rate)), dtype="int16")  # nothing to convert
            samples = handle.read(int(round(duration * rate)), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError):
        whole, rate = _decode_with_av(source.path)
        samples = whole[int(round(start * rate)) : int(round((start + duration) * rate))][:, None]
    mono = samples.mean(axis=1) if samples.shape[1] > 1 else samples[:, 0]
    mono = _resample(mono, rate)
    return np.clip(np.round(mono * 32768.0), -32768, 32767).astype(np.int16)


def encode(samples: np.ndarray, audio_format: str) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, samples, SAMPLE_RATE, format=audio_format.upper(), subtype="PCM_16")
    return buffer.getvalue()


def _features(samples: np.ndarray) -> bytes:
    import torch

    from mooer_model.frontend import apply_lfr, fbank

    waves = torch.from_numpy(samples.astype(np.float32) / 32768.0)[None]
    feats, frames = fbank(waves, torch.tensor([len(samples)]))
    lfr, lengths = apply_lfr(feats, frames)
    buffer = io.BytesIO()
    np.save(buffer, lfr[0, : int(lengths[0])].numpy().astype(np.float16))
    return buffer.getvalue()


# -- writing ---------------------------------------------------------------------------
class TarWriter:
    """A deterministic tar writer (GNU format, like tarfile's, readable by any tar): fixed
    mode, owner and mtime, hashing the bytes on their way to disk. Three members per sample
    made ``tarfile.addfile`` a visible share of a copy-only run; this header is one template."""

    RECORD = 512 * 20

    def __init__(self, path: Path):
        self._handle = open(path, "wb")
        self.digest = hashlib.sha256()
        self.size = 0

    def _write(self, data: bytes) -> None:
        self._handle.write(data)
        self.digest.update(data)
        self.size += len(data)

    @staticmethod
    def _template(kind: bytes) -> bytearray:
        header = bytearray(512)
        header[100:108] = b"0000644\0"
        header[108:116] = b"0000000\0"
        header[116:124] = b"0000000\0"
        header[136:148] = b"%011o\0" % FIXED_MTIME
        header[148:156] = b"        "  # the checksum counts its own field as spaces
        header[156:157] = kind
        header[257:265] = b"ustar  \0"
        return header

    _TEMPLATES: dict[bytes, tuple[bytes, int]] = {}

    @classmethod
    def _header(cls, name: bytes, size: int, kind: bytes = b"0") -> bytes:
        if kind not in cls._TEMPLATES:
            template = cls._template(kind)
            cls._TEMPLATES[kind] = (bytes(template), sum(template))
        template, base = cls._TEMPLATES[kind]
        size_field = b"%011o\0" % size
        header = bytearray(template)
        header[0 : len(name)] = name
        header[124:136] = size_field
        header[148:156] = b"%06o\0 " % (base + sum(name) + sum(size_field))
        return bytes(header)

    def add(self, name: str, data: bytes) -> None:
        self._write(self.member(name, data))

    def add_many(self, members: list[tuple[str, bytes]]) -> None:
        """Several members in one write (a sample's three or four)."""
        self._write(b"".join(self.member(name, data) for name, data in members))

    def member(self, name: str, data: bytes) -> bytes:
        encoded = name.encode("utf-8")
        prefix = b""
        if len(encoded) > 100:  # GNU long name: a ././@LongLink member carries it
            longname = encoded + b"\0"
            prefix = self._header(b"././@LongLink", len(longname), b"L") + longname + b"\0" * (-len(longname) % 512)
            encoded = encoded[:100]
        return prefix + self._header(encoded, len(data)) + data + b"\0" * (-len(data) % 512)

    def close(self) -> None:
        self._write(b"\0" * 1024)
        self._write(b"\0" * (-self.size % self.RECORD))
        self._handle.close()

    def abort(self) -> None:
        self._handle.close()


def sample_meta(meta: dict, num_samples: int) -> dict:
    fields = ("id", "recording_id", "source", "subset", "split", "language", "speaker", "start", "duration", "text", "text_raw",
              "translation", "label_origin", "confidence")
    record = {name: meta.get(name) for name in fields}
    record.update({"sample_rate": SAMPLE_RATE, "num_samples": num_samples})
    return record


def build_shard(task: ShardTask, out_dir: str) -> dict:
    """Write one shard (to .tmp, then rename); returns its index row plus counters."""
    final = Path(out_dir) / task.relative_path
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(final.name + ".tmp")
    copied = 0
    skipped = []
    stats = _ShardStats()
    writer = TarWriter(tmp)
    try:
        for source in sources_of(task):
            key = source.meta["id"]
            try:
                audio, num_samples, samples = None, 0, None
                if task.features is None and _could_copy(source, task.audio_format):
                    with open(source.path, "rb") as handle:
                        data = handle.read()
                    if _is_pcm16(data, task.audio_format):
                        audio, num_samples = data, int(round(source.recording_duration * SAMPLE_RATE))
                        copied += 1
                if audio is None:
                    samples = read_segment(source)
                    audio, num_samples = encode(samples, task.audio_format), len(samples)
                features = _features(samples if samples is not None else read_segment(source)) if task.features == "fbank-lfr" else None
            except Exception as error:  # an unreadable recording skips its segment, with the reason
                skipped.append({"id": key, "reason": f"audio unreadable: {type(error).__name__}: {error}"})
                continue
            meta = sample_meta(source.meta, num_samples)
            members = [(f"{key}.{task.audio_format}", audio), (f"{key}.json", json.dumps(meta, ensure_ascii=False, sort_keys=True).encode("utf-8"))]
            if features is not None:
                members.append((f"{key}.npy", features))
            members.append((f"{key}.txt", (source.meta["text"] or "").encode("utf-8")))
            writer.add_many(members)
            stats.add(meta)
        writer.close()
    except BaseException:
        writer.abort()
        raise
    os.replace(tmp, final)
    return {"row": stats.row(task.relative_path, task.split, writer.size, writer.digest.hexdigest()), "copied": copied, "skipped": skipped}


class _ShardStats:
    """Count, seconds, hours by source and tasks of a shard, summed as it is written."""

    def __init__(self) -> None:
        self.count, self.seconds, self.by_source, self.tasks = 0, 0.0, {}, {"asr": 0, "ast": 0}

    def add(self, meta: dict) -> None:
        duration = float(meta.get("duration") or 0.0)
        source = meta.get("source") or "unknown"
        self.count += 1
        self.seconds += duration
        self.by_source[source] = self.by_source.get(source, 0.0) + duration / 3600.0
        self.tasks["asr"] += 1 if meta.get("text") else 0
        self.tasks["ast"] += 1 if meta.get("translation") else 0

    def row(self, relative: str, split: str, size: int, sha256: str) -> dict:
        return {
            "path": relative,
            "split": split,
            "count": self.count,
            "bytes": size,
            "sha256": sha256,
            "seconds": round(self.seconds, 3),
            "hours_by_source": json.dumps({k: round(v, 6) for k, v in sorted(self.by_source.items())}),
            "tasks": json.dumps(self.tasks, sort_keys=True),
        }


def index_row(path: Path, relative: str, split: str) -> dict:
    """An index row from the shard file itself (also how a rerun accounts for old shards)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    stats = _ShardStats()
    for sample in iter_shard(path):
        stats.add(dict(sample.meta, text=sample.text))
    return stats.row(relative, split, path.stat().st_size, digest.hexdigest())


def _existing_row(args: tuple[str, str, str]) -> dict:
    out_dir, relative, split = args
    return {"row": index_row(Path(out_dir) / relative, relative, split), "copied": 0, "skipped": []}


def _build(args: tuple[ShardTask, str]) -> dict:
    return build_shard(*args)


def write_shards(manifest_dirs: Sequence[Path | str], out_dir: Path | str, config: ShardConfig,
                 log: Callable[[str], None] = print, share: "PartSpec | None" = None) -> ShardResult:
    """Build the planned shards missing from ``out_dir`` and write the index.

    With ``share`` (``--part R/W``) the plan is made over every given manifest as usual,
    and this run builds the shards at positions R, R+W, R+2W... of it; ``out_dir`` then
    gets that part's index and ``plan.json``, and ``mooer-data merge-parts`` joins the parts.
    """
    out_dir = Path(out_dir)
    dirs, refs, skipped = collect_refs(manifest_dirs)
    if not refs:
        raise ValueError(f"no labelled segments to shard in {[str(d) for d in manifest_dirs]} ({len(skipped)} skipped)")
    planned = plan_shards(dirs, refs, config)
    tasks = planned if share is None else [t for position, t in enumerate(planned) if share.owns_position(position)]
    result = ShardResult(shards=len(tasks))
    todo = [t for t in tasks if not (out_dir / t.relative_path).is_file()]
    done = [t for t in tasks if (out_dir / t.relative_path).is_file()]
    result.skipped_existing = len(done)
    if done:
        log(f"shard: {len(done)} of {len(tasks)} shards already complete; building {len(todo)}")
    rows: dict[str, dict] = {}
    start = progress_factory(config.show_progress and sys.stderr.isatty())
    progress = start("shard", len(tasks)) if start else None
    jobs = max(1, config.jobs)
    work: Iterable[dict]
    if jobs == 1:
        work = [*(_existing_row((str(out_dir), t.relative_path, t.split)) for t in done), *(build_shard(t, str(out_dir)) for t in todo)]
    else:
        pool = ProcessPoolExecutor(max_workers=jobs)
        work = [*pool.map(_existing_row, [(str(out_dir), t.relative_path, t.split) for t in done]),
                *pool.map(_build, [(t, str(out_dir)) for t in todo])]
    try:
        for outcome in work:
            rows[outcome["row"]["path"]] = outcome["row"]
            result.copied += outcome["copied"]
            skipped.extend(outcome["skipped"])
            if progress:
                progress(1)
    finally:
        if jobs > 1:
            pool.shutdown()
    result.built = len(todo)
    ordered = [rows[t.relative_path] for t in tasks]
    result.samples = sum(r["count"] for r in ordered)
    result.seconds = sum(r["seconds"] for r in ordered)
    result.bytes = sum(r["bytes"] for r in ordered)
    for row in skipped:
        reason = row["reason"].split(":", 1)[0]
        result.skipped_segments[reason] = result.skipped_segments.get(reason, 0) + 1
    if share is None:
        write_index(out_dir, ordered, skipped)
    else:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_index(out_dir, ordered, skipped, lists=False)
        plan = {"part": str(share), "shards": [t.relative_path for t in planned]}
        (out_dir / PLAN_FILE).write_text(json.dumps(plan, indent=1) + "\n")
    log(
        f"shard: {result.samples} samples, {result.seconds / 3600:.3f} h in {result.shards} shards "
        f"({result.built} built, {result.skipped_existing} kept; {result.copied} copied as they were), "
        f"{len(skipped)} segments skipped -> {out_dir}"
    )
    return result


def write_index(out_dir: Path, rows: list[dict], skipped: list[dict], lists: bool = True) -> None:
    """index.parquet and skipped.parquet, and (``lists``) the split lists and data.list."""
    table = pa.Table.from_pylist(rows, schema=INDEX_SCHEMA)
    tmp = out_dir / (INDEX_FILE + ".tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, out_dir / INDEX_FILE)
    skipped_table = pa.Table.from_pylist(sorted(skipped, key=lambda r: r["id"]), schema=pa.schema([("id", pa.string()), ("reason", pa.string())]))
    pq.write_table(skipped_table, out_dir / SKIPPED_FILE)
    if not lists:
        return
    splits = sorted({r["split"] for r in rows})
    for split in splits:
        lines = "".join(str((out_dir / r["path"]).resolve()) + "\n" for r in rows if r["split"] == split)
        (out_dir / f"{split}.list").write_text(lines)
    train = [r for r in rows if r["split"] == "train"]
    # MooER's own loader reads data.list: one shard path per line
    (out_dir / DATA_LIST).write_text("".join(str((out_dir / r["path"]).resolve()) + "\n" for r in train))


# -- verifying -------------------------------------------------------------------------
def verify_shards(directory: Path | str) -> list[str]:
    """Problems found (empty when every shard matches the index and reads cleanly)."""
    directory = Path(directory)
    index_path = directory / INDEX_FILE
    if not index_path.is_file():
        return [f"{directory}: no {INDEX_FILE} (run `mooer-data shard`)"]
    problems = []
    rows = pq.read_table(index_path).to_pylist()
    for row in rows:
        path = directory / row["path"]
        if not path.is_file():
            problems.append(f"{row['path']}: listed in the index but missing")
            continue
        try:
            actual = index_row(path, row["path"], row["split"])
        except ValueError as error:
            problems.append(str(error))
            continue
        for name in ("sha256", "count", "bytes"):
            if actual[name] != row[name]:
                problems.append(f"{row['path']}: {name} is {actual[name]}, the index says {row[name]}")
    listed = {r["path"] for r in rows}
    for path in sorted(directory.glob("*/shard-*.tar")):
        relative = path.relative_to(directory).as_posix()
        if relative not in listed:
            problems.append(f"{relative}: a shard file the index does not list")
    data_list = directory / DATA_LIST
    if data_list.is_file():
        for line in data_list.read_text().splitlines():
            if line and not Path(line).is_file():
                problems.append(f"{DATA_LIST}: {line} does not exist")
    return problems

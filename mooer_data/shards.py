"""`mooer-data shard` and `mooer-data verify-shards`: manifests -> WebDataset tars + index.

The plan is deterministic: within each split, segments are ordered by the rank key of
(seed, id) — so every shard is a fair mix of sources, lengths and speakers — and cut
into shards by an estimated size (or a count). Each shard is built by a worker process,
written to ``<name>.tmp`` and renamed when complete, so a killed run leaves no half shard
and a rerun builds only the missing ones, byte-identical to an uninterrupted run (sorted
members, fixed mtime and owner, deterministic FLAC).

Audio is cut out of its recording and converted to 16 kHz mono 16-bit. Where the source
already is what the shard wants — a whole 16 kHz mono 16-bit file in the target format —
its bytes are copied, not decoded and re-encoded. A 16 kHz mono 16-bit PCM WAV is read
straight from its data chunk, and FLAC is encoded by libsndfile called directly (the
bytes soundfile.write gives, without its per-file Python layer). A worker's helper
threads make samples ahead of it while another worker has nothing left to build, so
the last shards of a run (or a run of one shard) still use every core.
"""

from __future__ import annotations

import gc
import hashlib
import io
import json
import multiprocessing
import os
import sys
import threading
from concurrent.futures import ProcessPoolExecutor
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from functools import partial
from operator import itemgetter
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, NamedTuple, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import soundfile as sf

from .manifest import open_manifest_dirs, resolve_audio_path
from .progress import progress_factory
from .sampling import rank_key
from .shard_format import DATA_LIST, INDEX_FILE, SAMPLE_RATE, SHARD_PATTERN, SampleJson, TarWriter, iter_shard, sample_pieces
from .shard_format import sample_meta as sample_meta  # noqa: F401  (re-exported: the json member's fields, for callers)

if TYPE_CHECKING:
    from .parts import PartSpec

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
class SegmentRef(NamedTuple):
    """What planning needs of a segment (a tuple: tens of thousands are made per run)."""

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
        usable = pc.and_(has_text, has_recording)
        # the usable rows are gathered column-wise by Arrow; only the rest are looked at one by one
        rows = np.flatnonzero(usable.to_numpy(zero_copy_only=False))
        kept = segments.select(["id", "split", "duration"]).filter(usable).to_pydict()
        splits = ["train" if not split else split for split in kept["split"]]
        durations = [0.0 if not duration else duration for duration in kept["duration"]]
        refs.extend(map(SegmentRef._make, zip([index] * len(rows), rows.tolist(), kept["id"], splits, durations)))
        if len(rows) < segments.num_rows:
            columns = segments.select(["id", "recording_id"]).to_pydict()
            for row, (text_ok, ok) in enumerate(zip(has_text.to_pylist(), usable.to_pylist())):
                if ok:
                    continue
                segment_id = columns["id"][row]
                if not text_ok:
                    skipped.append({"id": segment_id, "reason": "no text: label it first (mooer-data pseudolabel)"})
                else:
                    skipped.append({"id": segment_id, "reason": f"recording {columns['recording_id'][row]} is not in {directory.path}/recordings.parquet"})
    return [str(d.path) for d in dirs], refs, skipped


def plan_shards(dirs: list[str], refs: list[SegmentRef], config: ShardConfig) -> list[ShardTask]:
    by_split: dict[str, list[SegmentRef]] = {}
    for ref in refs:
        by_split.setdefault(ref.split, []).append(ref)
    tasks: list[ShardTask] = []
    per_byte = BYTES_PER_SECOND[config.audio_format]
    for split in sorted(by_split):
        group = by_split[split]
        ids = [ref.id for ref in group]
        # (rank, id, position): ranks tie only by chance, ids never (a position keeps refs out of the comparison)
        order = sorted(zip(map(partial(rank_key, config.seed), ids), ids, range(len(group))))
        current: list[SegmentRef] = []
        size = 0.0
        for _rank, _id, position in order:
            ref = group[position]
            estimate = ref.duration * per_byte
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
    rows = tuple((r.directory, r.row) for r in sorted(refs, key=itemgetter(2)))  # member (id) order
    return ShardTask(split, index, rows, tuple(dirs), config.audio_format, config.features)


# -- a worker's view of the manifests ----------------------------------------------------
@dataclass
class _Manifest:
    """One manifest directory as a worker holds it: its Arrow tables, each segment row's
    recording row and the audio roots. Only the rows of the shard being built become
    Python objects (turning whole tables into dicts in every worker cost more than
    copying a shard's audio)."""

    path: str
    segments: pa.Table
    recordings: pa.Table
    recording_row: np.ndarray  # per segment row: its recording's row, -1 if none
    bases: dict[str, str]


# A worker reads each manifest once and keeps it for the shards it builds after; the
# main process empties this before each run, so neither it nor a forked worker reuses
# a manifest that has changed since.
_MANIFESTS: dict[str, _Manifest] = {}
_RECORDING_COLUMNS = ("path", "source", "duration", "format", "sample_rate", "channels")


def _manifest(directory: str) -> _Manifest:
    if directory not in _MANIFESTS:
        import pyarrow.compute as pc

        manifest = open_manifest_dirs([directory])[0]
        segments, recordings = manifest.read("segments"), manifest.read("recordings")
        rows = pc.fill_null(pc.index_in(segments.column("recording_id"), value_set=recordings.column("id")), -1)
        bases = {source: str(resolve_audio_path(root, "", source)) for source, root in manifest.roots().items()}
        _MANIFESTS[directory] = _Manifest(str(manifest.path), segments, recordings.select(list(_RECORDING_COLUMNS)),
                                          rows.to_numpy(zero_copy_only=False), bases)
    return _MANIFESTS[directory]


def _read_manifests(dirs: Sequence[str]) -> None:
    """Fill the cache ahead of the building; a manifest that fails to read here is read
    (and its error raised) again where it is needed."""
    for directory in dirs:
        try:
            _manifest(directory)
        except Exception:  # read again, and its error reported, by the shard that needs it
            _MANIFESTS.pop(directory, None)


@dataclass
class _TaskRows:
    """A task's segments as columns, in member order, with their recordings' columns and
    audio paths."""

    count: int
    segments: dict[str, list]
    recordings: dict[str, list]
    paths: list[str]


def _task_rows(task: ShardTask) -> _TaskRows:
    groups: dict[int, tuple[list[int], list[int]]] = {}
    for position, (directory, row) in enumerate(task.rows):
        positions, rows = groups.setdefault(directory, ([], []))
        positions.append(position)
        rows.append(row)
    count = len(task.rows)
    segments: dict[str, list] = {}
    recordings: dict[str, list] = {name: [None] * count for name in (*_RECORDING_COLUMNS, "resolved")}
    for directory, (positions, rows) in groups.items():
        manifest = _manifest(task.manifest_dirs[directory])
        recording_rows = manifest.recording_row[rows]
        if len(recording_rows) and recording_rows.min() < 0:
            missing = manifest.segments.column("id")[rows[int(np.argmin(recording_rows))]].as_py()
            raise ValueError(f"{manifest.path}: expected a recording for segment {missing}, found none (the manifest changed since planning?)")
        seg = manifest.segments.take(rows).to_pydict()
        rec = manifest.recordings.take(recording_rows).to_pydict()
        bases = manifest.bases
        # string joins: a pathlib object per row cost more than copying the audio
        rec["resolved"] = [path if (base := bases.get(source)) is None or path.startswith("/") else os.path.join(base, path)
                           for path, source in zip(rec["path"], rec["source"])]
        if len(groups) == 1:
            segments = seg
            recordings = rec
            break
        for name, values in seg.items():
            column = segments.setdefault(name, [None] * count)
            for position, value in zip(positions, values):
                column[position] = value
        for name, values in rec.items():
            column = recordings[name]
            for position, value in zip(positions, values):
                column[position] = value
    return _TaskRows(count, segments, recordings, recordings["resolved"])


# -- audio -----------------------------------------------------------------------------
def _whole_16k_mono(start: float | None, duration: float, recording_duration: float, recording_format: str,
                    recording_rate: int, recording_channels: int, audio_format: str) -> bool:
    """From the manifest alone: the recording is the whole sample, 16 kHz mono, target format."""
    if recording_format != audio_format or recording_rate != SAMPLE_RATE or recording_channels != 1:
        return False
    return (start or 0.0) <= 1e-6 and abs(duration - recording_duration) <= 1e-3


def _wav_layout(data: bytes) -> tuple[int, int, int, int, int, int] | None:
    """(format tag, channels, rate, bits, data offset, data bytes) of a RIFF/WAVE header in
    ``data``; data offset and bytes are -1 when the data chunk starts beyond ``data``."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    offset, fmt = 12, None
    while offset + 8 <= len(data):
        chunk, size = data[offset : offset + 4], int.from_bytes(data[offset + 4 : offset + 8], "little")
        if chunk == b"fmt " and offset + 24 <= len(data):
            body = data[offset + 8 : offset + 24]
            fmt = (int.from_bytes(body[0:2], "little"), int.from_bytes(body[2:4], "little"), int.from_bytes(body[4:8], "little"),
                   int.from_bytes(body[14:16], "little"))
        elif chunk == b"data":
            return (*fmt, offset + 8, size) if fmt else None
        offset += 8 + size + (size & 1)
    return (*fmt, -1, -1) if fmt else None


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


def _read_file(path: str) -> bytes:
    """A whole file in one read (no buffered-reader objects, no read-to-EOF probe)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        data = os.read(fd, size)
        while len(data) < size:  # a short read: the rest in further reads
            more = os.read(fd, size - len(data))
            if not more:
                break
            data += more
        return data
    finally:
        os.close(fd)


def _read_wav_pcm16(path: str, start: float, duration: float) -> np.ndarray | None:
    """The segment straight from the data chunk of a 16 kHz mono 16-bit PCM WAV, the same
    samples libsndfile reads; None for anything else (libsndfile reads those). Going
    through libsndfile's open cost more than the read itself for a short utterance."""
    first, count = int(round(start * SAMPLE_RATE)), int(round(duration * SAMPLE_RATE))
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None  # libsndfile's path reports it, as it always has
    try:
        layout = _wav_layout(os.pread(fd, 4096, 0))
        if layout is None or layout[:4] != (1, 1, SAMPLE_RATE, 16):
            return None
        offset, size = layout[4:]
        frames = size // 2
        # anything libsndfile might read differently (a data size it must guess, a seek
        # past the end, a negative count meaning "all") goes to libsndfile
        if size <= 0 or offset + size > os.fstat(fd).st_size or not 0 <= first <= frames or count < 0:
            return None
        wanted, at = 2 * min(count, frames - first), offset + 2 * first
        if hasattr(os, "preadv"):  # straight into a writable buffer, like libsndfile's arrays
            buffer = bytearray(wanted)
            got = os.preadv(fd, [buffer], at) if wanted else 0
        else:
            buffer = bytearray(os.pread(fd, wanted, at))
            got = len(buffer)
        return np.frombuffer(buffer, dtype="<i2") if got == wanted else None
    finally:
        os.close(fd)


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
    if source.recording_format == "wav" or source.path.lower().endswith(".wav"):
        samples = _read_wav_pcm16(source.path, start, duration)
        if samples is not None:
            return samples
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
    """16-bit audio at libsndfile's default FLAC compression level (5), the level the
    benchmark's bare transcode floor and Lhotse use too."""
    if audio_format == "flac" and samples.dtype == np.int16 and samples.ndim == 1:
        encoded = _LeanFlac.encode(samples)
        if encoded is not None:
            return encoded
    buffer = io.BytesIO()
    sf.write(buffer, samples, SAMPLE_RATE, format=audio_format.upper(), subtype="PCM_16")
    return buffer.getvalue()


class _LeanFlac:
    """int16 mono -> FLAC through libsndfile's C API as soundfile loads it, making the
    calls ``soundfile.write`` makes, in its order, so the bytes are the same (tested).

    soundfile's Python layer around those calls (a SoundFile object, five fresh C
    callbacks per file, checks and seeks through Python wrappers) cost ~10% of encoding
    a short utterance; here the callbacks are made once and find their buffer through
    libsndfile's user-data pointer. None when this soundfile does not expose its C API
    the same way: the caller then uses soundfile.write."""

    _vio = None
    _callbacks: tuple = ()
    _available: bool | None = None

    @classmethod
    def _setup(cls) -> bool:
        try:
            from soundfile import _ffi, _formats, _snd, _subtypes

            def file_length(user):
                sink = _ffi.from_handle(user)
                current = sink.tell()
                size = sink.seek(0, io.SEEK_END)
                sink.seek(current)
                return size

            def seek(offset, whence, user):
                return _ffi.from_handle(user).seek(offset, whence)

            def read(pointer, count, user):
                return _ffi.from_handle(user).readinto(_ffi.buffer(pointer, count))

            def write(pointer, count, user):
                return _ffi.from_handle(user).write(_ffi.buffer(pointer, count))

            def tell(user):
                return _ffi.from_handle(user).tell()

            callbacks = (_ffi.callback("sf_vio_get_filelen", file_length), _ffi.callback("sf_vio_seek", seek),
                         _ffi.callback("sf_vio_read", read), _ffi.callback("sf_vio_write", write), _ffi.callback("sf_vio_tell", tell))
            cls._vio = _ffi.new("SF_VIRTUAL_IO*", dict(zip(("get_filelen", "seek", "read", "write", "tell"), callbacks)))
            cls._callbacks = callbacks  # kept alive as long as the struct pointing at them
            cls._lib, cls._ffi, cls._format = _snd, _ffi, _formats["FLAC"] | _subtypes["PCM_16"]
            cls._constants = (_snd.SFM_WRITE, _snd.SFC_SET_CLIPPING, _snd.SF_TRUE)
        except (ImportError, AttributeError, KeyError, TypeError):
            return False
        return True

    @classmethod
    def encode(cls, samples: np.ndarray) -> bytes | None:
        if cls._available is None:
            cls._available = cls._setup()
        if not cls._available:
            return None
        lib, ffi = cls._lib, cls._ffi
        write_mode, set_clipping, true = cls._constants
        sink = io.BytesIO()
        user = ffi.new_handle(sink)
        info = ffi.new("SF_INFO*", {"samplerate": SAMPLE_RATE, "channels": 1, "format": cls._format})
        handle = lib.sf_open_virtual(cls._vio, write_mode, info, user)
        if handle == ffi.NULL:
            return None  # soundfile.write then raises with libsndfile's message
        try:
            lib.sf_command(handle, set_clipping, ffi.NULL, true)
            seekable = info.seekable == true
            # soundfile.write: tell, write, seek past the frames, then frames = seek to the end, seek back
            position = lib.sf_seek(handle, 0, io.SEEK_CUR) if seekable else 0
            frames = lib.sf_writef_short(handle, ffi.from_buffer("short[]", np.ascontiguousarray(samples)), len(samples))
            if frames != len(samples) or lib.sf_error(handle):
                raise sf.LibsndfileError(lib.sf_error(handle), prefix="FLAC encoding: ")
            if seekable:
                lib.sf_seek(handle, position + frames, io.SEEK_SET)
                current = lib.sf_seek(handle, 0, io.SEEK_CUR)
                lib.sf_seek(handle, 0, io.SEEK_END)
                lib.sf_seek(handle, current, io.SEEK_SET)
            lib.sf_write_sync(handle)
        finally:
            error = lib.sf_close(handle)
        if error:
            raise sf.LibsndfileError(error, prefix="FLAC encoding: ")
        return sink.getvalue()


def _features(samples: np.ndarray) -> bytes:
    import torch

    from mooer_model.frontend import apply_lfr, fbank

    waves = torch.from_numpy(samples.astype(np.float32) / 32768.0)[None]
    feats, frames = fbank(waves, torch.tensor([len(samples)]))
    lfr, lengths = apply_lfr(feats, frames)
    buffer = io.BytesIO()
    np.save(buffer, lfr[0, : int(lengths[0])].numpy().astype(np.float16))
    return buffer.getvalue()


# -- one shard's samples -----------------------------------------------------------------
@dataclass
class _Made:
    """One sample ready for the tar: its member bytes, or why it was left out."""

    pieces: Sequence = ()
    copied: bool = False
    skip_reason: str | None = None


class _ShardSamples:
    """Makes the samples of one shard by position: audio (copied or converted), the json
    (encoded for the whole shard at once) and the txt, as tar member bytes. Thread-safe:
    helper threads make samples ahead of the writer."""

    def __init__(self, task: ShardTask):
        rows = _task_rows(task)
        self.count = rows.count
        self._rows = rows
        segments = rows.segments
        self.ids, self.durations, self.sources = segments["id"], segments["duration"], segments["source"]
        self.texts, self.translations = segments["text"], segments.get("translation") or [None] * rows.count
        self._starts = segments["start"]
        self._json = SampleJson(segments, rows.count)
        self._format, self._feature_kind = task.audio_format, task.features

    def source(self, index: int) -> SegmentSource:
        rec = self._rows.recordings
        meta = {name: values[index] for name, values in self._rows.segments.items()}
        return SegmentSource(meta, self._rows.paths[index], rec["duration"][index] or 0.0, rec["format"][index] or "",
                             rec["sample_rate"][index] or 0, rec["channels"][index] or 0)

    def _copyable(self, index: int) -> bool:
        rec = self._rows.recordings
        return self._feature_kind is None and _whole_16k_mono(
            self._starts[index], self.durations[index], rec["duration"][index] or 0.0, rec["format"][index] or "",
            rec["sample_rate"][index] or 0, rec["channels"][index] or 0, self._format)

    def make(self, index: int) -> _Made:
        key, fmt = self.ids[index], self._format
        try:
            audio, num_samples, samples, copied = None, 0, None, False
            if self._copyable(index):
                data = _read_file(self._rows.paths[index])
                if _is_pcm16(data, fmt):
                    audio, copied = data, True
                    num_samples = int(round((self._rows.recordings["duration"][index] or 0.0) * SAMPLE_RATE))
            if audio is None:
                samples = read_segment(self.source(index))
                audio, num_samples = encode(samples, fmt), len(samples)
            features = _features(samples) if self._feature_kind else None  # never a copy: samples are in hand
        except Exception as error:  # an unreadable recording skips its segment, with the reason
            return _Made(skip_reason=f"audio unreadable: {type(error).__name__}: {error}")
        members = [(fmt, audio), ("json", self._json.member(index, num_samples))]
        if features is not None:
            members.append(("npy", features))
        members.append(("txt", (self.texts[index] or "").encode("utf-8")))
        return _Made(sample_pieces(key, members), copied)


# -- spreading a shard over the pool's idle cores -----------------------------------------
# Set in each pool worker (ProcessPoolExecutor initializer): a semaphore holding one token
# per idle core of the pool, and how many helper threads a worker may run. A worker holds
# a token while it builds a shard; its helper threads make samples ahead of it only with a
# token of their own, i.e. only while another worker has nothing to build (the last
# shards of a run, or one shard for the whole run), so a busy pool never runs more
# threads than cores.
_CORES = None
_HELPERS = 0
_HELPER_WINDOW = 8  # samples a helper may run ahead of the writer, per helper: bounds memory
_MAX_HELPERS = 7  # threads share one interpreter lock: beyond a few, more buy little
_TOKEN_WAIT_S = 0.1  # a waiting helper wakes at once when a core frees; this is how often it checks its shard is done


def _init_worker(cores, helpers: int) -> None:
    global _CORES, _HELPERS
    _CORES, _HELPERS = cores, helpers
    # what the worker inherited from the main process stays out of its garbage collector:
    # a full collection would walk (and copy-on-write) all of it, and none of it is the worker's
    gc.freeze()


@contextmanager
def _collector_paused() -> Iterator[None]:
    """No garbage collection while planning: it makes tens of thousands of small tuples
    and no cycles, and each full collection walked the caller's whole heap."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@contextmanager
def _core() -> Iterator[None]:
    """This worker's token while it works (nothing to hold outside a pool)."""
    if _CORES is None:
        yield
        return
    _CORES.acquire()
    try:
        yield
    finally:
        _CORES.release()


class _InOrder:
    """Results of ``make(0) ... make(count - 1)``, in order, made on the calling thread and,
    while a token of ``cores`` is free, by helper threads too. The caller makes the next
    sample no one has taken; a sample a helper is still making is waited for only when
    the window ahead of the writer is full."""

    def __init__(self, count: int, make: Callable[[int], _Made], cores, helpers: int):
        self._count, self._make, self._cores = count, make, cores
        self._helpers = helpers if cores is not None and count > 1 else 0
        self._window = _HELPER_WINDOW * max(1, self._helpers)
        self._results: dict[int, tuple[bool, object]] = {}
        self._next = 0  # the first sample no one has taken
        self._cursor = 0  # the sample the writer waits for
        self._done = False
        self._changed = threading.Condition()

    def _take(self) -> int | None:
        """The next sample to make, if it is within the window (call with the lock held)."""
        if self._next < self._count and self._next < self._cursor + self._window:
            self._next += 1
            return self._next - 1
        return None

    def _run(self, index: int) -> tuple[bool, object]:
        try:
            return True, self._make(index)
        except BaseException as error:  # raised again in the writer's thread
            return False, error

    def _help(self) -> None:
        while True:
            with self._changed:
                while not self._done and not (self._next < self._count and self._next < self._cursor + self._window):
                    self._changed.wait()
                if self._done:
                    return
            if not self._cores.acquire(timeout=_TOKEN_WAIT_S):
                continue  # every core is busy: look again shortly
            try:
                with self._changed:
                    index = None if self._done else self._take()
                result = self._run(index) if index is not None else None
            finally:
                self._cores.release()
            if index is not None:
                with self._changed:
                    self._results[index] = result
                    self._changed.notify_all()

    def __iter__(self) -> Iterator[_Made]:
        if not self._helpers:
            for index in range(self._count):
                yield self._make(index)
            return
        threads = [threading.Thread(target=self._help, daemon=True, name=f"shard-helper-{n}") for n in range(self._helpers)]
        for thread in threads:
            thread.start()
        try:
            for position in range(self._count):
                while True:
                    with self._changed:
                        if position in self._results:
                            ok, value = self._results.pop(position)
                            self._cursor = position + 1
                            self._changed.notify_all()
                            break
                        index = self._take()
                        if index is None:
                            self._changed.wait()
                            continue
                    result = self._run(index)
                    with self._changed:
                        self._results[index] = result
                if not ok:
                    raise value  # type: ignore[misc]
                yield value  # type: ignore[misc]
        finally:
            with self._changed:
                self._done = True  # helpers leave at their next look; none is making a sample the writer needs
                self._changed.notify_all()


# -- writing ---------------------------------------------------------------------------
def build_shard(task: ShardTask, out_dir: str) -> dict:
    """Write one shard (to .tmp, then rename); returns its index row plus counters."""
    final = Path(out_dir) / task.relative_path
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(final.name + ".tmp")
    copied = 0
    skipped = []
    stats = _ShardStats()
    with _core():
        samples = _ShardSamples(task)
        writer = TarWriter(tmp)
        try:
            # closing: helpers stop even when writing fails half way
            with closing(iter(_InOrder(samples.count, samples.make, _CORES, _HELPERS))) as made_in_order:
                for index, made in enumerate(made_in_order):
                    if made.skip_reason is not None:
                        skipped.append({"id": samples.ids[index], "reason": made.skip_reason})
                        continue
                    writer.add_pieces(made.pieces)
                    copied += made.copied
                    stats.add_sample(samples.durations[index], samples.sources[index], samples.texts[index], samples.translations[index])
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
        self.add_sample(meta.get("duration"), meta.get("source"), meta.get("text"), meta.get("translation"))

    def add_sample(self, duration: float | None, source: str | None, text: str | None, translation: str | None) -> None:
        duration = float(duration or 0.0)
        source = source or "unknown"
        self.count += 1
        self.seconds += duration
        self.by_source[source] = self.by_source.get(source, 0.0) + duration / 3600.0
        self.tasks["asr"] += 1 if text else 0
        self.tasks["ast"] += 1 if translation else 0

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
    with _core():
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
    _MANIFESTS.clear()  # this run reads the manifests as they are now (forked workers inherit this cache)
    with _collector_paused():
        dirs, refs, skipped = collect_refs(manifest_dirs)
        if not refs:
            raise ValueError(f"no labelled segments to shard in {[str(d) for d in manifest_dirs]} ({len(skipped)} skipped)")
        # the whole manifests are read for the building (here, or inherited by forked workers)
        # while the plan is made: Arrow reads them without holding the interpreter lock
        reading = threading.Thread(target=_read_manifests, args=(dirs,), name="shard-manifests")
        reading.start()
        try:
            planned = plan_shards(dirs, refs, config)
        finally:
            reading.join()  # before any fork: no thread may be mid-read in a child
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
        context = multiprocessing.get_context()
        cores = context.Semaphore(jobs)  # one token per worker; see _InOrder
        helpers = min(jobs - 1, _MAX_HELPERS)
        pool = ProcessPoolExecutor(max_workers=jobs, mp_context=context, initializer=_init_worker, initargs=(cores, helpers))
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

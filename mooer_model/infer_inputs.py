"""What ``mooer-infer`` decodes: utterances from wav lists, manifests, shards or test sets.

Every reader turns its input into :class:`TestSet` objects whose items are
:class:`Utterance` (audio read lazily, as 16 kHz mono float32 in [-1, 1], with whatever
references the input carries) or :class:`Rejected` (the key and a reason a person
understands: a missing file, unreadable audio, a corrupt shard). Nothing is dropped
silently.

=============  ============================================================  ==========
input type     what it is                                                    test sets
=============  ============================================================  ==========
``wav-scp``    Kaldi ``wav.scp`` ("uttid path" lines) or one path a line;     one
               a Kaldi data directory (``wav.scp`` + ``text``) also works
``manifest``   a manifest directory: each segment cut from its recording     one a split
``shards``     a shard directory (``<split>/shard-*.tar``), a ``data.list``   one a split
               / ``*.list`` of tar paths, or one ``.tar``
``test-sets``  MooER's test layout ``<dir>/<set>/{data.list, text}``          one a set
``audio``      one audio file (.wav .flac .mp3 .ogg .opus .m4a); its key is   one
               the file name without extension
=============  ============================================================  ==========

Shards are read with :func:`mooer_data.shard_format.iter_shard` when they are ours
(``<id>.json`` members); MooER's own shards (WeNet style: ``<key>.wav`` + ``<key>.txt``,
no json) are read by a lenient reader with the same safety checks.

A label file (the test layout's ``text``, a Kaldi ``text``, a WeNet shard's ``.txt``,
``--ref``) holds the reference of the task's own output: the transcript for asr and mtl,
the translation for ast (:func:`reference_field`).
"""

from __future__ import annotations

import io
import os
import tarfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import soundfile as sf

from mooer_data.audio import AudioProblem, probe
from mooer_data.manifest import ManifestError, open_manifest_dirs, resolve_audio_path
from mooer_data.shard_format import DATA_LIST, INDEX_FILE, ShardError, iter_shard
from mooer_data.shards import SegmentSource, read_segment
from mooer_data.shards import _resample as resample_to_16k  # the shard writer's resampler, so both paths agree

SAMPLE_RATE = 16000
# What a WeNet/MooER shard may hold as audio (soundfile decodes all of these).
WENET_AUDIO = ("wav", "flac", "opus", "ogg", "mp3")
# A source file with one of these suffixes is one utterance, not a list to parse as text.
AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a")
INPUT_TYPES = ("auto", "wav-scp", "manifest", "shards", "test-sets", "audio")


class InputError(ValueError):
    """An input that cannot be read as asked; the message names the file and the line."""


@dataclass
class Utterance:
    key: str
    duration: float  # seconds, from a header or metadata: sorting and the 30 s limit
    read: Callable[[], np.ndarray] = field(repr=False)  # 16 kHz mono float32 in [-1, 1]
    language: str | None = None
    text: str | None = None  # reference transcript
    translation: str | None = None  # reference translation


@dataclass(frozen=True)
class Rejected:
    key: str
    reason: str


Item = Utterance | Rejected


@dataclass
class TestSet:
    __test__ = False  # not a pytest test class, whatever its name

    name: str
    items: Callable[[], Iterator[Item]] = field(repr=False)  # a fresh pass each call
    # The files the set is read from (lists, labels, shards, audio): a rerun stamps their
    # size and mtime, so a regenerated input is decoded again rather than reused.
    files: tuple[Path, ...] = ()


def reference_field(task: str) -> str:
    """Which reference a task's own label file holds: ``translation`` for ast, else ``text``."""
    return "translation" if task == "ast" else "text"


# --------------------------------------------------------------------------------------
# label files and lists
# --------------------------------------------------------------------------------------
def _lines(path: Path) -> list[tuple[int, str]]:
    """(line number, stripped line) of a UTF-8 text file, BOM and CRLF tolerated."""
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise InputError(f"{path}: expected UTF-8 text, found undecodable bytes at offset {error.start}") from None
    return [(number, line.strip()) for number, line in enumerate(text.splitlines(), 1) if line.strip()]


def read_label_file(path: str | os.PathLike) -> dict[str, str]:
    """A Kaldi ``text`` file: ``uttid label`` lines (a key alone means an empty label).

    The key ends at the first run of spaces or tabs; the label keeps its inner spaces.
    """
    path = Path(path)
    labels: dict[str, str] = {}
    for number, line in _lines(path):
        key, label = (line.split(maxsplit=1) + [""])[:2]
        if key in labels:
            raise InputError(f"{path} line {number}: expected each uttid once, found {key!r} again")
        labels[key] = label
    return labels


def parse_wav_list(path: str | os.PathLike) -> list[tuple[str, Path]]:
    """``(key, audio path)`` from a Kaldi ``wav.scp`` or a plain list of paths.

    The first line decides the form: two fields are ``uttid path``, one is a path (its
    key is the file name without extension). Relative paths are taken as they are, or
    from the list's own directory when they do not exist from here.
    """
    path = Path(path)
    entries: list[tuple[str, Path]] = []
    seen: dict[str, int] = {}
    form = None
    for number, line in _lines(path):
        fields = line.split()
        if line.endswith("|"):
            raise InputError(f"{path} line {number}: expected 'uttid path', found a Kaldi pipe command {line!r} "
                             "(extract the audio to files first)")
        if len(fields) > 2:
            raise InputError(f"{path} line {number}: expected 'uttid path' (two fields), found {len(fields)} fields: {line!r}")
        form = form or len(fields)
        if len(fields) != form:
            expected = "'uttid path'" if form == 2 else "a single path"
            raise InputError(f"{path} line {number}: expected {expected} like the first line, found {line!r}")
        key, audio = (fields[0], fields[1]) if form == 2 else (Path(fields[0]).stem, fields[0])
        if key in seen:
            raise InputError(f"{path} line {number}: expected each uttid once, found {key!r} again (first on line {seen[key]})")
        seen[key] = number
        entries.append((key, _locate(Path(audio), path.parent)))
    return entries


def _locate(candidate: Path, base: Path) -> Path:
    if candidate.is_absolute() or candidate.exists() or not (base / candidate).exists():
        return candidate
    return base / candidate


def read_tar_list(path: str | os.PathLike) -> list[Path]:
    """The shard paths of a ``data.list`` (one a line, as MooER's ``make_shard_list.py`` writes)."""
    path = Path(path)
    shards = []
    for number, line in _lines(path):
        if not line.endswith(".tar") and not line.endswith(".tar.gz"):
            raise InputError(f"{path} line {number}: expected a shard path ending in .tar, found {line!r}")
        shards.append(_locate(Path(line), path.parent))
    return shards


# --------------------------------------------------------------------------------------
# audio
# --------------------------------------------------------------------------------------
def _file_reader(path: Path, start: float, duration: float) -> Callable[[], np.ndarray]:
    """Read a cut of a recording through the shard writer's reader (any format, any rate,
    downmixed and resampled to 16 kHz mono)."""

    def read() -> np.ndarray:
        # read_segment looks at the cut and the path only; the recording facts are for planning
        source = SegmentSource({"start": start, "duration": duration}, str(path), 0.0, "", 0, 0)
        return read_segment(source).astype(np.float32) / 32768.0

    return read


def decode_bytes(data: bytes) -> np.ndarray:
    """Encoded audio (a shard member) as 16 kHz mono float32."""
    with sf.SoundFile(io.BytesIO(data)) as handle:
        rate = handle.samplerate
        samples = handle.read(dtype="float32", always_2d=True)
    mono = samples.mean(axis=1) if samples.shape[1] > 1 else samples[:, 0]
    return resample_to_16k(np.ascontiguousarray(mono), rate)


def _bytes_duration(data: bytes) -> float:
    return float(sf.info(io.BytesIO(data)).duration)


# --------------------------------------------------------------------------------------
# wav.scp
# --------------------------------------------------------------------------------------
def wav_list_set(path: Path, name: str, labels: dict[str, str] | None, task: str,
                 label_file: Path | None = None) -> TestSet:
    entries = parse_wav_list(path)  # parsed now, so a bad line fails before any decoding
    return audio_files_set(name, entries, labels, task, (path, *([label_file] if label_file else [])))


def audio_files_set(name: str, entries: Sequence[tuple[str, Path]], labels: dict[str, str] | None, task: str,
                    lists: Sequence[Path] = ()) -> TestSet:
    """A set of whole audio files, ``(key, path)`` each (``lists``: the files naming them)."""
    target = reference_field(task)

    def items() -> Iterator[Item]:
        for key, audio_path in entries:
            info = probe(audio_path)
            if isinstance(info, AudioProblem):
                yield Rejected(key, info.reason)
                continue
            utterance = Utterance(key, info.duration, _file_reader(audio_path, 0.0, info.duration))
            if labels is not None and key in labels:
                setattr(utterance, target, labels[key])
            yield utterance

    return TestSet(name, items, (*lists, *(audio for _, audio in entries)))


# --------------------------------------------------------------------------------------
# manifests
# --------------------------------------------------------------------------------------
def manifest_sets(path: Path, split: str | None = None) -> list[TestSet]:
    """One test set per split of a manifest directory (segments cut from their recordings)."""
    manifest = open_manifest_dirs([path])[0]
    segments = manifest.read("segments").to_pylist()
    recordings = {row["id"]: row for row in manifest.read("recordings").to_pylist()}
    roots = manifest.roots()
    by_split: dict[str, list[dict]] = {}
    for segment in segments:
        by_split.setdefault(segment.get("split") or "all", []).append(segment)
    if split is not None:
        if split not in by_split:
            raise InputError(f"{path}: expected a split among {sorted(by_split)}, found {split!r}")
        by_split = {split: by_split[split]}
    if not by_split:
        raise InputError(f"{path}: expected segments to decode, found none in segments.parquet")

    def items_of(rows: list[dict]) -> Callable[[], Iterator[Item]]:
        def items() -> Iterator[Item]:
            for segment in rows:
                recording = recordings.get(segment["recording_id"])
                if recording is None:
                    yield Rejected(segment["id"], f"recording {segment['recording_id']} is not in {path}/recordings.parquet")
                    continue
                audio_path = resolve_audio_path(roots.get(recording["source"]), recording["path"], recording["source"])
                if not audio_path.is_file():
                    yield Rejected(segment["id"], f"audio file {audio_path} does not exist")
                    continue
                duration = float(segment["duration"] or recording["duration"] or 0.0)
                yield Utterance(segment["id"], duration, _file_reader(audio_path, float(segment["start"] or 0.0), duration),
                                segment.get("language"), segment.get("text"), segment.get("translation"))

        return items

    # The manifest's tables (the audio they point at is never edited in place: the design's stage contract).
    tables = tuple(sorted(p for p in path.glob("*.parquet")))
    return [TestSet(name, items_of(rows), tables) for name, rows in sorted(by_split.items())]


# --------------------------------------------------------------------------------------
# shards
# --------------------------------------------------------------------------------------
def _safe_member(shard: Path, member: tarfile.TarInfo) -> None:
    if member.name.startswith("/") or ".." in member.name.split("/"):
        raise ShardError(f"{shard}: refusing member {member.name!r}: an absolute or parent path")
    if not member.isfile():
        raise ShardError(f"{shard}: refusing member {member.name!r}: expected only regular files")


def _is_mooer_data_shard(shard: Path) -> bool:
    """Ours (``<id>.json`` beside the audio) or MooER's own (WeNet: audio + txt only)?
    Looks at the first sample's members."""
    try:
        with tarfile.open(shard, mode="r|*") as archive:
            first_key = None
            for member in archive:
                key, _, ext = member.name.rpartition(".")
                if first_key is None:
                    first_key = key
                elif key != first_key:
                    return False
                if ext == "json":
                    return True
    except tarfile.TarError as error:
        raise ShardError(f"{shard}: truncated or corrupt tar ({error})") from None
    return False


def iter_wenet_shard(shard: Path) -> Iterator[tuple[str, bytes, str | None]]:
    """``(key, audio bytes, label)`` of a WeNet/MooER shard: members grouped by the name
    before the last dot, as WeNet's ``tar_file_and_group`` does."""
    try:
        archive = tarfile.open(shard, mode="r|*")
    except (tarfile.TarError, OSError) as error:
        raise ShardError(f"{shard}: not a readable tar ({error})") from None

    def sample(key: str, parts: dict[str, bytes]) -> tuple[str, bytes, str | None]:
        audio = next((parts[ext] for ext in WENET_AUDIO if ext in parts), None)
        if audio is None:
            raise ShardError(f"{shard}: sample {key!r} has no audio member (expected one of {', '.join(WENET_AUDIO)})")
        label = parts["txt"].decode("utf-8").strip() if "txt" in parts else None
        return key, audio, label

    key, parts = None, {}
    with archive:
        try:
            for member in archive:
                _safe_member(shard, member)
                member_key, _, ext = member.name.rpartition(".")
                if member_key != key:
                    if key is not None:
                        yield sample(key, parts)
                    key, parts = member_key, {}
                handle = archive.extractfile(member)
                parts[ext] = handle.read() if handle else b""
        except tarfile.TarError as error:
            raise ShardError(f"{shard}: truncated or corrupt tar ({error})") from None
        except UnicodeDecodeError as error:
            raise ShardError(f"{shard}: sample {key!r} has a label that is not UTF-8 ({error})") from None
        if key is not None:
            yield sample(key, parts)


def _shard_items(shard: Path, target: str) -> Iterator[Item]:
    """The utterances of one shard; a shard that cannot be read becomes one rejected row."""
    try:
        if not shard.is_file():
            raise ShardError(f"{shard}: shard file does not exist")
        if _is_mooer_data_shard(shard):
            for sample in iter_shard(shard):
                meta = sample.meta
                samples = meta.get("num_samples")
                duration = samples / SAMPLE_RATE if samples else float(meta.get("duration") or _bytes_duration(sample.audio))
                yield Utterance(sample.key, duration, _bytes_reader(sample.audio), meta.get("language"),
                                meta.get("text") or sample.text, meta.get("translation"))
        else:
            for key, audio, label in iter_wenet_shard(shard):
                try:
                    duration = _bytes_duration(audio)
                except (sf.LibsndfileError, RuntimeError, TypeError) as error:
                    yield Rejected(key, f"audio unreadable: {error}")
                    continue
                utterance = Utterance(key, duration, _bytes_reader(audio))
                setattr(utterance, target, label)
                yield utterance
    except (ShardError, tarfile.TarError, OSError) as error:
        yield Rejected(str(shard), f"shard unreadable: {error}")


def _bytes_reader(data: bytes) -> Callable[[], np.ndarray]:
    return lambda: decode_bytes(data)


def shard_list_set(name: str, shards: Sequence[Path], task: str, labels: dict[str, str] | None = None,
                   lists: Sequence[Path] = ()) -> TestSet:
    """A set read from ``shards`` in order (``lists``: the data.list / text files naming them)."""
    target = reference_field(task)

    def items() -> Iterator[Item]:
        for shard in shards:
            for item in _shard_items(shard, target):
                if labels is not None and isinstance(item, Utterance) and item.key in labels:
                    item = replace(item, **{target: labels[item.key]})
                yield item

    return TestSet(name, items, (*lists, *shards))


def shard_dir_sets(path: Path, task: str, split: str | None = None) -> list[TestSet]:
    """One test set per split directory of ``mooer-data shard`` output."""
    splits = sorted({p.parent.name for p in path.glob("*/shard-*.tar")})
    if not splits:
        if (path / DATA_LIST).is_file():
            return [shard_list_set(path.name, read_tar_list(path / DATA_LIST), task, lists=[path / DATA_LIST])]
        raise InputError(f"{path}: expected shards at <split>/shard-*.tar or a {DATA_LIST}, found neither")
    if split is not None:
        if split not in splits:
            raise InputError(f"{path}: expected a split among {splits}, found {split!r}")
        splits = [split]
    return [shard_list_set(name, sorted((path / name).glob("shard-*.tar")), task) for name in splits]


def layout_test_sets(path: Path, task: str) -> list[TestSet]:
    """MooER's ``<test_data_dir>/<set>/{data.list, text}``: one set per subdirectory."""
    sets = []
    for directory in sorted(p for p in path.iterdir() if p.is_dir()):
        if not (directory / DATA_LIST).is_file():
            continue
        text = directory / "text"
        labels = read_label_file(text) if text.is_file() else None
        lists = [directory / DATA_LIST, *([text] if labels is not None else [])]
        sets.append(shard_list_set(directory.name, read_tar_list(directory / DATA_LIST), task, labels, lists))
    if not sets:
        raise InputError(f"{path}: expected test set directories <set>/{DATA_LIST}, found none")
    return sets


# --------------------------------------------------------------------------------------
# dispatch
# --------------------------------------------------------------------------------------
def detect_input_type(path: str | os.PathLike) -> str:
    """The input type of a path, from what is there (see the module table)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: expected a wav.scp, a manifest or shard directory, a data.list or a test set directory, found nothing there")
    if path.is_file():
        if path.name.endswith((".tar", ".tar.gz")):
            return "shards"
        if path.suffix.lower() in AUDIO_SUFFIXES:
            return "audio"
        lines = _lines(path)
        if lines and lines[0][1].endswith((".tar", ".tar.gz")):
            return "shards"
        return "wav-scp"
    if any((path / name).is_file() for name in ("segments.parquet", "recordings.parquet")):
        return "manifest"
    if (path / INDEX_FILE).is_file() or any(path.glob("*/shard-*.tar")) or (path / DATA_LIST).is_file():
        return "shards"
    if (path / "wav.scp").is_file():
        return "wav-scp"
    if any((child / DATA_LIST).is_file() for child in path.iterdir() if child.is_dir()):
        return "test-sets"
    found = sorted(p.name for p in path.iterdir())[:8]
    raise InputError(f"{path}: expected wav.scp, segments.parquet, <split>/shard-*.tar, {DATA_LIST} or <set>/{DATA_LIST}, "
                     f"found {found or 'an empty directory'}")


def open_input(path: str | os.PathLike, input_type: str = "auto", task: str = "asr", split: str | None = None) -> list[TestSet]:
    """The test sets of an input (see the module docstring for the types)."""
    path = Path(path)
    if input_type not in INPUT_TYPES:
        raise InputError(f"expected an input type among {', '.join(INPUT_TYPES)}, found {input_type!r}")
    kind = detect_input_type(path) if input_type == "auto" else input_type
    if not path.exists():
        raise InputError(f"{path}: expected a {kind} input, found nothing there")
    if split is not None and not (kind in ("manifest", "shards") and path.is_dir()):
        raise InputError(f"--split: expected a manifest or shard directory (they have splits), found a {kind} input {path}")
    if kind == "audio":
        if not path.is_file():
            raise InputError(f"{path}: expected an audio file ({', '.join(AUDIO_SUFFIXES)}), found a directory")
        return [audio_files_set(path.stem or "audio", [(path.stem, path)], None, task)]
    if kind == "wav-scp":
        scp = path / "wav.scp" if path.is_dir() else path
        if not scp.is_file():
            raise InputError(f"{path}: expected a wav.scp file or a directory holding one, found none")
        text = scp.parent / "text"  # the Kaldi data directory convention
        labels = read_label_file(text) if text.is_file() and text != scp else None
        name = scp.parent.name if path.is_dir() or scp.name == "wav.scp" else scp.stem
        return [wav_list_set(scp, name or "wav", labels, task, text if labels is not None else None)]
    if kind == "manifest":
        try:
            return manifest_sets(path, split)
        except ManifestError as error:
            raise InputError(str(error)) from None
    if kind == "shards":
        if path.is_dir():
            return shard_dir_sets(path, task, split)
        if path.name.endswith((".tar", ".tar.gz")):
            return [shard_list_set(path.name.split(".")[0], [path], task)]
        name = path.parent.name if path.name == DATA_LIST else path.stem
        return [shard_list_set(name, read_tar_list(path), task)]
    if not path.is_dir():
        raise InputError(f"{path}: expected a directory of test sets (<set>/{DATA_LIST}), found a file")
    return layout_test_sets(path, task)

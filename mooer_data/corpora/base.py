"""What every corpus recipe shares: the utterance record, transcript reading, reject
bookkeeping and the probe-then-write step that turns utterances into manifest rows."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from ..audio import MISSING_AUDIO, AudioProblem, check_format, probe_many, relative_to_root  # noqa: F401 - MISSING_AUDIO re-exported for the recipes
from ..manifest import ID_PATTERN, TableSink
from ..text import normalize_transcript

# Reject categories for transcripts (audio categories live in mooer_data.audio).
NO_TRANSCRIPT = "no-transcript"
BAD_ENCODING = "bad-encoding"
DUPLICATE_ID = "duplicate-id"
EMPTY_TEXT = "empty-text"
KNOWN_BAD = "known-bad"
BAD_LINE = "bad-line"
BAD_SEGMENT = "bad-segment"
NOT_EXTRACTED = "not-extracted"
BAD_ID = "bad-id"


class CorpusLayoutError(ValueError):
    """CORPUS_DIR does not look like the corpus it was given as."""

    def __init__(self, corpus: str, corpus_dir: Path, expected: str):
        self.corpus_dir = Path(corpus_dir)
        super().__init__(
            f"{corpus_dir} is not a {corpus} corpus directory.\n"
            f"  expected: {expected}\n"
            f"  found:    {describe_directory(self.corpus_dir)}"
        )


def describe_directory(path: Path, limit: int = 12) -> str:
    if not path.exists():
        return "nothing (the directory does not exist)"
    if not path.is_dir():
        return "a file, not a directory"
    names = sorted(entry.name + ("/" if entry.is_dir() else "") for entry in os.scandir(path))
    if not names:
        return "an empty directory"
    shown = ", ".join(names[:limit])
    return shown + (f", … ({len(names)} entries)" if len(names) > limit else "")


@dataclass
class Utterance:
    """One transcribed audio file as a corpus describes it, before probing."""

    native_id: str
    audio: Path | None
    text_raw: str
    speaker: str | None
    split: str
    subset: str | None = None


@dataclass
class PartCollection:
    """What a recipe found in one part: candidate utterances plus early rejects."""

    utterances: list[Utterance] = field(default_factory=list)
    rejects: list[tuple[str, str]] = field(default_factory=list)  # (item, "category: message")

    def reject(self, item: str, category: str, message: str) -> None:
        self.rejects.append((item, f"{category}: {message}"))


@dataclass(frozen=True)
class PartWriters:
    recordings: TableSink
    segments: TableSink
    rejects: TableSink


@dataclass(frozen=True)
class PrepareContext:
    source: str
    root: Path
    language: str
    jobs: int = 1
    sample_rate: int | None = 16000
    progress: Callable[[str, int], Callable[[int], None]] | None = None
    # `prepare --part R/W`: only corpus files whose item this returns True for are read
    # (mooer_data.parts.PartSpec.owns); None reads them all.
    share: Callable[[str], bool] | None = None

    def segment_id(self, native_id: str) -> str:
        return f"{self.source}-{native_id}"

    def in_share(self, item: str) -> bool:
        return self.share is None or self.share(item)


def read_text_lines(path: Path) -> Iterator[tuple[int, str | None, bytes]]:
    """Lines of a transcript file: (1-based number, text or None if not UTF-8, raw bytes).

    Handles a UTF-8 BOM on the first line and CRLF endings, the two encoding quirks the
    Chinese corpora ship with; a line that is not UTF-8 is returned as None so the caller
    can reject just that item instead of the whole file.
    """
    data = path.read_bytes()
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    for number, raw in enumerate(data.split(b"\n"), start=1):
        raw = raw.rstrip(b"\r")
        if not raw.strip():
            continue
        try:
            yield number, raw.decode("utf-8"), raw
        except UnicodeDecodeError:
            yield number, None, raw


def leading_field(raw: bytes) -> str:
    """The id field of an undecodable line, for the reject row."""
    return raw.split(None, 1)[0].decode("utf-8", errors="replace") if raw.split() else ""


def write_utterances(collection: PartCollection, context: PrepareContext, writers: PartWriters, label: str) -> None:
    """Probe every utterance's audio (in parallel), then write rows or rejects."""
    for item, reason in collection.rejects:
        if context.in_share(item):
            writers.rejects.add({"source": context.source, "item": item, "reason": reason})
    utterances = [u for u in collection.utterances if context.in_share(context.segment_id(u.native_id))]
    progress = context.progress(f"probing {label}", len(utterances)) if context.progress else None
    infos = probe_many([u.audio for u in utterances], jobs=context.jobs, progress=progress)
    for utterance, info in zip(utterances, infos):
        segment_id = context.segment_id(utterance.native_id)
        relative = relative_to_root(utterance.audio, context.root)
        problem = info if isinstance(info, AudioProblem) else check_format(info, relative, context.sample_rate, mono=True)
        if problem is not None:
            message = problem.message.replace(os.fspath(utterance.audio), relative)
            writers.rejects.add({"source": context.source, "item": segment_id, "reason": f"{problem.category}: {message}"})
            continue
        text = normalize_transcript(utterance.text_raw)
        if not text:
            writers.rejects.add(
                {
                    "source": context.source,
                    "item": segment_id,
                    "reason": f"{EMPTY_TEXT}: transcript {utterance.text_raw!r} is empty after normalisation",
                }
            )
            continue
        if not ID_PATTERN.match(segment_id):
            writers.rejects.add(
                {"source": context.source, "item": segment_id, "reason": f"{BAD_ID}: {segment_id!r} has characters outside [A-Za-z0-9_-]"}
            )
            continue
        writers.recordings.add(
            {
                "id": segment_id,
                "source": context.source,
                "path": relative,
                "format": info.format,
                "sample_rate": info.sample_rate,
                "channels": info.channels,
                "duration": info.duration,
            }
        )
        writers.segments.add(
            {
                "id": segment_id,
                "recording_id": segment_id,
                "source": context.source,
                "subset": utterance.subset,
                "split": utterance.split,
                "language": context.language,
                "speaker": utterance.speaker,
                "start": 0.0,
                "duration": info.duration,
                "text": text,
                "text_raw": utterance.text_raw,
                "translation": None,
                "label_origin": "manual",
                "confidence": None,
            }
        )

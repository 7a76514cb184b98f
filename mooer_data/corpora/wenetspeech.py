"""WenetSpeech: one ``WenetSpeech.json`` describing long Opus recordings and their segments.

Layout (reference/corpora.md §3)::

    WenetSpeech/{WenetSpeech.json, audio/<split>/<source>/B#####/<aid>.opus}

The JSON is tens of gigabytes in reality, so it is stream-parsed one audio object at a
time (ijson) and rows are written in row groups: memory does not grow with the file.
Durations are the JSON's (the corpus contract, as Lhotse and WeNet use them); audio files
are only checked for existence and an Opus header. Subset tags are bare strings
(``L M S W DEV TEST_NET TEST_MEETING``); ``--parts`` keeps segments carrying any of the
requested tags. ``sid`` numbering has gaps and aids contain ``-``/``_`` (even a leading
``-``), so nothing is derived by splitting ids.
"""

from __future__ import annotations

from pathlib import Path

import ijson
import pyarrow as pa

from ..audio import AudioProblem, read_opus_head
from ..manifest import ID_PATTERN, TableSink
from ..text import normalize_transcript
from .base import BAD_LINE, BAD_SEGMENT, DUPLICATE_ID, EMPTY_TEXT, CorpusLayoutError, PrepareContext
from .registry import Recipe, register_recipe

SOURCE = "wenetspeech"
PARTS = ("L", "M", "S", "W", "DEV", "TEST_NET", "TEST_MEETING")
SPLIT_OF_TAG = {"L": "train", "M": "train", "S": "train", "W": "train", "DEV": "dev", "TEST_NET": "test", "TEST_MEETING": "test"}
METADATA_FILE = "WenetSpeech.json"
# A segment may end a little past the JSON duration through rounding; more is an error.
END_TOLERANCE_S = 0.05


def locate(corpus_dir: Path) -> Path:
    if not (corpus_dir / METADATA_FILE).is_file():
        raise CorpusLayoutError(
            "WenetSpeech", corpus_dir, f"CORPUS_DIR/{METADATA_FILE} and CORPUS_DIR/audio/<split>/<source>/B#####/<aid>.opus"
        )
    return corpus_dir


class _ProgressReader:
    """A binary file wrapper that reports bytes read, for a progress bar over the JSON."""

    def __init__(self, handle, advance):
        self._handle = handle
        self._advance = advance

    def read(self, size: int = -1) -> bytes:
        data = self._handle.read(size)
        if self._advance and data:
            self._advance(len(data))
        return data


def _split_of(tags: list[str]) -> str:
    for split in ("train", "dev", "test"):
        if any(SPLIT_OF_TAG.get(tag) == split for tag in tags):
            return split
    return "unknown"


def prepare_part(root: Path, part: str, context: PrepareContext, writers) -> None:
    wanted = set(part.split("+"))
    metadata = root / METADATA_FILE
    advance = context.progress("reading WenetSpeech.json", metadata.stat().st_size) if context.progress else None
    seen_hashes: list[int] = []
    reject = lambda item, category, message: writers.rejects.add(  # noqa: E731
        {"source": context.source, "item": item, "reason": f"{category}: {message}"}
    )
    with open(metadata, "rb") as raw_handle:
        for audio in ijson.items(_ProgressReader(raw_handle, advance), "audios.item", use_float=True):
            aid = str(audio.get("aid", ""))
            segments = [s for s in audio.get("segments", []) if wanted.intersection(s.get("subsets", []))]
            if not segments or not context.in_share(context.segment_id(aid)):
                continue
            if not ID_PATTERN.match(aid):
                for segment in segments:
                    reject(context.segment_id(str(segment.get("sid", "?"))), BAD_LINE, f"audio id {aid!r} is not usable as an id")
                continue
            relative = str(audio.get("path", ""))
            duration = float(audio.get("duration") or 0.0)
            header = read_opus_head(root / relative)
            if isinstance(header, AudioProblem):
                message = header.message.replace(str(root / relative), relative)
                for segment in segments:
                    reject(context.segment_id(str(segment.get("sid"))), header.category, f"recording {aid}: {message}")
                continue
            recording_id = context.segment_id(aid)
            kept = 0
            for segment in segments:
                sid = str(segment.get("sid", ""))
                segment_id = context.segment_id(sid)
                begin, end = float(segment.get("begin_time", 0.0)), float(segment.get("end_time", 0.0))
                if not ID_PATTERN.match(sid) or not sid.startswith(aid + "_S"):
                    reject(segment_id, BAD_LINE, f"segment id {sid!r} is not <aid>_S#####  of audio {aid}")
                    continue
                if end <= begin or begin < 0 or end > duration + END_TOLERANCE_S:
                    reject(segment_id, BAD_SEGMENT, f"begin {begin} s / end {end} s do not fit inside recording {aid} of {duration} s")
                    continue
                text_raw = str(segment.get("text", ""))
                text = normalize_transcript(text_raw)
                if not text:
                    reject(segment_id, EMPTY_TEXT, f"transcript {text_raw!r} is empty after normalisation")
                    continue
                tags = [str(t) for t in segment.get("subsets", [])]
                seen_hashes.append(hash(segment_id))
                writers.segments.add(
                    {
                        "id": segment_id,
                        "recording_id": recording_id,
                        "source": context.source,
                        "subset": " ".join(tags),
                        "split": _split_of(tags),
                        "language": context.language,
                        "speaker": None,
                        "start": begin,
                        "duration": round(end - begin, 3),
                        "text": text,
                        "text_raw": text_raw,
                        "translation": None,
                        "label_origin": "manual",
                        "confidence": segment.get("confidence"),
                    }
                )
                kept += 1
            if kept:
                writers.recordings.add(
                    {
                        "id": recording_id,
                        "source": context.source,
                        "path": relative,
                        "format": header.format,
                        "sample_rate": header.sample_rate,
                        "channels": header.channels,
                        "duration": duration,
                    }
                )
    _drop_duplicate_segments(writers.segments, seen_hashes, reject)


def _drop_duplicate_segments(sink: TableSink, hashes: list[int], reject) -> None:
    """Duplicate sids are found from 8-byte hashes after the streaming pass (a set of
    every id would grow with the corpus); only when one exists is the table re-read."""
    import numpy as np

    if len(hashes) < 2:
        return
    values = np.sort(np.asarray(hashes, dtype=np.int64))
    suspects = set(values[1:][values[1:] == values[:-1]].tolist())
    if not suspects:
        return
    seen: set[str] = set()

    def keep_first(table: pa.Table) -> pa.Array:
        keep = []
        for segment_id in table.column("id").to_pylist():
            duplicate = hash(segment_id) in suspects and segment_id in seen
            if duplicate:
                reject(segment_id, DUPLICATE_ID, "the segment id appears again in WenetSpeech.json; the first is kept")
            seen.add(segment_id)
            keep.append(not duplicate)
        return pa.array(keep)

    sink.filter_written(keep_first)


RECIPE = register_recipe(
    Recipe(
        name="wenetspeech",
        source=SOURCE,
        language="zh",
        description="WenetSpeech (Mandarin, long Opus recordings, segments from WenetSpeech.json)",
        all_parts=PARTS,
        locate=locate,
        available_parts=lambda root: list(PARTS),
        prepare_part=prepare_part,
        combine_parts=True,
    )
)

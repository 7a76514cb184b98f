"""In-house audio: any folder tree of wav/flac/opus/ogg/mp3/m4a files of any length.

Recordings only: there is no text yet (``mooer-data pseudolabel`` makes segments later).
Any sample rate and channel count is accepted and recorded — the shard stage converts to
16 kHz mono — but unreadable, empty and truncated files are rejects. Ids are the
sanitised relative path plus 8 hex digits of its SHA-1, so they are readable, dot-free
and stay unique when two paths sanitise alike.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from ..audio import AudioProblem, probe_many, relative_to_root
from .base import CorpusLayoutError, PrepareContext
from .registry import Recipe, register_recipe

SOURCE = "inhouse"
AUDIO_SUFFIXES = (".wav", ".flac", ".opus", ".ogg", ".mp3", ".m4a")
_UNSAFE = re.compile(r"[^A-Za-z0-9_\-]")


def recording_id(relative: str) -> str:
    stem = relative.rsplit(".", 1)[0] if "." in Path(relative).name else relative
    readable = "__".join(_UNSAFE.sub("_", piece) for piece in stem.split("/"))
    digest = hashlib.sha1(relative.encode("utf-8")).hexdigest()[:8]
    return f"{SOURCE}-{readable}-{digest}"


def locate(corpus_dir: Path) -> Path:
    if not corpus_dir.is_dir():
        raise CorpusLayoutError("in-house", corpus_dir, "a directory tree containing .wav/.flac/.opus/.ogg/.mp3/.m4a files")
    return corpus_dir


def _audio_files(root: Path) -> list[Path]:
    found = []
    for current, dirs, files in os.walk(root, followlinks=True):
        dirs.sort()
        found.extend(Path(current) / name for name in files if name.lower().endswith(AUDIO_SUFFIXES))
    return sorted(found)


def prepare_part(root: Path, part: str, context: PrepareContext, writers) -> None:
    files = _audio_files(root)
    if not files:
        raise CorpusLayoutError("in-house", root, "at least one .wav/.flac/.opus/.ogg/.mp3/.m4a file in the tree")
    files = [path for path in files if context.in_share(recording_id(relative_to_root(path, context.root)))]
    progress = context.progress("probing in-house audio", len(files)) if context.progress else None
    for path, info in zip(files, probe_many(files, jobs=context.jobs, progress=progress)):
        relative = relative_to_root(path, context.root)
        if isinstance(info, AudioProblem):
            reason = f"{info.category}: {info.message.replace(os.fspath(path), relative)}"
            writers.rejects.add({"source": context.source, "item": relative, "reason": reason})
            continue
        writers.recordings.add(
            {
                "id": recording_id(relative),
                "source": context.source,
                "path": relative,
                "format": info.format,
                "sample_rate": info.sample_rate,
                "channels": info.channels,
                "duration": info.duration,
            }
        )


RECIPE = register_recipe(
    Recipe(
        name="inhouse",
        source=SOURCE,
        language=None,
        description="un-transcribed in-house audio of any length (recordings only)",
        all_parts=("audio",),
        locate=locate,
        available_parts=lambda root: ["audio"],
        prepare_part=prepare_part,
        sample_rate=None,
    )
)

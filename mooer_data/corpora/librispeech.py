"""LibriSpeech (OpenSLR 12) and mini_librispeech (OpenSLR 31).

Layout (reference/corpora.md §2)::

    LibriSpeech/<part>/<speaker>/<chapter>/{<speaker>-<chapter>.trans.txt, <utt>.flac}

One ``<utt-id> <TEXT>`` line per utterance, split at the first space. The speaker is the
first id field; speaker and chapter directories are integers of any width.
"""

from __future__ import annotations

import os
from pathlib import Path

from .base import MISSING_AUDIO, NO_TRANSCRIPT, CorpusLayoutError, PartCollection, PrepareContext, Utterance, write_utterances
from .registry import Recipe, register_recipe
from .transcripts import read_keyed_lines

SOURCE = "librispeech"
PARTS = (
    "train-clean-100",
    "train-clean-360",
    "train-other-500",
    "dev-clean",
    "dev-other",
    "test-clean",
    "test-other",
    "train-clean-5",
    "dev-clean-2",
)


def locate(corpus_dir: Path) -> Path:
    if not any((corpus_dir / part).is_dir() for part in PARTS):
        nested = corpus_dir / "LibriSpeech"
        if any((nested / part).is_dir() for part in PARTS):
            return nested
        raise CorpusLayoutError(
            "LibriSpeech",
            corpus_dir,
            f"CORPUS_DIR/<part>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt with <part> among {', '.join(PARTS[:7])}",
        )
    return corpus_dir


def split_of(part: str) -> str:
    return part.split("-", 1)[0]


def _integer_dirs(path: Path):
    with os.scandir(path) as entries:
        return sorted((e for e in entries if e.is_dir() and e.name.isdigit()), key=lambda e: e.name)


def collect(root: Path, part: str, context: PrepareContext) -> PartCollection:
    collection = PartCollection()
    item_id = context.segment_id
    for speaker_dir in _integer_dirs(root / part):
        for chapter_dir in _integer_dirs(Path(speaker_dir.path)):
            chapter = Path(chapter_dir.path)
            with os.scandir(chapter) as entries:
                names = [e.name for e in entries]
            audio = {name[: -len(".flac")]: chapter / name for name in names if name.endswith(".flac")}
            trans_name = f"{speaker_dir.name}-{chapter_dir.name}.trans.txt"
            transcripts = (
                read_keyed_lines(chapter / trans_name, collection, item_id, separator=" ")
                if trans_name in names
                else None
            )
            texts = transcripts.values if transcripts else {}
            unusable = transcripts.unusable if transcripts else set()
            for native_id in sorted((audio.keys() | texts.keys()) - unusable):
                if native_id not in audio:
                    collection.reject(item_id(native_id), MISSING_AUDIO, f"in {trans_name} but {native_id}.flac is missing")
                elif native_id not in texts:
                    collection.reject(item_id(native_id), NO_TRANSCRIPT, f"{native_id}.flac has no line in {trans_name}")
                else:
                    collection.utterances.append(
                        Utterance(native_id, audio[native_id], texts[native_id], native_id.split("-", 1)[0], split_of(part), part)
                    )
    return collection


def prepare_part(root: Path, part: str, context: PrepareContext, writers) -> None:
    write_utterances(collect(root, part, context), context, writers, f"librispeech/{part}")


RECIPE = register_recipe(
    Recipe(
        name="librispeech",
        source=SOURCE,
        language="en",
        description="LibriSpeech / mini_librispeech read English (16 kHz flac), any subset of its parts",
        all_parts=PARTS,
        locate=locate,
        available_parts=lambda root: [p for p in PARTS if (root / p).is_dir()],
        prepare_part=prepare_part,
    )
)

"""aidatatang_200zh (OpenSLR 62): ``transcript/aidatatang_200_zh_transcript.txt`` plus
``corpus/{train,dev,test}/G####/T0055G####S####.wav``. Word-segmented text; speaker is
the ``G####`` directory; unextracted per-speaker archives are reported."""

from __future__ import annotations

from pathlib import Path

from ..base import PartCollection, PrepareContext, Utterance
from ..transcripts import read_keyed_lines
from .common import PartNaming, first_existing, pair_up, reject_unextracted_archives, wav_files

NAME = "aidatatang_200zh"
TRANSCRIPT = Path("transcript/aidatatang_200_zh_transcript.txt")
EXPECTED = "aidatatang_200zh/{transcript/aidatatang_200_zh_transcript.txt, corpus/{train,dev,test}/G####/*.wav}"


def locate(directory: Path) -> Path | None:
    return first_existing(
        [directory, directory / NAME, directory / "aidatatang" / NAME], lambda d: (d / TRANSCRIPT).is_file()
    )


def collect(part_root: Path, context: PrepareContext) -> PartCollection:
    naming = PartNaming(NAME, context)
    collection = PartCollection()
    transcripts = read_keyed_lines(part_root / TRANSCRIPT, collection, naming.item, separator=None)
    audio: dict[str, Path] = {}
    split_of: dict[str, str] = {}
    for split in ("train", "dev", "test"):
        split_dir = part_root / "corpus" / split
        reject_unextracted_archives(collection, split_dir, context.root)
        for utt, path in wav_files(split_dir).items():
            audio[utt] = path
            split_of[utt] = split
    pair_up(
        collection,
        naming,
        transcripts.values,
        audio,
        transcripts.unusable,
        lambda utt, text, path: Utterance(naming.native(utt), path, text, naming.speaker(path.parent.name), split_of[utt], NAME),
        TRANSCRIPT.name,
    )
    return collection

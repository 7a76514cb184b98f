"""AISHELL-1 (OpenSLR 33): ``transcript/aishell_transcript_v0.8.txt`` plus
``wav/{train,dev,test}/S####/BAC009S####W####.wav``. The transcript covers fewer
utterances than there are wavs; those wavs are reported as having no transcript."""

from __future__ import annotations

from pathlib import Path

from ..base import PartCollection, PrepareContext, Utterance
from ..transcripts import read_keyed_lines
from .common import PartNaming, first_existing, pair_up, reject_unextracted_archives, wav_files

NAME = "aishell"
TRANSCRIPT = Path("transcript/aishell_transcript_v0.8.txt")
EXPECTED = "data_aishell/{transcript/aishell_transcript_v0.8.txt, wav/{train,dev,test}/S####/*.wav}"


def locate(directory: Path) -> Path | None:
    return first_existing(
        [directory, directory / "data_aishell", directory / "aishell" / "data_aishell"],
        lambda d: (d / TRANSCRIPT).is_file(),
    )


def collect(part_root: Path, context: PrepareContext) -> PartCollection:
    naming = PartNaming(NAME, context)
    collection = PartCollection()
    transcripts = read_keyed_lines(part_root / TRANSCRIPT, collection, naming.item, separator=None)
    reject_unextracted_archives(collection, part_root / "wav", context.root)
    audio: dict[str, Path] = {}
    split_of: dict[str, str] = {}
    for split in ("train", "dev", "test"):
        for utt, path in wav_files(part_root / "wav" / split).items():
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

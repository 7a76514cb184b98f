"""MagicData (OpenSLR 68): ``{train,dev,test}/TRANS.txt`` (TAB separated, with a header
line, ids ending in ``.wav``, sometimes a BOM) plus ``<split>/<speaker>/<utt>.wav``.
The two utterances every recipe drops (``local/magicdata_badlist``) are reported."""

from __future__ import annotations

from pathlib import Path

from ..base import KNOWN_BAD, PartCollection, PrepareContext, Utterance
from ..transcripts import read_keyed_lines
from .common import PartNaming, first_existing, pair_up, wav_files

NAME = "magicdata"
SPLITS = ("train", "dev", "test")
BAD_UTTERANCES = frozenset({"16_4013_20170819121429", "18_1565_20170712000170"})
EXPECTED = "magicdata/{train,dev,test}/{TRANS.txt, <speaker>/<utt>.wav}"


def locate(directory: Path) -> Path | None:
    return first_existing(
        [directory, directory / NAME, directory / "MagicData"],
        lambda d: any((d / split / "TRANS.txt").is_file() for split in SPLITS),
    )


def collect(part_root: Path, context: PrepareContext) -> PartCollection:
    naming = PartNaming(NAME, context)
    collection = PartCollection()
    for split in SPLITS:
        split_dir = part_root / split
        if not (split_dir / "TRANS.txt").is_file():
            continue
        lines = read_keyed_lines(
            split_dir / "TRANS.txt",
            collection,
            naming.item,
            key_transform=lambda key: key[:-4] if key.endswith(".wav") else key,
            skip_header=lambda line: line.startswith("UtteranceID"),
        )
        texts: dict[str, str] = {}
        speakers: dict[str, str] = {}
        for utt, value in lines.values.items():
            speaker, _, text = value.partition("\t")
            speakers[utt], texts[utt] = speaker.strip(), text.strip()
        audio = wav_files(split_dir)
        for utt in sorted(BAD_UTTERANCES & (texts.keys() | audio.keys())):
            collection.reject(naming.item(utt), KNOWN_BAD, f"{utt}.wav is on the MagicData bad list every recipe drops")
        pair_up(
            collection,
            naming,
            texts,
            audio,
            lines.unusable | BAD_UTTERANCES,
            lambda utt, text, path: Utterance(
                naming.native(utt), path, text, naming.speaker(speakers[utt] or path.parent.name), split, NAME
            ),
            f"{split}/TRANS.txt",
        )
    return collection

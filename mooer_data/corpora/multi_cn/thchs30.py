"""THCHS-30 (OpenSLR 18): ``data/<utt>.wav`` with a 3-line ``data/<utt>.wav.trn`` (words,
pinyin, phones), and ``train/``, ``dev/``, ``test/`` holding links to the data files. The
split comes from the directory holding the wav; the text from line 1 of the data trn
(with the `` l =`` artefact removed by normalisation)."""

from __future__ import annotations

from pathlib import Path

from ..base import BAD_ENCODING, PartCollection, PrepareContext, Utterance
from .common import PartNaming, first_existing, pair_up, wav_files

NAME = "thchs30"
SPLITS = ("train", "dev", "test")
EXPECTED = "data_thchs30/{data/<utt>.wav(.trn), train/, dev/, test/}"


def locate(directory: Path) -> Path | None:
    return first_existing(
        [directory, directory / "data_thchs30", directory / "thchs" / "data_thchs30"],
        lambda d: (d / "data").is_dir() and any((d / split).is_dir() for split in SPLITS),
    )


def collect(part_root: Path, context: PrepareContext) -> PartCollection:
    naming = PartNaming(NAME, context)
    collection = PartCollection()
    for split in SPLITS:
        audio = wav_files(part_root / split)
        texts: dict[str, str] = {}
        unusable: set[str] = set()
        for utt in audio:
            trn = part_root / "data" / f"{utt}.wav.trn"
            if not trn.is_file():
                continue
            try:
                lines = trn.read_bytes().decode("utf-8-sig").splitlines()
            except UnicodeDecodeError:
                collection.reject(naming.item(utt), BAD_ENCODING, f"data/{utt}.wav.trn is not valid UTF-8")
                unusable.add(utt)
                continue
            texts[utt] = lines[0].strip() if lines else ""
        pair_up(
            collection,
            naming,
            texts,
            audio,
            unusable,
            lambda utt, text, path: Utterance(naming.native(utt), path, text, naming.speaker(utt.split("_", 1)[0]), split, NAME),
            "data/<utt>.wav.trn",
        )
    return collection

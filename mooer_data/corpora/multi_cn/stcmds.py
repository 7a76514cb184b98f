"""ST-CMDS (OpenSLR 38): a flat directory of ``20170001P#####[AI]####.wav`` with one
``.txt`` per wav (a single line, usually without a trailing newline). The speaker is the
P-number plus the session letter (Lhotse's choice), so A and I sessions stay apart."""

from __future__ import annotations

import os
from pathlib import Path

from ..base import BAD_ENCODING, PartCollection, PrepareContext, Utterance
from .common import PartNaming, first_existing, pair_up

NAME = "stcmds"
ROOT_NAME = "ST-CMDS-20170001_1-OS"
EXPECTED = f"{ROOT_NAME}/{{20170001P#####A####.wav, 20170001P#####A####.txt, ...}}"


def _has_utterances(directory: Path) -> bool:
    with os.scandir(directory) as entries:
        return any(e.name.startswith("20170001P") and e.name.endswith(".wav") for e in entries)


def locate(directory: Path) -> Path | None:
    return first_existing([directory, directory / ROOT_NAME, directory / NAME / ROOT_NAME], _has_utterances)


def collect(part_root: Path, context: PrepareContext) -> PartCollection:
    naming = PartNaming(NAME, context)
    collection = PartCollection()
    with os.scandir(part_root) as entries:
        names = sorted(e.name for e in entries)
    audio = {n[:-4]: part_root / n for n in names if n.endswith(".wav")}
    texts: dict[str, str] = {}
    unusable: set[str] = set()
    for name in names:
        if not name.endswith(".txt"):
            continue
        utt = name[:-4]
        try:
            lines = [l.strip() for l in (part_root / name).read_bytes().decode("utf-8-sig").splitlines() if l.strip()]
        except UnicodeDecodeError:
            collection.reject(naming.item(utt), BAD_ENCODING, f"{name} is not valid UTF-8")
            unusable.add(utt)
            continue
        texts[utt] = lines[-1] if lines else ""
    pair_up(
        collection,
        naming,
        texts,
        audio,
        unusable,
        lambda utt, text, path: Utterance(naming.native(utt), path, text, naming.speaker(utt[8:15]), "train", NAME),
        "its .txt file",
    )
    return collection

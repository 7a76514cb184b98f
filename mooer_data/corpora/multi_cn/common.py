"""Helpers shared by the six multi_cn parts: ids, walking and orphan bookkeeping."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..base import MISSING_AUDIO, NO_TRANSCRIPT, NOT_EXTRACTED, PartCollection, PrepareContext, Utterance


@dataclass(frozen=True)
class PartNaming:
    """multi_cn ids and speakers carry the part name: ``multi_cn-aishell-BAC009S0002W0122``."""

    part: str
    context: PrepareContext

    def native(self, utt: str) -> str:
        return f"{self.part}-{utt}"

    def item(self, utt: str) -> str:
        return self.context.segment_id(self.native(utt))

    def speaker(self, speaker: str) -> str:
        return f"{self.part}-{speaker}"


def wav_files(directory: Path) -> dict[str, Path]:
    """``stem -> path`` for every ``.wav`` below a directory (following symlinks)."""
    found: dict[str, Path] = {}
    for current, _dirs, files in os.walk(directory, followlinks=True):
        for name in files:
            if name.endswith(".wav"):
                found[name[:-4]] = Path(current) / name
    return found


def reject_unextracted_archives(collection: PartCollection, split_dir: Path, root: Path) -> None:
    """Per-speaker ``.tar.gz`` archives shipped inside aidatatang and AISHELL-1 must be
    extracted in place first; one left packed is reported, not silently skipped."""
    if not split_dir.is_dir():
        return
    for entry in sorted(split_dir.iterdir()):
        if entry.name.endswith(".tar.gz") and not (split_dir / entry.name[: -len(".tar.gz")]).is_dir():
            collection.rejects.append(
                (
                    Path(os.path.relpath(entry, root)).as_posix(),
                    f"{NOT_EXTRACTED}: archive {entry.name} was not extracted "
                    f"(run: tar -xzf {entry.name} -C {split_dir})",
                )
            )


def pair_up(
    collection: PartCollection,
    naming: PartNaming,
    texts: dict[str, str],
    audio: dict[str, Path],
    unusable: set[str],
    make: Callable[[str, str, Path], Utterance],
    transcript_name: str,
) -> None:
    for utt in sorted((texts.keys() | audio.keys()) - unusable):
        if utt not in audio:
            collection.reject(naming.item(utt), MISSING_AUDIO, f"in {transcript_name} but {utt}.wav is missing")
        elif utt not in texts:
            collection.reject(naming.item(utt), NO_TRANSCRIPT, f"{utt}.wav has no line in {transcript_name}")
        else:
            collection.utterances.append(make(utt, texts[utt], audio[utt]))


def first_existing(candidates: list[Path], marker: Callable[[Path], bool]) -> Path | None:
    for candidate in candidates:
        if candidate.is_dir() and marker(candidate):
            return candidate
    return None

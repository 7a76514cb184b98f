"""AISHELL-2 (iOS channel): ``iOS/data`` for training, ``dev``/``test`` from the eval set.

Layout (reference/corpora.md §1)::

    AISHELL-2/iOS/data/{wav.scp, trans.txt, wav/C0001/IC0001W0001.wav}
    AISHELL-2/iOS/{dev,test}/...                      (eval set copied in, as Lhotse reads it)
    AISHELL-DEV-TEST-SET/{IOS,Android,MIC}/{dev,test}  (eval set as delivered, beside or inside)

``wav.scp`` and ``trans.txt`` are TAB separated, may carry CRLF endings and need not list
the same utterances: each side's orphans become rejects. Channel directory names are
matched case-insensitively. The speaker is the wav's parent directory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .base import MISSING_AUDIO, NO_TRANSCRIPT, CorpusLayoutError, PartCollection, PrepareContext, Utterance, write_utterances
from .registry import Recipe, register_recipe
from .transcripts import read_keyed_lines

SOURCE = "aishell2"
PARTS = ("train", "dev", "test")
EVAL_ROOT_NAME = "AISHELL-DEV-TEST-SET"


@dataclass(frozen=True)
class Aishell2Layout:
    part_dirs: dict[str, Path]  # part -> directory holding wav.scp and trans.txt


def _child_ci(parent: Path, name: str) -> Path | None:
    """A child directory matched case-insensitively (``iOS``, ``IOS``, ``ios``)."""
    if not parent.is_dir():
        return None
    exact = parent / name
    if exact.is_dir():
        return exact
    for entry in parent.iterdir():
        if entry.is_dir() and entry.name.lower() == name.lower():
            return entry
    return None


def _is_set_dir(path: Path | None) -> bool:
    return path is not None and (path / "wav.scp").is_file() and (path / "trans.txt").is_file()


def locate(corpus_dir: Path) -> Aishell2Layout:
    ios = _child_ci(corpus_dir, "iOS")
    train = _child_ci(ios, "data") if ios else None
    if not _is_set_dir(train):
        raise CorpusLayoutError(
            "AISHELL-2",
            corpus_dir,
            "CORPUS_DIR/iOS/data/{wav.scp, trans.txt, wav/<speaker>/<utt>.wav} "
            "(optionally iOS/{dev,test}/ or AISHELL-DEV-TEST-SET/IOS/{dev,test}/)",
        )
    part_dirs = {"train": train}
    eval_candidates = [ios]
    for base in (corpus_dir, corpus_dir.parent):
        eval_root = _child_ci(base, EVAL_ROOT_NAME)
        if eval_root is not None:
            eval_candidates.append(_child_ci(eval_root, "iOS"))
    for part in ("dev", "test"):
        for candidate in eval_candidates:
            part_dir = _child_ci(candidate, part) if candidate else None
            if _is_set_dir(part_dir):
                part_dirs[part] = part_dir
                break
    return Aishell2Layout(part_dirs)


def collect(layout: Aishell2Layout, part: str, context: PrepareContext) -> PartCollection:
    set_dir = layout.part_dirs[part]
    collection = PartCollection()
    item_id = context.segment_id
    listing = read_keyed_lines(set_dir / "wav.scp", collection, item_id)
    transcripts = read_keyed_lines(set_dir / "trans.txt", collection, item_id)
    unusable = listing.unusable | transcripts.unusable
    for native_id in sorted((listing.values.keys() | transcripts.values.keys()) - unusable):
        relative = listing.values.get(native_id)
        text = transcripts.values.get(native_id)
        if relative is None:
            collection.reject(item_id(native_id), MISSING_AUDIO, f"in {part}/trans.txt but not listed in wav.scp")
        elif text is None:
            collection.reject(item_id(native_id), NO_TRANSCRIPT, f"{relative} is listed in wav.scp but has no line in trans.txt")
        else:
            audio = set_dir / relative
            collection.utterances.append(Utterance(native_id, audio, text, audio.parent.name, part))
    return collection


def prepare_part(layout: Aishell2Layout, part: str, context: PrepareContext, writers) -> None:
    write_utterances(collect(layout, part, context), context, writers, f"aishell2/{part}")


RECIPE = register_recipe(
    Recipe(
        name="aishell2",
        source=SOURCE,
        language="zh",
        description="AISHELL-2 iOS training set plus its dev/test eval set (Mandarin, 16 kHz wav)",
        all_parts=PARTS,
        locate=locate,
        available_parts=lambda layout: [p for p in PARTS if p in layout.part_dirs],
        prepare_part=prepare_part,
    )
)

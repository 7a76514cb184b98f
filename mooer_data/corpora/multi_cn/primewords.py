"""Primewords (OpenSLR 47): ``set1_transcript.json`` (one JSON array with ``file``,
``id``, ``user_id``, ``text``) plus ``audio_files/<h>/<hh>/<uuid>.wav``. Some files have
two records; as in Kaldi and Lhotse the last one wins, and the earlier is reported."""

from __future__ import annotations

import json
from pathlib import Path

from ..base import BAD_LINE, DUPLICATE_ID, PartCollection, PrepareContext, Utterance
from .common import PartNaming, first_existing, pair_up, wav_files

NAME = "primewords"
TRANSCRIPT = "set1_transcript.json"
EXPECTED = "primewords_md_2018_set1/{set1_transcript.json, audio_files/<h>/<hh>/<uuid>.wav}"


def locate(directory: Path) -> Path | None:
    return first_existing(
        [directory, directory / "primewords_md_2018_set1", directory / NAME / "primewords_md_2018_set1"],
        lambda d: (d / TRANSCRIPT).is_file(),
    )


def collect(part_root: Path, context: PrepareContext) -> PartCollection:
    naming = PartNaming(NAME, context)
    collection = PartCollection()
    path = part_root / TRANSCRIPT
    try:
        records = json.loads(path.read_bytes().decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: expected one UTF-8 JSON array of transcript records, found unparsable content ({error})") from None
    if not isinstance(records, list):
        raise ValueError(f"{path}: expected a JSON array of records, found {type(records).__name__}")
    texts: dict[str, str] = {}
    speakers: dict[str, str] = {}
    for index, record in enumerate(records):
        file_name = str(record.get("file", "")) if isinstance(record, dict) else ""
        if not file_name.endswith(".wav") or not str(record.get("text", "")).strip():
            collection.reject(f"{TRANSCRIPT}[{index}]", BAD_LINE, f"record {index} has no usable 'file'/'text': {str(record)[:80]}")
            continue
        utt = file_name[:-4]
        if utt in texts:
            collection.reject(naming.item(utt), DUPLICATE_ID, f"an earlier record for {file_name} is replaced by record {index} (the last wins, as in Kaldi)")
        texts[utt] = str(record["text"]).strip()
        speakers[utt] = str(record.get("user_id", "")).strip()
    pair_up(
        collection,
        naming,
        texts,
        wav_files(part_root / "audio_files"),
        set(),
        lambda utt, text, wav: Utterance(naming.native(utt), wav, text, naming.speaker(speakers[utt]) if speakers[utt] else None, "train", NAME),
        TRANSCRIPT,
    )
    return collection

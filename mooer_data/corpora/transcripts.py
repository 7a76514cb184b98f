"""Readers for the line-oriented transcript and listing files the corpora ship."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .base import BAD_ENCODING, BAD_LINE, DUPLICATE_ID, PartCollection, leading_field, read_text_lines


@dataclass
class KeyedLines:
    """``id -> value`` from a two-column file, first occurrence kept, plus the ids whose
    lines could not be used (so they are not reported a second time as orphans)."""

    values: dict[str, str] = field(default_factory=dict)
    unusable: set[str] = field(default_factory=set)


def read_keyed_lines(
    path: Path,
    collection: PartCollection,
    item_id: Callable[[str], str],
    separator: str | None = "\t",
    key_transform: Callable[[str], str] = lambda key: key,
    skip_header: Callable[[str], bool] = lambda line: False,
) -> KeyedLines:
    """Parse ``<id><sep><value>`` lines. ``separator='\\t'`` falls back to the first run of
    whitespace when a line has no TAB (some corpus copies were re-saved with spaces)."""
    result = KeyedLines()
    first_seen: dict[str, int] = {}
    for number, line, raw in read_text_lines(path):
        if line is None:
            key = key_transform(leading_field(raw).split("\t")[0])
            collection.reject(item_id(key), BAD_ENCODING, f"line {number} of {path.name} is not valid UTF-8")
            result.unusable.add(key)
            continue
        if skip_header(line):
            continue
        if separator and separator in line:
            key, _, value = line.partition(separator)
        else:
            pieces = line.split(None, 1)
            key, value = pieces[0], pieces[1] if len(pieces) > 1 else ""
        key, value = key_transform(key.strip()), value.strip()
        if not value:
            collection.reject(item_id(key), BAD_LINE, f"line {number} of {path.name} has an id but no text")
            result.unusable.add(key)
            continue
        if key in first_seen:
            collection.reject(
                item_id(key), DUPLICATE_ID, f"line {number} of {path.name} repeats the id of line {first_seen[key]}; the first is kept"
            )
            continue
        first_seen[key] = number
        result.values[key] = value
    return result

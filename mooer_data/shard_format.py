"""The shard format (DESIGN.md, Shards) and its safe reader.

A shard is a tar of samples, each three or four members sharing the segment id:

* ``<id>.flac`` or ``<id>.wav`` — 16 kHz mono 16-bit audio of the segment,
* ``<id>.txt``  — the ASR label (the segment's ``text``), UTF-8,
* ``<id>.json`` — every label and the metadata (id, source, language, text, text_raw,
  translation, duration, label_origin, confidence, speaker, split, ...),
* ``<id>.npy``  — optional precomputed features (fbank 80 + LFR m7/n6, before CMVN,
  float16 [T_lfr, 560]) when shards are written with ``--features fbank-lfr``.

Ids contain no dot, so WebDataset (splits at the first dot) and WeNet (at the last) group
members the same way. Members are sorted, with a fixed mtime/owner, so a rebuilt shard has
the same bytes. The reader refuses anything a shard we wrote cannot contain: absolute
paths, ``..``, links, directories, and names that are not ``<id>.<known extension>``.
"""

from __future__ import annotations

import json
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator

AUDIO_EXTENSIONS = ("flac", "wav")
MEMBER_EXTENSIONS = AUDIO_EXTENSIONS + ("txt", "json", "npy")
MEMBER_NAME = re.compile(r"^(?P<key>[A-Za-z0-9][A-Za-z0-9_\-]*)\.(?P<ext>flac|wav|txt|json|npy)$")
SHARD_PATTERN = "shard-{index:06d}.tar"
INDEX_FILE = "index.parquet"
DATA_LIST = "data.list"
FIXED_MTIME = 1_700_000_000  # any constant: shards must not depend on when they were built


class ShardError(ValueError):
    """A shard that is not what we write: refused, naming the shard and the member."""


@dataclass
class Sample:
    key: str
    audio: bytes
    audio_format: str  # flac | wav
    meta: dict
    text: str
    features: bytes | None = None


def _check_member(shard: str, member: tarfile.TarInfo) -> re.Match:
    name = member.name
    if name.startswith("/") or ".." in name.split("/"):
        raise ShardError(f"{shard}: refusing member {name!r}: an absolute or parent path cannot come from a mooer shard")
    if not member.isfile():
        kind = "link" if member.issym() or member.islnk() else "directory" if member.isdir() else "special file"
        raise ShardError(f"{shard}: refusing member {name!r}: a {kind}, expected only regular files")
    match = MEMBER_NAME.match(name)
    if match is None:
        raise ShardError(f"{shard}: refusing member {name!r}: expected <id>.<{'|'.join(MEMBER_EXTENSIONS)}> with a dot-free id")
    return match


def _complete(shard: str, key: str, parts: dict[str, bytes]) -> Sample:
    audio_formats = [ext for ext in AUDIO_EXTENSIONS if ext in parts]
    missing = [n for n, ok in (("audio", audio_formats), ("json", "json" in parts), ("txt", "txt" in parts)) if not ok]
    if missing:
        raise ShardError(f"{shard}: sample {key!r} lacks its {', '.join(missing)} member(s)")
    try:
        meta = json.loads(parts["json"].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ShardError(f"{shard}: sample {key!r} has an unreadable json member ({error})") from None
    return Sample(key, parts[audio_formats[0]], audio_formats[0], meta, parts["txt"].decode("utf-8"), parts.get("npy"))


def iter_shard(path: str | Path, stream: BinaryIO | None = None) -> Iterator[Sample]:
    """The samples of one shard, streamed (members of a sample must be consecutive)."""
    shard = str(path)
    try:
        archive = tarfile.open(fileobj=stream, mode="r|*") if stream is not None else tarfile.open(shard, mode="r|*")
    except (tarfile.TarError, OSError) as error:
        raise ShardError(f"{shard}: not a readable tar ({error})") from None
    key: str | None = None
    parts: dict[str, bytes] = {}
    seen: set[str] = set()
    with archive:
        try:
            for member in archive:
                match = _check_member(shard, member)
                member_key, ext = match["key"], match["ext"]
                if member_key != key:
                    if key is not None:
                        yield _complete(shard, key, parts)
                    if member_key in seen:
                        raise ShardError(f"{shard}: members of sample {member_key!r} are not consecutive")
                    seen.add(member_key)
                    key, parts = member_key, {}
                if ext in parts:
                    raise ShardError(f"{shard}: sample {member_key!r} has two {ext} members")
                handle = archive.extractfile(member)
                parts[ext] = handle.read() if handle else b""
        except tarfile.TarError as error:
            raise ShardError(f"{shard}: truncated or corrupt tar ({error})") from None
        if key is not None:
            yield _complete(shard, key, parts)


def shard_paths(directory: str | Path, split: str = "train") -> list[Path]:
    """The shards of a split of a shard directory (from its index order, i.e. sorted)."""
    directory = Path(directory)
    found = sorted((directory / split).glob("shard-*.tar"))
    if not found:
        raise FileNotFoundError(f"{directory}: expected shards at {directory / split}/shard-*.tar (run `mooer-data shard`), found none")
    return found

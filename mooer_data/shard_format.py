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

The writer half lives here too: the tar writer and the bytes of a sample's members
(the json member is built column by column, equal byte for byte to ``json.dumps``).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import tarfile
from dataclasses import dataclass
from json.encoder import encode_basestring  # the C escaper json.dumps(ensure_ascii=False) uses
from pathlib import Path
from typing import BinaryIO, Iterator, Sequence

AUDIO_EXTENSIONS = ("flac", "wav")
MEMBER_EXTENSIONS = AUDIO_EXTENSIONS + ("txt", "json", "npy")
MEMBER_NAME = re.compile(r"^(?P<key>[A-Za-z0-9][A-Za-z0-9_\-]*)\.(?P<ext>flac|wav|txt|json|npy)$")
SHARD_PATTERN = "shard-{index:06d}.tar"
INDEX_FILE = "index.parquet"
DATA_LIST = "data.list"
FIXED_MTIME = 1_700_000_000  # any constant: shards must not depend on when they were built
SAMPLE_RATE = 16000
# The segment fields the json member carries, plus sample_rate and num_samples.
SAMPLE_META_FIELDS = ("id", "recording_id", "source", "subset", "split", "language", "speaker", "start", "duration", "text",
                      "text_raw", "translation", "label_origin", "confidence")


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


# -- writing ---------------------------------------------------------------------------
def sample_meta(meta: dict, num_samples: int) -> dict:
    """The json member of a sample, as a dict."""
    record = {name: meta.get(name) for name in SAMPLE_META_FIELDS}
    record.update({"sample_rate": SAMPLE_RATE, "num_samples": num_samples})
    return record


def _json_value(value: object) -> str:
    """One value as ``json.dumps(value, ensure_ascii=False)`` writes it."""
    kind = type(value)
    if value is None:
        return "null"
    if kind is str:
        return encode_basestring(value)
    if kind is float:
        return float.__repr__(value) if math.isfinite(value) else json.dumps(value)
    if kind is int:
        return int.__repr__(value)
    return json.dumps(value, ensure_ascii=False, sort_keys=True)  # bools, numpy scalars, ...: exactly as json does


def _json_column(values: Sequence) -> list[str]:
    """Every value of a column as json.dumps writes it; a column of one type (what an Arrow
    column gives) in one comprehension, without a call per value."""
    kinds = set(map(type, values)) - {type(None)}
    if kinds <= {str}:
        return ["null" if v is None else encode_basestring(v) for v in values]
    if kinds <= {float}:
        finite = math.isfinite
        return ["null" if v is None else float.__repr__(v) if finite(v) else json.dumps(v) for v in values]
    return [_json_value(v) for v in values]


class SampleJson:
    """The json members of many samples, encoded column by column.

    ``json.dumps(sample_meta(row, n), ensure_ascii=False, sort_keys=True)`` per sample was
    a visible share of a copy-only shard: it builds a dict, sorts 16 keys and walks them.
    The keys and their order never change, so each value column is encoded once, in one
    pass, into the text before and after num_samples (the one value known only once
    the audio is in hand)."""

    _KEYS = sorted((*SAMPLE_META_FIELDS, "sample_rate", "num_samples"))
    _CONSTANTS = {"sample_rate": str(SAMPLE_RATE)}

    def __init__(self, columns: dict[str, Sequence], count: int):
        split = self._KEYS.index("num_samples")
        self._before = self._texts(self._KEYS[:split], columns, count, "{", ', "num_samples": ')
        self._after = self._texts(self._KEYS[split + 1 :], columns, count, ", ", "}")

    def _texts(self, keys: list[str], columns: dict[str, Sequence], count: int, start: str, end: str) -> list[str]:
        template = start + ", ".join(f'"{key}": ' + self._CONSTANTS.get(key, "%s") for key in keys) + end
        encoded = [_json_column(columns[key]) if key in columns else ["null"] * count for key in keys if key not in self._CONSTANTS]
        return [template % row for row in zip(*encoded)] if encoded else [template] * count

    def member(self, index: int, num_samples: int) -> bytes:
        return (self._before[index] + int.__repr__(num_samples) + self._after[index]).encode("utf-8")


def _header_template(kind: bytes) -> bytes:
    header = bytearray(512)
    header[100:108] = b"0000644\0"
    header[108:116] = b"0000000\0"
    header[116:124] = b"0000000\0"
    header[136:148] = b"%011o\0" % FIXED_MTIME
    header[148:156] = b"        "  # the checksum counts its own field as spaces
    header[156:157] = kind
    header[257:265] = b"ustar  \0"
    return bytes(header)


_TEMPLATES = {kind: _header_template(kind) for kind in (b"0", b"L")}
_CHECKSUM_BASE = {kind: sum(template) for kind, template in _TEMPLATES.items()}
_NAME_TAILS = {kind: [template[n:124] for n in range(101)] for kind, template in _TEMPLATES.items()}  # after a name of n bytes
_MTIME_FIELD = _TEMPLATES[b"0"][136:148]
_AFTER_CHECKSUM = {kind: template[156:] for kind, template in _TEMPLATES.items()}
_PADDING = [b"\0" * (-n % 512) for n in range(512)]
_EXT_SUMS = {ext: sum(ext.encode("ascii")) for ext in MEMBER_EXTENSIONS}


def _header(name: bytes, size: int, kind: bytes = b"0", name_sum: int | None = None) -> bytes:
    """A GNU tar header from the template: name, size and checksum are all that vary."""
    size_field = b"%011o\0" % size
    checksum = _CHECKSUM_BASE[kind] + (sum(name) if name_sum is None else name_sum) + sum(size_field)
    return b"".join((name, _NAME_TAILS[kind][len(name)], size_field, _MTIME_FIELD, b"%06o\0 " % checksum, _AFTER_CHECKSUM[kind]))


def member_pieces(name: str, data: bytes | bytearray | memoryview) -> tuple[bytes, bytes | bytearray | memoryview, bytes]:
    """(header, data, padding) of one tar member; a name over 100 bytes is carried by a
    ``././@LongLink`` member in front of the header, as GNU tar and tarfile write it."""
    encoded = name.encode("utf-8")
    size = len(data)
    if len(encoded) <= 100:
        return _header(encoded, size), data, _PADDING[size % 512]
    longname = encoded + b"\0"
    prefix = _header(b"././@LongLink", len(longname), b"L") + longname + _PADDING[len(longname) % 512]
    return prefix + _header(encoded[:100], size), data, _PADDING[size % 512]


def sample_pieces(key: str, members: Sequence[tuple[str, bytes | bytearray | memoryview]]) -> list:
    """The tar bytes of one sample's members ``<key>.<ext>``, in the order given, as few
    pieces: small members are joined, large data (audio, features) stays as it is. The
    names share the key, so its bytes and their sum are worked out once."""
    encoded = key.encode("utf-8")
    if len(encoded) + 1 + max(len(ext) for ext, _ in members) > 100:  # a long name: the LongLink path
        return [piece for ext, data in members for piece in member_pieces(f"{key}.{ext}", data)]
    key_sum = sum(encoded) + ord(".")
    pieces: list = []
    small: list = []
    for ext, data in members:
        name = encoded + b"." + ext.encode("utf-8")
        size = len(data)
        small.append(_header(name, size, name_sum=key_sum + _EXT_SUMS[ext] if ext in _EXT_SUMS else None))
        if size > 4096:
            pieces.append(b"".join(small))
            pieces.append(data)
            small = []
        else:
            small.append(data)
        small.append(_PADDING[size % 512])
    pieces.append(b"".join(small))
    return pieces


class TarWriter:
    """A deterministic tar writer (GNU format, like tarfile's, readable by any tar): fixed
    mode, owner and mtime, hashing the bytes on their way to disk.

    Members arrive as pieces (header, data, padding) that are hashed as they come and
    written with one ``writev`` per MiB: no per-member write, and the audio bytes are never
    copied into a joined buffer."""

    RECORD = 512 * 20
    FLUSH_BYTES = 1 << 20
    _MAX_PIECES = 512
    _IOV_MAX = 1024  # buffers one writev takes on Linux

    def __init__(self, path: Path | str):
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        self.digest = hashlib.sha256()
        self._written = 0
        self._pending: list = []
        self._pending_bytes = 0

    @property
    def size(self) -> int:
        """Bytes of the archive so far (all of it once closed)."""
        return self._written + self._pending_bytes

    def add_pieces(self, pieces: Sequence[bytes | bytearray | memoryview]) -> None:
        """Append raw bytes (whole members, in order) to the archive. They are written
        later, so they must not change after this call (bytes never do)."""
        update = self.digest.update
        for piece in pieces:
            if piece:
                update(piece)
                self._pending.append(piece)
                self._pending_bytes += len(piece)
        if self._pending_bytes >= self.FLUSH_BYTES or len(self._pending) >= self._MAX_PIECES:
            self._flush()

    def add(self, name: str, data: bytes) -> None:
        self.add_pieces(member_pieces(name, data))

    def add_many(self, members: list[tuple[str, bytes]]) -> None:
        """Several members, in the order given (a sample's three or four)."""
        self.add_pieces([piece for name, data in members for piece in member_pieces(name, data)])

    @staticmethod
    def member(name: str, data: bytes) -> bytes:
        return b"".join(member_pieces(name, data))

    def _flush(self) -> None:
        pending, first = self._pending, 0
        self._written += self._pending_bytes
        self._pending, self._pending_bytes = [], 0
        while first < len(pending):
            written = os.writev(self._fd, pending[first : first + self._IOV_MAX])
            if written <= 0:
                raise OSError(f"expected writev to write bytes, found it wrote {written}")
            # a short write (a signal, a full disk) leaves the rest to go again
            while first < len(pending) and written >= len(pending[first]):
                written -= len(pending[first])
                first += 1
            if written:
                pending[first] = memoryview(pending[first])[written:]

    def close(self) -> None:
        end = self.size + 1024
        self.add_pieces([b"\0" * 1024, b"\0" * (-end % self.RECORD)])
        self._flush()
        os.close(self._fd)

    def abort(self) -> None:
        os.close(self._fd)

"""The manifest contract: Parquet schemas, atomic writers, readers and DuckDB views.

A prepared corpus is a directory holding three Parquet tables:

* ``recordings.parquet`` — one row per audio file,
* ``segments.parquet``   — one row per training example (many per long recording),
* ``rejects.parquet``    — one row per item left out, with a reason a person understands,

plus ``manifest.json`` describing how it was made. Audio paths are stored relative to a
corpus root recorded once in the Parquet metadata (``mooer.roots``, keyed by source), so
the manifest keeps working on another machine that mounts the corpus at the same root,
or anywhere else once ``MOOER_ROOT_<SOURCE>`` points at it.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

SCHEMA_VERSION = "1"

RECORDINGS_FILE = "recordings.parquet"
SEGMENTS_FILE = "segments.parquet"
REJECTS_FILE = "rejects.parquet"
INFO_FILE = "manifest.json"
TABLE_FILES = {"recordings": RECORDINGS_FILE, "segments": SEGMENTS_FILE, "rejects": REJECTS_FILE}

RECORDING_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("path", pa.string(), nullable=False),
        pa.field("format", pa.string()),
        pa.field("sample_rate", pa.int32()),
        pa.field("channels", pa.int16()),
        pa.field("duration", pa.float64()),
    ]
)

SEGMENT_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("recording_id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("subset", pa.string()),
        pa.field("split", pa.string()),
        pa.field("language", pa.string()),
        pa.field("speaker", pa.string()),
        pa.field("start", pa.float64()),
        pa.field("duration", pa.float64()),
        pa.field("text", pa.string()),
        pa.field("text_raw", pa.string()),
        pa.field("translation", pa.string()),
        pa.field("label_origin", pa.string()),
        pa.field("confidence", pa.float32()),
    ]
)

REJECT_SCHEMA = pa.schema(
    [
        pa.field("source", pa.string(), nullable=False),
        pa.field("item", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
    ]
)

SCHEMAS = {"recordings": RECORDING_SCHEMA, "segments": SEGMENT_SCHEMA, "rejects": REJECT_SCHEMA}

# Ids are source-prefixed, unique and dot-free: WebDataset splits a tar member name at its
# first dot and WeNet at its last, so a dot inside an id would corrupt every shard.
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]*$")


class ManifestError(ValueError):
    """A manifest directory or table does not follow the contract."""


def check_id(item_id: str, source: str) -> None:
    if not item_id.startswith(source + "-"):
        raise ManifestError(f"id {item_id!r}: expected the prefix {source + '-'!r}")
    if not ID_PATTERN.match(item_id):
        raise ManifestError(
            f"id {item_id!r}: expected only letters, digits, '_' and '-' (no '.', '/' or spaces)"
        )


def table_metadata(kind: str, roots: dict[str, str]) -> dict[bytes, bytes]:
    return {
        b"mooer.schema_version": SCHEMA_VERSION.encode(),
        b"mooer.table": kind.encode(),
        b"mooer.roots": json.dumps(roots, sort_keys=True).encode(),
    }


class TableSink:
    """Streams rows into one Parquet table in row groups, then renames it into place.

    Memory stays bounded by ``batch_rows`` whatever the corpus size, and a killed run
    leaves only a ``.tmp`` file behind, never a half table under the final name.
    """

    def __init__(self, path: Path, kind: str, roots: dict[str, str], batch_rows: int = 65536):
        self.path = Path(path)
        self.kind = kind
        self.schema = SCHEMAS[kind].with_metadata(table_metadata(kind, roots))
        self.batch_rows = batch_rows
        self.rows_written = 0
        self._columns: dict[str, list] = {name: [] for name in self.schema.names}
        self._pending = 0
        self._tmp = self.path.with_name(self.path.name + ".tmp")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = pq.ParquetWriter(self._tmp, self.schema, compression="zstd")

    def add(self, row: dict) -> None:
        for name, column in self._columns.items():
            column.append(row.get(name))
        self._pending += 1
        if self._pending >= self.batch_rows:
            self._flush()

    def add_many(self, rows: Iterable[dict]) -> None:
        for row in rows:
            self.add(row)

    def add_table(self, table: pa.Table) -> None:
        self._flush()
        table = table.select(self.schema.names).cast(self.schema)
        self._writer.write_table(table)
        self.rows_written += table.num_rows

    def _flush(self) -> None:
        if not self._pending:
            return
        batch = pa.table(self._columns, schema=self.schema)
        self._writer.write_table(batch)
        self.rows_written += self._pending
        self._columns = {name: [] for name in self.schema.names}
        self._pending = 0

    def filter_written(self, keep: Callable[[pa.Table], pa.Array]) -> None:
        """Drop already-written rows (``keep`` gives a boolean mask over the table so far).
        Rare by design (duplicate ids found after a streaming pass), so it simply rereads."""
        self._flush()
        self._writer.close()
        table = pq.read_table(self._tmp)
        table = table.filter(keep(table))
        self._writer = pq.ParquetWriter(self._tmp, self.schema, compression="zstd")
        self._writer.write_table(table.cast(self.schema))
        self.rows_written = table.num_rows

    def close(self) -> Path:
        self._flush()
        self._writer.close()
        os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        self._writer.close()
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> "TableSink":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_table(path: Path, kind: str, table: pa.Table, roots: dict[str, str]) -> Path:
    with TableSink(path, kind, roots) as sink:
        sink.add_table(table)
    return Path(path)


def read_roots(path: Path) -> dict[str, str]:
    metadata = pq.read_schema(path).metadata or {}
    raw = metadata.get(b"mooer.roots")
    return json.loads(raw) if raw else {}


def check_schema_version(path: Path) -> None:
    metadata = pq.read_schema(path).metadata or {}
    found = metadata.get(b"mooer.schema_version", b"<none>").decode()
    if found != SCHEMA_VERSION:
        raise ManifestError(f"{path}: expected manifest schema version {SCHEMA_VERSION}, found {found}")


@dataclass(frozen=True)
class ManifestDir:
    """A directory of manifest tables (a prepared corpus or a sampled selection)."""

    path: Path

    def table_path(self, kind: str) -> Path:
        return self.path / TABLE_FILES[kind]

    def has(self, kind: str) -> bool:
        return self.table_path(kind).is_file()

    def read(self, kind: str, columns: Sequence[str] | None = None) -> pa.Table:
        path = self.table_path(kind)
        if not path.is_file():
            return SCHEMAS[kind].empty_table() if columns is None else SCHEMAS[kind].empty_table().select(columns)
        check_schema_version(path)
        return pq.read_table(path, columns=list(columns) if columns else None)

    def roots(self) -> dict[str, str]:
        roots: dict[str, str] = {}
        for kind in ("recordings", "segments"):
            if self.has(kind):
                roots.update(read_roots(self.table_path(kind)))
        return roots

    def info(self) -> dict:
        info_path = self.path / INFO_FILE
        return json.loads(info_path.read_text()) if info_path.is_file() else {}


def open_manifest_dirs(paths: Iterable[Path | str]) -> list[ManifestDir]:
    dirs = []
    for raw in paths:
        path = Path(raw)
        if not path.is_dir():
            raise ManifestError(f"{path}: expected a manifest directory, found nothing there")
        if not any((path / name).is_file() for name in (RECORDINGS_FILE, SEGMENTS_FILE)):
            found = sorted(p.name for p in path.iterdir())[:8]
            raise ManifestError(
                f"{path}: expected {RECORDINGS_FILE} and/or {SEGMENTS_FILE} "
                f"(run `mooer-data prepare` first), found {found or 'an empty directory'}"
            )
        dirs.append(ManifestDir(path))
    return dirs


def resolve_audio_path(root: str | None, relative: str, source: str) -> Path:
    """Absolute path of a recording, honouring a ``MOOER_ROOT_<SOURCE>`` override."""
    override = os.environ.get(f"MOOER_ROOT_{source.upper()}")
    base = override or root
    if base is None or os.path.isabs(relative):
        return Path(relative)
    return Path(base) / relative


def iter_parquet_files(dirs: Sequence[ManifestDir], kind: str) -> Iterator[Path]:
    for manifest_dir in dirs:
        if manifest_dir.has(kind):
            yield manifest_dir.table_path(kind)


def duckdb_views(dirs: Sequence[ManifestDir], connection=None):
    """A DuckDB connection where ``recordings``, ``segments`` and ``rejects`` are views
    over the union of the given manifest directories (empty views where absent)."""
    import duckdb

    con = connection or duckdb.connect()
    for kind in TABLE_FILES:
        files = [str(p) for p in iter_parquet_files(dirs, kind)]
        if files:
            file_list = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
            con.execute(
                f"CREATE OR REPLACE VIEW {kind} AS SELECT * FROM read_parquet([{file_list}], union_by_name=true)"
            )
        else:
            con.register(f"_{kind}_empty", SCHEMAS[kind].empty_table())
            con.execute(f"CREATE OR REPLACE VIEW {kind} AS SELECT * FROM _{kind}_empty")
    return con

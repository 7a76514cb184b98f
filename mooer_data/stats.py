"""`mooer-data stats` and `mooer-data query`: DuckDB over the manifest Parquet files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from .manifest import duckdb_views, open_manifest_dirs

# Each breakdown is one GROUP BY over the segments view; recordings without segments
# (in-house audio before labelling) are reported from the recordings view.
BREAKDOWNS = ("source", "language", "split", "label_origin")


@dataclass(frozen=True)
class QueryResult:
    columns: list[str]
    rows: list[tuple]


def run_query(sql: str, manifest_dirs: Sequence[Path | str]) -> QueryResult:
    """Any SQL with ``recordings``, ``segments`` and ``rejects`` as views."""
    con = duckdb_views(open_manifest_dirs(manifest_dirs))
    cursor = con.execute(sql)
    columns = [d[0] for d in cursor.description] if cursor.description else []
    return QueryResult(columns, cursor.fetchall())


def manifest_stats(manifest_dirs: Sequence[Path | str]) -> dict[str, QueryResult]:
    con = duckdb_views(open_manifest_dirs(manifest_dirs))
    tables: dict[str, QueryResult] = {}
    for column in BREAKDOWNS:
        cursor = con.execute(
            f"SELECT coalesce({column}, '-') AS {column}, round(sum(duration) / 3600, 3) AS hours, "
            f"count(*) AS segments, count(DISTINCT speaker) AS speakers "
            f"FROM segments GROUP BY 1 ORDER BY 1"
        )
        tables[f"segments by {column}"] = QueryResult([d[0] for d in cursor.description], cursor.fetchall())
    cursor = con.execute(
        "SELECT source, round(sum(duration) / 3600, 3) AS hours, count(*) AS recordings FROM recordings GROUP BY 1 ORDER BY 1"
    )
    tables["recordings by source"] = QueryResult([d[0] for d in cursor.description], cursor.fetchall())
    cursor = con.execute(
        "SELECT source, split_part(reason, ':', 1) AS reason, count(*) AS items FROM rejects GROUP BY 1, 2 ORDER BY 1, 2"
    )
    tables["rejects by reason"] = QueryResult([d[0] for d in cursor.description], cursor.fetchall())
    return tables


def format_table(title: str, result: QueryResult) -> str:
    cells = [[("" if v is None else str(v)) for v in row] for row in result.rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(result.columns)]
    line = lambda values: "  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(values, widths)))  # noqa: E731
    out = [title, line(result.columns), line(["-" * w for w in widths])]
    out += [line(row) for row in cells] or ["(none)"]
    return "\n".join(out)

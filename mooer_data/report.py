"""`mooer-data report manifests/NAME`: an HTML page with PNG plots and a Markdown summary.

Reads what a build leaves in its output directory — the final manifest tables
(segments, recordings, rejects, quality), ``sample.json`` (budgets requested and
reached), ``labelling.json`` (providers, requests, cost), the shard ``index.parquet`` and
``skipped.parquet`` — and writes ``report/report.html`` (self-contained but for the PNGs
beside it; no script), ``report/report.md`` and the PNGs. Any piece that is absent is
named as absent rather than failing, so the report also describes a plain manifest
directory. Tables are computed by DuckDB over the Parquet files, so a report of
millions of segments never loads them into Python.
"""

from __future__ import annotations

import html
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from .parts import sql_path

REPORT_VERSION = "1"
BAR_COLOR = "#1f77b4"  # every plot draws in this one colour (the page itself uses none like it)
SECOND_COLOR = "#ff7f0e"
DURATION_BIN_S = 0.5
DURATION_CAP_S = 30.0
SCORE_BIN = 0.05
# every PNG this module writes: a rerun removes exactly these (and never a user's own
# images that share the output directory)
PLOT_FILES = ("hours.png", "budgets.png", "durations.png", "confidence.png", "agreement.png", "rejects.png", "shards.png")


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list]


@dataclass
class Section:
    title: str
    tables: list[Table] = field(default_factory=list)
    image: str | None = None  # a PNG beside the page
    notes: list[str] = field(default_factory=list)


class _Source:
    """The build output as DuckDB views (empty views where a table is absent)."""

    def __init__(self, directory: Path):
        import duckdb

        from .manifest import SCHEMAS

        self.directory = directory
        self.con = duckdb.connect()
        for kind in ("segments", "recordings", "rejects"):
            path = directory / f"{kind}.parquet"
            if path.is_file():
                self.con.execute(f"CREATE VIEW {kind} AS SELECT * FROM read_parquet({sql_path(path)})")
            else:
                self.con.register(f"_{kind}_empty", SCHEMAS[kind].empty_table())
                self.con.execute(f"CREATE VIEW {kind} AS SELECT * FROM _{kind}_empty")
        self.has = {name: (directory / name).is_file() for name in ("segments.parquet", "quality.parquet", "index.parquet", "skipped.parquet",
                                                                    "sample.json", "labelling.json")}

    def rows(self, sql: str) -> list[tuple]:
        return self.con.execute(sql).fetchall()

    def json(self, name: str) -> dict:
        path = self.directory / name
        return json.loads(path.read_text()) if path.is_file() else {}


def _hours_tables(source: _Source) -> list[Table]:
    tables = []
    for column, title in (("source", "source"), ("language", "language"), ("label_origin", "label origin")):
        rows = source.rows(
            f"SELECT coalesce({column}, '-'), round(sum(duration) / 3600, 4), count(*) FROM segments GROUP BY 1 ORDER BY 1"
        )
        tables.append(Table(f"hours by {title}", [title, "hours", "segments"], [list(r) for r in rows]))
    task = source.rows(
        "SELECT 'asr (transcript)', round(coalesce(sum(duration), 0) / 3600, 4), count(*) FROM segments WHERE length(trim(coalesce(text, ''))) > 0 "
        "UNION ALL SELECT 'ast (translation)', round(coalesce(sum(duration), 0) / 3600, 4), count(*) FROM segments "
        "WHERE length(trim(coalesce(translation, ''))) > 0"
    )
    tables.insert(2, Table("hours by task", ["task", "hours", "segments"], [list(r) for r in task]))
    return tables


def _histogram(source: _Source, sql_value: str, where: str, width: float, cap: float, table: str = "segments") -> list[tuple[float, int]]:
    """(bin start, count) over ``table``; the last bin holds everything from ``cap`` up."""
    rows = source.rows(
        f"SELECT least(floor({sql_value} / {width}), {int(round(cap / width))}) AS b, count(*) FROM {table} WHERE {where} GROUP BY 1 ORDER BY 1"
    )
    return [(float(b) * width, int(n)) for b, n in rows]


def _budget_table(record: dict) -> Table | None:
    groups = record.get("groups") or {}
    if not groups:
        return None
    rows = []
    for name, group in sorted(groups.items()):
        requested, reached = group["requested_hours"], group["reached_hours"]
        rows.append([name, round(requested, 4), round(reached, 4), round(group["available_hours"], 4), group["items"], group["unit"],
                     f"{100 * reached / requested:.1f}%" if requested else "-"])
    return Table("budget requested versus reached", ["source", "requested h", "reached h", "available h", "items", "unit", "reached / requested"], rows)


def _labelling_tables(record: dict) -> list[Table]:
    tables = []
    for stage, unit in (("pseudolabel", "items"), ("translate", "segments")):
        stats = record.get(stage)
        if not stats:
            continue
        rows = [[provider, count] for provider, count in sorted((stats.get("by_provider") or {}).items())]
        rows.append(["failed", stats.get("failed", 0)])
        tables.append(Table(f"{stage}: {unit} by provider ({stats.get('requests', 0)} requests, cost {stats.get('cost', 0)})",
                            ["provider", unit], rows))
    return tables


# -- plots -----------------------------------------------------------------------------
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out_dir: Path, name: str) -> str:
    if name not in PLOT_FILES:  # the cleanup in write_report only knows the listed names
        raise ValueError(f"expected a plot name from PLOT_FILES {PLOT_FILES}, found {name!r}")
    path = out_dir / name
    fig.savefig(path, dpi=80, metadata={"Software": None})
    _plt().close(fig)
    return name


def _bars(ax, labels: Sequence[str], values: Sequence[float], title: str, xlabel: str) -> None:
    positions = list(range(len(labels)))
    ax.barh(positions, values, color=BAR_COLOR)
    ax.set_yticks(positions, [str(label) for label in labels])
    ax.invert_yaxis()
    ax.set_title(title)
    ax.set_xlabel(xlabel)


def _plot_hours(tables: list[Table], out_dir: Path) -> str:
    plt = _plt()
    fig, axes = plt.subplots(2, 2, figsize=(11, 7), layout="constrained")
    for ax, table in zip(axes.flat, tables):
        _bars(ax, [r[0] for r in table.rows], [r[1] for r in table.rows], table.title, "hours")
    return _save(fig, out_dir, "hours.png")


def _plot_histogram(bins: list[tuple[float, int]], width: float, title: str, xlabel: str, out_dir: Path, name: str) -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(9, 3.5), layout="constrained")
    ax.bar([b for b, _ in bins], [n for _, n in bins], width=width, align="edge", color=BAR_COLOR)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("segments")
    return _save(fig, out_dir, name)


def _plot_budgets(table: Table, out_dir: Path) -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(9, 3.5), layout="constrained")
    positions = list(range(len(table.rows)))
    ax.bar([p - 0.2 for p in positions], [r[1] for r in table.rows], width=0.4, color=BAR_COLOR, label="requested")
    ax.bar([p + 0.2 for p in positions], [r[2] for r in table.rows], width=0.4, color=SECOND_COLOR, label="reached")
    ax.set_xticks(positions, [r[0] for r in table.rows])
    ax.set_ylabel("hours")
    ax.set_title("budget requested versus reached")
    ax.legend()
    return _save(fig, out_dir, "budgets.png")


def _plot_counts(table: Table, title: str, xlabel: str, out_dir: Path, name: str) -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(9, max(2.5, 0.35 * len(table.rows) + 1)), layout="constrained")
    _bars(ax, [f"{r[0]} ({r[1]})" for r in table.rows], [r[2] for r in table.rows], title, xlabel)
    return _save(fig, out_dir, name)


def _plot_shards(rows: list[tuple], out_dir: Path) -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(9, 3.5), layout="constrained")
    ax.bar(range(len(rows)), [r[2] / 1e6 for r in rows], color=BAR_COLOR)
    ax.set_xlabel("shard (index order)")
    ax.set_ylabel("MB")
    ax.set_title(f"shard sizes ({len(rows)} shards)")
    return _save(fig, out_dir, "shards.png")


# -- the sections ----------------------------------------------------------------------
def build_sections(directory: Path, out_dir: Path) -> tuple[list[Section], dict]:
    source = _Source(directory)
    totals = source.rows("SELECT count(*), coalesce(sum(duration), 0) / 3600 FROM segments")[0]
    summary = {"segments": int(totals[0]), "hours": round(float(totals[1]), 4),
               "recordings": int(source.rows("SELECT count(*) FROM recordings")[0][0]),
               "rejects": int(source.rows("SELECT count(*) FROM rejects")[0][0])}
    sections = []

    hours = _hours_tables(source)
    sections.append(Section("Hours by source, language, task and label origin", hours,
                            _plot_hours(hours, out_dir) if summary["segments"] else None))

    budget = _budget_table(source.json("sample.json"))
    if budget is not None:
        sections.append(Section("Budget requested versus reached", [budget], _plot_budgets(budget, out_dir)))
    else:
        sections.append(Section("Budget requested versus reached", notes=["no sample.json here: budgets unknown"]))

    durations = _histogram(source, "duration", "duration IS NOT NULL", DURATION_BIN_S, DURATION_CAP_S)
    sections.append(Section("Segment durations", image=_plot_histogram(
        durations, DURATION_BIN_S, f"segment durations ({DURATION_BIN_S:g} s bins; the last holds everything from {DURATION_CAP_S:g} s)",
        "seconds", out_dir, "durations.png") if durations else None, notes=[] if durations else ["no segments"]))

    confidence = _histogram(source, "confidence", "confidence IS NOT NULL", SCORE_BIN, 1.0)
    sections.append(Section("Label confidence", image=_plot_histogram(
        confidence, SCORE_BIN, "confidence of the labels that carry one", "confidence", out_dir, "confidence.png") if confidence else None,
        notes=[f"{sum(n for _, n in confidence)} segments carry a confidence"] if confidence else ["no label carries a confidence"]))

    sections.append(_agreement_section(source, directory, out_dir))
    sections.append(_rejects_section(source, directory, out_dir))
    sections.append(_shards_section(source, directory, out_dir))
    return sections, summary


def _agreement_section(source: _Source, directory: Path, out_dir: Path) -> Section:
    section = Section("Provider agreement", _labelling_tables(source.json("labelling.json")))
    if not source.has["quality.parquet"]:
        section.notes.append("no quality.parquet: no pseudo-labels were checked")
        return section
    quality = sql_path(directory / "quality.parquet")
    source.con.execute(f"CREATE OR REPLACE VIEW quality AS SELECT * FROM read_parquet({quality})")
    flags = source.rows("SELECT flag, count(*) FROM (SELECT unnest(flags) AS flag FROM quality) GROUP BY 1 ORDER BY 1")
    checked = source.rows("SELECT count(*) FROM quality")[0][0]
    section.tables.append(Table(f"quality flags on {checked} pseudo-labelled segments", ["flag", "segments"], [list(r) for r in flags] or [["none", 0]]))
    measured = source.rows("SELECT count(*), avg(agreement_error) FROM quality WHERE agreement_error IS NOT NULL")[0]
    if not measured[0]:
        section.notes.append("no agreement measured: set pseudolabel.verify_with in the recipe to have a second provider check the labels")
        return section
    section.notes.append(f"{measured[0]} segments checked by a second provider; mean disagreement (CER/WER) {measured[1]:.3f}")
    bins = _histogram(source, "least(agreement_error, 1.0)", "agreement_error IS NOT NULL", SCORE_BIN, 1.0, table="quality")
    section.image = _plot_histogram(bins, SCORE_BIN, "disagreement between the labelling and the verifying provider",
                                    "error rate (CER for zh, WER otherwise), capped at 1", out_dir, "agreement.png")
    return section


def _rejects_section(source: _Source, directory: Path, out_dir: Path) -> Section:
    rows = source.rows("SELECT split_part(reason, ':', 1) AS category, source, count(*) FROM rejects GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2")
    table = Table("rejects by reason", ["reason", "source", "items"], [list(r) for r in rows])
    section = Section("Rejects by reason", [table])
    if rows:
        section.image = _plot_counts(table, "rejects by reason (source)", "items", out_dir, "rejects.png")
    else:
        section.notes.append("nothing was rejected")
    if source.has["skipped.parquet"]:
        path = sql_path(directory / "skipped.parquet")
        skipped = source.rows(f"SELECT split_part(reason, ':', 1), count(*) FROM read_parquet({path}) GROUP BY 1 ORDER BY 2 DESC")
        section.tables.append(Table("segments left out of the shards", ["reason", "segments"], [list(r) for r in skipped] or [["none", 0]]))
    return section


def _shards_section(source: _Source, directory: Path, out_dir: Path) -> Section:
    if not source.has["index.parquet"]:
        return Section("Shard sizes", notes=["no index.parquet: not sharded"])
    path = sql_path(directory / "index.parquet")
    rows = source.rows(f"SELECT path, count, bytes, seconds FROM read_parquet({path})")
    sizes = sorted(r[2] for r in rows)
    summary = Table("shards", ["shards", "samples", "hours", "total MB", "smallest MB", "median MB", "largest MB"], [[
        len(rows), sum(r[1] for r in rows), round(sum(r[3] for r in rows) / 3600, 4), round(sum(sizes) / 1e6, 2),
        round(sizes[0] / 1e6, 3) if sizes else 0, round(sizes[len(sizes) // 2] / 1e6, 3) if sizes else 0, round(sizes[-1] / 1e6, 3) if sizes else 0,
    ]])
    return Section("Shard sizes", [summary], _plot_shards(rows, out_dir) if rows else None)


# -- writing ---------------------------------------------------------------------------
def _cell(value) -> str:
    return "" if value is None else str(value)


def render_markdown(title: str, summary: dict, sections: list[Section], notes: Sequence[str]) -> str:
    out = [f"# {title}", ""]
    out += [f"> {note}" for note in notes] + ([""] if notes else [])
    out.append(f"{summary['hours']} h in {summary['segments']} segments from {summary['recordings']} recordings; {summary['rejects']} rejects.")
    for section in sections:
        out += ["", f"## {section.title}", ""]
        out += [f"{note}" for note in section.notes] + ([""] if section.notes else [])
        for table in section.tables:
            out += [f"**{table.title}**", "", "| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
            out += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in table.rows] or ["| (none) |"]
            out.append("")
        if section.image:
            out += [f"![{section.title}]({section.image})", ""]
    return "\n".join(out).rstrip() + "\n"


STYLE = """
body { font-family: sans-serif; margin: 2em auto; max-width: 1000px; color: #222; background: #fff; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; border-bottom: 1px solid #ccc; padding-bottom: 0.2em; margin-top: 2em; }
table { border-collapse: collapse; margin: 0.8em 0; } caption { text-align: left; font-weight: bold; margin-bottom: 0.3em; white-space: nowrap; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: right; } th:first-child, td:first-child { text-align: left; }
.note { background: #fff4d6; border-left: 4px solid #c9a227; padding: 0.4em 0.8em; }
img { max-width: 100%; display: block; margin: 0.5em 0; }
"""


def render_html(title: str, summary: dict, sections: list[Section], notes: Sequence[str]) -> str:
    e = html.escape
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">', f"<title>{e(title)}</title>", f"<style>{STYLE}</style></head><body>",
           f"<h1>{e(title)}</h1>"]
    out += [f'<p class="note">{e(note)}</p>' for note in notes]
    out.append(f'<p id="summary">{summary["hours"]} h in {summary["segments"]} segments from {summary["recordings"]} recordings; '
               f'{summary["rejects"]} rejects.</p>')
    for index, section in enumerate(sections):
        out.append(f'<section id="s{index}"><h2>{e(section.title)}</h2>')
        out += [f"<p>{e(note)}</p>" for note in section.notes]
        for table in section.tables:
            out.append(f"<table><caption>{e(table.title)}</caption><thead><tr>" + "".join(f"<th>{e(c)}</th>" for c in table.columns) + "</tr></thead><tbody>")
            out += ["<tr>" + "".join(f"<td>{e(_cell(v))}</td>" for v in row) + "</tr>" for row in table.rows]
            out.append("</tbody></table>")
        if section.image:
            out.append(f'<img src="{e(section.image)}" alt="{e(section.title)}">')
        out.append("</section>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def write_report(directory: Path | str, out_dir: Path | str | None = None, notes: Sequence[str] = ()) -> Path:
    """Write report.html, report.md and the PNGs for a build output (or any manifest
    directory); returns the page's path."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ValueError(f"{directory}: expected a build output directory (mooer-data build-mt5k), found nothing there")
    if not (directory / "segments.parquet").is_file():
        raise ValueError(f"{directory}: expected segments.parquet (a finished build-mt5k output or a manifest directory), found none")
    out_dir = Path(out_dir) if out_dir is not None else directory / "report"
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in PLOT_FILES:
        (out_dir / name).unlink(missing_ok=True)  # a plot with nothing to show this time must not linger from the last report
    sections, summary = build_sections(directory, out_dir)
    info = json.loads((directory / "manifest.json").read_text()) if (directory / "manifest.json").is_file() else {}
    title = f"{info.get('recipe') or directory.name}: dataset report"
    all_notes = list(notes)
    for name, text in (("report.md", render_markdown(title, summary, sections, all_notes)), ("report.html", render_html(title, summary, sections, all_notes))):
        tmp = out_dir / (name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, out_dir / name)
    return out_dir / "report.html"

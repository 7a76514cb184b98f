"""The `mooer-data` command line: thin commands, one library call each."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

app = typer.Typer(
    help="Build MT5K-style speech training data: prepare corpora, sample hour budgets, inspect manifests.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _fail(error: Exception) -> None:
    typer.echo(f"error: {error}", err=True)
    raise typer.Exit(code=2)


def _split_parts(parts: Optional[List[str]]) -> list[str] | None:
    if not parts:
        return None
    return [p for value in parts for p in value.split(",") if p]


@app.command()
def prepare(
    corpus: str = typer.Argument(..., help="aishell2, librispeech, wenetspeech, multi_cn (or one of its parts), inhouse"),
    corpus_dir: Path = typer.Argument(..., help="the corpus as extracted from its archives"),
    out_dir: Path = typer.Argument(..., help="where recordings/segments/rejects.parquet are written"),
    jobs: int = typer.Option(1, "-j", "--jobs", min=1, help="processes probing audio headers in parallel"),
    parts: Optional[List[str]] = typer.Option(None, "--parts", help="only these parts (comma separated or repeated)"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bars"),
) -> None:
    """Turn a corpus directory into Parquet manifests; bad items go to rejects.parquet."""
    from .corpora.base import CorpusLayoutError
    from .prepare import PrepareConfig, prepare_corpus

    config = PrepareConfig(jobs=jobs, parts=_split_parts(parts), show_progress=not quiet and sys.stderr.isatty())
    try:
        prepare_corpus(corpus, corpus_dir, out_dir, config, log=typer.echo)
    except (CorpusLayoutError, ValueError) as error:
        _fail(error)


@app.command()
def sample(
    manifest_dirs: List[Path] = typer.Argument(..., help="prepared manifest directories"),
    out_dir: Optional[Path] = typer.Option(None, "-o", "--out", help="where the selection is written"),
    seed: int = typer.Option(..., "--seed", help="the same seed gives the same selection"),
    hours: Optional[float] = typer.Option(None, "--hours", help="one budget over all sources together"),
    hours_per_source: Optional[str] = typer.Option(None, "--hours-per-source", help="SRC=H,SRC=H,..."),
    dry_run: bool = typer.Option(False, "--dry-run", help="show what would be selected; write nothing"),
) -> None:
    """Draw segments (or in-house recordings) by hour budget, deterministically."""
    from .sampling import SampleConfig, parse_hours_per_source, plan_sample, sample_manifests

    if out_dir is None and not dry_run:
        _fail(ValueError("expected -o/--out OUT_DIR (or --dry-run)"))
    try:
        budgets = parse_hours_per_source(hours_per_source) if hours_per_source else None
        config = SampleConfig(seed=seed, hours=hours, hours_per_source=budgets)
        result = plan_sample(manifest_dirs, config).result if dry_run else sample_manifests(manifest_dirs, out_dir, config)
    except ValueError as error:
        _fail(error)
    for name, group in sorted(result.groups.items()):
        label = "all sources" if name == "*" else name
        typer.echo(
            f"{label:14s} requested {group.requested_hours:10.3f} h  reached {group.reached_hours:10.3f} h  "
            f"({group.items} {group.unit}; {group.available_hours:.3f} h available)"
        )
    if dry_run:
        typer.echo("dry run: nothing written")
    else:
        typer.echo(f"{result.segments} segments, {result.recordings} recordings -> {out_dir}")


@app.command()
def stats(manifest_dirs: List[Path] = typer.Argument(..., help="manifest directories")) -> None:
    """Hours, segments and speakers by source, language, split and label origin."""
    from .stats import format_table, manifest_stats

    try:
        tables = manifest_stats(manifest_dirs)
    except ValueError as error:
        _fail(error)
    typer.echo("\n\n".join(format_table(title, table) for title, table in tables.items()))


@app.command()
def query(
    sql: str = typer.Argument(..., help="SQL over the views recordings, segments, rejects"),
    manifest_dirs: List[Path] = typer.Argument(..., help="manifest directories"),
) -> None:
    """Run any SQL with the manifest tables as DuckDB views."""
    import duckdb

    from .stats import format_table, run_query

    try:
        result = run_query(sql, manifest_dirs)
    except (ValueError, duckdb.Error) as error:
        _fail(error)
    typer.echo(format_table(f"{len(result.rows)} rows", result))


@app.command()
def corpora() -> None:
    """List the corpus recipes `prepare` knows."""
    from .corpora import get_recipe, recipe_names

    for name in recipe_names():
        recipe = get_recipe(name)
        typer.echo(f"{name:18s} {recipe.description}")


@app.command()
def demo(
    out: Path = typer.Option(Path("demo-out"), "--out", help="working directory for the demo"),
    recipe: Path = typer.Option(Path("pipelines/mt5k-demo.yaml"), "--recipe", help="budgets to sample"),
    jobs: int = typer.Option(2, "-j", "--jobs", min=1),
) -> None:
    """Generate the miniature corpora, prepare and sample them, print the stats."""
    from .demo import run_demo

    try:
        run_demo(out, recipe, jobs=jobs, log=typer.echo)
    except (ValueError, FileNotFoundError) as error:
        _fail(error)


if __name__ == "__main__":
    app()

"""The `mooer-data` command line: thin commands, one library call each."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

app = typer.Typer(
    help="Build MT5K-style speech training data: prepare corpora, sample hour budgets, label, shard, report.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _fail(error: Exception) -> None:
    typer.echo(f"error: {error}", err=True)
    raise typer.Exit(code=2)


def _share(part: Optional[str]):
    """``--part R/W`` -> PartSpec (None when not given)."""
    if part is None:
        return None
    from .parts import PartSpec

    return PartSpec.parse(part)


PART_HELP = "work on share R of W (0-based), e.g. 0/4; join the shares with `mooer-data merge-parts`"


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
    parts: Optional[List[str]] = typer.Option(None, "--parts", help="only these corpus parts (comma separated or repeated)"),
    part: Optional[str] = typer.Option(None, "--part", help="only the corpus files of share R/W: " + PART_HELP),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bars"),
) -> None:
    """Turn a corpus directory into Parquet manifests; bad items go to rejects.parquet."""
    from .corpora.base import CorpusLayoutError
    from .prepare import PrepareConfig, prepare_corpus

    try:
        config = PrepareConfig(jobs=jobs, parts=_split_parts(parts), show_progress=not quiet and sys.stderr.isatty(), share=_share(part))
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
    part: Optional[str] = typer.Option(None, "--part", help="plan over every row, write share R/W: " + PART_HELP),
) -> None:
    """Draw segments (or in-house recordings) by hour budget, deterministically."""
    from .sampling import SampleConfig, parse_hours_per_source, plan_sample, sample_manifests

    if out_dir is None and not dry_run:
        _fail(ValueError("expected -o/--out OUT_DIR (or --dry-run)"))
    try:
        budgets = parse_hours_per_source(hours_per_source) if hours_per_source else None
        config = SampleConfig(seed=seed, hours=hours, hours_per_source=budgets)
        share = _share(part)
        result = plan_sample(manifest_dirs, config).result if dry_run else sample_manifests(manifest_dirs, out_dir, config, share=share)
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


def _parse_rate(rate: Optional[str]) -> float | None:
    if rate is None:
        return None
    value = rate.strip().removesuffix("/s")
    try:
        parsed = float(value)
    except ValueError:
        raise ValueError(f"expected a rate like 20/s or 20, found {rate!r}") from None
    if parsed <= 0:
        raise ValueError(f"expected a positive rate, found {rate!r}")
    return parsed


def _parse_settings(settings: Optional[List[str]]) -> dict[str, dict]:
    """``--set local.engine=funasr`` -> {"local": {"engine": "funasr"}}."""
    options: dict[str, dict] = {}
    for setting in settings or []:
        key, sep, value = setting.partition("=")
        provider, dot, name = key.partition(".")
        if not sep or not dot:
            raise ValueError(f"expected --set PROVIDER.KEY=VALUE, found {setting!r}")
        options.setdefault(provider, {})[name] = value
    return options


def _share_input(manifest_dir: Path, out: Path, part: Optional[str]) -> Path:
    """With --part, the stage reads its share of MANIFEST_DIR (written beside its output)."""
    share = _share(part)
    if share is None:
        return manifest_dir
    from .parts import write_share

    share_dir = out / ".share-input"
    write_share(manifest_dir, share, share_dir)
    return share_dir


def _dry_share_input(manifest_dir: Path, part: Optional[str]) -> Path:
    """A dry run writes nothing beside its output: the share goes to a temporary directory."""
    if part is None:
        return manifest_dir
    import atexit
    import shutil
    import tempfile

    from .parts import write_share

    share_dir = Path(tempfile.mkdtemp(prefix="mooer-share-"))
    atexit.register(shutil.rmtree, share_dir, True)
    write_share(manifest_dir, _share(part), share_dir)
    return share_dir


@app.command()
def pseudolabel(
    manifest_dir: Path = typer.Argument(..., help="a manifest directory (e.g. a sample with in-house recordings)"),
    provider: str = typer.Option(..., "--provider", help="tencent, aliyun, openai or local"),
    fallback: Optional[List[str]] = typer.Option(None, "--fallback", help="providers to try next, in order (repeatable)"),
    out: Optional[Path] = typer.Option(None, "-o", "--out", help="output directory (default: MANIFEST_DIR-pseudo)"),
    concurrency: Optional[int] = typer.Option(None, "--concurrency", min=1, help="requests in flight per provider"),
    rate: Optional[str] = typer.Option(None, "--rate", help="requests per second per provider, e.g. 20/s"),
    verify_with: Optional[str] = typer.Option(None, "--verify-with", help="a second provider; agreement (CER/WER) is flagged"),
    language: str = typer.Option("zh", "--language", help="language hint for audio whose language is unknown"),
    stager_url_prefix: Optional[str] = typer.Option(None, "--stager-url-prefix", help="URL serving the corpus root (URL-only services)"),
    settings: Optional[List[str]] = typer.Option(None, "--set", help="provider options: PROVIDER.KEY=VALUE"),
    dry_run: bool = typer.Option(False, "--dry-run", help="show what would be sent and the cost estimate; send nothing"),
    part: Optional[str] = typer.Option(None, "--part", help="label share R/W only (OUT gets that share): " + PART_HELP),
    quiet: bool = typer.Option(False, "-q", "--quiet"),
) -> None:
    """ASR labels for every recording or segment without text."""
    from .providers.errors import ProviderError
    from .pseudolabel import PseudolabelConfig
    from .pseudolabel import pseudolabel as run_pseudolabel

    try:
        out = out or manifest_dir.with_name(manifest_dir.name + "-pseudo")
        manifest_dir = _dry_share_input(manifest_dir, part) if dry_run else _share_input(manifest_dir, out, part)
        config = PseudolabelConfig(
            provider=provider, fallbacks=tuple(fallback or ()), concurrency=concurrency, rate=_parse_rate(rate),
            dry_run=dry_run, verify_with=verify_with, language=language, stager_url_prefix=stager_url_prefix,
            provider_options=_parse_settings(settings), show_progress=not quiet,
        )
        run_pseudolabel(manifest_dir, out, config, log=typer.echo)
    except (ValueError, ProviderError) as error:
        _fail(error)


@app.command()
def translate(
    manifest_dir: Path = typer.Argument(..., help="a manifest directory with Mandarin text"),
    provider: str = typer.Option(..., "--provider", help="tencent, baidu, deepl, openai or local"),
    fallback: Optional[List[str]] = typer.Option(None, "--fallback", help="providers to try next, in order (repeatable)"),
    out: Optional[Path] = typer.Option(None, "-o", "--out", help="output directory (default: MANIFEST_DIR-translated)"),
    concurrency: Optional[int] = typer.Option(None, "--concurrency", min=1),
    rate: Optional[str] = typer.Option(None, "--rate", help="requests per second per provider, e.g. 5/s"),
    settings: Optional[List[str]] = typer.Option(None, "--set", help="provider options: PROVIDER.KEY=VALUE"),
    dry_run: bool = typer.Option(False, "--dry-run"),
    part: Optional[str] = typer.Option(None, "--part", help="translate share R/W only (OUT gets that share): " + PART_HELP),
    quiet: bool = typer.Option(False, "-q", "--quiet"),
) -> None:
    """Fill `translation` (zh -> en) for segments with Mandarin text."""
    from .providers.errors import ProviderError
    from .translate import TranslateConfig, translate_manifest

    try:
        out = out or manifest_dir.with_name(manifest_dir.name + "-translated")
        manifest_dir = _dry_share_input(manifest_dir, part) if dry_run else _share_input(manifest_dir, out, part)
        config = TranslateConfig(
            provider=provider, fallbacks=tuple(fallback or ()), concurrency=concurrency, rate=_parse_rate(rate),
            dry_run=dry_run, provider_options=_parse_settings(settings), show_progress=not quiet,
        )
        translate_manifest(manifest_dir, out, config, log=typer.echo)
    except (ValueError, ProviderError) as error:
        _fail(error)


@app.command()
def providers(action: str = typer.Argument("list", help="list | check")) -> None:
    """What is installed, which credentials are set (never their values), how to configure the rest."""
    from .providers.status import provider_report

    if action not in ("list", "check"):
        _fail(ValueError(f"expected 'list' or 'check', found {action!r}"))
    lines, ok = provider_report(check=action == "check")
    typer.echo("\n".join(lines))
    if action == "check" and not ok:
        raise typer.Exit(code=1)


@app.command()
def emulate(
    port: int = typer.Option(8765, "--port", help="loopback port"),
    faults: Optional[str] = typer.Option(None, "--faults", help="e.g. rate_limit=0.05,timeout=0.02,seed=7 or storm=0.2"),
    oracle: Optional[Path] = typer.Option(None, "--oracle", help="JSON transcripts by audio sha256 and translations by text"),
    audio_root: Optional[Path] = typer.Option(None, "--audio-root", help="serve this tree at /audio/ (for URL-only services)"),
    latency: float = typer.Option(0.0, "--latency", help="seconds added to every answer"),
    rate: Optional[float] = typer.Option(None, "--rate", help="server-side rate limit per provider operation (req/s)"),
    engine: Optional[str] = typer.Option(None, "--engine", help="answer audio the oracle lacks with a local engine: pocketsphinx"),
    engine_language: str = typer.Option("en", "--engine-language", help="language of that engine's answers"),
) -> None:
    """Serve every cloud provider's protocol on loopback (tests, the demo). NOT a real provider."""
    import time

    from .providers.emulator import Oracle, build_emulator, client_environment, local_engine_answer

    try:
        loaded = Oracle.load(oracle)
        if engine:
            loaded.engine = local_engine_answer(engine_language, engine)
        emulator = build_emulator(oracle=loaded, faults=faults, audio_root=audio_root, latency=latency, rate=rate)
    except (ValueError, OSError) as error:
        _fail(error)
    url = emulator.start(port=port)
    typer.echo(f"mooer EMULATOR (not a real ASR/MT provider; its labels are not real) listening on {url}")
    typer.echo("point the adapters at it with:")
    for name, value in sorted(client_environment(url).items()):
        typer.echo(f"  export {name}={value}")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        emulator.stop()


@app.command()
def shard(
    manifest_dirs: List[Path] = typer.Argument(..., help="manifest directories with labelled segments"),
    out: Path = typer.Option(..., "-o", "--out", help="output directory, e.g. manifests/mt5k"),
    shard_size: str = typer.Option("1GB", "--shard-size", help="target (estimated) size per shard"),
    max_count: Optional[int] = typer.Option(None, "--max-count", min=1, help="samples per shard instead of a size"),
    audio_format: str = typer.Option("flac", "--audio-format", help="flac, or wav for MooER/WeNet compatibility"),
    features: Optional[str] = typer.Option(None, "--features", help="fbank-lfr: precompute features into the shards"),
    seed: int = typer.Option(0, "--seed", help="the shuffle that mixes every shard"),
    jobs: int = typer.Option(1, "-j", "--jobs", min=1),
    part: Optional[str] = typer.Option(None, "--part", help="build the shards at positions R, R+W, ... of the global plan: " + PART_HELP),
    quiet: bool = typer.Option(False, "-q", "--quiet"),
) -> None:
    """Cut, convert and pack segments into WebDataset tars with an index and data.list."""
    from .shards import ShardConfig, parse_size, write_shards

    try:
        config = ShardConfig(
            shard_size=None if max_count else parse_size(shard_size), max_count=max_count, audio_format=audio_format,
            features=features, seed=seed, jobs=jobs, show_progress=not quiet,
        )
        write_shards(manifest_dirs, out, config, log=typer.echo, share=_share(part))
    except ValueError as error:
        _fail(error)


@app.command("verify-shards")
def verify_shards_command(directory: Path = typer.Argument(..., help="a directory written by `mooer-data shard`")) -> None:
    """Check every shard against the index (checksum, count, size) and read it through."""
    from .shards import verify_shards

    problems = verify_shards(directory)
    if problems:
        typer.echo("\n".join(problems), err=True)
        typer.echo(f"verify-shards: {len(problems)} problem(s) in {directory}", err=True)
        raise typer.Exit(code=1)
    typer.echo(f"verify-shards: {directory} is consistent")


@app.command("build-mt5k")
def build_mt5k_command(
    recipe: Path = typer.Option(Path("pipelines/mt5k.yaml"), "--recipe", help="the recipe YAML (corpora, budgets, providers, shards, output)"),
    from_stage: Optional[str] = typer.Option(None, "--from", help="first stage: prepare, sample, pseudolabel, translate, shard, merge, report"),
    to_stage: Optional[str] = typer.Option(None, "--to", help="last stage"),
    dry_run: bool = typer.Option(False, "--dry-run", help="show what each stage would do and the provider cost estimate; do nothing"),
    part: Optional[str] = typer.Option(None, "--part", help="build share R/W through the shard stage: " + PART_HELP),
    wait_for_parts: Optional[float] = typer.Option(None, "--wait-for-parts", help="seconds to wait for other parts' stages (sample and shard read every part)"),
    quiet: bool = typer.Option(False, "-q", "--quiet", help="no progress bars"),
) -> None:
    """The whole recipe as resumable stages: prepare, sample, pseudolabel, translate, shard, merge, report."""
    from .build import BuildError, BuildOptions, build_mt5k
    from .parts import MergeError, PartSpec
    from .providers.errors import ProviderError
    from .recipe import load_recipe

    try:
        loaded = load_recipe(recipe)
        options = BuildOptions(from_stage=from_stage, to_stage=to_stage, dry_run=dry_run, part=_share(part) or PartSpec.whole(),
                               show_progress=not quiet and sys.stderr.isatty(), wait_for_parts=wait_for_parts)
        result = build_mt5k(loaded, options, log=typer.echo)
    except (ValueError, FileNotFoundError, BuildError, MergeError, ProviderError) as error:
        _fail(error)
    if not dry_run:
        typer.echo(f"build-mt5k: ran {', '.join(result.ran) or 'nothing'}; complete already: {', '.join(result.skipped) or 'none'}")
        if result.report:
            typer.echo(f"report: {result.report}")


@app.command("merge-parts")
def merge_parts_command(
    part_dirs: Optional[List[Path]] = typer.Argument(None, help="without --recipe: the parts' output directories (manifests or shards)"),
    recipe: Optional[Path] = typer.Option(None, "--recipe", help="join the parts of a split build-mt5k, then write its report"),
    parts: Optional[int] = typer.Option(None, "--parts", min=1, help="W, the number of parts of the build"),
    out: Optional[Path] = typer.Option(None, "-o", "--out", help="without --recipe: where the joined result goes"),
    dry_run: bool = typer.Option(False, "--dry-run"),
    wait_for_parts: Optional[float] = typer.Option(None, "--wait-for-parts", help="seconds to wait for parts still running"),
) -> None:
    """Join the shares of a `--part R/W` run, refusing anything missing or duplicated."""
    from .build import BuildError, BuildOptions, merge_parts
    from .parts import MergeError, merge_manifest_parts, merge_shard_parts
    from .recipe import load_recipe
    from .shards import PLAN_FILE

    try:
        if recipe is not None:
            if parts is None:
                raise ValueError("expected --parts W with --recipe")
            result = merge_parts(load_recipe(recipe), parts, BuildOptions(dry_run=dry_run, wait_for_parts=wait_for_parts), log=typer.echo)
            if result.report:
                typer.echo(f"report: {result.report}")
            return
        if not part_dirs or out is None:
            raise ValueError("expected --recipe R --parts W, or PART_DIR... -o OUT")
        if all((d / PLAN_FILE).is_file() for d in part_dirs):
            rows = merge_shard_parts(part_dirs, out)
            typer.echo(f"merge-parts: {len(rows)} shards from {len(part_dirs)} parts -> {out}")
        else:
            counts = merge_manifest_parts(part_dirs, out)
            typer.echo(f"merge-parts: {counts['segments']} segments, {counts.get('recordings', 0)} recordings, "
                       f"{counts['rejects']} rejects from {len(part_dirs)} parts -> {out}")
    except (ValueError, FileNotFoundError, BuildError, MergeError) as error:
        _fail(error)


@app.command()
def report(
    directory: Path = typer.Argument(..., help="a build output, e.g. manifests/mt5k (or any manifest directory)"),
    out: Optional[Path] = typer.Option(None, "-o", "--out", help="where the page goes (default: DIRECTORY/report)"),
) -> None:
    """An HTML page with PNG plots and a Markdown summary of a built dataset."""
    from .report import write_report

    try:
        page = write_report(directory, out)
    except ValueError as error:
        _fail(error)
    typer.echo(f"report: {page} (and {page.with_suffix('.md').name} beside it)")


@app.command()
def demo(
    out: Path = typer.Option(Path("demo-out"), "--out", help="working directory for the demo"),
    recipe: Path = typer.Option(Path("pipelines/mt5k-demo.yaml"), "--recipe", help="the demo recipe (corpora are generated)"),
    jobs: int = typer.Option(2, "-j", "--jobs", min=1),
    train_config: Path = typer.Option(Path("pipelines/train/tiny.yaml"), "--train-config", help="the tiny model's train config"),
    train_steps: int = typer.Option(40, "--train-steps", min=0, help="mooer-train steps on the demo shards (0: no training or decoding)"),
) -> None:
    """Generate miniature corpora, run build-mt5k on them with the emulated cloud services, train the tiny
    model with mooer-train, decode the test split with mooer-infer, print where the report is."""
    from .build import BuildError
    from .demo import run_demo

    try:
        run_demo(out, recipe, jobs=jobs, log=typer.echo, train_config=train_config, train_steps=train_steps)
    except (ValueError, FileNotFoundError, BuildError, RuntimeError) as error:
        _fail(error)


if __name__ == "__main__":
    app()

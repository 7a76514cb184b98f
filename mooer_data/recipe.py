"""Recipe YAML files (pipelines/*.yaml): typed, validated before anything runs.

A recipe names the corpora and their roots, the hour budgets, the seed, the ASR and MT
providers (primary first, then fallbacks) with their settings, the options of each stage
and the output directory. :func:`load_recipe` checks its structure — unknown keys,
budgets for sources not listed, unknown corpora or providers, bad option values — and,
with ``check_roots``, that every corpus root exists and looks like its corpus (the error
then shows the layout expected). Every problem is reported at once, in one RecipeError.

    name: mt5k
    seed: 20240808
    corpora:
      aishell2: {root: /data/AISHELL-2}
      inhouse:  {root: /data/inhouse}
    budgets_hours: {aishell2: 137, inhouse: 3274}      # or budgets_minutes
    providers:
      asr: [tencent, aliyun, local]                     # primary, then fallbacks
      mt: [tencent, baidu]
      settings:
        asr: {local: {engine: funasr, model_dir: /models/paraformer}}
    prepare: {jobs: 8}
    pseudolabel: {language: zh, verify_with: openai}
    translate: {source: zh, target: en}
    shards: {size: 1GB, audio_format: flac, jobs: 8}
    output: manifests/mt5k
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml


class RecipeError(ValueError):
    """A recipe that cannot run; ``problems`` lists every reason found."""

    def __init__(self, path: Path | str, problems: list[str]):
        self.path = Path(path)
        self.problems = list(problems)
        listing = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{path}: {len(self.problems)} problem(s) in the recipe:\n{listing}")


@dataclass(frozen=True)
class CorpusSpec:
    name: str  # a corpus recipe (`mooer-data corpora`)
    source: str  # the source its rows carry, which budgets are keyed by
    root: Path | None = None


@dataclass(frozen=True)
class ProviderChain:
    """Providers of one kind in the order they are tried, and their options."""

    names: tuple[str, ...] = ()
    settings: dict[str, dict] = field(default_factory=dict)

    @property
    def primary(self) -> str | None:
        return self.names[0] if self.names else None

    @property
    def fallbacks(self) -> tuple[str, ...]:
        return self.names[1:]


@dataclass(frozen=True)
class PrepareOptions:
    jobs: int = 1  # processes probing audio headers


@dataclass(frozen=True)
class PseudolabelOptions:
    language: str = "zh"  # the hint for audio whose language is unknown
    verify_with: str | None = None  # a second ASR provider; agreement is measured
    concurrency: int | None = None
    rate: float | None = None  # requests per second per provider
    timeout: float = 30.0
    stager_url_prefix: str | None = None  # for URL-only services


@dataclass(frozen=True)
class TranslateOptions:
    source: str = "zh"
    target: str = "en"
    concurrency: int | None = None
    rate: float | None = None
    timeout: float = 30.0


@dataclass(frozen=True)
class ShardOptions:
    size: str | None = "1GB"  # estimated size per shard; or max_count
    max_count: int | None = None
    audio_format: str = "flac"
    features: str | None = None  # "fbank-lfr": precomputed features in the shards
    jobs: int = 1

    def to_config(self, seed: int, show_progress: bool = True):
        from .shards import ShardConfig, parse_size

        return ShardConfig(
            shard_size=None if self.max_count else parse_size(self.size or "1GB"),
            max_count=self.max_count,
            audio_format=self.audio_format,
            features=self.features,
            seed=seed,
            jobs=self.jobs,
            show_progress=show_progress,
        )


@dataclass(frozen=True)
class RecipeFile:
    name: str
    seed: int
    budgets_hours: dict[str, float]  # by source
    corpora: dict[str, CorpusSpec] = field(default_factory=dict)
    asr: ProviderChain = ProviderChain()
    mt: ProviderChain = ProviderChain()
    prepare: PrepareOptions = PrepareOptions()
    pseudolabel: PseudolabelOptions = PseudolabelOptions()
    translate: TranslateOptions = TranslateOptions()
    shards: ShardOptions = ShardOptions()
    output: Path = Path("manifests/mt5k")
    path: Path | None = None  # the file it was read from

    @property
    def corpus_roots(self) -> dict[str, Path | None]:
        return {name: spec.root for name, spec in self.corpora.items()}

    def with_roots(self, roots: dict[str, Path]) -> "RecipeFile":
        """The same recipe with these corpus roots (the demo fills in what it generated)."""
        from dataclasses import replace

        corpora = {name: replace(spec, root=Path(roots[name]) if name in roots else spec.root) for name, spec in self.corpora.items()}
        return replace(self, corpora=corpora)


TOP_LEVEL_KEYS = (
    "name", "seed", "corpora", "budgets_hours", "budgets_minutes", "providers", "prepare", "pseudolabel", "translate", "shards", "output",
)


def _known(key: str, allowed) -> str:
    return f"unknown key {key!r} (expected one of {', '.join(allowed)})"


def _typed(value: Any, kind: str, where: str, problems: list[str]):
    """Check one option value; ``kind`` is int, float, str, optionally suffixed with '?'."""
    optional = kind.endswith("?")
    kind = kind.rstrip("?")
    if value is None:
        if not optional:
            problems.append(f"{where}: expected a value, found nothing")
        return None
    if kind == "int" and not (isinstance(value, int) and not isinstance(value, bool)):
        problems.append(f"{where}: expected an integer, found {value!r}")
        return None
    if kind == "float" and not (isinstance(value, (int, float)) and not isinstance(value, bool)):
        problems.append(f"{where}: expected a number, found {value!r}")
        return None
    if kind == "str" and not isinstance(value, str):
        problems.append(f"{where}: expected text, found {value!r}")
        return None
    if kind in ("int", "float") and value < 0:
        problems.append(f"{where}: expected a non-negative number, found {value!r}")
        return None
    return float(value) if kind == "float" else value


OPTION_KINDS = {
    PrepareOptions: {"jobs": "int"},
    PseudolabelOptions: {"language": "str", "verify_with": "str?", "concurrency": "int?", "rate": "float?", "timeout": "float",
                         "stager_url_prefix": "str?"},
    TranslateOptions: {"source": "str", "target": "str", "concurrency": "int?", "rate": "float?", "timeout": "float"},
    ShardOptions: {"size": "str?", "max_count": "int?", "audio_format": "str", "features": "str?", "jobs": "int"},
}


def _options(cls, data: Any, where: str, problems: list[str]):
    """A typed options block: unknown keys and wrong types are problems, defaults fill the rest."""
    if data is None:
        return cls()
    if not isinstance(data, dict):
        problems.append(f"{where}: expected a mapping of options, found {type(data).__name__}")
        return cls()
    kinds = OPTION_KINDS[cls]
    values = {}
    for key, value in data.items():
        if key not in kinds:
            problems.append(f"{where}: {_known(key, list(kinds))}")
            continue
        checked = _typed(value, kinds[key], f"{where}.{key}", problems)
        if checked is not None or kinds[key].endswith("?"):
            values[key] = checked
    return cls(**{f.name: values[f.name] for f in fields(cls) if f.name in values})


def _corpora(data: Any, problems: list[str]) -> dict[str, CorpusSpec]:
    from .corpora.registry import get_recipe, recipe_names

    if isinstance(data, list):
        entries = {name: None for name in data}
    elif isinstance(data, dict):
        entries = data
    else:
        problems.append(f"corpora: expected a list of names or a mapping name -> {{root: DIR}}, found {type(data).__name__}")
        return {}
    known = recipe_names()
    specs: dict[str, CorpusSpec] = {}
    by_source: dict[str, str] = {}
    for name, entry in entries.items():
        if name not in known:
            problems.append(f"corpora.{name}: unknown corpus (expected one of {', '.join(known)})")
            continue
        root = None
        if isinstance(entry, dict):
            for key in entry:
                if key != "root":
                    problems.append(f"corpora.{name}: {_known(key, ['root'])}")
            root = Path(str(entry["root"])).expanduser() if entry.get("root") else None
        elif entry is not None:
            problems.append(f"corpora.{name}: expected {{root: DIR}} or nothing, found {entry!r}")
        source = get_recipe(name).source
        if source in by_source:
            problems.append(
                f"corpora.{name}: its rows carry the source {source!r}, like corpora.{by_source[source]}; "
                f"expected each source once (list the composite corpus, e.g. multi_cn, over their common parent)"
            )
            continue
        by_source[source] = name
        specs[name] = CorpusSpec(name, source, root)
    return specs


def _budgets(data: dict, corpora: dict[str, CorpusSpec], problems: list[str]) -> dict[str, float]:
    given = [key for key in ("budgets_hours", "budgets_minutes") if key in data]
    if len(given) != 1:
        problems.append(f"expected exactly one of budgets_hours or budgets_minutes, found {given or 'neither'}")
        return {}
    key = given[0]
    raw = data[key]
    if not isinstance(raw, dict):
        problems.append(f"{key}: expected a mapping source -> non-negative number, found {raw!r}")
        return {}
    scale = 1.0 if key == "budgets_hours" else 1 / 60.0
    budgets = {}
    sources = {spec.source: name for name, spec in corpora.items()}
    for source, value in raw.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            problems.append(f"{key}.{source}: expected a non-negative number, found {value!r}")
            continue
        if source not in sources:
            problems.append(f"{key}.{source}: a budget but no such entry under corpora (sources listed: {sorted(sources)})")
            continue
        budgets[source] = float(value) * scale
    for source, name in sorted(sources.items()):
        if source not in raw:
            problems.append(f"corpora.{name}: expected a budget for source {source!r} under {key}, found none")
    return budgets


def _providers(data: Any, problems: list[str]) -> tuple[ProviderChain, ProviderChain]:
    from .providers.registry import all_specs

    if data is None:
        return ProviderChain(), ProviderChain()
    if not isinstance(data, dict):
        problems.append(f"providers: expected a mapping with asr, mt and settings, found {type(data).__name__}")
        return ProviderChain(), ProviderChain()
    for key in data:
        if key not in ("asr", "mt", "settings"):
            problems.append(f"providers: {_known(key, ['asr', 'mt', 'settings'])}")
    settings = data.get("settings") or {}
    if not isinstance(settings, dict) or any(k not in ("asr", "mt") for k in settings):
        problems.append(f"providers.settings: expected {{asr: {{PROVIDER: {{KEY: VALUE}}}}, mt: {{...}}}}, found {settings!r}")
        settings = {}
    registered = {kind: sorted(s.name for s in all_specs() if s.kind == kind) for kind in ("asr", "mt")}
    chains = []
    for kind in ("asr", "mt"):
        names = data.get(kind) or []
        if isinstance(names, str):
            names = [names]
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            problems.append(f"providers.{kind}: expected a list of provider names (primary first), found {names!r}")
            names = []
        for name in names:
            if name not in registered[kind]:
                problems.append(f"providers.{kind}: unknown {kind} provider {name!r} (expected one of {', '.join(registered[kind])})")
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            problems.append(f"providers.{kind}: {repeated} listed more than once; expected each provider once")
        kind_settings = settings.get(kind) or {}
        for name, options in kind_settings.items():
            if name not in names:
                problems.append(f"providers.settings.{kind}.{name}: settings for a provider not in providers.{kind} ({names})")
            elif not isinstance(options, dict):
                problems.append(f"providers.settings.{kind}.{name}: expected a mapping KEY: VALUE, found {options!r}")
        chains.append(ProviderChain(tuple(names), {k: dict(v) for k, v in kind_settings.items() if isinstance(v, dict)}))
    return chains[0], chains[1]


def _check_stage_options(recipe_parts: dict, problems: list[str]) -> None:
    from .providers.registry import all_specs
    from .shards import BYTES_PER_SECOND, parse_size

    shards: ShardOptions = recipe_parts["shards"]
    if shards.audio_format not in BYTES_PER_SECOND:
        problems.append(f"shards.audio_format: expected one of {', '.join(BYTES_PER_SECOND)}, found {shards.audio_format!r}")
    if shards.features not in (None, "fbank-lfr"):
        problems.append(f"shards.features: expected fbank-lfr or nothing, found {shards.features!r}")
    if shards.max_count is not None and shards.max_count < 1:
        problems.append(f"shards.max_count: expected a positive count, found {shards.max_count}")
    if shards.jobs < 1 or recipe_parts["prepare"].jobs < 1:
        problems.append("shards.jobs and prepare.jobs: expected at least 1")
    if not shards.max_count:
        try:
            parse_size(shards.size or "1GB")
        except ValueError as error:
            problems.append(f"shards.size: {error}")
    verify = recipe_parts["pseudolabel"].verify_with
    if verify and verify not in {s.name for s in all_specs() if s.kind == "asr"}:
        problems.append(f"pseudolabel.verify_with: unknown asr provider {verify!r}")


def _needs_asr(corpora: dict[str, CorpusSpec]) -> list[str]:
    """Corpora whose audio has no transcripts: they are labelled by the ASR providers."""
    from .corpora.registry import get_recipe

    return [name for name in corpora if get_recipe(name).language is None]


def check_roots(recipe: RecipeFile) -> list[str]:
    """Problems with the corpus roots: absent, missing, or not shaped like the corpus (the
    message then shows the layout the corpus recipe expects)."""
    from .corpora.base import CorpusLayoutError
    from .corpora.registry import get_recipe

    problems = []
    for name, spec in recipe.corpora.items():
        if spec.root is None:
            problems.append(f"corpora.{name}: expected a root (corpora: {{{name}: {{root: DIR}}}}), found none")
            continue
        corpus = get_recipe(name)
        try:
            corpus.locate(spec.root.resolve())
        except CorpusLayoutError as error:
            problems.append(f"corpora.{name}: " + str(error).replace("\n", "\n    "))
    return problems


def load_recipe(path: Path | str, check_corpus_roots: bool = False) -> RecipeFile:
    """Read and validate a recipe; RecipeError lists every problem found."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"recipe {path} does not exist (expected a YAML file like pipelines/mt5k.yaml)")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise RecipeError(path, [f"expected YAML, found a syntax error: {error}"]) from None
    if not isinstance(data, dict):
        raise RecipeError(path, [f"expected a mapping of recipe keys, found {type(data).__name__}"])
    problems: list[str] = []
    for key in data:
        if key not in TOP_LEVEL_KEYS:
            problems.append(_known(key, TOP_LEVEL_KEYS))
    missing = [key for key in ("seed", "corpora") if key not in data]
    if missing:
        problems.append(f"expected the keys seed, corpora and budgets_hours (or budgets_minutes); missing {missing}")
    seed = _typed(data.get("seed"), "int", "seed", problems) if "seed" in data else 0
    corpora = _corpora(data.get("corpora", {}), problems) if "corpora" in data else {}
    budgets = _budgets(data, corpora, problems)
    asr, mt = _providers(data.get("providers"), problems)
    unlabelled = _needs_asr(corpora)
    if unlabelled and not asr.names:
        problems.append(f"providers.asr: expected ASR providers, since {unlabelled} has no transcripts to train on; found none")
    stage_options = {
        "prepare": _options(PrepareOptions, data.get("prepare"), "prepare", problems),
        "pseudolabel": _options(PseudolabelOptions, data.get("pseudolabel"), "pseudolabel", problems),
        "translate": _options(TranslateOptions, data.get("translate"), "translate", problems),
        "shards": _options(ShardOptions, data.get("shards"), "shards", problems),
    }
    _check_stage_options(stage_options, problems)
    output = data.get("output", "manifests/mt5k")
    if not isinstance(output, str) or not output:
        problems.append(f"output: expected a directory path, found {output!r}")
        output = "manifests/mt5k"
    recipe = RecipeFile(
        name=str(data.get("name", path.stem)),
        seed=int(seed or 0),
        budgets_hours=budgets,
        corpora=corpora,
        asr=asr,
        mt=mt,
        output=Path(output),
        path=path,
        **stage_options,
    )
    if check_corpus_roots:
        problems += check_roots(recipe)
    if problems:
        raise RecipeError(path, problems)
    return recipe


def validate_recipe(recipe: RecipeFile) -> None:
    """Root checks for a recipe built in code (RecipeError with every problem)."""
    problems = check_roots(recipe)
    if problems:
        raise RecipeError(recipe.path or recipe.name, problems)

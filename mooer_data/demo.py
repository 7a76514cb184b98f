"""`make demo` / `mooer-data demo`: build-mt5k on generated miniature corpora.

Generates AISHELL-2, LibriSpeech, WenetSpeech, multi_cn and in-house audio in their
native layouts (espeak-ng speech, every quirk the recipes handle), then runs
``build-mt5k`` with the demo recipe: budgets in minutes, the cloud ASR/MT providers
served by the bundled emulator on loopback (with a few injected faults; ``local`` as
the ASR fallback), shards, the merge and the report. The pseudo-labels and the
translations therefore come from the emulator, which answers from the text the demo
itself spoke; the output and the report say so.
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Callable, Iterator

from . import minicorpora
from .build import BuildOptions, build_mt5k
from .labeling import RetryPolicy
from .recipe import RecipeFile, load_recipe
from .stats import format_table, manifest_stats

GENERATORS = {
    "aishell2": minicorpora.make_aishell2,
    "librispeech": minicorpora.make_librispeech,
    "wenetspeech": minicorpora.make_wenetspeech,
    "multi_cn": minicorpora.make_multi_cn,
    "inhouse": minicorpora.make_inhouse,
}
# a few of the faults real services produce, seeded: the runner retries through them
DEMO_FAULTS = "rate_limit=0.1,server_error=0.1,seed=1"
# the emulator answers in milliseconds; the default backoff (0.5 s and up) would only wait
DEMO_RETRY = RetryPolicy(base_delay=0.05, max_delay=0.5)
EMULATOR_NOTE = (
    "The pseudo-labels (label_origin pseudo:<provider>) and every translation in this demo came from the bundled EMULATOR "
    "of the cloud ASR/MT services on loopback, which answers from the text the demo itself spoke: they are not the output "
    "of a real ASR or MT service."
)


def generate_corpora(recipe: RecipeFile, out: Path, log: Callable[[str], None]) -> dict[str, minicorpora.ExpectedCorpus]:
    unknown = sorted(set(recipe.corpora) - set(GENERATORS))
    if unknown:
        raise ValueError(f"the demo can generate {sorted(GENERATORS)}, not {unknown}")
    synth = minicorpora.SpeechSynth(out / "speech-cache")
    generated = {}
    for corpus in recipe.corpora:
        log(f"== generating the miniature {corpus} corpus (its native layout)")
        generated[corpus] = GENERATORS[corpus](out / "corpora" / corpus, synth)
    return generated


@contextmanager
def emulated_services(inhouse: minicorpora.ExpectedCorpus | None, faults: str = DEMO_FAULTS) -> Iterator[object]:
    """The emulator on loopback, with the provider adapters pointed at it through the
    environment for the duration (restored afterwards)."""
    from .providers.emulator import Oracle, build_emulator, client_environment

    oracle = minicorpora.oracle_for(inhouse) if inhouse is not None else {"audio": {}, "translations": minicorpora.DEMO_TRANSLATIONS}
    emulator = build_emulator(oracle=Oracle(oracle["audio"], oracle["translations"]), faults=faults, job_seconds=0.1)
    url = emulator.start()
    environment = client_environment(url)
    saved = {name: os.environ.get(name) for name in environment}
    os.environ.update(environment)
    try:
        yield emulator
    finally:
        emulator.stop()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _emulated_label_counts(output: Path) -> tuple[int, int]:
    from .stats import run_query

    rows = run_query(
        "SELECT count(*) FILTER (WHERE label_origin LIKE 'pseudo:%'), count(*) FILTER (WHERE translation IS NOT NULL) FROM segments",
        [output],
    ).rows
    return int(rows[0][0]), int(rows[0][1])


def run_demo(out: Path, recipe_path: Path, jobs: int = 2, log: Callable[[str], None] = print) -> Path:
    """Generate, build, report; returns the report page."""
    started = time.perf_counter()
    out = Path(out)
    recipe = load_recipe(recipe_path)
    generated = generate_corpora(recipe, out, log)
    recipe = recipe.with_roots({name: expected.root for name, expected in generated.items()})
    recipe = replace(recipe, output=out / recipe.output, prepare=replace(recipe.prepare, jobs=jobs),
                     shards=replace(recipe.shards, jobs=jobs))
    with emulated_services(generated.get("inhouse")) as emulator:
        log(f"\n== build-mt5k {recipe.name}: cloud providers {list(recipe.asr.names)} / {list(recipe.mt.names)} are EMULATED at "
            f"{emulator.base_url} (not real services; faults injected: {DEMO_FAULTS})")
        options = BuildOptions(show_progress=False, retry_policy=DEMO_RETRY, report_notes=(EMULATOR_NOTE,))
        result = build_mt5k(recipe, options, log=log)
        billed = emulator.billing.snapshot()["calls"]
    output = Path(recipe.output)
    log(f"\n== the {recipe.name} dataset ({output})")
    log("\n\n".join(format_table(title, table) for title, table in manifest_stats([output]).items()))

    # -- training and decoding on the demo shards go here (the trainer milestone) -------

    pseudo, translated = _emulated_label_counts(output)
    log(f"\nNOTE: {pseudo} pseudo-labelled segments (label_origin pseudo:<provider>) and {translated} translations came from "
        f"the emulator, not from a real ASR/MT service (emulated billable calls this run: {billed or 'none'}).")
    log(f"demo finished in {time.perf_counter() - started:.1f} s; the report is at {result.report or output / 'report' / 'report.html'}")
    return result.report or output / "report" / "report.html"

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

import json
import os
import shlex
import subprocess
import sys
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


DEMO_TRAIN_CONFIG = Path("pipelines/train/tiny.yaml")
DEMO_TRAIN_STEPS = 40


# Import-time banners of the libraries below the commands (funasr's ffmpeg notice, DeepSpeed's
# accelerator guess): true but beside the point in a demo transcript.
_LIBRARY_NOISE = ("Notice: ffmpeg is not installed", "If you want to use ffmpeg", "\tsudo apt install ffmpeg",
                  "\t# brew install ffmpeg", "[20")


def _run_command(argv: list[str], log: Callable[[str], None]) -> str:
    """Run one of the toolkit's own commands as a user would, echoing it; its output is logged."""
    shown = " ".join(shlex.quote(str(a)) for a in argv)
    log(f"$ {shown}")
    executable = {"mooer-train": "mooer_model.cli", "mooer-infer": "mooer_model.infer_cli"}[argv[0]]
    done = subprocess.run([sys.executable, "-m", executable, *map(str, argv[1:])], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed with status {done.returncode}:\n{done.stderr[-4000:]}")
    shown_lines = [line for line in done.stdout.splitlines() if not line.startswith(_LIBRARY_NOISE) and line.strip()]
    log("\n".join(shown_lines))
    return done.stdout


def train_and_decode(dataset: Path, out: Path, train_config: Path, steps: int, log: Callable[[str], None]) -> Path:
    """Train the tiny MooER-shaped model on the demo shards with ``mooer-train``, export it to
    MooER's release layout and decode the test split with ``mooer-infer``.

    The model is the real architecture shrunk (random frozen encoder and LLM, trainable
    adapter + LoRA) and trained for seconds on a few dozen utterances: its transcripts show
    that every stage connects, not what a trained MooER reaches."""
    from mooer_model.testing import write_tiny_assets

    assets = write_tiny_assets(out / "tiny-assets")
    run_dir, release = out / "exp" / "tiny", out / "exp" / "tiny-release"
    log(f"\n== mooer-train: the tiny model, {steps} steps on {dataset}")
    _run_command(["mooer-train", "--shards", dataset, "--config", train_config,
                  "--set", f"model.llm.tokenizer={assets.tokenizer_dir}", "--set", f"model.cmvn_file={assets.cmvn_file}",
                  "--set", f"train.output_dir={run_dir}", "--set", f"train.max_steps={steps}",
                  "--set", f"train.save_every={steps}"], log)
    _run_command(["mooer-train", "export", run_dir, release], log)
    log("\n== mooer-infer: decoding the test split with the exported model (MooER's release layout)")
    decoded = out / "decode"
    _run_command(["mooer-infer", dataset, "--model-dir", release, "--task", "asr", "--split", "test",
                  "--out", decoded, "--beams", "1", "--max-new-tokens", "40", "--overwrite", "-q"], log)
    for results in sorted(decoded.glob("*/results.jsonl"))[:1]:
        for line in results.read_text(encoding="utf-8").splitlines()[:3]:
            row = json.loads(line)
            log(f"  {row.get('key')}: ref {row.get('ref')!r}\n  {' ' * len(str(row.get('key')))}  hyp {row.get('hyp')!r}")
    log(f"(a {steps}-step tiny model: these transcripts prove the path from shards to decoding, not accuracy)")
    return decoded


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


def run_demo(out: Path, recipe_path: Path, jobs: int = 2, log: Callable[[str], None] = print,
             train_config: Path = DEMO_TRAIN_CONFIG, train_steps: int = DEMO_TRAIN_STEPS) -> Path:
    """Generate, build, train the tiny model ``train_steps`` steps (0: skip) and decode with
    it, report; returns the report page."""
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

    if train_steps:
        train_and_decode(output, out, train_config, train_steps, log)

    pseudo, translated = _emulated_label_counts(output)
    log(f"\nNOTE: {pseudo} pseudo-labelled segments (label_origin pseudo:<provider>) and {translated} translations came from "
        f"the emulator, not from a real ASR/MT service (emulated billable calls this run: {billed or 'none'}).")
    log(f"demo finished in {time.perf_counter() - started:.1f} s; the report is at {result.report or output / 'report' / 'report.html'}")
    return result.report or output / "report" / "report.html"

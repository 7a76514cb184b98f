"""`make demo` / `mooer-data demo`: the MT5K flow on generated miniature corpora.

Generates AISHELL-2, LibriSpeech, WenetSpeech, multi_cn and in-house audio in their
native layouts (espeak-ng speech, every quirk the recipes handle), prepares each, samples
the demo recipe's budgets and prints the statistics. Later stages join as they land.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from . import minicorpora
from .prepare import PrepareConfig, prepare_corpus
from .recipe import load_recipe
from .sampling import SampleConfig, sample_manifests
from .shards import ShardConfig, write_shards
from .stats import format_table, manifest_stats

GENERATORS = {
    "aishell2": minicorpora.make_aishell2,
    "librispeech": minicorpora.make_librispeech,
    "wenetspeech": minicorpora.make_wenetspeech,
    "multi_cn": minicorpora.make_multi_cn,
    "inhouse": minicorpora.make_inhouse,
}


def run_demo(out: Path, recipe_path: Path, jobs: int = 2, log: Callable[[str], None] = print) -> Path:
    started = time.perf_counter()
    recipe = load_recipe(recipe_path)
    unknown = sorted(set(recipe.corpus_roots) - set(GENERATORS))
    if unknown:
        raise ValueError(f"the demo can generate {sorted(GENERATORS)}, not {unknown}")
    out = Path(out)
    synth = minicorpora.SpeechSynth(out / "speech-cache")
    manifest_dirs = []
    generated = {}
    for corpus in recipe.corpus_roots:
        log(f"== generating the miniature {corpus} corpus")
        expected = generated[corpus] = GENERATORS[corpus](out / "corpora" / corpus, synth)
        manifest_dir = out / "manifests" / corpus
        prepare_corpus(corpus, expected.root, manifest_dir, PrepareConfig(jobs=jobs, show_progress=False), log=log)
        manifest_dirs.append(manifest_dir)
    final = out / recipe.output
    selection = final.with_name(final.name + "-sample")
    log(f"== sampling {recipe.name} (seed {recipe.seed})")
    result = sample_manifests(manifest_dirs, selection, SampleConfig(seed=recipe.seed, hours_per_source=recipe.budgets_hours))
    for name, group in sorted(result.groups.items()):
        log(f"  {name:12s} requested {group.requested_hours * 3600:7.1f} s  reached {group.reached_hours * 3600:7.1f} s  ({group.items} {group.unit})")
    if "inhouse" in generated:
        selection = _label_with_emulator(selection, generated["inhouse"], log)
    log("\n== all prepared corpora")
    log("\n\n".join(format_table(t, r) for t, r in manifest_stats(manifest_dirs).items()))
    log(f"\n== the {recipe.name} selection ({selection})")
    log("\n\n".join(format_table(t, r) for t, r in manifest_stats([selection]).items() if not t.startswith("rejects")))
    log(f"\n== packing {recipe.name} into WebDataset shards")
    write_shards([selection], final, ShardConfig(shard_size=None, max_count=16, seed=recipe.seed, jobs=jobs, show_progress=False), log=log)
    log(f"\ndemo finished in {time.perf_counter() - started:.1f} s; manifests under {out / 'manifests'}")
    return final


def _label_with_emulator(selection: Path, inhouse, log: Callable[[str], None]) -> Path:
    """Pseudo-label the sampled in-house audio and translate the Mandarin, through the
    bundled emulator of the cloud services (a few injected faults), so the demo runs the
    paid stages offline. Its labels are the oracle's, and the output says so."""
    import os

    from .labeling import RetryPolicy
    from .providers.emulator import Oracle, build_emulator, client_environment
    from .pseudolabel import PseudolabelConfig, pseudolabel
    from .translate import TranslateConfig, translate_manifest

    oracle = minicorpora.oracle_for(inhouse)
    emulator = build_emulator(oracle=Oracle(oracle["audio"], oracle["translations"]), faults="rate_limit=0.1,server_error=0.1,seed=1",
                              job_seconds=0.1)
    url = emulator.start()
    saved = {name: os.environ.get(name) for name in client_environment(url)}
    os.environ.update(client_environment(url))
    policy = RetryPolicy(base_delay=0.05, max_delay=0.5)
    try:
        log(f"\n== pseudo-labelling the sampled in-house audio via the EMULATED Tencent ASR at {url} (not a real service)")
        labelled = selection.with_name(selection.name.replace("-sample", "") + "-pseudo")
        pseudolabel(selection, labelled, PseudolabelConfig(provider="tencent", fallbacks=("openai",), policy=policy, show_progress=False), log=log)
        log("== translating the Mandarin text via the EMULATED Tencent TMT (fallback: emulated Baidu)")
        translated = selection.with_name(selection.name.replace("-sample", "") + "-labelled")
        translate_manifest(labelled, translated, TranslateConfig(provider="tencent", fallbacks=("baidu",), policy=policy, show_progress=False), log=log)
        log(f"   these labels came from the emulator's oracle, i.e. from the text the demo spoke; billable calls: {emulator.billing.snapshot()['calls']}")
        return translated
    finally:
        emulator.stop()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value

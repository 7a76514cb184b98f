"""Shared fixtures: miniature corpora generated once per test session (real espeak-ng
speech in each corpus's native layout, see mooer_data/minicorpora.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mooer_data import minicorpora


@pytest.fixture(scope="session")
def synth(tmp_path_factory):
    # A cache shared across xdist workers and runs; generation is deterministic.
    cache = Path(os.environ.get("MOOER_SYNTH_CACHE", Path.home() / ".cache" / "mooer" / "synth-tests"))
    return minicorpora.SpeechSynth(cache)


@pytest.fixture(scope="session")
def corpora_root(tmp_path_factory):
    return tmp_path_factory.mktemp("corpora")


@pytest.fixture(scope="session")
def corpus_factory(synth, corpora_root):
    """Build a miniature corpus once per session: ``corpus_factory("librispeech")``."""
    built: dict[str, minicorpora.ExpectedCorpus] = {}
    makers = {
        "aishell2": minicorpora.make_aishell2,
        "librispeech": minicorpora.make_librispeech,
        "wenetspeech": minicorpora.make_wenetspeech,
        "multi_cn": minicorpora.make_multi_cn,
        "aidatatang_200zh": minicorpora.make_aidatatang,
        "aishell": minicorpora.make_aishell,
        "magicdata": minicorpora.make_magicdata,
        "primewords": minicorpora.make_primewords,
        "stcmds": minicorpora.make_stcmds,
        "thchs30": minicorpora.make_thchs30,
        "inhouse": minicorpora.make_inhouse,
        "corrupt": minicorpora.make_corrupt_aishell2,
        "aishell2_eval": lambda root, s: minicorpora.make_aishell2_eval_variant(root, s)[0],
    }

    def build(name: str) -> minicorpora.ExpectedCorpus:
        if name not in built:
            built[name] = makers[name](corpora_root / name, synth)
        return built[name]

    return build

"""The local providers, fully offline: pocketsphinx on espeak speech (open vocabulary and
with a JSGF grammar), funasr on a tiny Paraformer generated from config, silero-vad on a
long recording, and local MT on tiny generated translators."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from mooer_data.minicorpora import SpeechSynth
from mooer_data.providers.base import ProviderConfig
from mooer_data.providers.errors import MalformedResponse, NotConfigured
from mooer_data.providers.local_asr import LocalAsr, read_audio
from mooer_data.providers.local_mt import LocalTranslation
from mooer_data.providers.registry import provider_class
from mooer_data.providers.stager import InlineStager
from mooer_data.providers.types import AudioItem, Transcript
from mooer_data.providers.vad import fit_regions, speech_regions
from mooer_data.quality import edit_distance

RATE = 16000
SENTENCES = [
    "the quick brown fox jumps over the lazy dog",
    "she sells sea shells by the sea shore",
    "we will meet at the station tomorrow morning",
    "please open the window before you leave",
    "the children are playing in the garden",
]


@pytest.fixture(scope="module")
def speech():
    synth = SpeechSynth(Path(os.environ.get("MOOER_SYNTH_CACHE", Path.home() / ".cache" / "mooer" / "synth-tests")))
    return {text: synth.speech(text, "en") for text in SENTENCES}


@pytest.fixture(autouse=True)
def no_engine_env(monkeypatch):
    for name in ("MOOER_LOCAL_ASR_ENGINE", "MOOER_LOCAL_ASR_MODEL_DIR", "MOOER_LOCAL_MT_MODEL_DIR"):
        monkeypatch.delenv(name, raising=False)


def write_wav(path: Path, samples: np.ndarray, rate: int = RATE) -> Path:
    sf.write(path, samples, rate, subtype="PCM_16")
    return path


def item(path: Path, language: str = "en", key: str | None = None, start: float = 0.0, duration: float | None = None) -> AudioItem:
    duration = sf.info(path).duration if duration is None else duration
    return AudioItem(key=key or path.stem, path=path, duration=duration, language=language, start=start)


def transcribe(provider: LocalAsr, audio: AudioItem) -> Transcript:
    """Through the whole provider interface, as the runner drives it."""

    async def run() -> Transcript:
        staged = InlineStager().stage(audio)  # what the runner hands a "local" delivery provider
        handle = await provider.submit(None, audio, staged)
        json.dumps(handle.extra)  # the handle is persisted as JSON in the ledger
        assert (await provider.poll(None, handle)).value == "succeeded"
        return provider.parse(await provider.fetch(None, handle), audio)

    return asyncio.run(run())


def local_asr(**options) -> LocalAsr:
    return LocalAsr(ProviderConfig(name="local", options=options))


def corpus_wer(references: list[str], hypotheses: list[str]) -> float:
    edits = sum(edit_distance(r.split(), h.split()) for r, h in zip(references, hypotheses))
    return edits / sum(len(r.split()) for r in references)


# --------------------------------------------------------------------------- pocketsphinx
def test_registry_names_the_local_classes():
    assert provider_class("asr", "local") is LocalAsr
    assert provider_class("mt", "local") is LocalTranslation
    assert LocalAsr.is_local and LocalAsr.capabilities.delivery == ("local",)


def test_pocketsphinx_open_vocabulary_then_grammar_is_exact(tmp_path, speech):
    paths = {text: write_wav(tmp_path / f"utt{i}.wav", samples) for i, (text, samples) in enumerate(speech.items())}

    provider = local_asr()  # nothing configured: the bundled en-us model
    hypotheses = []
    for text, path in paths.items():
        transcript = transcribe(provider, item(path))
        assert isinstance(transcript.text, str)
        hypotheses.append(transcript.text)
    open_wer = corpus_wer(SENTENCES, hypotheses)

    grammar = tmp_path / "sentences.jsgf"
    # the rule must not be called <s>: that is pocketsphinx's sentence-start word
    grammar.write_text("#JSGF V1.0;\ngrammar sentences;\npublic <sentence> = " + " | ".join(SENTENCES) + " ;\n")
    constrained = local_asr(jsgf=str(grammar))
    exact = []
    for text, path in paths.items():
        transcript = constrained.parse(asyncio.run(constrained.submit(None, item(path), None)).extra["raw"], item(path))
        exact.append(transcript.text)
        assert transcript.confidence_kind == "provider" and 0.0 < transcript.confidence <= 1.0
    grammar_wer = corpus_wer(SENTENCES, exact)
    print(f"\npocketsphinx en-us on espeak speech, {len(SENTENCES)} sentences: WER open vocabulary {open_wer:.3f}, with JSGF grammar {grammar_wer:.3f}")
    for reference, heard in zip(SENTENCES, hypotheses):
        print(f"  {reference!r} -> {heard!r}")
    assert exact == SENTENCES


def test_pocketsphinx_reads_a_cut_and_resamples(tmp_path, speech):
    samples = speech[SENTENCES[1]].astype(np.float32) / 32768
    # 44.1 kHz stereo, with 1.5 s of something else before the cut
    lead = np.zeros(int(1.5 * RATE), np.float32)
    joined = np.concatenate([lead, samples])
    times = np.arange(int(len(joined) * 44100 / RATE)) / 44100
    resampled = np.interp(times, np.arange(len(joined)) / RATE, joined)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([resampled, resampled], axis=1), 44100, subtype="PCM_16")
    cut = item(path, start=1.5, duration=len(samples) / RATE)
    read = read_audio(cut)
    assert abs(len(read) - len(samples)) <= 2
    assert np.corrcoef(read[: len(samples) - 2], samples[: len(samples) - 2])[0, 1] > 0.98

    grammar = tmp_path / "g.jsgf"
    grammar.write_text("#JSGF V1.0;\ngrammar g;\npublic <sentence> = " + " | ".join(SENTENCES) + " ;\n")
    assert transcribe(local_asr(jsgf=str(grammar)), cut).text == SENTENCES[1]


def test_mandarin_without_a_model_is_not_configured(tmp_path, speech):
    path = write_wav(tmp_path / "zh.wav", speech[SENTENCES[0]])
    with pytest.raises(NotConfigured) as caught:
        transcribe(local_asr(), item(path, language="zh"))
    message = str(caught.value)
    for needed in ("hmm", "dict", "lm", "engine=funasr", "model_dir"):
        assert needed in message


def test_mooer_engine_without_a_model_dir_is_not_configured(tmp_path, speech, monkeypatch):
    # the engine itself is tested in tests/test_provider_local_mooer.py
    path = write_wav(tmp_path / "a.wav", speech[SENTENCES[0]])
    monkeypatch.setenv("MOOER_LOCAL_ASR_ENGINE", "mooer")
    provider = local_asr()
    with pytest.raises(NotConfigured, match="engine mooer needs a model directory"):
        provider.check_configured()
    with pytest.raises(NotConfigured, match="engine mooer needs a model directory"):
        transcribe(provider, item(path))
    with pytest.raises(NotConfigured, match="expected one of pocketsphinx, funasr, mooer"):
        local_asr(engine="kaldi").check_configured()


def test_unreadable_audio_is_item_fatal(tmp_path):
    from mooer_data.providers.errors import ItemFatal

    path = tmp_path / "broken.wav"
    path.write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot audio")
    with pytest.raises(ItemFatal):
        transcribe(local_asr(), item(path, duration=1.0))
    with pytest.raises(MalformedResponse):
        local_asr().parse("{not json", item(path, duration=1.0))


# --------------------------------------------------------------------------- funasr
def test_funasr_engine_loads_a_generated_paraformer_dir(tmp_path, speech):
    import torch

    from mooer_data.testing.tiny_models import make_tiny_funasr_paraformer

    with pytest.raises(NotConfigured, match="model_dir"):
        local_asr(engine="funasr").check_configured()
    with pytest.raises(NotConfigured, match="config.yaml"):
        local_asr(engine="funasr", model_dir=str(tmp_path / "absent")).check_configured()

    model_dir = make_tiny_funasr_paraformer(tmp_path / "paraformer")
    provider = local_asr(engine="funasr", model_dir=str(model_dir))
    provider.check_configured()
    path = write_wav(tmp_path / "zh.wav", speech[SENTENCES[2]])
    transcript = transcribe(provider, item(path, language="zh"))
    assert isinstance(transcript, Transcript) and transcript.language == "zh"
    assert len(transcript.sentences) <= 1 and transcript.confidence is None

    # the load path was real: funasr's model carries exactly the weights written to model.pt
    saved = torch.load(model_dir / "model.pt", map_location="cpu")
    loaded = provider.engine().model().model.state_dict()
    assert saved.keys() == loaded.keys()
    assert all(torch.equal(saved[name], loaded[name]) for name in saved)
    assert provider.engine().model() is provider.engine().model()  # loaded once


# --------------------------------------------------------------------------- VAD
def test_fit_regions_merges_close_neighbours_and_splits_long_regions():
    assert fit_regions([(5.0, 6.0), (1.0, 2.0), (2.2, 3.0)], min_gap_s=0.5, max_region_s=30) == [(1.0, 3.0), (5.0, 6.0)]
    assert fit_regions([(0.0, 2.0), (1.5, 4.0)], min_gap_s=0.0, max_region_s=30) == [(0.0, 4.0)]
    # merging would pass the limit: kept apart
    assert fit_regions([(0.0, 20.0), (20.2, 35.0)], min_gap_s=0.5, max_region_s=30) == [(0.0, 20.0), (20.2, 35.0)]
    split = fit_regions([(10.0, 75.0)], min_gap_s=0.5, max_region_s=30)
    assert len(split) == 3 and split[0][0] == 10.0 and split[-1][1] == 75.0
    assert all(end - start <= 30 for start, end in split)
    assert all(a[1] == pytest.approx(b[0]) for a, b in zip(split, split[1:]))
    assert fit_regions([(-0.1, 1.0), (9.0, 12.0), (12.5, 12.4)], min_gap_s=0.5, max_region_s=30, total_s=10.0) == [(0.0, 1.0), (9.0, 10.0)]
    with pytest.raises(ValueError, match="max_region_s"):
        fit_regions([], min_gap_s=0.5, max_region_s=0)


def speech_extent(samples: np.ndarray, start_s: float) -> tuple[float, float]:
    """Where espeak's clip is actually loud (it has quiet lead-in and tail)."""
    loud = np.flatnonzero(np.abs(samples.astype(np.float32)) > 0.02 * 32768)
    return start_s + loud[0] / RATE, start_s + (loud[-1] + 1) / RATE


def test_vad_finds_speech_between_silences_and_the_provider_timestamps_it(tmp_path, speech):
    parts, truth, position = [], [], 0.0
    for text, silence in zip(SENTENCES[:3], (2.0, 12.0, 14.0)):
        parts.append(np.zeros(int(silence * RATE), np.int16))
        position += silence
        truth.append(speech_extent(speech[text], position))
        parts.append(speech[text])
        position += len(speech[text]) / RATE
    parts.append(np.zeros(int(3.0 * RATE), np.int16))
    recording = np.concatenate(parts)
    assert len(recording) / RATE > 30

    regions = speech_regions(recording.astype(np.float32) / 32768)
    assert len(regions) == len(truth), (regions, truth)
    for (start, end), (true_start, true_end) in zip(regions, truth):
        assert abs(start - true_start) <= 0.3 and abs(end - true_end) <= 0.3, (regions, truth)

    # a long item goes through VAD: one timestamped sentence per speech region
    path = write_wav(tmp_path / "long.wav", recording)
    grammar = tmp_path / "g.jsgf"
    grammar.write_text("#JSGF V1.0;\ngrammar g;\npublic <sentence> = " + " | ".join(SENTENCES) + " ;\n")
    transcript = transcribe(local_asr(jsgf=str(grammar)), item(path))
    assert [s.text for s in transcript.sentences] == SENTENCES[:3]
    for sentence, (start, end) in zip(transcript.sentences, regions):
        assert (sentence.start, sentence.end) == (pytest.approx(start, abs=1e-3), pytest.approx(end, abs=1e-3))


def test_vad_splits_a_region_longer_than_the_limit(speech):
    pause = np.zeros(int(0.15 * RATE), np.int16)  # shorter than min_silence: one long region
    chunks = []
    for _ in range(3):
        for text in SENTENCES:
            chunks += [speech[text], pause]
    recording = np.concatenate(chunks).astype(np.float32) / 32768
    total = len(recording) / RATE
    assert total > 32

    regions = speech_regions(recording, min_silence_s=0.5, max_region_s=30.0)
    assert len(regions) >= 2
    assert all(end - start <= 30.0 for start, end in regions)
    covered = sum(end - start for start, end in regions)
    assert covered > 0.8 * total
    unlimited = speech_regions(recording, min_silence_s=0.5, max_region_s=1000.0)
    assert len(unlimited) == 1 and unlimited[0][1] - unlimited[0][0] > 30


# --------------------------------------------------------------------------- MT
@pytest.mark.parametrize("maker", ["make_tiny_qwen2_translator", "make_tiny_marian"])
def test_local_mt_returns_one_translation_per_text(tmp_path, maker):
    from mooer_data.testing import tiny_models

    with pytest.raises(NotConfigured, match="model_dir"):
        LocalTranslation(ProviderConfig(name="local")).check_configured()

    model_dir = getattr(tiny_models, maker)(tmp_path / "model")
    provider = LocalTranslation(ProviderConfig(name="local", options={"model_dir": str(model_dir), "max_new_tokens": 6}))
    provider.check_configured()
    texts = ["今天天气很好，我们去公园散步吧。", "我想喝一杯热茶。", "请把窗户打开。"]
    raw = asyncio.run(provider.translate_raw(None, texts, "zh", "en"))
    translations = provider.parse(raw, len(texts))
    assert len(translations) == len(texts) and all(isinstance(t, str) for t in translations)
    with pytest.raises(MalformedResponse, match=f"expected {len(texts) + 1} translations, found {len(texts)}"):
        provider.parse(raw, len(texts) + 1)
    with pytest.raises(MalformedResponse):
        provider.parse('{"text": "x"}', 1)


def test_local_mt_rejects_a_directory_that_is_not_a_translator(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertModel"]}))
    provider = LocalTranslation(ProviderConfig(name="local", options={"model_dir": str(tmp_path)}))
    with pytest.raises(NotConfigured, match="expected a Marian model or a causal instruct LLM"):
        provider.check_configured()

"""The local provider's ``mooer`` engine: pseudo-labels through ``mooer_model.infer`` with
the tiny generated MooER release (random weights, so the text is arbitrary: the tests
check the wiring, the options and that the engine says what is missing)."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from mooer_data.providers.base import ProviderConfig
from mooer_data.providers.errors import NotConfigured
from mooer_data.providers.local_asr import LocalAsr, MooerEngine, read_audio
from mooer_data.providers.stager import InlineStager
from mooer_data.providers.types import AudioItem, Transcript

RATE = 16000


@pytest.fixture(autouse=True)
def no_engine_env(monkeypatch):
    for name in ("MOOER_LOCAL_ASR_ENGINE", "MOOER_LOCAL_ASR_MODEL_DIR", "MOOER_LOCAL_ASR_LLM_DIR"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    from mooer_model.testing import make_tiny_mooer_release

    return make_tiny_mooer_release(tmp_path_factory.mktemp("mooer"))


def local_asr(**options) -> LocalAsr:
    return LocalAsr(ProviderConfig(name="local", options={"engine": "mooer", **options}))


def tone_item(directory: Path, key: str, seconds: float, seed: int, start: float = 0.0) -> AudioItem:
    rng = np.random.default_rng(seed)
    t = np.arange(int((start + seconds) * RATE)) / RATE
    wave = 0.3 * np.sin(2 * np.pi * (200 + 50 * seed) * t) + 0.01 * rng.standard_normal(t.size)
    path = directory / f"{key}.wav"
    sf.write(path, wave, RATE, subtype="PCM_16")
    return AudioItem(key=key, path=path, duration=seconds, language="zh", start=start)


def transcribe(provider: LocalAsr, audio: AudioItem) -> Transcript:
    """Through the whole provider interface, as the runner drives it."""

    async def run() -> Transcript:
        handle = await provider.submit(None, audio, InlineStager().stage(audio))
        json.dumps(handle.extra)  # the ledger persists the handle as JSON
        assert (await provider.poll(None, handle)).value == "succeeded"
        return provider.parse(await provider.fetch(None, handle), audio)

    return asyncio.run(run())


def test_mooer_engine_pseudolabels_items_through_infer(release, tmp_path):
    from mooer_model.infer import transcribe_waveforms
    from mooer_model.model import GenerationSettings

    release_dir, llm_dir = release
    provider = local_asr(model_dir=str(release_dir), llm_dir=str(llm_dir), device="cpu", beams="1")
    provider.check_configured()
    items = [tone_item(tmp_path, "utt-a", 1.2, 1), tone_item(tmp_path, "utt-b", 0.8, 2, start=0.5)]
    transcripts = [transcribe(provider, item) for item in items]
    engine = provider.engine()
    assert isinstance(engine, MooerEngine)
    model = engine.model()
    assert model is engine.model()  # loaded once
    for item, transcript in zip(items, transcripts):
        assert transcript.language == "zh" and transcript.confidence is None and len(transcript.sentences) <= 1
        # exactly what the library decodes for the item's audio, with the engine's beam option
        expected = transcribe_waveforms(model, [read_audio(item)], "asr", GenerationSettings(num_beams=1))[0].strip()
        assert transcript.text == expected
        raw = json.loads(asyncio.run(provider.submit(None, item, None)).extra["raw"])
        assert raw["engine"] == "mooer" and raw["duration"] == pytest.approx(item.duration, abs=1e-3)


def test_mooer_engine_loads_once_under_concurrent_calls(release, monkeypatch):
    import mooer_model.infer as infer

    release_dir, llm_dir = release
    calls = []
    real = infer.load_model
    monkeypatch.setattr(infer, "load_model", lambda *a, **k: calls.append(1) or real(*a, **k))
    engine = MooerEngine({"model_dir": str(release_dir), "llm_dir": str(llm_dir), "device": "cpu"})
    models = []
    threads = [threading.Thread(target=lambda: models.append(engine.model())) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert calls == [1] and len(models) == 4 and all(m is models[0] for m in models)
    # too short for one audio embedding: nothing said, nothing decoded
    assert engine.transcribe(np.zeros(200, np.float32), "zh") == ("", None)


def test_mooer_engine_says_what_is_missing(release, tmp_path, monkeypatch):
    release_dir, llm_dir = release
    cases = [
        ({}, "engine mooer needs a model directory: --set local.model_dir=DIR"),
        ({"model_dir": str(release_dir)}, "without its LLM: expected llm_dir"),
        ({"model_dir": str(tmp_path / "absent"), "llm_dir": str(llm_dir)}, "expected a MooER release directory, found no directory"),
        ({"model_dir": str(release_dir), "llm_dir": str(tmp_path / "qwen")}, "expected the LLM directory"),
        ({"model_dir": str(release_dir), "llm_dir": str(llm_dir), "task": "ast"}, "expected a release root holding ast/"),
        ({"model_dir": str(release_dir), "llm_dir": str(llm_dir), "task": "chat"}, "option task: expected one of asr, ast, mtl, found 'chat'"),
        ({"model_dir": str(release_dir), "llm_dir": str(llm_dir), "beams": "many"}, "option beams: expected a positive integer, found 'many'"),
        ({"model_dir": str(release_dir), "llm_dir": str(llm_dir), "device": "tpu"}, "expected a device name among auto, cpu"),
    ]
    for options, message in cases:
        with pytest.raises(NotConfigured) as caught:
            local_asr(**options).check_configured()
        assert message in str(caught.value), (options, str(caught.value))
    # the environment fills model_dir and llm_dir
    monkeypatch.setenv("MOOER_LOCAL_ASR_MODEL_DIR", str(release_dir))
    monkeypatch.setenv("MOOER_LOCAL_ASR_LLM_DIR", str(llm_dir))
    local_asr().check_configured()

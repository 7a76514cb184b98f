"""translate through emulated MT providers, verify-with agreement flags, quality
heuristics, and the providers / emulate commands."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from mooer_data import minicorpora
from mooer_data.cli import app
from mooer_data.labeling import RetryPolicy
from mooer_data.manifest import TableSink
from mooer_data.providers.emulator import Oracle, build_emulator, client_environment
from mooer_data.quality import assess, error_rate, has_repetition
from mooer_data.translate import TranslateConfig, pack, translate_manifest

FAST = RetryPolicy(attempts=10, resubmits=6, base_delay=0.01, max_delay=0.05)
TEXTS = list(minicorpora.DEMO_TRANSLATIONS)


def mandarin_manifest(directory, count=12):
    rows = []
    for index in range(count):
        text = TEXTS[index % len(TEXTS)]
        rows.append({"id": f"inhouse-x{index:03d}-S0001", "recording_id": f"inhouse-x{index:03d}", "source": "inhouse", "split": "train",
                     "language": "zh", "start": 0.0, "duration": 2.0, "text": text, "text_raw": text, "label_origin": "pseudo:tencent"})
    rows.append({"id": "inhouse-en-S0001", "recording_id": "inhouse-en", "source": "inhouse", "language": "en", "start": 0.0,
                 "duration": 1.0, "text": "HELLO", "text_raw": "hello"})
    with TableSink(directory / "segments.parquet", "segments", {"inhouse": "/data"}) as sink:
        sink.add_many(rows)
    with TableSink(directory / "recordings.parquet", "recordings", {"inhouse": "/data"}):
        pass
    return directory


@pytest.fixture()
def emulated(monkeypatch):
    emulators = []

    def start(faults=None):
        emu = build_emulator(oracle=Oracle({}, minicorpora.DEMO_TRANSLATIONS), faults=faults, hang_seconds=0.6, job_seconds=0.05)
        for name, value in client_environment(emu.start()).items():
            monkeypatch.setenv(name, value)
        emulators.append(emu)
        return emu

    yield start
    for emu in emulators:
        emu.stop()


@pytest.mark.parametrize("provider", ["tencent", "baidu", "deepl", "openai"])
def test_translate_fills_translations_for_mandarin_only(provider, emulated, tmp_path):
    emulated()
    manifest = mandarin_manifest(tmp_path / "in")
    result = translate_manifest(manifest, tmp_path / "out", TranslateConfig(provider=provider, timeout=5, policy=FAST, show_progress=False),
                                log=lambda _: None)
    rows = {r["id"]: r for r in pq.read_table(tmp_path / "out" / "segments.parquet").to_pylist()}
    assert result.translated == 12 and result.failed == 0
    for row in rows.values():
        if row["language"] == "zh":
            assert row["translation"] == minicorpora.DEMO_TRANSLATIONS[row["text_raw"]]
    assert rows["inhouse-en-S0001"]["translation"] is None


@pytest.mark.parametrize("provider", ["baidu", "deepl", "openai"])
def test_translate_storm_every_segment_translated_or_rejected(provider, emulated, tmp_path):
    emulated("storm=0.3,seed=4")
    manifest = mandarin_manifest(tmp_path / "in", count=30)
    result = translate_manifest(manifest, tmp_path / "out", TranslateConfig(provider=provider, timeout=0.4, policy=FAST, show_progress=False),
                                log=lambda _: None)
    rows = pq.read_table(tmp_path / "out" / "segments.parquet").to_pylist()
    rejects = {r["item"] for r in pq.read_table(tmp_path / "out" / "rejects.parquet").to_pylist()}
    translated = {r["id"] for r in rows if r["translation"]}
    zh = {r["id"] for r in rows if r["language"] == "zh"}
    assert translated | rejects == zh and not translated & rejects
    assert result.translated == len(translated)
    for row in rows:
        if row["translation"]:  # never matched up by position: each is the right one
            assert row["translation"] == minicorpora.DEMO_TRANSLATIONS[row["text_raw"]]
    again = translate_manifest(manifest, tmp_path / "out", TranslateConfig(provider=provider, timeout=5, policy=FAST, show_progress=False),
                               log=lambda _: None)
    assert again.translated >= result.translated


def test_pack_respects_text_and_character_limits():
    items = [(f"id{i}", "字" * 30) for i in range(10)]
    batches = pack(items, max_texts=4, max_chars=100)
    assert [len(b) for b in batches] == [3, 3, 3, 1]
    assert [i for b in batches for i, _ in b] == [i for i, _ in items]


def test_quality_heuristics():
    assert error_rate("今天天气很好", "今天天气不好", "zh") == pytest.approx(1 / 6)
    assert error_rate("THE CAT SAT", "THE CAT", "en") == pytest.approx(1 / 3)
    assert has_repetition("谢谢谢谢谢谢谢谢", "zh") and has_repetition("YOU KNOW YOU KNOW YOU KNOW YOU KNOW", "en")
    assert not has_repetition("今天天气很好我们去公园", "zh")
    row = assess("x", "谢谢谢谢谢谢谢谢", 0.5, "zh", 0.2, "不对")
    assert set(row.flags) >= {"low-confidence", "repetition", "disagrees"}
    fast = assess("y", "一二三四五六七八九十一二三四五六七八九十一二三四五六七八九十", 1.5, "zh", None)
    assert "cps-out-of-range" in fast.flags
    assert assess("z", "今天天气很好", 1.5, "zh", 0.9, "今天天气很好").flags == ()


def label_inhouse_with_verification(corpus_factory, tmp_path, monkeypatch, verify_with: str):
    """Pseudo-label the in-house corpus via the emulated Tencent ASR, verified by another provider."""
    from mooer_data.prepare import PrepareConfig, prepare_corpus
    from mooer_data.pseudolabel import PseudolabelConfig, pseudolabel

    expected = corpus_factory("inhouse")
    prepare_corpus("inhouse", expected.root, tmp_path / "in", PrepareConfig(show_progress=False), log=lambda _: None)
    oracle = minicorpora.oracle_for(expected)
    emu = build_emulator(oracle=Oracle(oracle["audio"], oracle["translations"]), job_seconds=0.05)
    for name, value in client_environment(emu.start()).items():
        monkeypatch.setenv(name, value)
    try:
        config = PseudolabelConfig(provider="tencent", verify_with=verify_with, timeout=5, policy=FAST, show_progress=False)
        result = pseudolabel(tmp_path / "in", tmp_path / "out", config, log=lambda _: None)
    finally:
        emu.stop()
    return result, pq.read_table(tmp_path / "out" / "quality.parquet").to_pylist()


def test_verify_with_records_agreement(corpus_factory, tmp_path, monkeypatch):
    result, quality = label_inhouse_with_verification(corpus_factory, tmp_path, monkeypatch, "openai")
    assert len(quality) == result.segments_written
    # both emulated services answer from the same oracle: they agree everywhere
    assert all(q["agreement_error"] == pytest.approx(0.0) for q in quality)
    assert all("disagrees" not in q["flags"] for q in quality)


def test_providers_list_and_check_never_print_values(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-value-that-must-not-show-123")
    monkeypatch.delenv("DEEPL_AUTH_KEY", raising=False)
    runner = CliRunner()
    listed = runner.invoke(app, ["providers", "list"])
    assert listed.exit_code == 0
    assert "sk-value-that-must-not-show-123" not in listed.output
    assert "openai" in listed.output and "DEEPL_AUTH_KEY" in listed.output
    checked = runner.invoke(app, ["providers", "check"])
    assert checked.exit_code == 1 and "NOT READY" in checked.output


def test_emulate_command_announces_itself(tmp_path):
    import socket
    import subprocess
    import sys

    import httpx

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-m", "mooer_data.cli", "emulate", "--port", str(port), "--faults", "rate_limit=0.1"],
                               stdout=subprocess.PIPE, text=True)
    try:
        banner = process.stdout.readline()
        assert "EMULATOR" in banner and "not a real" in banner
        info = httpx.get(f"http://127.0.0.1:{port}/__emulator__").json()
        assert info["emulator"] is True and set(info["routes"]) == {"tencent", "aliyun", "baidu", "openai", "deepl"}
        assert json.dumps(info["faults"]) == json.dumps({"rate_limit": 0.1})
    finally:
        process.terminate()
        process.wait()


def test_emulator_answers_unknown_audio_with_a_local_engine(synth, tmp_path, monkeypatch):
    import asyncio

    import httpx
    import soundfile as sf

    from mooer_data.providers.emulator import local_engine_answer
    from mooer_data.pseudolabel import build_provider
    from mooer_data.providers.stager import InlineStager
    from mooer_data.providers.types import AudioItem

    sentence = "the children are playing in the garden"
    grammar = tmp_path / "g.jsgf"
    grammar.write_text(f"#JSGF V1.0;\ngrammar g;\npublic <sentence> = {sentence};\n")
    path = tmp_path / "speech.wav"
    sf.write(path, synth.speech(sentence, "en"), 16000)
    emu = build_emulator(oracle=Oracle(engine=local_engine_answer("en", "pocketsphinx", {"jsgf": str(grammar)})), job_seconds=0.01)
    for name, value in client_environment(emu.start()).items():
        monkeypatch.setenv(name, value)
    try:
        provider = build_provider("asr", "openai")
        item = AudioItem("inhouse-x", path, sf.info(path).duration, "en")

        async def go():
            async with httpx.AsyncClient(timeout=30) as client:
                handle = await provider.submit(client, item, InlineStager().stage(item))
                return provider.parse(await provider.fetch(client, handle), item)

        transcript = asyncio.run(go())
    finally:
        emu.stop()
    assert transcript.text.strip().lower() == sentence


def test_translate_dry_run_sends_nothing(emulated, tmp_path):
    emu = emulated()
    manifest = mandarin_manifest(tmp_path / "in")
    lines = []
    result = translate_manifest(manifest, tmp_path / "out", TranslateConfig(provider="deepl", dry_run=True, show_progress=False), log=lines.append)
    assert result.segments == 12 and result.estimated_cost["deepl"] > 0
    assert not (tmp_path / "out").exists() and emu.billing.snapshot()["calls"] == {}
    assert any("would be sent" in line for line in lines)


def test_third_party_providers_plug_in_through_entry_points(monkeypatch):
    from importlib.metadata import EntryPoint

    from mooer_data.providers import registry
    from mooer_data.testing.fakes import PluginAsr

    plugin = EntryPoint(name="acme", value="mooer_data.testing.fakes:PluginAsr", group=registry.ENTRY_POINT_GROUP)
    monkeypatch.setattr(registry, "entry_points", lambda group: [plugin] if group == registry.ENTRY_POINT_GROUP else [])
    assert ("asr", "acme") in {(s.kind, s.name) for s in registry.all_specs()}
    assert registry.provider_class("asr", "acme") is PluginAsr
    with pytest.raises(ValueError, match="unknown asr provider 'nope'"):
        registry.provider_class("asr", "nope")


def test_verify_with_a_disagreeing_provider_flags_every_segment(corpus_factory, tmp_path, monkeypatch):
    from mooer_data.providers import registry

    monkeypatch.setitem(registry._EXTRA, ("asr", "fake"), registry.ProviderSpec("asr", "fake", "mooer_data.testing.fakes:FakeAsr"))
    result, quality = label_inhouse_with_verification(corpus_factory, tmp_path, monkeypatch, "fake")
    assert quality and all("disagrees" in q["flags"] and q["agreement_error"] > 0.3 for q in quality)
    assert result.flagged["disagrees"] == len(quality)
    # flagged, never deleted: every segment is still in the manifest
    assert len(pq.read_table(tmp_path / "out" / "segments.parquet")) == len(quality)

"""`mooer-infer`: the input readers, batching, decoding a generated MooER-layout checkpoint
for asr / ast / mtl, outputs and scores, and the command line end to end.

Audio is synthetic tones (fast); the model is the tiny MooER release that
``mooer_model.testing.make_tiny_mooer_release`` writes (random weights, real layout), so
hypotheses are arbitrary text: the tests check plumbing and invariants, not accuracy.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import soundfile as sf

from mooer_data.manifest import RECORDING_SCHEMA, SEGMENT_SCHEMA, write_table
from mooer_data.shard_format import FIXED_MTIME
from mooer_data.shards import ShardConfig, write_shards
from mooer_model.infer_inputs import (
    InputError, Rejected, Utterance, decode_bytes, detect_input_type, open_input, parse_wav_list, read_label_file,
)

RATE = 16000


def tone(seconds: float, seed: int, rate: int = RATE) -> np.ndarray:
    """A tone with a little noise, int16."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * rate))) / rate
    wave = 0.3 * np.sin(2 * np.pi * (180 + 37 * seed) * t) + 0.01 * rng.standard_normal(t.size)
    return np.round(wave * 32767).astype(np.int16)


def items_of(test_set) -> tuple[list[Utterance], list[Rejected]]:
    items = list(test_set.items())
    return [i for i in items if isinstance(i, Utterance)], [i for i in items if isinstance(i, Rejected)]


# --------------------------------------------------------------------------------------
# wav.scp
# --------------------------------------------------------------------------------------
def test_wav_scp_with_references_and_rejects(tmp_path):
    audio = {f"utt{n}": tone(0.5 + 0.25 * n, n) for n in range(3)}
    for key, samples in audio.items():
        sf.write(tmp_path / f"{key}.wav", samples, RATE, subtype="PCM_16")
    (tmp_path / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot audio")
    # a relative path is found from the list's directory; a missing file is a reject
    (tmp_path / "wav.scp").write_text("utt0 utt0.wav\nutt1 %s\nutt2 utt2.wav\nbad broken.wav\ngone nowhere.wav\n" % (tmp_path / "utt1.wav"))
    (tmp_path / "text").write_text("\ufeffutt0 今天天气很好\r\nutt2 hello world\n")
    assert detect_input_type(tmp_path / "wav.scp") == "wav-scp" and detect_input_type(tmp_path) == "wav-scp"

    [test_set] = open_input(tmp_path)
    utterances, rejects = items_of(test_set)
    assert [u.key for u in utterances] == ["utt0", "utt1", "utt2"]
    assert [u.text for u in utterances] == ["今天天气很好", None, "hello world"]
    for utterance in utterances:
        samples = utterance.read()
        assert samples.dtype == np.float32 and utterance.duration == pytest.approx(len(audio[utterance.key]) / RATE)
        np.testing.assert_array_equal(samples, audio[utterance.key].astype(np.float32) / 32768)
    assert [r.key for r in rejects] == ["bad", "gone"]
    assert "not-audio" in rejects[0].reason and "does not exist" in rejects[1].reason
    # for ast the label file is the translation reference
    [ast_set] = open_input(tmp_path / "wav.scp", task="ast")
    first = next(iter(ast_set.items()))
    assert (first.text, first.translation) == (None, "今天天气很好")


def test_plain_path_list_and_odd_lines(tmp_path):
    sf.write(tmp_path / "a.flac", tone(0.4, 1), RATE)
    (tmp_path / "list.txt").write_text(f"{tmp_path / 'a.flac'}\n")
    assert parse_wav_list(tmp_path / "list.txt") == [("a", tmp_path / "a.flac")]
    cases = {
        "u1 a.flac\nu2 x y.flac\n": "line 2: expected 'uttid path' (two fields), found 3 fields",
        "u1 a.flac\na.flac\n": "line 2: expected 'uttid path' like the first line",
        "a.flac\nu1 a.flac\n": "line 2: expected a single path like the first line",
        "u1 a.flac\n\nu1 b.flac\n": "line 3: expected each uttid once, found 'u1' again (first on line 1)",
        "u1 sox a.flac -t wav - |\n": "line 1: expected 'uttid path', found a Kaldi pipe command",
    }
    for content, message in cases.items():
        (tmp_path / "odd.scp").write_text(content)
        with pytest.raises(InputError, match=message.replace("(", "\\(").replace(")", "\\)")):
            open_input(tmp_path / "odd.scp")
    (tmp_path / "text").write_bytes(b"u1 \xff\xfe\n")
    with pytest.raises(InputError, match="expected UTF-8 text"):
        read_label_file(tmp_path / "text")
    with pytest.raises(InputError, match="found nothing there"):
        open_input(tmp_path / "absent")
    with pytest.raises(InputError, match="expected an input type among"):
        open_input(tmp_path / "list.txt", input_type="kaldi")


def test_label_files_split_on_the_first_run_of_spaces_or_tabs(tmp_path):
    (tmp_path / "text").write_text("utt1\tHELLO WORLD\nutt2  ni hao  ma\nutt3 \t 你好\tworld\nutt4\n")
    assert read_label_file(tmp_path / "text") == {"utt1": "HELLO WORLD", "utt2": "ni hao  ma", "utt3": "你好\tworld", "utt4": ""}


def test_one_audio_file_is_a_one_utterance_set(tmp_path):
    sf.write(tmp_path / "greeting.wav", tone(0.6, 2), RATE, subtype="PCM_16")
    sf.write(tmp_path / "other.FLAC", tone(0.3, 3), RATE)
    assert detect_input_type(tmp_path / "greeting.wav") == "audio"
    [test_set] = open_input(tmp_path / "greeting.wav")
    [utterance], rejects = items_of(test_set)
    assert (test_set.name, utterance.key, rejects) == ("greeting", "greeting", [])
    np.testing.assert_array_equal(utterance.read(), tone(0.6, 2).astype(np.float32) / 32768)
    [flac_set] = open_input(tmp_path / "other.FLAC")
    assert [u.key for u in items_of(flac_set)[0]] == ["other"]
    (tmp_path / "fake.mp3").write_bytes(b"not audio at all")
    [fake_set] = open_input(tmp_path / "fake.mp3")
    assert [r.key for r in items_of(fake_set)[1]] == ["fake"]  # a reject with its reason, not a text-parse error


# --------------------------------------------------------------------------------------
# manifests
# --------------------------------------------------------------------------------------
def write_manifest(directory: Path, root: Path, recordings: list[dict], segments: list[dict]) -> Path:
    roots = {"demo": str(root)}
    defaults = {"source": "demo", "subset": None, "speaker": None, "text_raw": None, "label_origin": "manual", "confidence": None}
    write_table(directory / "recordings.parquet", "recordings", pa.Table.from_pylist(recordings, schema=RECORDING_SCHEMA), roots)
    rows = [{**defaults, **s} for s in segments]
    write_table(directory / "segments.parquet", "segments", pa.Table.from_pylist(rows, schema=SEGMENT_SCHEMA), roots)
    return directory


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    """Two long recordings (16 kHz mono wav; 8 kHz stereo flac) cut into labelled segments."""
    root = tmp_path_factory.mktemp("audio")
    long16 = tone(6.0, 3)
    sf.write(root / "long.wav", long16, RATE, subtype="PCM_16")
    stereo = np.stack([tone(4.0, 4, 8000), tone(4.0, 5, 8000)], axis=1)
    sf.write(root / "stereo.flac", stereo, 8000)
    recordings = [
        {"id": "demo-long", "source": "demo", "path": "long.wav", "format": "wav", "sample_rate": RATE, "channels": 1, "duration": 6.0},
        {"id": "demo-stereo", "source": "demo", "path": "stereo.flac", "format": "flac", "sample_rate": 8000, "channels": 2, "duration": 4.0},
    ]
    segments = [
        {"id": "demo-long-a", "recording_id": "demo-long", "start": 0.5, "duration": 1.25, "split": "test", "language": "zh",
         "text": "今天天气很好", "translation": "The weather is nice today."},
        {"id": "demo-long-b", "recording_id": "demo-long", "start": 3.0, "duration": 2.0, "split": "test", "language": "en",
         "text": "HELLO WORLD", "translation": None},
        {"id": "demo-stereo-a", "recording_id": "demo-stereo", "start": 1.0, "duration": 2.0, "split": "dev", "language": "zh",
         "text": "我想喝茶", "translation": "I want tea."},
        {"id": "demo-orphan", "recording_id": "demo-none", "start": 0.0, "duration": 1.0, "split": "dev", "language": "zh",
         "text": "没有", "translation": None},
    ]
    directory = write_manifest(tmp_path_factory.mktemp("manifest"), root, recordings, segments)
    return directory, long16, stereo


def test_manifest_segments_are_cut_from_their_recordings(manifest):
    directory, long16, stereo = manifest
    assert detect_input_type(directory) == "manifest"
    dev, test = open_input(directory)
    assert (dev.name, test.name) == ("dev", "test")
    utterances, rejects = items_of(test)
    assert not rejects and [u.key for u in utterances] == ["demo-long-a", "demo-long-b"]
    # exactly the samples of the cut
    np.testing.assert_array_equal(utterances[0].read(), long16[8000 : 8000 + 20000].astype(np.float32) / 32768)
    np.testing.assert_array_equal(utterances[1].read(), long16[48000 : 48000 + 32000].astype(np.float32) / 32768)
    assert (utterances[0].language, utterances[0].text, utterances[0].translation) == ("zh", "今天天气很好", "The weather is nice today.")
    # 8 kHz stereo: downmixed and resampled to 16 kHz mono
    dev_utterances, dev_rejects = items_of(dev)
    samples = dev_utterances[0].read()
    assert samples.ndim == 1 and len(samples) == 2 * RATE
    expected = stereo[8000:24000].astype(np.float32).mean(axis=1) / 32768
    assert np.corrcoef(samples[::2], expected)[0, 1] > 0.99
    assert [r.key for r in dev_rejects] == ["demo-orphan"] and "demo-none" in dev_rejects[0].reason
    [only] = open_input(directory, split="test")
    assert only.name == "test"
    with pytest.raises(InputError, match="--split: expected a manifest or shard directory"):
        open_input(directory / "segments.parquet", input_type="wav-scp", split="test")
    with pytest.raises(InputError, match="expected a split among \\['dev', 'test'\\], found 'train'"):
        open_input(directory, split="train")


# --------------------------------------------------------------------------------------
# shards: ours, and MooER's test layout
# --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def shard_dir(manifest, tmp_path_factory):
    directory, _, _ = manifest
    out = tmp_path_factory.mktemp("shards")
    write_shards([directory], out, ShardConfig(shard_size=None, max_count=1, show_progress=False), log=lambda _: None)
    return out


def test_shard_dir_one_set_per_split(shard_dir, manifest):
    _, long16, _ = manifest
    assert detect_input_type(shard_dir) == "shards"
    sets = open_input(shard_dir)
    assert [s.name for s in sets] == ["dev", "test"]
    utterances, rejects = items_of(sets[1])
    assert not rejects and sorted(u.key for u in utterances) == ["demo-long-a", "demo-long-b"]
    by_key = {u.key: u for u in utterances}
    assert by_key["demo-long-a"].duration == pytest.approx(1.25)
    np.testing.assert_array_equal(by_key["demo-long-a"].read(), long16[8000:28000].astype(np.float32) / 32768)
    assert (by_key["demo-long-a"].language, by_key["demo-long-a"].translation) == ("zh", "The weather is nice today.")
    # a single shard, and a list of shards, read the same way
    one = sorted((shard_dir / "test").glob("shard-*.tar"))[0]
    [single] = open_input(one)
    assert len(items_of(single)[0]) == 1
    (shard_dir / "test.list").write_text("".join(f"{p}\n" for p in sorted((shard_dir / "test").glob("*.tar"))))
    [listed] = open_input(shard_dir / "test.list")
    assert listed.name == "test" and len(items_of(listed)[0]) == 2


def write_wenet_shard(path: Path, samples: dict[str, tuple[np.ndarray, str]], rate: int = RATE) -> Path:
    """A MooER/WeNet shard: ``<key>.txt`` + ``<key>.wav``, no json (make_shard_list.py)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as archive:
        for key, (audio, label) in samples.items():
            buffer = io.BytesIO()
            sf.write(buffer, audio, rate, format="WAV", subtype="PCM_16")
            for name, data in ((f"{key}.txt", label.encode()), (f"{key}.wav", buffer.getvalue())):
                info = tarfile.TarInfo(name)
                info.size, info.mtime = len(data), FIXED_MTIME
                archive.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture(scope="module")
def test_layout(tmp_path_factory):
    root = tmp_path_factory.mktemp("testsets")
    aishell = {"BAC009S0764W0121": (tone(1.0, 7), "甚至出现交易几乎停滞的情况"), "BAC009S0764W0122": (tone(1.5, 8), "一二线城市")}
    write_wenet_shard(root / "aishell1" / "shard_000.tar", aishell)
    (root / "aishell1" / "data.list").write_text(str(root / "aishell1" / "shard_000.tar") + "\n")
    (root / "aishell1" / "text").write_text("BAC009S0764W0121 甚至出现交易几乎停滞的情况\nBAC009S0764W0122 一二线城市房价\n")
    libri = {"1089-134686-0000": (tone(2.0, 9, 8000), "HE HOPED THERE WOULD BE STEW FOR DINNER")}
    write_wenet_shard(root / "librispeech_clean" / "shard_000.tar", libri, rate=8000)
    (root / "librispeech_clean" / "data.list").write_text("shard_000.tar\n")  # relative to the set
    (root / "notes").mkdir()  # a directory without data.list is not a test set
    return root, aishell, libri


def test_mooer_test_layout_reads_wenet_shards_and_text(test_layout):
    root, aishell, libri = test_layout
    assert detect_input_type(root) == "test-sets"
    aishell_set, libri_set = open_input(root)
    assert (aishell_set.name, libri_set.name) == ("aishell1", "librispeech_clean")
    utterances, rejects = items_of(aishell_set)
    assert not rejects and [u.key for u in utterances] == list(aishell)
    # the set's text file wins over the shard's txt member
    assert [u.text for u in utterances] == ["甚至出现交易几乎停滞的情况", "一二线城市房价"]
    np.testing.assert_array_equal(utterances[0].read(), aishell["BAC009S0764W0121"][0].astype(np.float32) / 32768)
    [libri_utt], _ = items_of(libri_set)
    assert libri_utt.text == "HE HOPED THERE WOULD BE STEW FOR DINNER" and libri_utt.duration == pytest.approx(2.0)
    assert len(libri_utt.read()) == 2 * RATE  # 8 kHz resampled to 16 kHz


def test_a_corrupt_shard_is_a_rejected_row_not_a_crash(tmp_path, test_layout):
    root, _, _ = test_layout
    good = root / "aishell1" / "shard_000.tar"
    truncated = tmp_path / "cut.tar"
    truncated.write_bytes(good.read_bytes()[:3000])  # inside the first wav member
    (tmp_path / "data.list").write_text(f"{truncated}\n{good}\n{tmp_path / 'missing.tar'}\n")
    [test_set] = open_input(tmp_path / "data.list")
    utterances, rejects = items_of(test_set)
    assert len(utterances) >= 2
    assert [r.key for r in rejects] == [str(truncated), str(tmp_path / "missing.tar")]
    assert "truncated or corrupt" in rejects[0].reason and "does not exist" in rejects[1].reason
    (tmp_path / "bad.list").write_text("shard.tar\nnot-a-shard.txt\n")
    with pytest.raises(InputError, match="bad.list line 2: expected a shard path ending in .tar, found 'not-a-shard.txt'"):
        open_input(tmp_path / "bad.list", input_type="shards")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="expected wav.scp, segments.parquet.*found an empty directory"):
        open_input(tmp_path / "empty")


def test_decode_bytes_downmixes_and_resamples():
    buffer = io.BytesIO()
    stereo = np.stack([tone(1.0, 1, 22050), tone(1.0, 1, 22050)], axis=1)
    sf.write(buffer, stereo, 22050, format="FLAC")
    samples = decode_bytes(buffer.getvalue())
    assert samples.dtype == np.float32 and len(samples) == RATE


# --------------------------------------------------------------------------------------
# batching
# --------------------------------------------------------------------------------------
from mooer_model.infer import (  # noqa: E402
    HYP_AST_FILE, HYP_FILE, MIN_SAMPLES, REJECTS_FILE, RESULTS_FILE, RUN_FILE, SCORES_JSON, SCORES_MD, TASK_DIRS,
    DecodeConfig, check_model_dir, decode_set, load_model, plan_batches, read_jsonl, run_inference, transcribe_waveforms,
)
from mooer_model.infer_inputs import TestSet  # noqa: E402
from mooer_model.prompts import split_mtl_output  # noqa: E402


def test_batches_are_longest_first_within_count_and_budget():
    durations = [1.0, 29.0, 3.0, 2.0, 10.0, 10.0, 0.5, 7.0]
    batches = plan_batches(durations, batch_size=3, max_batch_seconds=30.0)
    assert sorted(i for batch in batches for i in batch) == list(range(len(durations)))
    flat = [durations[i] for batch in batches for i in batch]
    assert flat == sorted(durations, reverse=True)
    for batch in batches:
        assert len(batch) <= 3 and len(batch) * max(durations[i] for i in batch) <= 30.0
    assert batches[0] == [1]  # 29 s alone: a second one would pass the budget
    assert plan_batches([40.0], 10, 30.0) == [[0]]  # an item over the budget still gets a batch
    with pytest.raises(ValueError, match="batch_size: expected a positive integer, found 0"):
        DecodeConfig(batch_size=0)
    with pytest.raises(ValueError, match="expected a task among asr, ast, mtl, found 'asr_ast'"):
        DecodeConfig(task="asr_ast")


# --------------------------------------------------------------------------------------
# a generated MooER-layout checkpoint
# --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """The tiny MooER 2024 layout with all three task directories; ast's adapter differs
    from asr's, so loading the wrong task directory shows."""
    import shutil

    import torch

    from mooer_model.testing import make_tiny_mooer_release

    release_dir, llm_dir = make_tiny_mooer_release(tmp_path_factory.mktemp("mooer"))
    for task_dir in ("ast", "asr_ast_mtl"):
        shutil.copytree(release_dir / "asr", release_dir / task_dir)
    project = torch.load(release_dir / "ast" / "adapter_project.pt", weights_only=True)
    torch.save({key: value + 0.5 for key, value in project.items()}, release_dir / "ast" / "adapter_project.pt")
    return release_dir, llm_dir


@pytest.fixture(scope="module")
def asr_model(release):
    return load_model(*release, task="asr", device="cpu")


GREEDY = dict(num_beams=1, max_new_tokens=8, eos_bias=0.0)


def waves(*seconds: float) -> list[np.ndarray]:
    return [tone(s, n).astype(np.float32) / 32768 for n, s in enumerate(seconds)]


def test_release_loads_the_task_directory_and_decodes_asr_ast_mtl(release, asr_model):
    import torch

    from mooer_model.model import GenerationSettings

    release_dir, llm_dir = release
    settings = GenerationSettings(**GREEDY)
    for task in ("asr", "ast", "mtl"):
        model = asr_model if task == "asr" else load_model(release_dir, llm_dir, task=task, device="cpu")
        assert model.config.init_task == TASK_DIRS[task]
        saved = torch.load(release_dir / TASK_DIRS[task] / "adapter_project.pt", weights_only=True)
        assert torch.equal(model.encoder_projector.linear1.weight, saved["encoder_projector.linear1.weight"])
        assert model.config.llm.dtype == "float32"  # auto on the CPU
        seen = []
        original = model.generate
        model.generate = lambda feats, lengths, task_, settings_: seen.append(task_) or original(feats, lengths, task_, settings_)
        try:
            outputs = transcribe_waveforms(model, waves(1.0, 1.6, 0.7), task, settings)
        finally:
            del model.generate
        assert len(outputs) == 3 and all(isinstance(o, str) for o in outputs) and seen == [task]
    # a task directory given directly works too (paraformer_encoder/ found beside it)
    direct = load_model(release_dir / "asr", llm_dir, device="cpu")
    assert direct.config.init_task == "asr"


def test_an_export_carries_its_model_and_decodes_the_same(asr_model, tmp_path):
    from mooer_model.model import GenerationSettings
    from mooer_model.release import export_release

    exported = export_release(asr_model, tmp_path / "export")
    reloaded = load_model(exported, device="cpu")  # no --llm-dir: mooer-model.json names it
    settings = GenerationSettings(**GREEDY)
    batch = waves(1.1, 0.7)
    assert transcribe_waveforms(reloaded, batch, "asr", settings) == transcribe_waveforms(asr_model, batch, "asr", settings)


def test_batched_decoding_equals_one_at_a_time(asr_model):
    from mooer_model.model import GenerationSettings

    settings = GenerationSettings(**GREEDY)
    batch = waves(1.8, 0.6, 1.2, 0.9)
    together = transcribe_waveforms(asr_model, batch, "asr", settings)
    alone = [transcribe_waveforms(asr_model, [wave], "asr", settings)[0] for wave in batch]
    assert together == alone
    with pytest.raises(ValueError, match=f"expected waveforms of at least {MIN_SAMPLES} samples"):
        transcribe_waveforms(asr_model, [np.zeros(100, np.float32)], "asr", settings)


def test_generation_settings_reach_generate(asr_model):
    from mooer_model.model import GenerationSettings

    calls = []
    original = asr_model.llm.generate

    def spy(*args, **kwargs):
        output = original(*args, **kwargs)
        sequences = output if hasattr(output, "shape") else output.sequences
        calls.append((kwargs["generation_config"], sequences.shape[1]))
        return output

    asr_model.llm.generate = spy
    try:
        transcribe_waveforms(asr_model, waves(1.0, 0.8), "asr", GenerationSettings(max_new_tokens=1))
        transcribe_waveforms(asr_model, waves(1.0), "asr", GenerationSettings(num_beams=1, max_new_tokens=5, eos_bias=-1.5))
    finally:
        del asr_model.llm.generate
    (four, new_tokens), (one, _) = calls
    assert new_tokens <= 1  # max_new_tokens=1 yields at most one token
    assert (four.num_beams, four.max_new_tokens, four.length_penalty) == (4, 1, 0.8)
    eos = asr_model.tokenizer.eos_token_id
    assert four.sequence_bias == {(eos,): -0.2}
    assert (one.num_beams, one.max_new_tokens, one.sequence_bias) == (1, 5, {(eos,): -1.5})


def test_decode_set_rejects_with_reasons_and_keeps_input_order(asr_model):
    from mooer_model.model import GenerationSettings

    audio = {key: tone(seconds, n).astype(np.float32) / 32768 for n, (key, seconds) in enumerate([("a", 0.6), ("b", 1.4), ("c", 1.0)])}

    def broken() -> np.ndarray:
        raise RuntimeError("Error opening 'x.wav': Format not recognised")

    items = [
        Utterance("a", 0.6, lambda: audio["a"], text="今天"),
        Rejected("gone", "missing-audio: audio file gone.wav does not exist"),
        Utterance("long", 31.0, lambda: np.zeros(31 * RATE, np.float32)),
        Utterance("b", 1.4, lambda: audio["b"], translation="hello"),
        Utterance("bad", 1.0, broken),
        Utterance("tiny", 0.05, lambda: np.zeros(800, np.float32)),
        Utterance("liar", 2.0, lambda: np.zeros(32 * RATE, np.float32)),  # its header said 2 s
        Utterance("c", 1.0, lambda: audio["c"], language="zh"),
        Utterance("a", 0.6, lambda: audio["a"]),  # the same key again (two shards of one set)
    ]
    warnings = []
    output = decode_set(asr_model, TestSet("demo", lambda: iter(items)), DecodeConfig(batch_size=2, sort_window=3, show_progress=False),
                        GenerationSettings(**GREEDY), log=warnings.append)
    assert [row["key"] for row in output.rows] == ["a", "b", "c"]
    assert output.rows[0] == {"key": "a", "task": "asr", "hyp": output.rows[0]["hyp"], "ref": "今天", "ref_translation": None,
                              "language": None, "duration": 0.6}
    reasons = {r["key"]: r["reason"] for r in output.rejects}
    assert sorted(r["key"] for r in output.rejects) == ["a", "bad", "gone", "liar", "long", "tiny"]
    assert reasons["a"].startswith("duplicate key")
    assert reasons["long"].startswith("too long: 31.00 s, expected at most 30 s")
    assert reasons["liar"].startswith("too long: 32.00 s of audio")
    assert reasons["bad"].startswith("audio unreadable: RuntimeError: Error opening")
    assert reasons["tiny"].startswith("too short: 0.050 s")
    assert len(warnings) == 6 and all(w.startswith("warning: demo: skipping ") for w in warnings)


# --------------------------------------------------------------------------------------
# files, reruns, scores
# --------------------------------------------------------------------------------------
def test_run_writes_results_and_a_rerun_reuses_finished_sets(release, manifest, tmp_path):
    from mooer_model.model import GenerationSettings

    release_dir, llm_dir = release
    directory, _, _ = manifest
    loads, cache = [], []

    def get_model():
        loads.append(1)
        cache[:] = cache or [load_model(release_dir, llm_dir, task="mtl", device="cpu")]
        return cache[0]

    settings = GenerationSettings(**GREEDY)
    config = DecodeConfig(task="mtl", show_progress=False)
    logged = []
    result = run_inference(open_input(directory, task="mtl"), get_model, tmp_path, config, settings,
                           fingerprint={"source": str(directory)}, log=logged.append)
    assert loads == [1] and [s.name for s in result.sets] == ["dev", "test"]
    test_dir = tmp_path / "test"
    rows = read_jsonl(test_dir / RESULTS_FILE)
    assert [r["key"] for r in rows] == ["demo-long-a", "demo-long-b"]
    assert set(rows[0]) == {"key", "task", "hyp", "asr", "ast", "ref", "ref_translation", "language", "duration"}
    assert rows[0]["ref_translation"] == "The weather is nice today." and rows[0]["task"] == "mtl"
    assert all((r["asr"], r["ast"]) == split_mtl_output(r["hyp"]) for r in rows)
    hyp_lines = (test_dir / HYP_FILE).read_text(encoding="utf-8").splitlines()
    assert [line.split(" ")[0] for line in hyp_lines] == ["demo-long-a", "demo-long-b"]
    assert len((test_dir / HYP_AST_FILE).read_text(encoding="utf-8").splitlines()) == 2
    assert [r["key"] for r in read_jsonl(tmp_path / "dev" / REJECTS_FILE)] == ["demo-orphan"]
    assert not list(tmp_path.rglob("*.tmp"))
    # mtl scores both halves: CER and WER rows from the transcripts, BLEU from the translations
    scores = json.loads((tmp_path / SCORES_JSON).read_text())
    metrics = {(s["test_set"], s["metric"]) for s in scores["scores"]}
    assert metrics == {("dev", "CER"), ("dev", "BLEU"), ("test", "CER"), ("test", "WER"), ("test", "BLEU")}
    bleu_test = next(s for s in scores["scores"] if (s["test_set"], s["metric"]) == ("test", "BLEU"))
    assert (bleu_test["utterances"], bleu_test["unscored"]) == (1, 1)
    assert "| test | WER |" in (tmp_path / SCORES_MD).read_text()
    assert any(line.startswith("test") and " WER " in line for line in logged)

    first = (test_dir / RESULTS_FILE).read_bytes()
    again = run_inference(open_input(directory, task="mtl"), get_model, tmp_path, config, settings,
                          fingerprint={"source": str(directory)}, log=logged.append)
    assert loads == [1] and all(s.reused for s in again.sets) and again.scores == result.scores
    # other settings decode again, and give the same bytes for the same decode
    other = GenerationSettings(**{**GREEDY, "max_new_tokens": 3})
    run_inference(open_input(directory, task="mtl"), get_model, tmp_path, config, other, fingerprint={"source": str(directory)},
                  log=logged.append)
    assert loads == [1, 1] and json.loads((test_dir / RUN_FILE).read_text())["settings"]["max_new_tokens"] == 3
    run_inference(open_input(directory, task="mtl"), get_model, tmp_path, config, settings, fingerprint={"source": str(directory)},
                  log=logged.append, overwrite=True)
    assert loads == [1, 1, 1] and (test_dir / RESULTS_FILE).read_bytes() == first


def test_check_model_dir_names_what_is_missing(release, tmp_path):
    from mooer_model.errors import CheckpointError

    release_dir, llm_dir = release
    check_model_dir(release_dir, llm_dir, "ast")
    with pytest.raises(CheckpointError, match="without its LLM: expected llm_dir"):
        check_model_dir(release_dir, None)
    with pytest.raises(CheckpointError, match="expected the LLM directory .* found no directory"):
        check_model_dir(release_dir, tmp_path / "qwen")
    with pytest.raises(CheckpointError, match="expected a release root holding asr/ or a task directory"):
        check_model_dir(tmp_path, llm_dir)
    with pytest.raises(ValueError, match="expected a task among asr, ast, mtl, found 's2s'"):
        check_model_dir(release_dir, llm_dir, "s2s")


# --------------------------------------------------------------------------------------
# the command line
# --------------------------------------------------------------------------------------
def test_cli_end_to_end_on_a_shard_dir(release, shard_dir, tmp_path):
    from typer.testing import CliRunner

    from mooer_model.infer_cli import app

    release_dir, llm_dir = release
    runner = CliRunner()
    common = ["--model-dir", str(release_dir), "--llm-dir", str(llm_dir), "--device", "cpu", "--beams", "1",
              "--max-new-tokens", "6", "--quiet"]
    result = runner.invoke(app, [str(shard_dir), "--out", str(tmp_path / "out"), *common])
    assert result.exit_code == 0, result.output
    for split, count in (("dev", 1), ("test", 2)):
        rows = read_jsonl(tmp_path / "out" / split / RESULTS_FILE)
        assert len(rows) == count and all(set(r) == {"key", "task", "hyp", "ref", "ref_translation", "language", "duration"} for r in rows)
        assert len((tmp_path / "out" / split / HYP_FILE).read_text(encoding="utf-8").splitlines()) == count
        assert json.loads((tmp_path / "out" / split / RUN_FILE).read_text())["settings"]["num_beams"] == 1
    scores = json.loads((tmp_path / "out" / SCORES_JSON).read_text())
    assert set(scores) == {"task", "scores", "averages"} and scores["task"] == "asr"
    rows = {(s["test_set"], s["metric"]): s for s in scores["scores"]}
    assert set(rows) == {("dev", "CER"), ("test", "CER"), ("test", "WER")}
    assert rows[("test", "CER")]["utterances"] == 1 and rows[("test", "WER")]["utterances"] == 1
    assert set(rows[("dev", "CER")]) == {"test_set", "metric", "value", "utterances", "language", "errors", "reference_tokens", "unscored"}
    assert "dev                      CER" in result.output

    # --ref replaces the references; --language forces CER
    (tmp_path / "ref").write_text("demo-long-a 今天\ndemo-long-b 你好\n")
    result = runner.invoke(app, [str(shard_dir), "--out", str(tmp_path / "ref-out"), "--split", "test", "--ref", str(tmp_path / "ref"),
                                 "--language", "zh", *common])
    assert result.exit_code == 0, result.output
    refs = [r["ref"] for r in read_jsonl(tmp_path / "ref-out" / "test" / RESULTS_FILE)]
    assert sorted(refs) == ["今天", "你好"]
    assert [(s["metric"], s["utterances"]) for s in json.loads((tmp_path / "ref-out" / SCORES_JSON).read_text())["scores"]] == [("CER", 2)]


def test_cli_decodes_again_after_a_reexport_or_a_rewritten_input(release, tmp_path):
    import shutil

    import torch
    from typer.testing import CliRunner

    from mooer_model.infer_cli import app

    release_dir, llm_dir = release
    model_dir = shutil.copytree(release_dir, tmp_path / "model")
    audio = tmp_path / "clip.wav"
    sf.write(audio, tone(0.5, 4), RATE, subtype="PCM_16")
    arguments = [str(audio), "--out", str(tmp_path / "out"), "--model-dir", str(model_dir), "--llm-dir", str(llm_dir),
                 "--device", "cpu", "--beams", "1", "--max-new-tokens", "4", "--quiet", "--no-score"]

    def decode() -> str:
        result = CliRunner().invoke(app, arguments)
        assert result.exit_code == 0, result.output
        return result.output

    assert "reusing" not in decode()
    assert "clip: reusing 1 results" in decode()  # nothing changed
    adapter = model_dir / "asr" / "adapter_project.pt"  # a re-export into the same --model-dir
    project = torch.load(adapter, weights_only=True)
    torch.save({key: value + 0.25 for key, value in project.items()}, adapter)
    assert "reusing" not in decode()
    assert "clip: reusing 1 results" in decode()
    sf.write(audio, tone(0.7, 5), RATE, subtype="PCM_16")  # a regenerated input
    assert "reusing" not in decode()


@pytest.mark.parametrize("arguments, message", [
    (["{missing}"], "found nothing there"),
    (["{shards}", "--task", "translate"], "expected a task among asr, ast, mtl, found 'translate'"),
    (["{shards}", "--language", "fr"], "--language: expected one of auto, zh, en, found 'fr'"),
    (["{shards}", "--ref-translation", "{shards}"], "--ref-translation: expected --task mtl"),
    (["{shards}", "--no-llm"], "without its LLM: expected llm_dir"),
    (["{shards}", "--input-type", "manifest"], "expected recordings.parquet and/or segments.parquet"),
])
def test_cli_bad_input_exits_2_with_a_message(release, shard_dir, tmp_path, arguments, message):
    from typer.testing import CliRunner

    from mooer_model.infer_cli import app

    release_dir, llm_dir = release
    arguments = [a.format(missing=tmp_path / "nowhere", shards=shard_dir) for a in arguments]
    llm = [] if "--no-llm" in arguments else ["--llm-dir", str(llm_dir)]
    arguments = [a for a in arguments if a != "--no-llm"]
    result = CliRunner().invoke(app, [*arguments, "--model-dir", str(release_dir), *llm, "--out", str(tmp_path / "out"), "--quiet"])
    assert result.exit_code == 2, result.output
    assert "error: " in result.output and message in result.output

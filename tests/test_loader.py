"""The loader (mooer_model/data.py): shards → MooER batches, exactly once, in order, resumable.

Shards are generated here in the shard format (mooer_data/shard_format.py): sorted members
with a fixed mtime, 16 kHz mono 16-bit audio, ``<id>.txt`` and ``<id>.json``, optionally
``<id>.npy`` features; audio is synthetic tones (fast) or real espeak-ng speech (cached).
"""

from __future__ import annotations

import io
import itertools
import json
import math
import tarfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf
import torch

from mooer_data.shard_format import FIXED_MTIME, ShardError
from mooer_model import prompts
from mooer_model.data import (
    AUDIO_PLACEHOLDER, IGNORE_INDEX, LoaderConfig, bucket_batches, lfr_frames, make_loader, padding_ratio,
)
from mooer_model.frontend import Frontend, apply_lfr, fbank
from mooer_model.testing_cmvn import write_am_mvn
from mooer_model.tokenizer_testing import build_test_tokenizer

RATE = 16000


# --------------------------------------------------------------------------------------
# Fixture builders
# --------------------------------------------------------------------------------------
def tone(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * RATE))) / RATE
    wave = 0.3 * np.sin(2 * np.pi * (200 + 40 * (seed % 17)) * t) + 0.01 * rng.standard_normal(t.size)
    return np.round(wave * 32767).astype(np.int16)


def lfr_features(audio: np.ndarray) -> np.ndarray:
    """fbank + LFR before CMVN, float16 [T_lfr, 560] (what `mooer-data shard --features fbank-lfr` stores)."""
    feats, frames = fbank(torch.from_numpy(audio.astype(np.float32) / 32768.0)[None], torch.tensor([len(audio)]))
    lfr, lengths = apply_lfr(feats, frames)
    return lfr[0, : int(lengths[0])].numpy().astype(np.float16)


def _add(archive: tarfile.TarFile, name: str, data: bytes, **info_fields) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), FIXED_MTIME, 0o644
    for key, value in info_fields.items():
        setattr(info, key, value)
    archive.addfile(info, io.BytesIO(data) if info.isfile() else None)


def write_shard(path: Path, samples: list[dict], audio_format: str = "flac", features: bool = False) -> Path:
    """samples: dicts with id, audio (int16), text, and optionally translation / language."""
    members = {}
    for sample in samples:
        key, audio = sample["id"], sample["audio"]
        buffer = io.BytesIO()
        sf.write(buffer, audio, RATE, format=audio_format.upper(), subtype="PCM_16")
        members[f"{key}.{audio_format}"] = buffer.getvalue()
        meta = {"id": key, "language": sample.get("language", "zh"), "text": sample["text"],
                "translation": sample.get("translation"), "duration": len(audio) / RATE, "num_samples": len(audio)}
        members[f"{key}.json"] = json.dumps(meta, ensure_ascii=False, sort_keys=True).encode()
        members[f"{key}.txt"] = sample["text"].encode()
        if features:
            npy = io.BytesIO()
            np.save(npy, lfr_features(audio))
            members[f"{key}.npy"] = npy.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as archive:
        for name in sorted(members):
            _add(archive, name, members[name])
    return path


def tone_corpus(root: Path, shards: int, per_shard: int, seed: int = 0, audio_format: str = "flac",
                extra: list[dict] | None = None) -> tuple[Path, dict[str, dict]]:
    """``root/train/shard-00000N.tar`` of tones 0.5–4 s; returns the dir and the samples by id."""
    rng = np.random.default_rng(seed)
    everything = {}
    for shard in range(shards):
        samples = []
        for n in range(per_shard):
            key = f"tone-{shard:02d}-{n:03d}"
            samples.append({"id": key, "audio": tone(float(rng.uniform(0.5, 4.0)), shard * 1000 + n),
                            "text": f"TONE▁{shard}▁{n}", "translation": f"tone {shard} {n}"})
        if shard == 0 and extra:
            samples.extend(extra)
        samples.sort(key=lambda s: s["id"])
        write_shard(root / "train" / f"shard-{shard:06d}.tar", samples, audio_format)
        everything.update({s["id"]: s for s in samples})
    return root, everything


@pytest.fixture(scope="module")
def tokenizer():
    return build_test_tokenizer()


@pytest.fixture(scope="module")
def cmvn(tmp_path_factory):
    """A seeded, non-trivial am.mvn (shift in [-16, -8], scale in [0.1, 0.4])."""
    path = tmp_path_factory.mktemp("cmvn") / "am.mvn"
    write_am_mvn(path, seed=0)
    return path


EXTRA = [  # filtered by the default 0.2–20 s window
    {"id": "tone-00-short", "audio": tone(0.1, 7), "text": "SHORT"},
    {"id": "tone-00-long", "audio": tone(20.5, 8), "text": "LONG"},
]


@pytest.fixture(scope="module")
def tones(tmp_path_factory):
    return tone_corpus(tmp_path_factory.mktemp("tones"), shards=8, per_shard=6, extra=EXTRA)


def config(shards, cmvn, **overrides) -> LoaderConfig:
    options = dict(shards=shards, cmvn_file=cmvn, max_frames=400, num_buckets=3, bins_estimate=16,
                   shuffle_buffer=8, num_workers=2, seed=3)
    options.update(overrides)
    return LoaderConfig(**options)


def keys_of(batches) -> list[list[str]]:
    return [list(batch["keys"]) for batch in batches]


SPEECH = [
    ("今天天气很好我们去公园散步吧", "zh", "The weather is nice today, let's walk in the park."),
    ("THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG", "en", "The quick brown fox jumps over the lazy dog."),
    ("我想喝一杯热茶", "zh", "I would like a cup of hot tea."),
    ("PLEASE OPEN THE WINDOW", "en", "Please open the window."),
    ("北京是中国的首都", "zh", "Beijing is the capital of China."),
    ("THIS QUESTION IS HARD TO ANSWER", "en", "This question is hard to answer."),
]


@pytest.fixture(scope="module")
def speech_shards(tmp_path_factory, synth):
    """Real speech (espeak-ng), in shards with precomputed features as well as audio."""
    root = tmp_path_factory.mktemp("speech")
    samples = []
    for n, (text, language, translation) in enumerate(SPEECH):
        spoken = text if language == "zh" else text.lower()
        samples.append({"id": f"speech-{n:03d}", "audio": synth.speech(spoken, language), "language": language,
                        "text": text.replace(" ", "▁"), "translation": translation})
    write_shard(root / "train" / "shard-000000.tar", samples[:3], features=True)
    write_shard(root / "train" / "shard-000001.tar", samples[3:], features=True)
    return root, {s["id"]: s for s in samples}


# --------------------------------------------------------------------------------------
# Exactly once, determinism, resampling
# --------------------------------------------------------------------------------------
def test_every_segment_exactly_once_across_2_ranks_x_2_workers(tones, cmvn, tokenizer):
    root, samples = tones
    per_rank, skipped = [], {}
    for rank in range(2):
        loader = make_loader(config(root, cmvn, rank=rank, world_size=2, num_workers=2), tokenizer)
        batches = list(loader)
        for batch in batches:  # the frame budget holds, padding included
            assert batch["audio_features"].shape[0] * batch["audio_features"].shape[1] <= 400
            assert batch["audio_features"].shape[1] == int(batch["audio_lengths"].max())
        per_rank.append([key for batch in batches for key in batch["keys"]])
        for reason, count in loader.skipped().items():
            skipped[reason] = skipped.get(reason, 0) + count
    assert skipped == {"too_short": 1, "too_long": 1}  # counted, not dropped silently
    everything = per_rank[0] + per_rank[1]
    assert len(everything) == len(set(everything)), "a segment came twice"
    assert set(per_rank[0]).isdisjoint(per_rank[1])
    assert set(everything) == set(samples) - {"tone-00-short", "tone-00-long"}


def test_same_seed_same_batches_and_each_epoch_its_own_order(tones, cmvn, tokenizer):
    root, _ = tones
    first = make_loader(config(root, cmvn), tokenizer)
    second = make_loader(config(root, cmvn), tokenizer)
    a0, b0 = list(first), list(second)
    assert keys_of(a0) == keys_of(b0)
    for x, y in zip(a0, b0):
        for name in ("input_ids", "attention_mask", "labels", "audio_features", "audio_lengths"):
            assert torch.equal(x[name], y[name]), name
    a1 = keys_of(first)  # the next iteration is epoch 1
    assert first.epoch == 1
    assert sorted(sum(a1, [])) == sorted(sum(keys_of(a0), []))
    assert sum(a1, []) != sum(keys_of(a0), []), "epoch 1 repeated epoch 0's order"
    second.set_epoch(1)
    assert keys_of(second) == a1
    other_seed = make_loader(config(root, cmvn, seed=4), tokenizer)
    assert sum(keys_of(other_seed), []) != sum(keys_of(a0), [])


def test_resampled_mode_keeps_yielding(tones, cmvn, tokenizer):
    root, samples = tones
    epoch_batches = len(list(make_loader(config(root, cmvn, features="waveform"), tokenizer)))
    loader = make_loader(config(root, cmvn, features="waveform", resampled=True), tokenizer)
    batches = list(itertools.islice(iter(loader), 3 * epoch_batches))
    assert len(batches) == 3 * epoch_batches
    assert {key for batch in batches for key in batch["keys"]} <= set(samples)
    # A rank that would get no shard in epoch mode still gets data when resampling.
    one = [sorted((root / "train").glob("*.tar"))[0]]
    lonely = make_loader(config(one, cmvn, features="waveform", resampled=True, rank=1, world_size=2, num_workers=0), tokenizer)
    assert len(list(itertools.islice(iter(lonely), 5))) == 5


def test_a_rank_without_shards_is_an_error_naming_it(tones, cmvn, tokenizer, caplog):
    root, _ = tones
    one = [sorted((root / "train").glob("*.tar"))[0]]
    with pytest.raises(ValueError, match=r"rank 0: 1 shard\(s\) cannot feed 2 ranks; ranks 1..1 would get no shard"):
        make_loader(config(one, cmvn, rank=0, world_size=2), tokenizer)
    # Fewer shards than workers only idles a worker, with a warning; data still comes once.
    two = sorted((root / "train").glob("*.tar"))[:2]
    with caplog.at_level("WARNING", logger="mooer_model.data"):
        loader = make_loader(config(two, cmvn, rank=1, world_size=2, num_workers=2, features="waveform"), tokenizer)
    assert "rank 1 has 1 shard(s) for 2 workers: 1 worker(s) get none and idle" in caplog.text
    keys = [key for batch in loader for key in batch["keys"]]
    assert len(keys) == len(set(keys)) == 6


def test_idle_ranks_allowed_for_evaluation_get_no_batches(tones, cmvn, tokenizer):
    # A one-shard dev split on two ranks: evaluation accepts it; rank 1 reads nothing, rank 0 everything.
    root, samples = tones
    one = [sorted((root / "train").glob("*.tar"))[0]]
    idle = make_loader(config(one, cmvn, rank=1, world_size=2, num_workers=2, features="waveform"), tokenizer,
                       allow_idle_ranks=True)
    assert list(idle) == []
    alone = make_loader(config(one, cmvn, rank=0, world_size=2, num_workers=0, features="waveform"), tokenizer,
                        allow_idle_ranks=True)
    everything = make_loader(config(one, cmvn, num_workers=0, features="waveform"), tokenizer)
    keys = sorted(key for batch in alone for key in batch["keys"])
    assert keys and keys == sorted(key for batch in everything for key in batch["keys"])


def test_ast_and_mtl_skip_and_count_samples_without_their_labels(tmp_path, cmvn, tokenizer):
    extra = [{"id": "tone-00-notrans", "audio": tone(1.0, 5), "text": "NO▁TRANSLATION"},
             {"id": "tone-00-notext", "audio": tone(1.0, 6), "text": "", "translation": "no text"}]
    root, samples = tone_corpus(tmp_path, shards=1, per_shard=3, extra=extra)
    regular = {key for key in samples if key[-1].isdigit()}
    for task, kept, skipped in (("asr", regular | {"tone-00-notrans"}, {"no_text": 1}),
                                ("ast", regular | {"tone-00-notext"}, {"no_translation": 1}),
                                ("mtl", regular, {"no_text": 1, "no_translation": 1})):
        loader = make_loader(config(root, cmvn, task=task, num_workers=0, features="waveform"), tokenizer)
        assert {key for batch in loader for key in batch["keys"]} == kept, task
        assert loader.skipped() == skipped, task


# --------------------------------------------------------------------------------------
# Compatibility: webdataset, WeNet
# --------------------------------------------------------------------------------------
def test_plain_webdataset_reads_our_shards(tones):
    import webdataset as wds

    root, samples = tones
    paths = [str(p) for p in sorted((root / "train").glob("*.tar"))]
    seen = {}
    for sample in wds.WebDataset(paths, shardshuffle=False, empty_check=False):
        seen[sample["__key__"]] = sample
    assert set(seen) == set(samples)
    for key, sample in seen.items():
        audio, rate = sf.read(io.BytesIO(sample["flac"]), dtype="int16")
        assert rate == RATE and np.array_equal(audio, samples[key]["audio"])
        assert json.loads(sample["json"])["id"] == key and sample["txt"].decode() == samples[key]["text"]


def wenet_samples(path: Path):
    """WeNet's tar_file_and_group: consecutive members grouped by the name up to its LAST dot."""
    example, prefix = {}, None
    with tarfile.open(path, "r|*") as archive:
        for member in archive:
            name = member.name
            stem, postfix = name[: name.rfind(".")], name[name.rfind(".") + 1:]
            if prefix is not None and stem != prefix:
                yield example
                example = {}
            prefix = stem
            data = archive.extractfile(member).read()
            example["key"] = stem
            if postfix == "txt":
                example["txt"] = data.decode("utf8").strip()
            elif postfix == "wav":
                example["wav"], example["sample_rate"] = sf.read(io.BytesIO(data), dtype="int16")
            else:
                example[postfix] = data
    if prefix is not None:
        yield example


def test_wenet_style_reader_reads_wav_shards(tmp_path, cmvn, tokenizer):
    root, samples = tone_corpus(tmp_path, shards=2, per_shard=4, audio_format="wav")
    seen = {}
    for path in sorted((root / "train").glob("*.tar")):
        for example in wenet_samples(path):
            seen[example["key"]] = example
    assert set(seen) == set(samples)
    for key, example in seen.items():
        assert example["sample_rate"] == RATE and np.array_equal(example["wav"], samples[key]["audio"])
        assert example["txt"] == samples[key]["text"]
    # and our own loader reads the wav shards too
    loader = make_loader(config(root, cmvn, num_workers=0), tokenizer)
    assert {key for batch in loader for key in batch["keys"]} == set(samples)


# --------------------------------------------------------------------------------------
# Unsafe tars
# --------------------------------------------------------------------------------------
def unsafe_shard(path: Path, kind: str) -> Path:
    good = io.BytesIO()
    sf.write(good, tone(1.0, 1), RATE, format="FLAC", subtype="PCM_16")
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as archive:
        _add(archive, "ok-0001.flac", good.getvalue())
        _add(archive, "ok-0001.json", b'{"id": "ok-0001", "text": "OK"}')
        _add(archive, "ok-0001.txt", b"OK")
        if kind == "absolute":
            _add(archive, "/tmp/evil.txt", b"x")
        elif kind == "parent":
            _add(archive, "../evil.txt", b"x")
        elif kind == "symlink":
            _add(archive, "evil.flac", b"", type=tarfile.SYMTYPE, linkname="/etc/passwd")
        elif kind == "odd-name":
            _add(archive, "odd.key.flac", good.getvalue())
    return path


@pytest.mark.parametrize("kind, reason", [("absolute", "absolute or parent path"), ("parent", "absolute or parent path"),
                                          ("symlink", "a link"), ("odd-name", "dot-free id")])
def test_unsafe_tars_are_refused_naming_the_shard(tmp_path, cmvn, tokenizer, kind, reason):
    shard = unsafe_shard(tmp_path / "train" / "shard-000000.tar", kind)
    workers = 2 if kind == "symlink" else 0  # the error crosses the worker boundary intact
    loader = make_loader(config(tmp_path, cmvn, num_workers=workers), tokenizer)
    with pytest.raises(ShardError) as error:
        list(loader)
    assert str(shard) in str(error.value) and reason in str(error.value)


# --------------------------------------------------------------------------------------
# Collation, token by token
# --------------------------------------------------------------------------------------
def test_collation_layout_token_by_token(tmp_path, cmvn, tokenizer):
    rows = [{"id": "pair-a", "audio": tone(1.03, 1), "text": "播放一首LET▁IT▁GO", "translation": "Play Let It Go"},
            {"id": "pair-b", "audio": tone(2.51, 2), "text": "我想喝一杯热茶", "translation": "I would like a cup of hot tea, please."}]
    write_shard(tmp_path / "train" / "shard-000000.tar", rows)
    loader = make_loader(config(tmp_path, cmvn, task="mtl", max_frames=2400, num_buckets=1, shuffle_buffer=0, num_workers=0), tokenizer)
    (batch,) = list(loader)
    prompt = tokenizer.encode(prompts.prompt_text("mtl"), add_special_tokens=False)
    assert prompts.prompt_text("mtl").count("Translate speech to english text. <|im_end|>") == 1
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    by_key = {row["id"]: row for row in rows}
    left = max(int(n) // 2 + len(prompt) for n in batch["audio_lengths"])
    right = max(len(tokenizer.encode(prompts.target_text("mtl", by_key[k]["text"], by_key[k]["translation"])[0],
                                     add_special_tokens=False)) + 1 for k in batch["keys"])
    assert batch["input_ids"].shape == (2, left + right)
    frontend = Frontend(cmvn)
    for row, key in enumerate(batch["keys"]):
        audio = by_key[key]["audio"]
        _, lfr = frontend(torch.from_numpy(audio.astype(np.float32) / 32768)[None], torch.tensor([len(audio)]))
        t_lfr = int(lfr[0])
        assert t_lfr == lfr_frames(len(audio)) == int(batch["audio_lengths"][row])
        placeholders = t_lfr // 2
        target_text = by_key[key]["text"].replace("▁", " ") + "\n" + by_key[key]["translation"]
        target = tokenizer.encode(target_text, add_special_tokens=False) + [eos]
        assert tokenizer.decode(target[:-1]) == target_text
        left_pad = left - placeholders - len(prompt)
        right_pad = right - len(target)
        expected_ids = [pad] * left_pad + [AUDIO_PLACEHOLDER] * placeholders + prompt + target + [pad] * right_pad
        expected_mask = [0] * left_pad + [1] * (placeholders + len(prompt) + len(target)) + [0] * right_pad
        expected_labels = [IGNORE_INDEX] * left + target + [IGNORE_INDEX] * right_pad
        expected_modality = [False] * left_pad + [True] * placeholders + [False] * (len(prompt) + right)
        assert batch["input_ids"][row].tolist() == expected_ids
        assert batch["attention_mask"][row].tolist() == expected_mask
        assert batch["labels"][row].tolist() == expected_labels
        assert batch["modality_mask"][row].tolist() == expected_modality
        assert int(batch["audio_token_lengths"][row]) == placeholders
    # the two rows pad on opposite sides of the prompt/target boundary
    assert batch["input_ids"][:, left - len(prompt):left].tolist() == [prompt, prompt]
    assert (batch["input_ids"][:, :left - len(prompt)] == pad).any() and (batch["input_ids"][:, left:] == pad).any()


# --------------------------------------------------------------------------------------
# Padding: dynamic buckets vs fixed batches of 8, on durations alone
# --------------------------------------------------------------------------------------
def realistic_frames(count: int, low: float, high: float, seed: int = 0) -> list[tuple[str, int]]:
    rng = np.random.default_rng(seed)
    seconds = np.exp(rng.normal(math.log(5.0), 0.6, count * 4))
    seconds = seconds[(seconds >= low) & (seconds <= high)][:count]
    return [(f"utt-{n:06d}", lfr_frames(int(s * RATE))) for n, s in enumerate(seconds)]


@pytest.mark.parametrize("low, high", [(1.0, 20.0), (1.0, 6.0)])
def test_padding_of_dynamic_buckets_vs_fixed_batches(low, high):
    items = realistic_frames(20000, low, high)
    batches = bucket_batches(items, max_frames=2400, num_buckets=30, pool=2.0, seed=0)
    fixed = [items[i:i + 8] for i in range(0, len(items), 8)]
    bucketed_ratio, fixed_ratio = padding_ratio(batches), padding_ratio(fixed)
    fill = np.mean([len(b) * max(f for _, f in b) / 2400 for b in batches])
    print(f"\n{low:g}-{high:g} s log-normal, 20,000 utterances: padding {bucketed_ratio:.2%} with dynamic buckets "
          f"(max_frames 2400, 30 buckets, {len(batches)} batches, budget fill {fill:.1%}) vs {fixed_ratio:.2%} with fixed batches of 8")
    assert bucketed_ratio <= 0.05
    assert fixed_ratio > 0.15
    assert sorted(key for batch in batches for key, _ in batch) == sorted(key for key, _ in items)
    assert all(len(batch) * max(f for _, f in batch) <= 2400 for batch in batches)


# --------------------------------------------------------------------------------------
# Resume
# --------------------------------------------------------------------------------------
def _resume_matches(cfg, tokenizer, k: int, uninterrupted: list[list[dict]]) -> None:
    first = make_loader(cfg, tokenizer)
    iterator = iter(first)
    for n in range(k):
        assert list(next(iterator)["keys"]) == list(uninterrupted[0][n]["keys"])
    state = json.loads(json.dumps(first.loader_state()))  # plain data
    resumed = make_loader(cfg, tokenizer)
    resumed.load_state(state)
    rest, following = list(resumed), list(resumed)
    assert keys_of(rest) == keys_of(uninterrupted[0][k:]), f"resume after {k} batches"
    assert keys_of(following) == keys_of(uninterrupted[1]), f"the epoch after a resume at {k}"
    for got, want in zip(rest, uninterrupted[0][k:]):
        for name in ("input_ids", "labels", "waveforms", "audio_lengths"):
            assert torch.equal(got[name], want[name]), name


@pytest.mark.parametrize("workers, persistent", [(0, False), (2, False), (2, True)])
def test_resume_continues_at_the_same_sample(tones, cmvn, tokenizer, workers, persistent):
    root, _ = tones
    cfg = config(root, cmvn, features="waveform", num_workers=workers, persistent_workers=persistent, bucket_pool=2.0)
    loader = make_loader(cfg, tokenizer)
    uninterrupted = [list(loader), list(loader)]
    count = len(uninterrupted[0])
    assert count >= 6
    points = range(count + 1) if workers == 0 else (1, 2, count // 2, count - 1, count)
    for k in points:
        _resume_matches(cfg, tokenizer, k, uninterrupted)


def test_resume_refuses_a_state_from_a_different_split(tones, cmvn, tokenizer):
    root, _ = tones
    loader = make_loader(config(root, cmvn, features="waveform"), tokenizer)
    next(iter(loader))
    state = loader.loader_state()
    other = make_loader(config(root, cmvn, features="waveform", seed=9), tokenizer)
    with pytest.raises(ValueError, match="splits the data differently.*seed"):
        other.load_state(state)
    fewer = make_loader(config(root, cmvn, features="waveform", num_workers=1), tokenizer)
    with pytest.raises(ValueError, match="num_workers: saved 2, now 1"):
        fewer.load_state(state)


# --------------------------------------------------------------------------------------
# Feature modes agree
# --------------------------------------------------------------------------------------
def test_precomputed_features_match_computed(speech_shards, cmvn, tokenizer):
    root, _ = speech_shards
    computed = list(make_loader(config(root, cmvn, max_frames=2400, features="compute"), tokenizer))
    precomputed = list(make_loader(config(root, cmvn, max_frames=2400, features="precomputed"), tokenizer))
    assert keys_of(computed) == keys_of(precomputed)
    assert sum(len(b["keys"]) for b in computed) == len(SPEECH)
    for a, b in zip(computed, precomputed):
        assert torch.equal(a["audio_lengths"], b["audio_lengths"]) and torch.equal(a["input_ids"], b["input_ids"])
        assert a["audio_features"].shape == b["audio_features"].shape
        assert float((a["audio_features"] - b["audio_features"]).abs().max()) < 1e-2


def test_waveform_mode_through_the_frontend_equals_compute_mode(speech_shards, cmvn, tokenizer):
    root, samples = speech_shards
    computed = list(make_loader(config(root, cmvn, max_frames=2400, features="compute"), tokenizer))
    waveforms = list(make_loader(config(root, cmvn, max_frames=2400, features="waveform"), tokenizer))
    assert keys_of(computed) == keys_of(waveforms)
    frontend = Frontend(cmvn)
    for a, b in zip(computed, waveforms):
        assert "audio_features" not in b
        for row, key in enumerate(b["keys"]):
            n = int(b["waveform_lengths"][row])
            assert np.array_equal(np.round(b["waveforms"][row, :n].numpy() * 32768).astype(np.int16), samples[key]["audio"])
            assert not b["waveforms"][row, n:].any()
        feats, lengths = frontend(b["waveforms"], b["waveform_lengths"])
        assert torch.equal(lengths, a["audio_lengths"]) and torch.equal(lengths, b["audio_lengths"])
        assert torch.allclose(feats, a["audio_features"], atol=1e-5)


def test_loads_what_mooer_data_shard_writes(corpus_factory, tmp_path, cmvn, tokenizer):
    from mooer_data.prepare import PrepareConfig, prepare_corpus
    from mooer_data.shards import ShardConfig, write_shards

    corpus = corpus_factory("librispeech")
    prepare_corpus("librispeech", corpus.root, tmp_path / "manifests", PrepareConfig(show_progress=False), log=lambda _: None)
    write_shards([tmp_path / "manifests"], tmp_path / "shards",
                 ShardConfig(shard_size=None, max_count=4, features="fbank-lfr", show_progress=False), log=lambda _: None)
    segments = pq.read_table(tmp_path / "manifests" / "segments.parquet").to_pylist()
    for split, source in (("train", tmp_path / "shards" / "data.list"), ("dev", tmp_path / "shards")):
        expected = {s["id"]: s["text"] for s in segments if s["split"] == split}
        loaders = [make_loader(config(source, cmvn, split=split, max_frames=2400, features=mode, num_workers=0), tokenizer)
                   for mode in ("compute", "precomputed")]
        computed, precomputed = (list(loader) for loader in loaders)
        assert keys_of(computed) == keys_of(precomputed) and {k for b in computed for k in b["keys"]} == set(expected)
        for a, b in zip(computed, precomputed):
            assert float((a["audio_features"] - b["audio_features"]).abs().max()) < 1e-2
            for row, key in enumerate(a["keys"]):
                target = a["input_ids"][row][a["labels"][row] != IGNORE_INDEX].tolist()
                assert tokenizer.decode(target[:-1]) == expected[key] and target[-1] == tokenizer.eos_token_id


# --------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("overrides, message", [
    ({"task": "s2s"}, "expected task among asr, ast, mtl, found 's2s'"),
    ({"features": "fbank"}, "expected features among compute, precomputed, waveform"),
    ({"max_frames": None}, "expected a batch budget"),
    ({"max_frames": 100}, r"expected max_frames >= 333 \(one sample of max_duration 20.0 s\), found 100"),
    ({"cmvn_file": None}, "expected cmvn_file"),
    ({"rank": 2, "world_size": 2}, "expected 0 <= rank < world_size"),
    ({"num_workers": 0, "persistent_workers": True}, "persistent_workers needs num_workers > 0"),
])
def test_config_is_validated_with_what_was_expected(tones, cmvn, overrides, message):
    root, _ = tones
    with pytest.raises(ValueError, match=message):
        config(root, cmvn, **overrides)

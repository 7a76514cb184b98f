"""Benchmark the MooER loader (mooer_model/data.py) against a per-file jsonl loader and Lhotse.

    .venv/bin/python benchmarks/bench_load.py [--files 20000] [--workers 2] [--lhotse-max-duration 140]
                                              [--max-frames 0] [--breakdown auto|always|never]

One data set for every loader: the synthetic LibriSpeech tree of bench_prepare.py (20,000
FLAC files, 16 kHz mono 16-bit, uniform 1-6 s; generated once under benchmarks/data/ and
reused). Set up once and cached under benchmarks/data/load-bench-<files>/ (all of it untimed):
our manifest (prepare_corpus), our shards (write_shards, 1,000 samples a shard: FLAC
bytes copied; and a second set with --features fbank-lfr), Lhotse cuts (from
lhotse.recipes.prepare_librispeech), a MooER/SLAM-LLM style jsonl ({key, path, text}, one
line per utterance, read from the tree) and an am.mvn (testing_cmvn.write_am_mvn, seed 0).
Every file is read once before the timings (warm page cache).

Loaders, each with 2 DataLoader worker processes (prefetch_factor 2, torch's default) and
torch.set_num_threads(1) in every worker (a worker_init_fn given to all of them alike;
torch's DataLoader also does this by default), the main process only receiving batches:

(a) per-file jsonl: a map-style Dataset over the jsonl; __getitem__ reads the file with
    soundfile and computes kaldi-native-fbank (80 bins, 25/10 ms, hamming, dither 0,
    snip_edges, energy_floor 0: funasr's WavFrontend options, input scaled by 32768), then
    LFR m7/n6 (FunASR semantics, vectorised with one numpy gather) and CMVN in numpy;
    DataLoader(batch_size=8, shuffle=True), a collate that pads to the longest.
(b) Lhotse 1.33: CutSet of the same utterances + DynamicBucketingSampler(max_duration,
    num_buckets=10, shuffle=True) passed as sampler (batch_size=None); the Dataset's
    __getitem__(cuts) loads each cut (cut.load_audio()), computes the same knf fbank + LFR
    + CMVN per cut and pads.
(c) ours, features="compute": make_loader over the FLAC shards; decode + batched torch
    Kaldi fbank + LFR + CMVN in the workers. Its max_frames budget is chosen (unless
    --max-frames is given) so that its mean audio per batch matches what (b) produced.
(d) ours, features="precomputed": the fbank-lfr shards (float16 features; CMVN here).
(w) ours, features="waveform" (padded waveforms; the fbank would run on the trainer's GPU)
    - for information: its batches carry no features.

Each loader makes one full pass over the data (one epoch). Throughput is audio seconds of
the batches received after a warm-up (the first --warmup-audio seconds of audio, the same
for every loader; worker start-up falls in it) divided by the wall time from the end of
the warm-up to the last batch. Padding is padded / total frames of the feature tensors
(for (w), of the LFR frames the GPU would make). CPU seconds are the main process's and
the workers' (reaped at the end of the pass); "other CPU" is what the rest of the machine
used meanwhile (/proc/stat busy time less ours), in cores. Correctness, same run: every
loader delivered each of the utterances exactly once, and the features of one utterance
from (a), (b), (c), (d) and (w) through Frontend equal the knf pipeline within 0.01.

When a bar is missed (or --breakdown always), ours runs once more in-process
(num_workers=0) on the first --breakdown-shards shards with timers wrapped around its
steps (module attributes patched in this process only, then restored), then under
cProfile. The library is not edited. Nothing is written outside benchmarks/data/.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import os
import pstats
import resource
import shutil
import sys
import time
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_prepare import DATA, PART, _fmt_count, ensure_tree  # noqa: E402

MARKER = ".bench-complete.json"
SAMPLE_RATE = 16000
LFR_M, LFR_N, N_MELS = 7, 6, 80
PEER_BATCH_SIZE = 8  # MooER / SLAM-LLM: fixed batches of 8


# =========================================================================== setup (untimed)


def _cached(directory: Path, params: dict, build: Callable[[], None]) -> float | None:
    """Build `directory` unless its marker holds `params`; seconds spent (None if cached)."""
    marker = directory / MARKER
    if marker.is_file() and json.loads(marker.read_text()) == params:
        return None
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    started = time.perf_counter()
    build()
    marker.write_text(json.dumps(params))
    return time.perf_counter() - started


def _tree_utterances(root: Path) -> list[dict]:
    """{key, path, text} for every utterance of the tree, read from the tree itself."""
    rows = []
    for dirpath, _dirs, names in os.walk(root / "LibriSpeech"):
        for name in names:
            if name.endswith(".trans.txt"):
                for line in Path(dirpath, name).read_text(encoding="utf-8").splitlines():
                    key, text = line.split(" ", 1)
                    rows.append({"key": key, "path": str(Path(dirpath, f"{key}.flac")), "text": text})
    rows.sort(key=lambda r: r["key"])
    return rows


@dataclass
class Setup:
    root: Path
    manifest: Path
    shards: Path
    feature_shards: Path
    jsonl: Path
    cuts_file: Path
    cmvn: Path
    durations: dict[str, float]  # utterance key -> seconds (from our manifest)
    notes: list[str] = field(default_factory=list)


def setup(files: int, seed: int, jobs: int, shard_count: int) -> Setup:
    from mooer_data.prepare import PrepareConfig, prepare_corpus
    from mooer_data.shards import ShardConfig, write_shards
    from mooer_model.testing_cmvn import write_am_mvn

    notes = []
    work = DATA / f"load-bench-{_fmt_count(files)}"
    root, generated = ensure_tree(files, seed, jobs)
    notes.append(f"corpus {root} ({'cached' if generated is None else f'generated in {generated:.1f} s'})")
    base = {"tree": str(root), "files": files, "seed": seed, "version": 1}

    manifest = work / "manifest"
    spent = _cached(manifest, base, lambda: prepare_corpus(
        "librispeech", root, manifest, PrepareConfig(jobs=jobs, show_progress=False), log=lambda s: None))
    notes.append(f"our manifest ({'cached' if spent is None else f'{spent:.1f} s'})")

    shards = work / "shards-flac"
    spent = _cached(shards, {**base, "count": shard_count}, lambda: write_shards(
        [manifest], shards, ShardConfig(shard_size=None, max_count=shard_count, jobs=jobs, show_progress=False),
        log=lambda s: None))
    notes.append(f"FLAC shards ({'cached' if spent is None else f'{spent:.1f} s'})")

    feature_shards = work / "shards-fbank-lfr"
    spent = _cached(feature_shards, {**base, "count": shard_count, "features": "fbank-lfr"}, lambda: write_shards(
        [manifest], feature_shards,
        ShardConfig(shard_size=None, max_count=shard_count, features="fbank-lfr", jobs=jobs, show_progress=False),
        log=lambda s: None))
    notes.append(f"fbank-lfr shards ({'cached' if spent is None else f'{spent:.1f} s'})")

    peers = work / "peers"

    def build_peers() -> None:
        from lhotse import CutSet
        from lhotse.recipes import prepare_librispeech

        with open(peers / "data.jsonl", "w", encoding="utf-8") as handle:
            for row in _tree_utterances(root):
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        parts = prepare_librispeech(root / "LibriSpeech", dataset_parts=[PART], num_jobs=jobs)[PART]
        cuts = CutSet.from_manifests(recordings=parts["recordings"], supervisions=parts["supervisions"])
        cuts.to_file(peers / "cuts.jsonl.gz")

    spent = _cached(peers, base, build_peers)
    notes.append(f"jsonl + Lhotse cuts ({'cached' if spent is None else f'{spent:.1f} s'})")

    cmvn = work / "am.mvn"
    write_am_mvn(cmvn, seed=0)

    import pyarrow.parquet as pq

    table = pq.read_table(manifest / "segments.parquet", columns=["id", "duration"]).to_pydict()
    durations = {_plain_key(k): float(d) for k, d in zip(table["id"], table["duration"])}
    return Setup(root, manifest, shards, feature_shards, peers / "data.jsonl", peers / "cuts.jsonl.gz", cmvn,
                 durations, notes)


def _plain_key(key: str) -> str:
    """Our segment ids carry the source ('librispeech-1052-109616-0000'); the others do not."""
    return key.split("-", 1)[1] if key.startswith("librispeech-") else key


def warm_page_cache(directories: Iterable[Path]) -> float:
    """Read every file once; MiB read."""
    total = 0
    for directory in directories:
        for dirpath, _dirs, names in os.walk(directory):
            for name in names:
                with open(os.path.join(dirpath, name), "rb") as handle:
                    while chunk := handle.read(1 << 22):
                        total += len(chunk)
    return total / 2**20


# =========================================================================== the peers' pipeline


def knf_options():
    """funasr WavFrontend's kaldi-native-fbank options (fs 16k, hamming, 25/10 ms, 80 bins, dither 0)."""
    import kaldi_native_fbank as knf

    opts = knf.FbankOptions()
    opts.frame_opts.samp_freq = SAMPLE_RATE
    opts.frame_opts.dither = 0.0
    opts.frame_opts.window_type = "hamming"
    opts.frame_opts.frame_shift_ms = 10.0
    opts.frame_opts.frame_length_ms = 25.0
    opts.frame_opts.snip_edges = True
    opts.mel_opts.num_bins = N_MELS
    opts.mel_opts.debug_mel = False
    opts.energy_floor = 0.0
    return opts


def read_am_mvn(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """funasr's line-based am.mvn reader: (<AddShift> vector, <Rescale> vector)."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    shift = scale = None
    for i, line in enumerate(lines):
        items = line.split()
        if items and items[0] == "<AddShift>":
            shift = np.asarray(lines[i + 1].split()[3:-1], dtype=np.float32)
        elif items and items[0] == "<Rescale>":
            scale = np.asarray(lines[i + 1].split()[3:-1], dtype=np.float32)
    assert shift is not None and scale is not None, path
    return shift, scale


class KnfPipeline:
    """One utterance: float samples in [-1, 1] -> [T_lfr, 560] float32 (fbank + LFR + CMVN)."""

    def __init__(self, cmvn: Path):
        self.opts = knf_options()
        self.shift, self.scale = read_am_mvn(cmvn)

    def __call__(self, wave: np.ndarray) -> np.ndarray:
        import kaldi_native_fbank as knf

        fbank = knf.OnlineFbank(self.opts)
        fbank.accept_waveform(SAMPLE_RATE, (wave * 32768).tolist())  # funasr: waveform * (1 << 15)
        fbank.input_finished()
        frames = fbank.num_frames_ready
        mat = np.empty((frames, N_MELS), dtype=np.float32)
        for i in range(frames):
            mat[i] = fbank.get_frame(i)
        # LFR m7/n6, FunASR semantics: frame j stacks frames 6j-3 .. 6j+3, clamped to [0, T-1]
        t_lfr = -(-frames // LFR_N)
        index = np.arange(t_lfr)[:, None] * LFR_N + np.arange(LFR_M)[None, :] - (LFR_M - 1) // 2
        lfr = mat[np.clip(index, 0, frames - 1)].reshape(t_lfr, LFR_M * N_MELS)
        return (lfr + self.shift) * self.scale


def pad_features(keys: list[str], feats: list[np.ndarray], num_samples: list[int]) -> dict:
    import torch

    lengths = [f.shape[0] for f in feats]
    out = np.zeros((len(feats), max(lengths), LFR_M * N_MELS), dtype=np.float32)
    for row, f in enumerate(feats):
        out[row, : f.shape[0]] = f
    return {"keys": keys, "feats": torch.from_numpy(out), "lengths": torch.tensor(lengths),
            "num_samples": torch.tensor(num_samples)}


class JsonlDataset:
    """(a) MooER / SLAM-LLM style: map-style, one file per item, features in __getitem__."""

    def __init__(self, jsonl: Path, cmvn: Path):
        with open(jsonl, encoding="utf-8") as handle:
            self.rows = [json.loads(line) for line in handle]
        self.pipeline = KnfPipeline(cmvn)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> tuple[str, np.ndarray, int]:
        import soundfile as sf

        row = self.rows[index]
        wave, rate = sf.read(row["path"], dtype="float32")
        assert rate == SAMPLE_RATE and wave.ndim == 1, (row["path"], rate, wave.shape)
        return row["key"], self.pipeline(wave), len(wave)


def collate_pad(items: list[tuple[str, np.ndarray, int]]) -> dict:
    keys, feats, num_samples = zip(*items)
    return pad_features(list(keys), list(feats), list(num_samples))


class LhotseFeatureDataset:
    """(b) a Lhotse-style dataset: __getitem__(CutSet) -> one padded batch."""

    def __init__(self, cmvn: Path):
        self.pipeline = KnfPipeline(cmvn)

    def __getitem__(self, cuts) -> dict:
        keys, feats, num_samples = [], [], []
        for cut in cuts:
            audio = cut.load_audio()  # [channels, samples] float32
            wave = audio[0]
            keys.append(cut.recording_id)
            feats.append(self.pipeline(wave))
            num_samples.append(len(wave))
        return pad_features(keys, feats, num_samples)


def _worker_init(_worker_id: int) -> None:
    import torch

    torch.set_num_threads(1)


# =========================================================================== loaders


def make_peer_jsonl(s: Setup, workers: int):
    import torch
    from torch.utils.data import DataLoader

    return DataLoader(JsonlDataset(s.jsonl, s.cmvn), batch_size=PEER_BATCH_SIZE, shuffle=True, num_workers=workers,
                      collate_fn=collate_pad, worker_init_fn=_worker_init, generator=torch.Generator().manual_seed(0))


def load_cuts(s: Setup):
    from lhotse import CutSet

    return CutSet.from_file(s.cuts_file)


def make_lhotse(s: Setup, cuts, workers: int, max_duration: float):
    from lhotse.dataset import DynamicBucketingSampler
    from torch.utils.data import DataLoader

    sampler = DynamicBucketingSampler(cuts, max_duration=max_duration, num_buckets=10, shuffle=True, seed=0)
    return DataLoader(LhotseFeatureDataset(s.cmvn), sampler=sampler, batch_size=None, num_workers=workers,
                      worker_init_fn=_worker_init)


def make_ours(s: Setup, tokenizer, features: str, max_frames: int, workers: int, shards=None):
    from mooer_model.data import LoaderConfig, make_loader

    source = shards if shards is not None else (s.feature_shards if features == "precomputed" else s.shards)
    config = LoaderConfig(shards=source, features=features, cmvn_file=s.cmvn, max_frames=max_frames,
                          num_workers=workers, seed=0)
    loader = make_loader(config, tokenizer)
    loader.worker_init_fn = _worker_init  # the same as the peers' (torch sets 1 thread in workers anyway)
    return loader


def ours_batch_view(batch: dict) -> tuple[list[str], Any, list[int], int]:
    """keys, features (or None), per-row LFR frames, padded width of the feature tensor."""
    lengths = [int(n) for n in batch["audio_lengths"]]
    feats = batch.get("audio_features")
    width = int(feats.shape[1]) if feats is not None else max(lengths)
    return [_plain_key(k) for k in batch["keys"]], feats, lengths, width


def peer_batch_view(batch: dict) -> tuple[list[str], Any, list[int], int]:
    return list(batch["keys"]), batch["feats"], [int(n) for n in batch["lengths"]], int(batch["feats"].shape[1])


# =========================================================================== measurement


def _cpu() -> tuple[float, float]:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


def _busy_seconds() -> float:
    """CPU seconds the whole machine has been busy (all cores), from /proc/stat."""
    with open("/proc/stat") as handle:
        values = [int(v) for v in handle.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")


@dataclass
class Pass:
    label: str
    batches: int = 0
    utterances: int = 0
    keys: set = field(default_factory=set)
    duplicates: int = 0
    timed_audio: float = 0.0
    timed_batches: int = 0
    timed_seconds: float = 0.0
    warmup_seconds: float = 0.0
    total_seconds: float = 0.0
    padded: int = 0
    frames: int = 0
    audio: float = 0.0
    cpu_main: float = 0.0
    cpu_workers: float = 0.0
    other_cpu: float = 0.0
    probe: np.ndarray | None = None  # features of the probe utterance, as this loader delivered them
    load_before: float = 0.0

    @property
    def throughput(self) -> float:
        return self.timed_audio / self.timed_seconds if self.timed_seconds else 0.0

    @property
    def padding(self) -> float:
        return self.padded / self.frames if self.frames else 0.0

    @property
    def audio_per_cpu(self) -> float:
        cpu = self.cpu_main + self.cpu_workers
        return self.audio / cpu if cpu else 0.0


def measure(label: str, loader, view: Callable, durations: dict[str, float], warmup_audio: float, probe_key: str,
            on_probe: Callable[[dict, int], np.ndarray] | None = None) -> Pass:
    """One pass; the clock starts once `warmup_audio` seconds of audio have been received."""
    result = Pass(label, load_before=os.getloadavg()[0])
    gc.collect()
    main0, workers0 = _cpu()
    busy0 = _busy_seconds()
    started = time.perf_counter()
    clock: float | None = None
    received = 0.0
    iterator = iter(loader)
    for batch in iterator:
        keys, feats, lengths, width = view(batch)
        audio = sum(durations[k] for k in keys)
        result.batches += 1
        result.utterances += len(keys)
        before = len(result.keys)
        result.keys.update(keys)
        result.duplicates += len(keys) - (len(result.keys) - before)
        result.padded += width * len(lengths) - sum(lengths)
        result.frames += width * len(lengths)
        result.audio += audio
        if probe_key in keys:
            row = keys.index(probe_key)
            if on_probe is not None:
                result.probe = on_probe(batch, row)
            else:
                result.probe = feats[row, : lengths[row]].numpy().copy()
        if clock is None:
            received += audio
            if received >= warmup_audio:
                clock = time.perf_counter()
                result.warmup_seconds = clock - started
        else:
            result.timed_audio += audio
            result.timed_batches += 1
    end = time.perf_counter()
    del iterator
    batch = None
    gc.collect()  # the DataLoader iterator goes, its workers are joined and reaped
    main1, workers1 = _cpu()
    busy1 = _busy_seconds()
    shutdown_end = time.perf_counter()
    result.timed_seconds = end - clock if clock is not None else 0.0
    result.total_seconds = end - started
    result.cpu_main, result.cpu_workers = main1 - main0, workers1 - workers0
    result.other_cpu = max(0.0, (busy1 - busy0) - (main1 - main0) - (workers1 - workers0)) / (shutdown_end - started)
    print(f"  {label:34s} {result.batches:5d} batches, {result.utterances:6d} utts, pass {result.total_seconds:6.1f} s "
          f"(warm-up {result.warmup_seconds:4.1f} s), {result.throughput:7.0f} audio-s/s, "
          f"CPU main {result.cpu_main:5.1f} s + workers {result.cpu_workers:6.1f} s, other CPU {result.other_cpu:.2f} cores",
          flush=True)
    return result


def lhotse_batch_audio(cuts, max_duration: float) -> tuple[float, int]:
    """Mean audio seconds per batch of the Lhotse sampler (iterated in this process, no audio loaded)."""
    from lhotse.dataset import DynamicBucketingSampler

    sampler = DynamicBucketingSampler(cuts, max_duration=max_duration, num_buckets=10, shuffle=True, seed=0)
    totals = [sum(c.duration for c in batch) for batch in sampler]
    return float(np.mean(totals)), len(totals)


def batch_audio_model(setup_: Setup, workers: int, shards: list[Path]) -> Callable[[int], float]:
    """mean_audio(max_frames): the mean audio seconds per batch ours makes under that budget,
    simulated with bucket_batches on the frame counts (each worker on its share of the shards,
    the loader's default buckets and pool). Nothing is decoded."""
    import tarfile

    from mooer_model.data import LoaderConfig, bucket_batches, lfr_frames

    defaults = LoaderConfig(shards=shards, features="waveform", num_workers=workers)
    shard_keys: list[list[tuple[str, int]]] = []
    for shard in shards:  # member names give the keys; durations from the manifest
        with tarfile.open(shard) as archive:
            keys = sorted({name.split(".", 1)[0] for name in archive.getnames()})
        shard_keys.append([(k, lfr_frames(int(round(setup_.durations[_plain_key(k)] * SAMPLE_RATE)))) for k in keys])
    streams = [[item for keys in shard_keys[w::workers] for item in keys] for w in range(workers)]

    def mean_audio(max_frames: int) -> float:
        totals = []
        for stream in streams:
            rng = np.random.default_rng(0)
            items = [stream[i] for i in rng.permutation(len(stream))]
            for batch in bucket_batches(items, max_frames=max_frames, num_buckets=defaults.num_buckets,
                                        pool=defaults.bucket_pool, bins_estimate=defaults.bins_estimate):
                totals.append(sum(setup_.durations[_plain_key(k)] for k, _ in batch))
        return float(np.mean(totals))

    return mean_audio


def match_max_frames(mean_audio: Callable[[int], float], target_audio: float) -> int:
    """The max_frames (>= 400: one 20 s sample needs 333) whose mean batch audio is closest to the target."""
    low, high = 400, 20000
    while high - low > 10:
        middle = (low + high) // 2
        if mean_audio(middle) < target_audio:
            low = middle
        else:
            high = middle
    return min(range(low, high + 1, 2), key=lambda m: abs(mean_audio(m) - target_audio))


# =========================================================================== breakdown of ours


def breakdown_ours(s: Setup, tokenizer, features: str, max_frames: int, n_shards: int) -> tuple[list, dict, str]:
    """Ours in-process (num_workers=0) on the first `n_shards` shards, with timers around its
    steps; then the same under cProfile. Module attributes are patched here, then restored."""
    import pickle

    import mooer_model.bucketing as bucketing
    import mooer_model.data as data
    import mooer_model.frontend as frontend
    from mooer_data.shard_format import shard_paths

    source = s.feature_shards if features == "precomputed" else s.shards
    shards = [str(p) for p in shard_paths(source, "train")[:n_shards]]
    spent: dict[str, float] = {}
    patches: list[tuple[Any, str, Any]] = []
    missing: list[str] = []

    def add(label: str, seconds: float) -> None:
        spent[label] = spent.get(label, 0.0) + seconds

    def wrap(owner: Any, name: str, label: str, generator: bool = False) -> None:
        original = owner.__dict__.get(name) if isinstance(owner, type) else getattr(owner, name, None)
        if original is None:
            missing.append(f"{getattr(owner, '__name__', owner)}.{name}")
            return
        if generator:
            def timed(*a, **k):
                started = time.perf_counter()
                it = original(*a, **k)
                add(label, time.perf_counter() - started)
                while True:
                    started = time.perf_counter()
                    try:
                        value = next(it)
                    except StopIteration:
                        add(label, time.perf_counter() - started)
                        return
                    add(label, time.perf_counter() - started)
                    yield value
        else:
            call = original.__func__ if isinstance(original, staticmethod) else original

            def timed(*a, **k):
                started = time.perf_counter()
                try:
                    return call(*a, **k)
                finally:
                    add(label, time.perf_counter() - started)
        setattr(owner, name, staticmethod(timed) if isinstance(original, staticmethod) else timed)
        patches.append((owner, name, original))

    # top level (they do not nest in one another) ...
    top = [
        (data, "iter_shard", "tar read: open + iterate members + json meta (iter_shard)", True),
        (data, "_probe_audio", "probe audio header (soundfile, from bytes)", False),
        (data, "_npy_rows", "probe .npy header", False),
        (data._Encoder, "__call__", "tokenise target", False),
        (bucketing.DynamicBucketer, "push", "shuffle-out + bucketing (DynamicBucketer.push)", False),
        (bucketing.DynamicBucketer, "finish", "bucketing end of epoch (finish)", False),
        (data.Collator, "collate_text", "collate text (input_ids, labels, masks)", False),
        (data.Collator, "_decode", "decode FLAC into the padded array (soundfile)", False),
        (frontend.Frontend, "forward", "features: Frontend (fbank + LFR + CMVN)", False),
        (data.Collator, "_precomputed", "np.load float16 + pad + CMVN (precomputed)", False),
        (data._Stream, "snapshot", "resume snapshot per batch (_Stream.snapshot)", False),
    ]
    nested = [
        (frontend, "_fbank_into", "  ↳ fbank (batched torch, written into the LFR buffer)", False),
    ]
    for owner, name, label, gen in top + nested:
        wrap(owner, name, label, gen)
    # pickle.dumps of the snapshot, per batch (data.py calls pickle.dumps through its module global)
    real_pickle = data.pickle

    def timed_dumps(obj, *a, **k):
        started = time.perf_counter()
        try:
            return pickle.dumps(obj, *a, **k)
        finally:
            add("pickle the snapshot per batch", time.perf_counter() - started)

    data.pickle = types.SimpleNamespace(dumps=timed_dumps, loads=pickle.loads, HIGHEST_PROTOCOL=pickle.HIGHEST_PROTOCOL)
    counts = {"batches": 0, "utterances": 0, "audio": 0.0}
    started = time.perf_counter()
    try:
        loader = make_ours(s, tokenizer, features, max_frames, 0, shards=shards)
        for batch in loader:
            counts["batches"] += 1
            counts["utterances"] += len(batch["keys"])
            counts["audio"] += sum(s.durations[_plain_key(k)] for k in batch["keys"])
    finally:
        data.pickle = real_pickle
        for owner, name, original in reversed(patches):
            setattr(owner, name, original)
    total = time.perf_counter() - started
    top_labels = [label for _, _, label, _ in top] + ["pickle the snapshot per batch"]
    rows = []
    for label in top_labels:
        rows.append((label, spent.get(label, 0.0)))
        if label.startswith("features"):
            rows.extend((n[2], spent.get(n[2], 0.0)) for n in nested)
            rest = spent.get(label, 0.0) - sum(spent.get(n[2], 0.0) for n in nested)
            rows.append(("  ↳ LFR (strided view) + CMVN + zeroing padding rows", rest))
    rows.append(("other (the chain's Python: steps, shuffle buffer, items, glue)", total - sum(spent.get(l, 0.0) for l in top_labels)))
    rows.append(("total", total))
    counts["missing"] = missing

    loader = make_ours(s, tokenizer, features, max_frames, 0, shards=shards)
    profile = cProfile.Profile()
    profile.enable()
    for _batch in loader:
        pass
    profile.disable()
    text = io.StringIO()
    pstats.Stats(profile, stream=text).sort_stats("tottime").print_stats(16)
    return rows, counts, text.getvalue()


def per_core_costs(s: Setup, n: int = 400) -> list[tuple[str, float]]:
    """Seconds of CPU per second of audio, one thread, for the steps each pipeline repeats."""
    import soundfile as sf
    import torch

    from mooer_model.frontend import Frontend

    rows = [json.loads(line) for line in open(s.jsonl, encoding="utf-8")][:n]
    audio = sum(s.durations[r["key"]] for r in rows)
    pipeline = KnfPipeline(s.cmvn)
    t0 = time.perf_counter()
    waves = [sf.read(r["path"], dtype="float32")[0] for r in rows]
    t1 = time.perf_counter()
    blobs = [Path(r["path"]).read_bytes() for r in rows]
    t2 = time.perf_counter()
    for blob in blobs:
        sf.read(io.BytesIO(blob), dtype="float32")
    t3 = time.perf_counter()
    fbank_only = 0.0
    for wave in waves:
        started = time.perf_counter()
        pipeline(wave)
        fbank_only += time.perf_counter() - started
    frontend = Frontend(s.cmvn)
    order = sorted(range(len(waves)), key=lambda i: len(waves[i]))
    batched = 0.0
    for b0 in range(0, len(order), 40):  # ~ the batches ours makes: 40 similar lengths
        rows_ = [waves[i] for i in order[b0 : b0 + 40]]
        padded = np.zeros((len(rows_), max(map(len, rows_))), dtype=np.float32)
        for r, w in enumerate(rows_):
            padded[r, : len(w)] = w
        started = time.perf_counter()
        with torch.no_grad():
            frontend(torch.from_numpy(padded), torch.tensor([len(w) for w in rows_]))
        batched += time.perf_counter() - started
    return [
        ("soundfile.read of the FLAC file (path)", (t1 - t0) / audio),
        ("soundfile.read of FLAC bytes (in memory)", (t3 - t2) / audio),
        ("knf fbank + LFR + CMVN, one utterance a call", fbank_only / audio),
        ("Frontend (torch) on batches of 40 similar lengths", batched / audio),
    ]


# =========================================================================== main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers (every loader)")
    parser.add_argument("--jobs", type=int, default=2, help="processes for the (cached) setup")
    parser.add_argument("--shard-count", type=int, default=1000)
    parser.add_argument("--lhotse-max-duration", type=float, default=140.0, help="(b)'s max_duration, seconds")
    parser.add_argument("--max-frames", type=int, default=0, help="ours' max_frames; 0: match (b)'s mean batch audio")
    parser.add_argument("--warmup-audio", type=float, default=600.0, help="audio seconds received before the clock starts")
    parser.add_argument("--skip", default="", help="comma list of loaders to skip: a,b,c,d,w (bars need a-d)")
    parser.add_argument("--breakdown", choices=("auto", "always", "never"), default="auto")
    parser.add_argument("--breakdown-shards", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("TQDM_DISABLE", "1")
    skip = set(filter(None, args.skip.split(",")))

    import torch

    torch.set_num_threads(1)
    one, five, _ = os.getloadavg()
    cores = os.cpu_count() or 1
    print(f"load average at start: {one:.2f} (1 min), {five:.2f} (5 min) ({cores} cores)")
    started = time.perf_counter()
    s = setup(args.files, args.seed, args.jobs, args.shard_count)
    import lhotse  # noqa: F401
    from mooer_model.tokenizer_testing import build_test_tokenizer

    tokenizer = build_test_tokenizer()
    cuts = load_cuts(s)
    n = args.files
    expected = set(s.durations)
    jsonl_keys = {json.loads(line)["key"] for line in open(s.jsonl, encoding="utf-8")}
    cut_keys = {c.recording_id for c in cuts}
    assert len(expected) == n and jsonl_keys == expected and cut_keys == expected, (len(expected), len(jsonl_keys), len(cut_keys))
    hours = sum(s.durations.values()) / 3600
    mib = warm_page_cache([s.root, s.shards, s.feature_shards])
    print("setup (untimed): " + "; ".join(s.notes) + f"; {mib:,.0f} MiB read into the page cache; "
          f"{time.perf_counter() - started:.1f} s")
    print(f"data: {n} utterances, {hours:.2f} h, the same keys in the jsonl, the Lhotse cuts and our manifest/shards")

    lhotse_audio, lhotse_batches = lhotse_batch_audio(cuts, args.lhotse_max_duration)
    from mooer_data.shard_format import shard_paths

    mean_audio = batch_audio_model(s, args.workers, shard_paths(s.shards, "train"))
    max_frames = args.max_frames or match_max_frames(mean_audio, lhotse_audio)
    ours_audio = mean_audio(max_frames)
    print(f"batch sizes: (a) {PEER_BATCH_SIZE} utterances; (b) max_duration {args.lhotse_max_duration:g} s -> "
          f"{lhotse_audio:.1f} s audio per batch ({lhotse_batches} batches); ours max_frames {max_frames} "
          f"(≈ {ours_audio:.1f} s audio per batch, simulated)")
    print(f"every loader: {args.workers} DataLoader workers, prefetch_factor 2, torch.set_num_threads(1) in each worker "
          f"(worker_init_fn) and in the main process; one pass; clock starts after {args.warmup_audio:g} s of audio")

    # the probe utterance: the longest one (most frames to compare)
    probe_key = max(s.durations, key=lambda k: s.durations[k])
    probe_path = next(json.loads(line)["path"] for line in open(s.jsonl, encoding="utf-8")
                      if json.loads(line)["key"] == probe_key)
    import soundfile as sf

    reference = KnfPipeline(s.cmvn)(sf.read(probe_path, dtype="float32")[0])

    from mooer_model.frontend import Frontend

    frontend = Frontend(s.cmvn)

    def waveform_probe(batch: dict, row: int) -> np.ndarray:
        """The probe's waveform (its features are made after the pass, outside the timing)."""
        return batch["waveforms"][row, : int(batch["waveform_lengths"][row])].numpy().copy()

    def waveform_features(wave: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            feats, frames = frontend(torch.from_numpy(wave)[None], torch.tensor([len(wave)]))
        return feats[0, : int(frames[0])].numpy()

    print("\npasses:")
    results: dict[str, Pass] = {}
    plan = [
        ("a", "(a) per-file jsonl + knf, batch 8", lambda: make_peer_jsonl(s, args.workers), peer_batch_view, None),
        ("b", "(b) Lhotse DynamicBucketing + knf", lambda: make_lhotse(s, cuts, args.workers, args.lhotse_max_duration),
         peer_batch_view, None),
        ("c", "(c) ours, features=compute", lambda: make_ours(s, tokenizer, "compute", max_frames, args.workers),
         ours_batch_view, None),
        ("d", "(d) ours, features=precomputed", lambda: make_ours(s, tokenizer, "precomputed", max_frames, args.workers),
         ours_batch_view, None),
        ("w", "(w) ours, features=waveform (info)", lambda: make_ours(s, tokenizer, "waveform", max_frames, args.workers),
         ours_batch_view, waveform_probe),
    ]
    for name, label, build, view, on_probe in plan:
        if name in skip:
            continue
        loader = build()
        results[name] = measure(label, loader, view, s.durations, args.warmup_audio, probe_key, on_probe)
        if on_probe is not None and results[name].probe is not None:
            results[name].probe = waveform_features(results[name].probe)
        del loader
        gc.collect()

    # ---- correctness
    problems = []
    for name, r in results.items():
        if r.utterances != n or r.duplicates or r.keys != expected:
            problems.append(f"{r.label}: {r.utterances} utterances, {len(r.keys)} distinct, {r.duplicates} repeated, "
                            f"{len(expected - r.keys)} missing (expected each of {n} once)")
    diffs = {}
    for name, r in results.items():
        if r.probe is None:
            problems.append(f"{r.label}: the probe utterance {probe_key} never came")
        elif r.probe.shape != reference.shape:
            problems.append(f"{r.label}: probe features {r.probe.shape}, knf pipeline {reference.shape}")
        else:
            diffs[name] = float(np.abs(r.probe.astype(np.float32) - reference).max())
            if diffs[name] > 0.01:
                problems.append(f"{r.label}: probe features differ from the knf pipeline by {diffs[name]:.4f} (> 0.01)")

    # ---- table
    a = results.get("a")
    b = results.get("b")
    print()
    print(f"### load: {n} utterances of 1–6 s ({hours:.2f} h), {args.workers} DataLoader workers each, one pass, "
          f"{cores} cores")
    print()
    print("| loader | audio-s/s | × (a) | × (b) | padding % | batches | audio s/batch | audio-s per CPU-s | "
          "CPU s main + workers | other CPU (cores) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        vs_a = f"{r.throughput / a.throughput:.2f}×" if a else "–"
        vs_b = f"{r.throughput / b.throughput:.2f}×" if b else "–"
        bold = "**" if name in ("c", "d") else ""
        print(f"| {bold}{r.label}{bold} | {r.throughput:,.0f} | {vs_a} | {vs_b} | {r.padding * 100:.1f} | {r.batches} | "
              f"{r.audio / r.batches:.1f} | {r.audio_per_cpu:,.0f} | {r.cpu_main:.1f} + {r.cpu_workers:.1f} | "
              f"{r.other_cpu:.2f} |")
    print()
    status = "OK" if not problems else "FAILED"
    counts = ", ".join(f"{k} {r.utterances}" for k, r in results.items())
    probe = ", ".join(f"{k} {d:.2e}" for k, d in diffs.items())
    print(f"correctness: {status} — utterances delivered ({counts}; each of the {n} keys exactly once); "
          f"probe {probe_key} ({s.durations[probe_key]:.2f} s, {reference.shape[0]} LFR frames) max |Δ| vs the knf "
          f"pipeline after LFR+CMVN: {probe} (≤ 0.01)")
    for problem in problems:
        print(f"  - {problem}")
    print("(a) and (b) do not tokenise or build prompts; ours also tokenises every target and builds input_ids, "
          "labels, attention and modality masks, and a resume snapshot per batch.")

    # ---- bars
    print()
    met = []

    def bar(text: str, value: float, threshold: float, higher: bool = True, unit: str = "×") -> None:
        ok = value >= threshold if higher else value <= threshold
        met.append(ok)
        sign = "≥" if higher else "≤"
        print(f"- bar: {text}: {value:.2f}{unit} (needs {sign} {threshold:g}{unit}) — {'MET' if ok else 'MISSED'}")

    c, d = results.get("c"), results.get("d")
    if c and a:
        bar("(c) ours compute ÷ (a) per-file jsonl", c.throughput / a.throughput, 3.0)
    if c and b:
        bar("(c) ours compute ÷ (b) Lhotse", c.throughput / b.throughput, 3.0)
    if d and a:
        bar("(d) ours precomputed ÷ (a) per-file jsonl", d.throughput / a.throughput, 5.0)
    for key in ("c", "d"):
        if key in results:
            bar(f"padding of {results[key].label}", results[key].padding * 100, 5.0, higher=False, unit="%")
    if c and a and b:
        print(f"  [on audio-s per CPU-s, less sensitive to load from elsewhere: (c)÷(a) "
              f"{c.audio_per_cpu / a.audio_per_cpu:.2f}×, (c)÷(b) {c.audio_per_cpu / b.audio_per_cpu:.2f}×"
              + (f", (d)÷(a) {d.audio_per_cpu / a.audio_per_cpu:.2f}×" if d else "") + "]")

    if args.breakdown == "always" or (args.breakdown == "auto" and not all(met)):
        print()
        print("per-core cost of the repeated steps (one thread, first 400 utterances, CPU s per audio s; "
              f"with {cores} cores a loader tops out near {cores} ÷ the sum of its steps):")
        print()
        print("| step | s per audio-s | audio-s/s on one core |")
        print("|---|---:|---:|")
        costs = per_core_costs(s)
        for label, cost in costs:
            print(f"| {label} | {cost * 1000:.3f} ms | {1 / cost:,.0f} |")
        peer_cost, ours_cost = costs[0][1] + costs[2][1], costs[1][1] + costs[3][1]
        print(f"ceilings on {cores} cores (these steps only, nothing else): peers (read file + knf) "
              f"{cores / peer_cost:,.0f} audio-s/s; ours compute (decode bytes + Frontend) {cores / ours_cost:,.0f} audio-s/s")
        for features, r in (("compute", c), ("precomputed", d)):
            if r is None:
                continue
            rows, counts, profile = breakdown_ours(s, tokenizer, features, max_frames, args.breakdown_shards)
            nb = counts["batches"]
            print()
            print(f"where ours spends its time — features={features}, in-process (num_workers=0), first "
                  f"{args.breakdown_shards} shards: {counts['utterances']} utterances, {nb} batches, "
                  f"{counts['audio']:.0f} s audio; one instrumented run:")
            print()
            print("| step | seconds | ms/batch | share |")
            print("|---|---:|---:|---:|")
            total = rows[-1][1]
            for label, seconds in rows:
                print(f"| {label} | {seconds:.2f} | {seconds / nb * 1000:.1f} | {seconds / total * 100:.0f}% |")
            ceiling = cores * counts["audio"] / total
            vs = ", ".join(f"{ceiling / p.throughput:.2f}× {k}" for k, p in (("(a)", a), ("(b)", b)) if p)
            print(f"in-process: {counts['audio'] / total:,.0f} audio-s/s on one core, so at most {ceiling:,.0f} on "
                  f"{cores} cores ({vs} as measured); in the {args.workers}-worker "
                  f"pass the main process spent {r.cpu_main / r.batches * 1000:.1f} ms CPU per batch receiving "
                  f"(unpickling tensors from shared memory, ordering) and the workers "
                  f"{r.cpu_workers / r.batches * 1000:.1f} ms per batch")
            if counts["missing"]:
                print(f"(not found, so not timed: {', '.join(counts['missing'])})")
            print()
            print(f"cProfile (features={features}, same subset, top by tottime):")
            print("\n".join("    " + line for line in profile.strip().splitlines()))

    one, five, _ = os.getloadavg()
    print(f"\nload average at end: {one:.2f} (1 min), {five:.2f} (5 min) (it counts this benchmark's own processes)")
    busy = [f"{r.label}: {r.other_cpu:.2f}" for r in results.values() if r.other_cpu > 0.25]
    if busy:
        print("note: the machine was busy during some passes (other processes' CPU, in cores): " + "; ".join(busy))
    else:
        print("note: other processes used < 0.25 cores during every pass")
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())

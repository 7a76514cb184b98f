"""The fast loader: shards → decoded, featurised, bucketed, collated MooER batches.

MooER's own loader (reference/mooer-model.md §2) is WeNet's chain of small per-sample
steps over tar shards, with fixed batches of 8 and no bucketing, so about a third of every
batch is padding, and ranks with uneven shards can hang a collective. This one keeps the
chain and fixes those: each rank × DataLoader worker runs

    shard list (shuffled by seed and epoch, split by rank, then by worker; or drawn with
    replacement forever when ``resampled``)
    → open + :func:`~mooer_data.shard_format.iter_shard` (streaming; unsafe tars refused)
    → probe (soundfile header, from bytes) → duration filter → target (task) → tokenise
    → shuffle buffer → dynamic buckets under a frame (and/or token) budget
    → decode (soundfile, from bytes) + features + collation, per batch.

Decoding and features happen per *batch*, after bucketing, not per sample before the
shuffle buffer as in MooER: the buffers then hold compressed bytes (about half the memory
of decoded audio, a tenth of fbank features), the fbank runs once on the padded batch
(:class:`~mooer_model.frontend.Frontend`, several times cheaper than one call per
utterance), and a resume re-reads buffered samples without decoding anything.

``features`` picks where the features come from: ``"compute"`` (fbank + LFR + CMVN in the
workers), ``"precomputed"`` (``<id>.npy`` written by ``mooer-data shard --features
fbank-lfr``, float16 before CMVN; CMVN applied here) or ``"waveform"`` (padded float
waveforms; the trainer runs ``Frontend`` on its GPU and the host only decodes).

Batches follow MooER's collator: per row ``[audio placeholders][chat prompt]`` left-padded
to the batch maximum, then ``[target][eos]`` right-padded; placeholders are ``-1`` in
``input_ids`` (and ``True`` in ``modality_mask``), one per adapter output, i.e.
``T_lfr // 2``; ``labels`` are ``-100`` everywhere but target and eos.

Resume guarantee (``loader_state`` / ``load_state``)
----------------------------------------------------
A state taken from a :class:`ShardLoader` after its consumer has received ``k`` batches of
epoch ``e`` restores, in a fresh loader built with the same shards, tokenizer and stream-
shaping config (seed, task, budgets, buckets, buffers, durations, features, rank,
world_size, num_workers), exactly the batches the uninterrupted loader yields from batch
``k + 1`` of epoch ``e`` on (same samples in the same rows, identical tensors), and the
epochs after it. Prefetching, pinning and persistent workers do not change it: the state
counts batches the consumer received, not batches workers made, and batches are handed
over in a fixed order (round robin over the worker streams, by batch number), whatever
order workers finish them in. The state is small and plain (JSON-compatible): per worker
stream, how many shards it has finished, how many samples of the current shard it has
read, its RNG state, and *references* (shard position, sample number) to the samples
held in its shuffle buffer and buckets, which a resumed worker reads again from those
shards; it never replays the epoch from its start.
"""

from __future__ import annotations

import hashlib
import io
import logging
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import soundfile as sf
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from mooer_data.shard_format import Sample, ShardError, iter_shard, shard_paths
from mooer_model import prompts
from mooer_model.bucketing import DynamicBucketer, bucket_batches, padding_ratio  # noqa: F401 - re-exported
from mooer_model.frontend import FEAT_DIM, FRAME_LENGTH, FRAME_SHIFT, LFR_N, SAMPLE_RATE, Frontend, load_cmvn

log = logging.getLogger(__name__)

FEATURE_MODES = ("compute", "precomputed", "waveform")
ADAPTER_STACK = 2  # the adapter stacks 2 LFR frames: one LLM position per pair
AUDIO_PLACEHOLDER = -1
IGNORE_INDEX = -100
STATE_VERSION = 1
SECONDS_PER_LFR_FRAME = FRAME_SHIFT * LFR_N / SAMPLE_RATE  # 0.06 s


def lfr_frames(num_samples: int) -> int:
    """LFR frames of ``num_samples`` 16 kHz samples: ``ceil(T / 6)``, T Kaldi frames with snip_edges."""
    if num_samples < FRAME_LENGTH:
        return 0
    frames = 1 + (num_samples - FRAME_LENGTH) // FRAME_SHIFT
    return -(-frames // LFR_N)


def audio_tokens(frames: int) -> int:
    """LLM positions the adapter makes of ``frames`` LFR frames (trailing odd frame dropped)."""
    return frames // ADAPTER_STACK


# --------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------
@dataclass
class LoaderConfig:
    """What to load and how; validated on construction (errors say expected vs found).

    ``shards`` is a shard directory (``<dir>/<split>/shard-*.tar``, as ``mooer-data shard``
    writes), a ``data.list`` file (one tar path a line, relative to the file) or a list of
    tar paths. A batch holds at most ``max_frames`` LFR frames *including padding*
    (``batch size × longest``; 60 ms a frame) and, if set, at most ``max_tokens`` LLM
    positions including padding. Samples go to ``num_buckets`` duration buckets (edges from
    ``duration_bins`` in seconds, or estimated per worker from its first ``bins_estimate``
    samples); a bucket holding ``bucket_pool`` batches' worth is sorted by length and cut
    into full batches, which keeps padding to a few percent (tests/test_loader.py measures
    it). Padding falls as more samples wait in the buckets (``num_buckets × bucket_pool``
    batches at most); each worker also holds ``shuffle_buffer`` samples. Held samples are
    compressed bytes (about 18 KB per second of FLAC audio or of float16 features).

    ``rank``/``world_size`` matter only without torch.distributed (and without explicit
    arguments to :func:`make_loader`). ``resampled=True`` makes every rank × worker draw
    shards with replacement forever, so no rank runs dry before another; count steps, not
    epochs. ``resampled=False`` reads every sample exactly once per epoch across ranks ×
    workers (shards round-robin), so a rank may finish an epoch a batch or two early.
    """

    shards: str | Path | Sequence[str | Path]
    split: str = "train"
    seed: int = 0
    task: str = "asr"
    prompt_template: str = "qwen"
    max_frames: int | None = 2400
    max_tokens: int | None = None
    num_buckets: int = 30
    bucket_pool: float = 2.0
    duration_bins: Sequence[float] | None = None
    bins_estimate: int = 500
    min_duration: float = 0.2
    max_duration: float = 20.0
    shuffle_buffer: int = 1000
    resampled: bool = False
    features: str = "compute"
    cmvn_file: str | Path | None = None
    num_workers: int = 2
    pin_memory: bool = False
    prefetch_factor: int = 2
    persistent_workers: bool = False
    drop_last: bool = False
    rank: int | None = None
    world_size: int | None = None

    def __post_init__(self) -> None:
        def need(condition: bool, message: str) -> None:
            if not condition:
                raise ValueError(f"LoaderConfig: {message}")

        need(self.task in prompts.TASKS, f"expected task among {', '.join(prompts.TASKS)}, found {self.task!r}")
        need(self.prompt_template in prompts.PROMPT_TEMPLATES,
             f"expected prompt_template among {', '.join(prompts.PROMPT_TEMPLATES)}, found {self.prompt_template!r}")
        need(self.features in FEATURE_MODES, f"expected features among {', '.join(FEATURE_MODES)}, found {self.features!r}")
        need(isinstance(self.seed, int) and self.seed >= 0, f"expected a non-negative integer seed, found {self.seed!r}")
        need(self.max_frames is not None or self.max_tokens is not None,
             "expected a batch budget: max_frames and/or max_tokens, found neither")
        for name in ("max_frames", "max_tokens"):
            value = getattr(self, name)
            need(value is None or (isinstance(value, int) and value > 0),
                 f"expected {name} to be a positive integer or None, found {value!r}")
        need(0 <= self.min_duration < self.max_duration,
             f"expected 0 <= min_duration < max_duration, found {self.min_duration} and {self.max_duration}")
        longest = lfr_frames(int(self.max_duration * SAMPLE_RATE))
        need(self.max_frames is None or self.max_frames >= longest,
             f"expected max_frames >= {longest} (one sample of max_duration {self.max_duration} s), found {self.max_frames}")
        need(isinstance(self.num_buckets, int) and self.num_buckets >= 1, f"expected num_buckets >= 1, found {self.num_buckets!r}")
        need(self.bucket_pool >= 1,
             f"expected bucket_pool >= 1 (batches a bucket gathers before it is cut), found {self.bucket_pool}")
        need(isinstance(self.bins_estimate, int) and self.bins_estimate >= 1,
             f"expected bins_estimate >= 1, found {self.bins_estimate!r}")
        if self.duration_bins is not None:
            bins = list(self.duration_bins)
            need(all(a < b for a, b in zip(bins, bins[1:])) and all(b > 0 for b in bins),
                 f"expected duration_bins increasing positive seconds, found {bins}")
        need(isinstance(self.shuffle_buffer, int) and self.shuffle_buffer >= 0,
             f"expected shuffle_buffer >= 0, found {self.shuffle_buffer!r}")
        need(isinstance(self.num_workers, int) and self.num_workers >= 0, f"expected num_workers >= 0, found {self.num_workers!r}")
        need(isinstance(self.prefetch_factor, int) and self.prefetch_factor >= 1,
             f"expected prefetch_factor >= 1, found {self.prefetch_factor!r}")
        need(not self.persistent_workers or self.num_workers > 0,
             "persistent_workers needs num_workers > 0, found num_workers = 0")
        if self.features in ("compute", "precomputed"):
            need(self.cmvn_file is not None,
                 f"features={self.features!r} applies CMVN: expected cmvn_file (am.mvn), found None")
            need(Path(self.cmvn_file).is_file(), f"expected cmvn_file to be a file, found nothing at {self.cmvn_file}")
        need((self.rank is None) == (self.world_size is None),
             f"give rank and world_size together, found rank={self.rank} world_size={self.world_size}")
        if self.world_size is not None:
            need(self.world_size >= 1 and 0 <= self.rank < self.world_size,
                 f"expected 0 <= rank < world_size, found rank={self.rank} world_size={self.world_size}")

    def stream_shape(self) -> dict:
        """The settings a resume state depends on (everything that changes which samples go where)."""
        keep = ("seed", "task", "prompt_template", "max_frames", "max_tokens", "num_buckets", "bucket_pool", "bins_estimate",
                "min_duration", "max_duration", "shuffle_buffer", "resampled", "features", "drop_last")
        shape = {name: getattr(self, name) for name in keep}
        shape["duration_bins"] = None if self.duration_bins is None else [float(b) for b in self.duration_bins]
        return shape


def resolve_shards(config: LoaderConfig) -> list[str]:
    """The shard paths ``config.shards`` names, in a fixed order."""
    source = config.shards
    if isinstance(source, (str, Path)):
        path = Path(source)
        if path.is_dir():
            return [str(p) for p in shard_paths(path, config.split)]
        if path.suffix == ".tar":
            if not path.is_file():
                raise FileNotFoundError(f"expected a shard at {path}, found nothing")
            return [str(path)]
        if path.is_file():  # a data.list: one shard a line, relative to the list
            lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
            found = [str(p if Path(p).is_absolute() else path.parent / p) for p in lines if p]
            if not found:
                raise ValueError(f"{path}: expected a list of shard paths, found an empty file")
            return found
        raise FileNotFoundError(f"expected a shard directory, a data.list or a .tar at {path}, found nothing")
    found = [str(p) for p in source]
    if not found:
        raise ValueError("LoaderConfig.shards: expected at least one shard path, found an empty list")
    return found


def resolve_rank(config: LoaderConfig, rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """(rank, world_size): explicit arguments, else torch.distributed, else the config, else (0, 1)."""
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    if rank is None and world_size is None:
        if distributed:
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        rank, world_size = config.rank, config.world_size
        if rank is None:
            return 0, 1
    if rank is None or world_size is None or not 0 <= rank < world_size:
        raise ValueError(f"expected 0 <= rank < world_size, found rank={rank} world_size={world_size}")
    if distributed and (rank, world_size) != (torch.distributed.get_rank(), torch.distributed.get_world_size()):
        raise ValueError(f"rank {rank}/{world_size} given, but torch.distributed says "
                         f"{torch.distributed.get_rank()}/{torch.distributed.get_world_size()}")
    return rank, world_size


def _rng(*words: int) -> np.random.Generator:
    return np.random.default_rng([int(w) for w in words])


# Purposes of the seeded generators (first word after the seed), so no two share a stream.
_SHARD_ORDER, _SHARD_DRAW, _STREAM = 1, 2, 3


# --------------------------------------------------------------------------------------
# Per-sample steps
# --------------------------------------------------------------------------------------
@dataclass(slots=True)
class Item:
    """A sample between reading and collation: everything but decoded audio."""

    ref: tuple[int, int]  # (position of its shard in the stream's shard sequence, sample number in the shard)
    key: str
    payload: bytes  # audio bytes (compute / waveform) or the .npy bytes (precomputed)
    audio_format: str  # flac | wav | npy
    num_samples: int
    frames: int  # LFR frames
    left: int  # audio placeholders + prompt tokens
    target: list[int]  # target tokens + eos

    @property
    def right(self) -> int:
        return len(self.target)


def _probe_audio(shard: str, sample: Sample) -> int:
    """Samples in the audio member: from the json our shard writer stores (checked again
    when the batch decodes it), else from the audio header (nothing decoded); 16 kHz mono."""
    known = sample.meta.get("num_samples")
    if isinstance(known, int) and known > 0 and sample.meta.get("sample_rate") == SAMPLE_RATE:
        return known
    try:
        with sf.SoundFile(io.BytesIO(sample.audio)) as handle:
            rate, channels, frames = handle.samplerate, handle.channels, handle.frames
    except (sf.LibsndfileError, RuntimeError, TypeError) as error:
        raise ShardError(f"{shard}: sample {sample.key!r} has unreadable {sample.audio_format} audio ({error})") from None
    if rate != SAMPLE_RATE or channels != 1:
        raise ShardError(f"{shard}: sample {sample.key!r}: expected 16000 Hz mono audio, found {rate} Hz with {channels} channels")
    return int(frames)


def _npy_rows(shard: str, sample: Sample) -> int:
    """Frames of the precomputed features, from the .npy header."""
    if sample.features is None:
        raise ShardError(f"{shard}: sample {sample.key!r} has no <id>.npy features; write the shards with "
                         "`mooer-data shard --features fbank-lfr` or load with features='compute'")
    handle = io.BytesIO(sample.features)
    try:
        version = np.lib.format.read_magic(handle)
        if version == (1, 0):
            shape = np.lib.format.read_array_header_1_0(handle)[0]
        elif version == (2, 0):
            shape = np.lib.format.read_array_header_2_0(handle)[0]
        else:
            shape = np.load(io.BytesIO(sample.features), allow_pickle=False).shape
    except ValueError as error:
        raise ShardError(f"{shard}: sample {sample.key!r} has an unreadable .npy member ({error})") from None
    if len(shape) != 2 or shape[1] != FEAT_DIM:
        raise ShardError(f"{shard}: sample {sample.key!r}: expected features [T, {FEAT_DIM}], found shape {shape}")
    return int(shape[0])


class _Steps:
    """The per-sample steps of one stream: probe, duration filter, target, tokenise.

    Samples that fail a filter are counted under the reason (``skips``), never dropped silently.
    """

    def __init__(self, config: LoaderConfig, prompt_ids: list[int], encode: Callable[[str], list[int]], eos_id: int):
        self.config = config
        self.prompt_ids = prompt_ids
        self.encode = encode
        self.eos_id = eos_id
        self.skips: dict[str, int] = {}

    def skip(self, reason: str) -> None:
        self.skips[reason] = self.skips.get(reason, 0) + 1

    def __call__(self, shard: str, ref: tuple[int, int], sample: Sample) -> Item | None:
        config = self.config
        if config.features == "precomputed":
            frames = _npy_rows(shard, sample)
            num_samples = int(sample.meta.get("num_samples") or 0)
            seconds = num_samples / SAMPLE_RATE if num_samples else float(sample.meta.get("duration") or frames * SECONDS_PER_LFR_FRAME)
            payload, audio_format = sample.features, "npy"
        else:
            num_samples = _probe_audio(shard, sample)
            frames = lfr_frames(num_samples)
            seconds = num_samples / SAMPLE_RATE
            payload, audio_format = sample.audio, sample.audio_format
        if seconds < config.min_duration or audio_tokens(frames) < 1:
            return self.skip("too_short")
        if seconds > config.max_duration:
            return self.skip("too_long")
        target, reason = prompts.target_text(config.task, sample.text, sample.meta.get("translation"))
        if target is None:
            return self.skip(reason)
        ids = self.encode(target) + [self.eos_id]
        return Item(ref, sample.key, payload, audio_format, num_samples, frames, audio_tokens(frames) + len(self.prompt_ids), ids)


# --------------------------------------------------------------------------------------
# Collation
# --------------------------------------------------------------------------------------
def _batch_tensor(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """An uninitialised tensor for a batch: in shared memory inside a DataLoader worker.

    A worker's batch crosses to the main process through shared memory; a tensor made
    elsewhere is copied there when the batch is sent (a second pass over the largest
    tensor of the batch). Made there from the start, it is sent as it is.
    """
    if get_worker_info() is None:
        return torch.empty(shape, dtype=dtype)
    new_shared = getattr(torch.UntypedStorage, "_new_shared", None)  # what torch's default_collate uses
    if new_shared is None:
        return torch.empty(shape, dtype=dtype).share_memory_()
    storage = new_shared(int(np.prod(shape)) * torch.empty((), dtype=dtype).element_size())
    return torch.empty(0, dtype=dtype).set_(storage, 0, shape)


class Collator:
    """Items → a dict of tensors (audio decoded and featurised here, once per batch)."""

    def __init__(self, features: str, cmvn_file: str | Path | None, prompt_ids: list[int], pad_id: int):
        self.features, self.cmvn_file = features, cmvn_file
        self.prompt_ids, self.pad_id = list(prompt_ids), pad_id
        self._frontend: Frontend | None = None
        self._cmvn: tuple[torch.Tensor, torch.Tensor] | None = None
        self._scratch = np.empty(0, dtype=np.float32)  # decoded audio of the batch being featurised, reused

    def __call__(self, items: Sequence[Item]) -> dict[str, Any]:
        batch = self.collate_text(items)
        lengths = torch.tensor([item.frames for item in items], dtype=torch.long)
        batch["audio_lengths"] = lengths
        if self.features == "precomputed":
            batch["audio_features"] = self._precomputed(items, lengths)
        elif self.features == "waveform":
            waves = _batch_tensor((len(items), max(item.num_samples for item in items)), torch.float32)
            batch["waveforms"], batch["waveform_lengths"] = waves, self._decode(items, waves.numpy())
        else:
            waves, wave_lengths = self._decode_scratch(items)
            if self._frontend is None:
                self._frontend = Frontend(self.cmvn_file)
            out = _batch_tensor((len(items), int(lengths.max()), FEAT_DIM), torch.float32)
            with torch.no_grad():
                feats, computed = self._frontend(waves, wave_lengths, out=out)
            if not torch.equal(computed, lengths):
                raise RuntimeError(f"frontend made {computed.tolist()} LFR frames, the loader planned {lengths.tolist()}")
            batch["audio_features"] = feats
        return batch

    def collate_text(self, items: Sequence[Item]) -> dict[str, Any]:
        """MooER's layout: ``[pad…][-1 × T_lfr//2][prompt][target][eos][pad…]`` per row.

        Built with whole-array numpy operations: every row's prompt sits in the same
        columns (just left of the target), placeholders fill the columns before it from
        the row's start, and the targets, concatenated, fill a mask of the right part.
        """
        rows = len(items)
        left = max(item.left for item in items)
        right = max(item.right for item in items)
        prompt_start = left - len(self.prompt_ids)
        placeholders = np.fromiter((audio_tokens(item.frames) for item in items), dtype=np.int64, count=rows)
        start = prompt_start - placeholders  # first column of each row's placeholders
        target_lengths = np.fromiter((len(item.target) for item in items), dtype=np.int64, count=rows)
        columns = np.arange(left + right)
        in_audio = (columns[None, :prompt_start] >= start[:, None])
        in_target = columns[None, :right] < target_lengths[:, None]
        targets = np.fromiter((t for item in items for t in item.target), dtype=np.int64, count=int(target_lengths.sum()))

        input_ids = np.full((rows, left + right), self.pad_id, dtype=np.int64)
        input_ids[:, :prompt_start][in_audio] = AUDIO_PLACEHOLDER
        input_ids[:, prompt_start:left] = self.prompt_ids
        input_ids[:, left:][in_target] = targets
        labels = np.full((rows, left + right), IGNORE_INDEX, dtype=np.int64)
        labels[:, left:][in_target] = targets
        attention_mask = ((columns[None, :] >= start[:, None]) & (columns[None, :] < left + target_lengths[:, None]))
        modality_mask = np.zeros((rows, left + right), dtype=np.bool_)
        modality_mask[:, :prompt_start] = in_audio
        return {
            "keys": [item.key for item in items],
            "input_ids": torch.from_numpy(input_ids),
            "attention_mask": torch.from_numpy(attention_mask.astype(np.int64)),
            "labels": torch.from_numpy(labels),
            "modality_mask": torch.from_numpy(modality_mask),
            "audio_token_lengths": torch.from_numpy(placeholders),
        }

    def _decode_scratch(self, items: Sequence[Item]) -> tuple[torch.Tensor, torch.Tensor]:
        """Padded waveforms in the collator's reused scratch buffer (only the frontend reads them):
        a fresh array per batch would be a few MB of new pages to fault in every time."""
        shape = (len(items), max(item.num_samples for item in items))
        if self._scratch.size < shape[0] * shape[1]:
            self._scratch = np.empty(shape[0] * shape[1], dtype=np.float32)
        waves = self._scratch[: shape[0] * shape[1]].reshape(shape)
        return torch.from_numpy(waves), self._decode(items, waves)

    @staticmethod
    def _decode(items: Sequence[Item], waves: np.ndarray) -> torch.Tensor:
        """Decode into ``waves`` (float, int16 / 32768 exactly: libsndfile's normalisation),
        zero each row's padding; returns the lengths."""
        for row, item in enumerate(items):
            with sf.SoundFile(io.BytesIO(item.payload)) as handle:
                got = len(handle.read(item.num_samples, dtype="float32", out=waves[row, : item.num_samples]))
            if got != item.num_samples:
                raise ShardError(f"sample {item.key!r}: its header promised {item.num_samples} samples, decoding gave {got}")
            waves[row, item.num_samples:] = 0
        return torch.tensor([item.num_samples for item in items], dtype=torch.long)

    def _precomputed(self, items: Sequence[Item], lengths: torch.Tensor) -> torch.Tensor:
        if self._cmvn is None:
            self._cmvn = load_cmvn(self.cmvn_file)
        shift, scale = self._cmvn
        feats = _batch_tensor((len(items), int(lengths.max()), FEAT_DIM), torch.float32)
        for row, item in enumerate(items):
            array = np.load(io.BytesIO(item.payload), allow_pickle=False)
            if not array.dtype.isnative:  # torch reads native byte order only
                array = array.astype(array.dtype.newbyteorder("="))
            # float16 -> float32, then (x + shift) * scale as apply_cmvn computes it, in place
            feats[row, : item.frames].copy_(torch.from_numpy(array)).add_(shift).mul_(scale)
            feats[row, item.frames:] = 0
        return feats


# --------------------------------------------------------------------------------------
# One stream: a rank × worker's share of an epoch
# --------------------------------------------------------------------------------------
@dataclass
class _Plan:
    """What every stream of a loader shares (built once in the main process)."""

    config: LoaderConfig
    shards: list[str]
    rank: int
    world_size: int
    prompt_ids: list[int]
    pad_id: int
    eos_id: int
    encode: Callable[[str], list[int]]


def _refs(items: Iterable[Item]) -> list[int]:
    return [n for item in items for n in item.ref]


def _pairs(flat: Sequence[int]) -> list[tuple[int, int]]:
    return [(int(flat[i]), int(flat[i + 1])) for i in range(0, len(flat), 2)]


class _Stream:
    """The chain for one (epoch, rank, worker): read → steps → shuffle → buckets → batches."""

    def __init__(self, plan: _Plan, epoch: int, worker: int, num_workers: int, snapshot: dict | None = None):
        config = plan.config
        self.plan, self.config, self.epoch, self.worker = plan, config, epoch, worker
        self.global_stream = plan.rank * num_workers + worker
        if config.resampled:
            self.share = None
        else:
            order = _rng(config.seed, _SHARD_ORDER, epoch).permutation(len(plan.shards))
            self.share = [plan.shards[i] for i in order[plan.rank::plan.world_size][worker::num_workers]]
        self.rng = _rng(config.seed, _STREAM, epoch, plan.rank, worker)
        self.steps = _Steps(config, plan.prompt_ids, plan.encode, plan.eos_id)
        edges = None
        if config.duration_bins is not None:
            edges = [lfr_frames(int(round(b * SAMPLE_RATE))) for b in config.duration_bins]
        self.bucketer = DynamicBucketer(config.max_frames, config.max_tokens, config.num_buckets, config.bucket_pool,
                                        edges, config.bins_estimate, config.drop_last, self.rng)
        self.shards_done = 0  # shards of the sequence read to the end
        self.consumed = 0  # samples read from the current shard
        self.shuffle_buffer: list[Item] = []
        self.draining = False  # input ended; the shuffle buffer is being emptied in its final order
        self.finished = False  # input ended; the buckets have been cut
        self.emitted = 0  # batches this stream has produced this epoch
        if snapshot is not None:
            self._restore(snapshot)

    def shard_at(self, position: int) -> str | None:
        """The shard at ``position`` of this stream's sequence (None past the end)."""
        if self.share is not None:
            return self.share[position] if position < len(self.share) else None
        draw = _rng(self.config.seed, _SHARD_DRAW, self.epoch, self.global_stream, position).integers(len(self.plan.shards))
        return self.plan.shards[int(draw)]

    # -- the chain ------------------------------------------------------------------------
    def _read(self) -> Iterator[tuple[str, tuple[int, int], Sample]]:
        position, skip, empty_run = self.shards_done, self.consumed, 0
        while (shard := self.shard_at(position)) is not None:
            any_sample = False
            for number, sample in enumerate(iter_shard(shard)):
                any_sample = True
                if number < skip:
                    continue
                self.consumed = number + 1
                yield shard, (position, number), sample
            empty_run = 0 if any_sample else empty_run + 1
            if self.share is None and empty_run > 100:  # drawing forever from empty shards would spin
                raise ShardError(f"{shard}: 100 shards drawn in a row without a sample; are the shards empty?")
            position, skip = position + 1, 0
            self.shards_done, self.consumed = position, 0

    def _items(self) -> Iterator[Item]:
        for shard, ref, sample in self._read():
            item = self.steps(shard, ref, sample)
            if item is not None:
                yield item

    def _shuffle(self, items: Iterator[Item]) -> Iterator[Item]:
        buffer, size = self.shuffle_buffer, self.config.shuffle_buffer
        if not self.draining:
            for item in items:
                if size <= 1:
                    yield item
                    continue
                if len(buffer) < size:
                    buffer.append(item)
                    continue
                slot = int(self.rng.integers(size))
                out, buffer[slot] = buffer[slot], item
                yield out
            order = self.rng.permutation(len(buffer)) if len(buffer) > 1 else range(len(buffer))
            buffer[:] = [buffer[i] for i in order][::-1]  # popped from the end
            self.draining = True
        while buffer:
            yield buffer.pop()

    def batches(self) -> Iterator[list[Item]]:
        items = self._shuffle(self._items()) if not self.finished else iter(())
        bucketer = self.bucketer
        while True:
            while bucketer.pending:
                self.emitted += 1
                yield bucketer.pending.pop(0)
            if self.finished:
                return
            item = next(items, None)
            if item is None:
                bucketer.finish()
                self.finished = True
            else:
                bucketer.push(item)

    # -- state ----------------------------------------------------------------------------
    def snapshot(self) -> dict:
        """Plain data from which :meth:`_restore` continues exactly here."""
        b = self.bucketer
        return {
            "epoch": self.epoch, "worker": self.worker, "emitted": self.emitted,
            "shards_done": self.shards_done, "consumed": self.consumed,
            "rng": self.rng.bit_generator.state, "shuffle": _refs(self.shuffle_buffer), "draining": self.draining,
            "edges": b.edges, "staging": _refs(b.staging), "buckets": [_refs(x) for x in b.buckets],
            "pending": [_refs(x) for x in b.pending], "finished": self.finished, "skips": dict(self.steps.skips),
        }

    def _restore(self, snap: dict) -> None:
        if snap["epoch"] != self.epoch or snap["worker"] != self.worker:
            raise ValueError(f"a snapshot of epoch {snap['epoch']} worker {snap['worker']} "
                             f"cannot resume epoch {self.epoch} worker {self.worker}")
        self.emitted, self.shards_done, self.consumed = snap["emitted"], snap["shards_done"], snap["consumed"]
        self.draining, self.finished = snap["draining"], snap["finished"]
        self.rng.bit_generator.state = snap["rng"]
        groups = [snap["shuffle"], snap["staging"], *snap["buckets"], *snap["pending"]]
        items = self._reread({ref for flat in groups for ref in _pairs(flat)})
        self.shuffle_buffer = [items[ref] for ref in _pairs(snap["shuffle"])]
        self.bucketer.restore(snap["edges"], [items[r] for r in _pairs(snap["staging"])],
                              [[items[r] for r in _pairs(x)] for x in snap["buckets"]],
                              [[items[r] for r in _pairs(x)] for x in snap["pending"]])
        self.steps.skips = dict(snap["skips"])

    def _reread(self, refs: set[tuple[int, int]]) -> dict[tuple[int, int], Item]:
        """The held samples a snapshot names, read again from their shards (one pass each)."""
        wanted: dict[int, set[int]] = {}
        for position, number in refs:
            wanted.setdefault(position, set()).add(number)
        items: dict[tuple[int, int], Item] = {}
        for position in sorted(wanted):
            shard, numbers, found = self.shard_at(position), wanted[position], 0
            for number, sample in enumerate(iter_shard(shard)):
                if number not in numbers:
                    continue
                item = self.steps(shard, (position, number), sample)
                if item is None:
                    raise ShardError(f"{shard}: sample {number} ({sample.key!r}) no longer passes the filters; "
                                     "the shard or the config changed since the state was saved")
                items[(position, number)] = item
                found += 1
                if found == len(numbers):
                    break
            missing = [n for n in numbers if (position, n) not in items]
            if missing:
                raise ShardError(f"{shard}: the saved state names samples {missing[:5]} it does not have; "
                                 "the shard changed since the state was saved")
        return items


# --------------------------------------------------------------------------------------
# Dataset and loader
# --------------------------------------------------------------------------------------
class ShardDataset(IterableDataset):
    """Collated batches of one rank; in each DataLoader worker, that worker's stream.

    Every item it yields is a batch dict plus ``_stream`` / ``_index`` / ``_state``
    (worker, batch number, pickled snapshot), and each stream ends with an ``_end``
    marker; :class:`ShardLoader` strips these and orders the batches. In a DataLoader
    worker the batch's small tensors are packed into one ``_packed`` buffer, which
    :class:`ShardLoader` unpacks in the main process.
    """

    def __init__(self, plan: _Plan, num_workers: int):
        self.plan = plan
        self.num_streams = max(1, num_workers)
        self.collator = Collator(plan.config.features, plan.config.cmvn_file, plan.prompt_ids, plan.pad_id)
        # Shared with the workers (also persistent ones), so set_epoch reaches them.
        self.epoch_box = torch.zeros(1, dtype=torch.long).share_memory_()
        self.resume: dict[int, dict] | None = None  # worker -> snapshot, for the next iteration only

    def __iter__(self) -> Iterator[dict]:
        # Not a generator itself: the epoch and the snapshot are taken when the DataLoader
        # calls iter(), before ShardLoader clears them for later iterations.
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        if num_workers != self.num_streams:
            raise RuntimeError(f"ShardDataset was built for {self.num_streams} worker streams, runs in {num_workers}; use make_loader")
        epoch = int(self.epoch_box[0])
        snapshot = (self.resume or {}).get(worker)
        self.resume = None  # a worker resumes once; later epochs start fresh
        if snapshot is not None and snapshot["epoch"] != epoch:
            snapshot = None
        return self._run(epoch, worker, num_workers, snapshot)

    def _run(self, epoch: int, worker: int, num_workers: int, snapshot: dict | None) -> Iterator[dict]:
        stream = _Stream(self.plan, epoch, worker, num_workers, snapshot)
        in_worker = get_worker_info() is not None
        for batch in stream.batches():
            out = self.collator(batch)
            if in_worker:
                out = _pack_small(out)
            out["_stream"], out["_index"] = worker, stream.emitted - 1
            out["_state"] = pickle.dumps(stream.snapshot(), protocol=pickle.HIGHEST_PROTOCOL)
            yield out
        yield {"_end": True, "_stream": worker, "_index": stream.emitted,
               "_state": pickle.dumps(stream.snapshot(), protocol=pickle.HIGHEST_PROTOCOL)}


# The batch's small tensors travel from a worker to the main process in one buffer: each
# tensor crossing on its own costs a shared-memory segment and a file-descriptor handover
# (about 0.4 ms of CPU between the two processes), while the features are one tensor anyway.
_SMALL_TENSORS = frozenset({"input_ids", "attention_mask", "labels", "modality_mask", "audio_token_lengths",
                            "audio_lengths", "waveform_lengths"})


def _pack_small(batch: dict[str, Any]) -> dict[str, Any]:
    """Worker side: the small tensors copied into one shared byte buffer (``_packed``)."""
    layout, size = [], 0
    for name, value in batch.items():
        if name in _SMALL_TENSORS:
            layout.append((name, value.dtype, tuple(value.shape), size))
            size += -(-value.numel() * value.element_size() // 8) * 8  # 8-byte aligned, for any dtype
    buffer = _batch_tensor((size,), torch.uint8)
    for name, _, _, start in layout:
        raw = batch[name].contiguous().reshape(-1).view(torch.uint8)
        buffer[start : start + raw.numel()].copy_(raw)
    out = {name: value for name, value in batch.items() if name not in _SMALL_TENSORS}
    out["_packed"] = (buffer, layout, list(batch))
    return out


def _unpack_small(batch: dict[str, Any]) -> dict[str, Any]:
    """Main side: the batch as the collator made it (same keys in the same order; the small
    tensors are views of the one buffer, pinned if the DataLoader pinned it)."""
    packed = batch.pop("_packed", None)
    if packed is None:
        return batch
    buffer, layout, order = packed
    storage, base = buffer.untyped_storage(), buffer.storage_offset()
    small = {}
    for name, dtype, shape, start in layout:
        itemsize = torch.empty((), dtype=dtype).element_size()
        small[name] = torch.empty(0, dtype=dtype, device=buffer.device).set_(storage, (base + start) // itemsize, tuple(shape))
    return {name: small[name] if name in small else batch[name] for name in order}


@dataclass
class _Progress:
    """What the consumer has received in the current epoch, per worker stream."""

    epoch: int
    delivered: dict[int, int]
    ended: set[int] = field(default_factory=set)
    states: dict[int, bytes | dict] = field(default_factory=dict)
    complete: bool = False


class ShardLoader(DataLoader):
    """A DataLoader over a :class:`ShardDataset` that hands batches over in a fixed order
    and can save and restore its position (see the module docstring for the guarantee).

    Each ``iter(loader)`` runs the next epoch (the first one is 0, or ``set_epoch``'s, or
    the one a loaded state is in, continued from where it was saved).
    """

    def __init__(self, dataset: ShardDataset, config: LoaderConfig):
        options: dict[str, Any] = {"batch_size": None, "num_workers": config.num_workers, "pin_memory": config.pin_memory}
        if config.num_workers > 0:
            options.update(prefetch_factor=config.prefetch_factor, persistent_workers=config.persistent_workers)
        super().__init__(dataset, **options)
        self.config = config
        self._next_epoch = 0
        self._loaded: dict | None = None
        self._progress: _Progress | None = None

    # -- iteration ------------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        """The epoch the next ``iter(loader)`` runs."""
        self._next_epoch = int(epoch)

    @property
    def epoch(self) -> int | None:
        """The epoch of the current (or last) iteration."""
        return None if self._progress is None else self._progress.epoch

    def __iter__(self) -> Iterator[dict]:
        dataset: ShardDataset = self.dataset
        epoch = self._next_epoch
        self._next_epoch = epoch + 1
        loaded, self._loaded = self._loaded, None
        progress = _Progress(epoch, {s: 0 for s in range(dataset.num_streams)})
        if loaded is not None and loaded["epoch"] == epoch:
            for s, entry in loaded["streams"].items():
                progress.delivered[int(s)] = entry["delivered"]
                if entry["ended"]:
                    progress.ended.add(int(s))
                if entry["snapshot"] is not None:
                    progress.states[int(s)] = entry["snapshot"]
            dataset.resume = {int(s): e["snapshot"] for s, e in loaded["streams"].items() if e["snapshot"] is not None}
        else:
            dataset.resume = None
        dataset.epoch_box[0] = epoch
        self._progress = progress
        batches = super().__iter__()
        dataset.resume = None  # the workers have their copy; later iterations start fresh
        return self._in_order(batches, progress)

    def _in_order(self, batches: Iterator[dict], progress: _Progress) -> Iterator[dict]:
        """Batches in round-robin order over the streams by batch number, whatever order they arrive in."""
        try:
            yield from self._ordered(batches, progress)
        except GeneratorExit:  # the consumer stopped early: free the workers now (persistent ones are reused)
            if not self.persistent_workers:
                _shutdown(batches)
            raise
        except BaseException:
            # A worker failed: stop the others now. Left to the garbage collector, torch's
            # shutdown waits out a 5 s join per worker.
            _shutdown(batches)
            if self.persistent_workers:
                self._iterator = None
            raise

    def _ordered(self, batches: Iterator[dict], progress: _Progress) -> Iterator[dict]:
        held: dict[tuple[int, int], dict] = {}
        streams = range(self.dataset.num_streams)
        while True:
            live = [s for s in streams if s not in progress.ended]
            if not live:
                progress.complete = True
                return
            stream = min(live, key=lambda s: (progress.delivered[s], s))
            wanted = (stream, progress.delivered[stream])
            while wanted not in held:
                batch = next(batches, None)
                if batch is None:
                    raise RuntimeError(f"the DataLoader stopped before worker stream {stream} finished epoch {progress.epoch}")
                held[(batch["_stream"], batch["_index"])] = batch
            batch = held.pop(wanted)
            progress.states[stream] = batch.pop("_state")
            if batch.pop("_end", False):
                progress.ended.add(stream)
                continue
            del batch["_stream"], batch["_index"]
            progress.delivered[stream] += 1
            yield _unpack_small(batch)

    # -- state ----------------------------------------------------------------------------
    def _identity(self) -> dict:
        plan: _Plan = self.dataset.plan
        digest = hashlib.sha256("\n".join(Path(s).name for s in plan.shards).encode()).hexdigest()[:16]
        return {"rank": plan.rank, "world_size": plan.world_size, "num_workers": self.config.num_workers,
                "shards": len(plan.shards), "shards_digest": digest, "config": self.config.stream_shape()}

    def loader_state(self) -> dict:
        """Where the consumer is: plain data (JSON-compatible) for a checkpoint."""
        if self._loaded is not None:
            return self._loaded
        progress = self._progress
        state = {"version": STATE_VERSION, **self._identity()}
        if progress is None or progress.complete:
            return {**state, "epoch": self._next_epoch, "streams": {}}
        streams = {}
        for s, delivered in progress.delivered.items():
            snap = progress.states.get(s)
            if isinstance(snap, bytes):
                snap = pickle.loads(snap)
            streams[str(s)] = {"delivered": delivered, "ended": s in progress.ended, "snapshot": snap}
        return {**state, "epoch": progress.epoch, "streams": streams}

    def load_state(self, state: dict) -> None:
        """Continue at ``state`` on the next ``iter(loader)`` (persistent workers are restarted)."""
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"expected a loader state of version {STATE_VERSION}, found {state.get('version')!r}")
        mine = self._identity()
        differ = [f"{k}: saved {state.get(k)!r}, now {v!r}" for k, v in mine.items() if state.get(k) != v]
        if differ:
            raise ValueError("this loader state was saved by a loader that splits the data differently, so it cannot "
                             "continue at the same sample: " + "; ".join(differ))
        _shutdown(getattr(self, "_iterator", None))  # persistent workers hold the old position
        self._iterator = None
        self._loaded = state
        self._next_epoch = int(state["epoch"])
        self._progress = None

    def skipped(self) -> dict[str, int]:
        """Samples skipped so far in the current epoch, by reason (too_short, too_long, no_text, no_translation)."""
        total: dict[str, int] = {}
        if self._progress is None:
            return total
        for snap in self._progress.states.values():
            if isinstance(snap, bytes):
                snap = pickle.loads(snap)
            for reason, count in snap["skips"].items():
                total[reason] = total.get(reason, 0) + count
        return total


def _shutdown(iterator: Any) -> None:
    """Stop a DataLoader iterator's worker processes, if it has any."""
    if iterator is not None and hasattr(iterator, "_shutdown_workers"):
        iterator._shutdown_workers()


def make_loader(config: LoaderConfig, tokenizer, rank: int | None = None, world_size: int | None = None,
                *, allow_idle_ranks: bool = False) -> ShardLoader:
    """A loader of MooER batches for one rank (see :class:`LoaderConfig`, :class:`ShardLoader`).

    ``tokenizer``: a Hugging Face tokenizer with ``pad_token_id`` and ``eos_token_id``
    (Qwen2-Instruct's ``<|endoftext|>`` and ``<|im_end|>``).
    ``allow_idle_ranks``: fewer shards than ranks is accepted and a rank without a shard
    yields no batches. Only for callers that never wait on every rank to have a batch
    (evaluation: it reduces sums, or runs ZeRO-3 in lockstep until any rank runs out);
    a training loop would hang at its first collective.
    """
    rank, world_size = resolve_rank(config, rank, world_size)
    shards = resolve_shards(config)
    if not config.resampled and len(shards) < world_size and not allow_idle_ranks:
        raise ValueError(f"rank {rank}: {len(shards)} shard(s) cannot feed {world_size} ranks; ranks {len(shards)}..{world_size - 1} "
                         "would get no shard and hang the others at their first collective. Write smaller shards "
                         "(`mooer-data shard --shard-size`) or use resampled=True")
    mine = len(shards[rank::world_size])
    if not config.resampled and mine == 0 and allow_idle_ranks:
        log.info("rank %d: %d shard(s) for %d ranks leave this rank none: it yields no batches", rank, len(shards), world_size)
    elif not config.resampled and mine < config.num_workers:
        log.warning("rank %d has %d shard(s) for %d workers: %d worker(s) get none and idle; write more, smaller shards",
                    rank, mine, config.num_workers, config.num_workers - mine)
    if not config.resampled and len(shards) % world_size and not allow_idle_ranks:
        log.warning("%d shards over %d ranks: some ranks get one shard more and finish the epoch later; a collective "
                    "at epoch end can wait on them (resampled=True avoids it)", len(shards), world_size)
    pad_id, eos_id = tokenizer.pad_token_id, tokenizer.eos_token_id
    if pad_id is None or eos_id is None:
        raise ValueError(f"expected a tokenizer with pad and eos tokens (Qwen2: <|endoftext|>, <|im_end|>), found pad={pad_id} eos={eos_id}")
    prompt_ids = list(tokenizer.encode(prompts.prompt_text(config.task, config.prompt_template), add_special_tokens=False))
    plan = _Plan(config, shards, rank, world_size, prompt_ids, int(pad_id), int(eos_id), _Encoder(tokenizer))
    return ShardLoader(ShardDataset(plan, config.num_workers), config)


class _Encoder:
    """``text -> ids`` without special tokens (picklable, for spawned workers)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def __call__(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

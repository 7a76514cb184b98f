"""How the loader's batches are made and handed over (mooer_model/data.py): a worker's batch
reaches the consumer equal to the one collated in-process, with its small tensors in one
shared buffer and its features written straight into shared memory; padding is zero in
every feature mode, and precomputed features get exactly apply_cmvn's values."""

from __future__ import annotations

import io
import tarfile
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import mooer_model.data as data
from mooer_model.data import LoaderConfig, make_loader
from mooer_model.frontend import apply_cmvn, load_cmvn
from mooer_model.testing_cmvn import write_am_mvn
from mooer_model.tokenizer_testing import build_test_tokenizer
from test_loader import tone, write_shard  # the shard writer of the loader tests

SMALL = ("input_ids", "attention_mask", "labels", "modality_mask", "audio_token_lengths", "audio_lengths")


@pytest.fixture(scope="module")
def tokenizer():
    return build_test_tokenizer()


@pytest.fixture(scope="module")
def cmvn(tmp_path_factory):
    path = tmp_path_factory.mktemp("cmvn") / "am.mvn"
    write_am_mvn(path, seed=5)
    return path


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """Two shards of tones of 0.3-3 s (ragged batches), audio and precomputed features."""
    root = tmp_path_factory.mktemp("transport")
    rng = np.random.default_rng(11)
    for shard in range(2):
        samples = [{"id": f"t{shard}-{n:02d}", "audio": tone(float(rng.uniform(0.3, 3.0)), 100 * shard + n),
                    "text": f"TONE▁{shard}▁{n}"} for n in range(9)]
        write_shard(root / "train" / f"shard-{shard:06d}.tar", samples, features=True)
    return root


def _config(root, cmvn, features: str, workers: int) -> LoaderConfig:
    return LoaderConfig(shards=root, cmvn_file=cmvn, features=features, max_frames=250, max_duration=4.0, num_buckets=2,
                        bins_estimate=6, shuffle_buffer=4, num_workers=workers, seed=1)


@pytest.mark.parametrize("features", ["compute", "waveform", "precomputed"])
def test_a_worker_hands_over_the_batches_collated_in_process(shards, cmvn, tokenizer, features):
    # one worker runs the same single stream as num_workers=0, so the batches must be equal
    # (the worker's pass packs, shares and unpacks; the in-process one does none of it)
    here = list(make_loader(_config(shards, cmvn, features, 0), tokenizer))
    there = list(make_loader(_config(shards, cmvn, features, 1), tokenizer))
    assert len(here) == len(there) > 2
    big = {"compute": "audio_features", "precomputed": "audio_features", "waveform": "waveforms"}[features]
    for a, b in zip(here, there):
        assert list(a) == list(b)  # same keys, same order
        for name, value in a.items():
            if name == "keys":
                assert value == b[name]
                continue
            assert value.dtype == b[name].dtype and torch.equal(value, b[name]), name
        assert b[big].is_shared() and not a[big].is_shared()


def test_padding_is_zero_in_every_mode(shards, cmvn, tokenizer):
    for features in ("compute", "waveform", "precomputed"):
        for batch in make_loader(_config(shards, cmvn, features, 0), tokenizer):
            if features == "waveform":
                for row, n in enumerate(batch["waveform_lengths"].tolist()):
                    assert torch.all(batch["waveforms"][row, n:] == 0)
            else:
                for row, n in enumerate(batch["audio_lengths"].tolist()):
                    assert torch.all(batch["audio_features"][row, n:] == 0)


def test_precomputed_features_are_apply_cmvn_of_the_stored_npy(shards, cmvn, tokenizer):
    stored = {}
    for path in sorted((shards / "train").glob("*.tar")):
        with tarfile.open(path) as archive:
            for member in archive.getmembers():
                if member.name.endswith(".npy"):
                    stored[member.name[:-4]] = np.load(io.BytesIO(archive.extractfile(member).read()))
    shift, scale = load_cmvn(cmvn)
    seen = 0
    for batch in make_loader(_config(shards, cmvn, "precomputed", 0), tokenizer):
        for row, key in enumerate(batch["keys"]):
            want = apply_cmvn(torch.from_numpy(stored[key].astype(np.float32)), shift, scale)
            assert torch.equal(batch["audio_features"][row, : want.shape[0]], want)
            seen += 1
    assert seen == len(stored)


def _collated(shards, cmvn, tokenizer) -> dict:
    return next(iter(make_loader(_config(shards, cmvn, "waveform", 0), tokenizer)))


def test_small_tensors_travel_in_one_buffer_and_come_back_as_they_were(shards, cmvn, tokenizer):
    batch = _collated(shards, cmvn, tokenizer)
    packed = data._pack_small(dict(batch))
    tensors = [name for name, value in packed.items() if isinstance(value, torch.Tensor)]
    assert tensors == ["waveforms"]  # every small tensor went into _packed
    buffer, layout, order = packed["_packed"]
    assert buffer.dtype == torch.uint8 and [entry[0] for entry in layout] == [n for n in order if n in set(SMALL) | {"waveform_lengths"}]
    # the DataLoader's pin_memory turns tuples into lists on the way: unpacking must not mind
    as_lists = dict(packed, _packed=[buffer, [list(entry[:2]) + [list(entry[2]), entry[3]] for entry in layout], order])
    for received in (data._unpack_small(dict(packed)), data._unpack_small(as_lists)):
        assert list(received) == list(batch)
        for name, value in batch.items():
            if isinstance(value, torch.Tensor):
                assert received[name].dtype == value.dtype and torch.equal(received[name], value), name
            else:
                assert received[name] == value
    assert data._unpack_small({"keys": ["x"]}) == {"keys": ["x"]}  # an in-process batch passes through


def test_batch_tensors_are_made_in_shared_memory_only_inside_a_worker(monkeypatch):
    assert not data._batch_tensor((3, 5), torch.float32).is_shared()
    monkeypatch.setattr(data, "get_worker_info", lambda: SimpleNamespace(id=0, num_workers=1))
    made = data._batch_tensor((3, 5), torch.int64)
    assert made.is_shared() and made.shape == (3, 5) and made.dtype == torch.int64 and made.is_contiguous()


@pytest.mark.parametrize("features, big", [("compute", "audio_features"), ("precomputed", "audio_features"),
                                           ("waveform", "waveforms")])
def test_inside_a_worker_the_batch_is_built_in_shared_memory(shards, cmvn, tokenizer, monkeypatch, features, big):
    # the worker path run in this process: nothing needs copying into shared memory on the way out
    monkeypatch.setattr(data, "get_worker_info", lambda: SimpleNamespace(id=0, num_workers=1))
    batches = list(make_loader(_config(shards, cmvn, features, 0), tokenizer))
    assert batches
    for batch in batches:
        assert batch[big].is_shared()
        storages = {batch[name].untyped_storage().data_ptr() for name in SMALL}
        assert len(storages) == 1 and batch["input_ids"].is_shared()  # one shared buffer for all of them

"""The shard writer's fast paths give exactly what the plain ones give: the json member
built column by column, a sample's tar members, writes cut short, PCM WAV read without
libsndfile, FLAC encoded through libsndfile's C API, helper threads making samples ahead
of the writer, planning without the garbage collector, and a manifest that changed
between two runs in one process."""

from __future__ import annotations

import gc
import hashlib
import io
import json
import os
import shutil
import tarfile
import threading
import time

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from mooer_data import shards
from mooer_data.manifest import TableSink
from mooer_data.prepare import PrepareConfig, prepare_corpus
from mooer_data.shard_format import SAMPLE_META_FIELDS, SampleJson, TarWriter, iter_shard, member_pieces, sample_meta, sample_pieces
from mooer_data.shards import SegmentSource, ShardConfig, collect_refs, read_segment, write_shards


# -- the json member ---------------------------------------------------------------------
def test_json_member_is_json_dumps_byte_for_byte():
    rows = [
        {},  # every field missing: nulls
        {"id": "a-1", "text": '引号"和\\反斜杠\n换行\u2028 😀', "text_raw": "\x00\x1f\x7f", "duration": 0.1 + 0.2,
         "start": 1e-07, "confidence": float(np.float32(0.9)), "speaker": "", "language": "zh"},
        {"id": "a-2", "duration": float("nan"), "start": float("inf"), "confidence": float("-inf"), "text": "x"},
        {"id": "a-3", "duration": 3, "start": 0.0, "confidence": True, "text": "mixed types: int, bool"},
        {"id": "a-4", "duration": np.float64(2.5), "start": None, "text": "numpy float"},
    ]
    fields = [name for name in SAMPLE_META_FIELDS if name != "translation"]  # a column the manifest lacks
    columns = {name: [row.get(name) for row in rows] for name in fields}
    encoder = SampleJson(columns, len(rows))
    for index, row in enumerate(rows):
        for num_samples in (0, 16000 * 7 + 3):
            expected = json.dumps(sample_meta(row, num_samples), ensure_ascii=False, sort_keys=True).encode("utf-8")
            assert encoder.member(index, num_samples) == expected


# -- tar members and the writer -------------------------------------------------------------
@pytest.mark.parametrize("key", ["utt-1", "inhouse-" + "meetings__weekly_sync__" * 5])
def test_sample_pieces_are_the_members_one_by_one_and_read_back(tmp_path, key):
    rng = np.random.default_rng(0)
    members = [("flac", rng.bytes(5000)), ("json", b'{"id": 1}'), ("npy", b"\x93NUMPY" + rng.bytes(9000)), ("txt", b"")]
    pieces = sample_pieces(key, members)
    assert b"".join(pieces) == b"".join(b"".join(member_pieces(f"{key}.{ext}", data)) for ext, data in members)
    writer = TarWriter(tmp_path / "t.tar")
    writer.add_pieces(pieces)
    writer.close()
    with tarfile.open(tmp_path / "t.tar") as archive:
        assert [(m.name, archive.extractfile(m).read()) for m in archive.getmembers()] == [(f"{key}.{e}", d) for e, d in members]


def test_tar_writer_finishes_writes_the_system_cuts_short(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    members = [(f"k{i}.flac", rng.bytes(int(rng.integers(1, 300_000)))) for i in range(20)]

    def write(path):
        writer = TarWriter(path)
        for name, data in members:
            writer.add(name, data)
        writer.close()
        return writer

    whole = write(tmp_path / "whole.tar")
    real_writev = os.writev

    def short_writev(fd, buffers):  # at most 1000 bytes a call, often ending inside a buffer
        return real_writev(fd, [bytes(memoryview(buffers[0])[:1000])])

    monkeypatch.setattr(os, "writev", short_writev)
    cut = write(tmp_path / "cut.tar")
    assert (tmp_path / "cut.tar").read_bytes() == (tmp_path / "whole.tar").read_bytes()
    assert cut.size == whole.size == (tmp_path / "cut.tar").stat().st_size
    assert cut.digest.hexdigest() == hashlib.sha256((tmp_path / "cut.tar").read_bytes()).hexdigest()


def test_tar_writer_takes_more_pieces_at_once_than_one_writev_can(tmp_path):
    members = [(f"k{i}.txt", b"%d" % i) for i in range(1500)]  # 4500 pieces in one call
    writer = TarWriter(tmp_path / "many.tar")
    writer.add_many(members)
    writer.close()
    with tarfile.open(tmp_path / "many.tar") as archive:
        assert [(m.name, archive.extractfile(m).read()) for m in archive.getmembers()] == members


# -- PCM WAV without libsndfile --------------------------------------------------------------
def _wav(samples: np.ndarray, *, channels=1, rate=16000, bits=16, tag=1, before_data=b"", data_size=None, after=b"") -> bytes:
    data = samples.astype("<i2").tobytes() if bits == 16 else samples.tobytes()
    block = channels * bits // 8
    fmt = (tag.to_bytes(2, "little") + channels.to_bytes(2, "little") + rate.to_bytes(4, "little")
           + (rate * block).to_bytes(4, "little") + block.to_bytes(2, "little") + bits.to_bytes(2, "little"))
    size = len(data) if data_size is None else data_size
    body = b"WAVE" + b"fmt " + len(fmt).to_bytes(4, "little") + fmt + before_data + b"data" + size.to_bytes(4, "little") + data + after
    return b"RIFF" + len(body).to_bytes(4, "little") + body


def _libsndfile(path, start, duration):
    with sf.SoundFile(path) as handle:
        handle.seek(int(round(start * handle.samplerate)))
        return handle.read(int(round(duration * handle.samplerate)), dtype="int16")


def test_pcm16_wav_is_read_as_libsndfile_reads_it(tmp_path):
    samples = np.random.default_rng(2).integers(-32768, 32768, 2 * 16000 + 3).astype(np.int16)
    odd_chunk = b"LIST" + (5).to_bytes(4, "little") + b"abcde\0"  # odd size: a pad byte follows
    files = {
        "plain.wav": None,
        "chunks.wav": _wav(samples, before_data=odd_chunk + b"fact" + (4).to_bytes(4, "little") + b"\0\0\0\0"),
        "odd-data.wav": _wav(samples, data_size=2 * len(samples) - 1, after=b""),
        "trailing.wav": _wav(samples, after=b"LIST" + (4).to_bytes(4, "little") + b"info"),
    }
    for name, data in files.items():
        if data is None:
            sf.write(tmp_path / name, samples, 16000, subtype="PCM_16")
        else:
            (tmp_path / name).write_bytes(data)
        end = sf.info(tmp_path / name).frames / 16000  # a read from the very end gives nothing, like libsndfile
        for start, duration in [(0.0, len(samples) / 16000), (0.5, 0.7), (1.9, 5.0), (end, 1.0)]:
            expected = _libsndfile(tmp_path / name, start, duration)
            got = shards._read_wav_pcm16(str(tmp_path / name), start, duration)
            assert got is not None and got.dtype == np.int16 and np.array_equal(got, expected), (name, start, duration)
            assert got.flags.writeable  # like libsndfile's arrays
            source = SegmentSource({"start": start, "duration": duration}, str(tmp_path / name), 0.0, "wav", 16000, 1)
            assert np.array_equal(read_segment(source), expected)


def test_other_wavs_are_left_to_libsndfile(tmp_path):
    mono = np.random.default_rng(3).integers(-3000, 3000, 8000).astype(np.int16)
    sf.write(tmp_path / "stereo.wav", np.stack([mono, mono], axis=1), 16000, subtype="PCM_16")
    sf.write(tmp_path / "44k.wav", np.resize(mono, 22050), 44100, subtype="PCM_16")  # 0.5 s too
    sf.write(tmp_path / "float.wav", mono / 32768.0, 16000, subtype="FLOAT")
    (tmp_path / "extensible.wav").write_bytes(_wav(mono, tag=0xFFFE))
    (tmp_path / "too-long.wav").write_bytes(_wav(mono, data_size=4 * len(mono)))
    for name in ("stereo.wav", "44k.wav", "float.wav", "extensible.wav", "too-long.wav"):
        assert shards._read_wav_pcm16(str(tmp_path / name), 0.0, 0.5) is None, name
    sf.write(tmp_path / "short.wav", mono, 16000, subtype="PCM_16")
    assert shards._read_wav_pcm16(str(tmp_path / "short.wav"), 0.6, 0.1) is None  # past the end
    for name in ("stereo.wav", "44k.wav", "float.wav"):  # and read_segment still converts them
        audio = read_segment(SegmentSource({"start": 0.0, "duration": 0.5}, str(tmp_path / name), 0.0, "wav", 0, 0))
        assert audio.dtype == np.int16 and len(audio) == 8000


# -- FLAC through libsndfile's C API ----------------------------------------------------------
def _soundfile_write(samples, audio_format="flac"):
    buffer = io.BytesIO()
    sf.write(buffer, samples, 16000, format=audio_format.upper(), subtype="PCM_16")
    return buffer.getvalue()


def test_lean_flac_is_soundfile_write_byte_for_byte(monkeypatch):
    rng = np.random.default_rng(4)
    speechlike = (np.sin(np.arange(40_000) / 9.0) * 8000 + rng.normal(0, 300, 40_000)).astype(np.int16)
    arrays = [speechlike, np.zeros(0, np.int16), np.zeros(1, np.int16), np.arange(-32768, 32767, 7, dtype=np.int16),
              np.frombuffer(speechlike.tobytes(), dtype="<i2"), speechlike[::2]]  # read-only; not contiguous
    for samples in arrays:
        assert shards.encode(samples, "flac") == _soundfile_write(samples)
    assert shards._LeanFlac._available, "this soundfile exposes libsndfile's C API: the lean path ran"
    encoded = []
    monkeypatch.setattr(shards._LeanFlac, "encode", classmethod(lambda cls, samples: encoded.append(len(samples))))
    floats = speechlike.astype(np.float32) / 32768.0
    for samples, audio_format in ((floats, "flac"), (np.stack([speechlike, speechlike], 1), "flac"), (speechlike, "wav")):
        assert shards.encode(samples, audio_format) == _soundfile_write(samples, audio_format)  # soundfile.write's own path
    assert encoded == [], "only mono int16 to FLAC takes the lean path"


# -- helper threads ------------------------------------------------------------------------
def _made_by(count, cores, window_check=None):
    names: dict[int, str] = {}
    consumed = [0]

    def make(index):
        if window_check is not None:
            window_check(index - consumed[0])
        names[index] = threading.current_thread().name
        time.sleep(0.002)
        return index

    out = []
    for value in shards._InOrder(count, make, cores, helpers=1):
        out.append(value)
        consumed[0] += 1
    return out, names


def test_helpers_make_samples_ahead_only_while_a_core_is_idle():
    cores = threading.Semaphore(2)
    cores.acquire()  # this worker's own token: one core of two is idle
    ahead = []
    order, names = _made_by(200, cores, window_check=ahead.append)
    assert order == list(range(200))
    helped = [i for i, name in names.items() if name.startswith("shard-helper")]
    assert helped and len(helped) < 200, "the idle core made some of the samples, the writer the rest"
    assert max(ahead) <= shards._HELPER_WINDOW, "no sample is made further ahead of the writer than the window"
    cores.acquire()  # the other worker builds a shard too: no idle core
    order, names = _made_by(50, cores)
    assert order == list(range(50)) and set(names.values()) == {threading.current_thread().name}


def test_a_failure_in_a_helper_reaches_the_writer_in_order():
    cores = threading.Semaphore(1)  # one idle core

    def make(index):
        time.sleep(0.001)
        if index == 30:
            raise RuntimeError("boom at 30")
        return index

    seen = []
    with pytest.raises(RuntimeError, match="boom at 30"):
        for value in shards._InOrder(100, make, cores, helpers=1):
            seen.append(value)
    assert seen == list(range(30))


# -- whole runs ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def wav_manifest(corpus_factory, tmp_path_factory):
    out = tmp_path_factory.mktemp("writer-manifest") / "aishell2"
    prepare_corpus("aishell2", corpus_factory("aishell2").root, out, PrepareConfig(show_progress=False), log=lambda _: None)
    return out


def test_one_shard_on_two_jobs_equals_one_job(wav_manifest, tmp_path):
    """One shard: the second worker is idle the whole run, so the first one's helper works."""
    for jobs in (1, 2):
        write_shards([wav_manifest], tmp_path / str(jobs), ShardConfig(shard_size=None, max_count=10_000, jobs=jobs, show_progress=False),
                     log=lambda _: None)
    first, second = (sorted((tmp_path / j).glob("*/shard-*.tar")) for j in ("1", "2"))
    assert len(first) == len(second) == len({p.parent.name for p in first})  # one shard per split
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in second]


def test_planning_pauses_the_garbage_collector_and_workers_leave_their_inheritance_out(wav_manifest, tmp_path, monkeypatch):
    seen = []
    plan = shards.plan_shards
    monkeypatch.setattr(shards, "plan_shards", lambda *a, **k: (seen.append(gc.isenabled()), plan(*a, **k))[1])
    write_shards([wav_manifest], tmp_path / "out", ShardConfig(shard_size=None, max_count=50, jobs=1, show_progress=False), log=lambda _: None)
    assert seen == [False] and gc.isenabled(), "paused while planning, running again after"
    try:
        shards._init_worker(None, 0)  # what a pool worker runs first
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


def test_manifests_are_read_while_planning_so_forked_workers_inherit_them(wav_manifest, tmp_path, monkeypatch):
    cached_at_fork = []
    real_pool = shards.ProcessPoolExecutor

    def pool(*args, **kwargs):
        cached_at_fork.append(sorted(shards._MANIFESTS))
        return real_pool(*args, **kwargs)

    monkeypatch.setattr(shards, "ProcessPoolExecutor", pool)
    write_shards([wav_manifest], tmp_path / "out", ShardConfig(shard_size=None, max_count=50, jobs=2, show_progress=False),
                 log=lambda _: None)
    assert cached_at_fork == [[str(wav_manifest)]]
    shards._read_manifests([str(tmp_path / "no-such-manifest")])  # a read that fails is left to the building to report
    assert str(tmp_path / "no-such-manifest") not in shards._MANIFESTS


def _rewrite_segments(directory, change):
    rows = [change(dict(row)) for row in pq.read_table(directory / "segments.parquet").to_pylist()]
    roots = json.loads((directory / "manifest.json").read_text())["root"]
    with TableSink(directory / "segments.parquet", "segments", {"aishell2": str(roots)}) as sink:
        sink.add_many(rows)
    return rows


def test_a_manifest_changed_between_runs_is_read_again_and_orphans_are_skipped(wav_manifest, tmp_path):
    manifest = tmp_path / "m"
    shutil.copytree(wav_manifest, manifest)
    config = ShardConfig(shard_size=None, max_count=3, jobs=1, show_progress=False)
    write_shards([manifest], tmp_path / "before", config, log=lambda _: None)
    rows = _rewrite_segments(manifest, lambda row: dict(row, text=row["text"] + "改"))
    rows = _rewrite_segments(manifest, lambda row: dict(row, recording_id="nowhere") if row["id"] == rows[1]["id"] else row)
    result = write_shards([manifest], tmp_path / "after", config, log=lambda _: None)
    texts = {s.key: s.text for p in sorted((tmp_path / "after").glob("*/shard-*.tar")) for s in iter_shard(p)}
    assert texts == {r["id"]: r["text"] for r in rows if r["recording_id"] != "nowhere"}
    assert all(text.endswith("改") for text in texts.values()), "the second run read the changed manifest"
    _dirs, refs, skipped = collect_refs([manifest])
    assert [r.id for r in refs] == [r["id"] for r in rows if r["recording_id"] != "nowhere"]
    assert skipped == [{"id": rows[1]["id"], "reason": f"recording nowhere is not in {manifest}/recordings.parquet"}]
    assert result.samples == len(rows) - 1 and sum(result.skipped_segments.values()) == 1

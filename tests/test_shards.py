"""`mooer-data shard` and `verify-shards`: round trip, copy vs transcode, determinism,
kill-and-rerun, verification, and plain webdataset reading our tars."""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from mooer_data.prepare import PrepareConfig, prepare_corpus
from mooer_data.shard_format import ShardError, iter_shard
from mooer_data.shards import ShardConfig, parse_size, verify_shards, write_shards


@pytest.fixture(scope="module")
def manifests(corpus_factory, tmp_path_factory):
    root = tmp_path_factory.mktemp("shard-manifests")
    dirs = []
    for name in ("librispeech", "aishell2", "wenetspeech"):
        expected = corpus_factory(name)
        prepare_corpus(name, expected.root, root / name, PrepareConfig(show_progress=False), log=lambda _: None)
        dirs.append(root / name)
    return dirs


def shard(manifests, out, **options):
    config = ShardConfig(**{"shard_size": None, "max_count": 4, "show_progress": False, **options})
    return write_shards(manifests, out, config, log=lambda _: None)


def all_samples(out):
    samples = {}
    for path in sorted(out.glob("*/shard-*.tar")):
        for sample in iter_shard(path):
            assert sample.key not in samples, f"{sample.key} appears twice"
            samples[sample.key] = sample
    return samples


def test_every_segment_exactly_once_as_16k_mono_audio(manifests, tmp_path):
    result = shard(manifests, tmp_path / "out", jobs=2)
    segments = {s["id"]: s for d in manifests for s in pq.read_table(d / "segments.parquet").to_pylist()}
    samples = all_samples(tmp_path / "out")
    assert sorted(samples) == sorted(segments) and result.samples == len(segments)
    for key, sample in samples.items():
        audio, rate = sf.read(io.BytesIO(sample.audio), dtype="int16")
        assert rate == 16000 and audio.ndim == 1 and sf.info(io.BytesIO(sample.audio)).subtype == "PCM_16"
        assert len(audio) == pytest.approx(segments[key]["duration"] * 16000, abs=16)
        assert sample.text == segments[key]["text"] and sample.meta["id"] == key
        assert sample.meta["text_raw"] == segments[key]["text_raw"] and sample.meta["split"] == segments[key]["split"]
    index = pq.read_table(tmp_path / "out" / "index.parquet").to_pylist()
    assert sum(r["count"] for r in index) == len(segments)
    assert {r["split"] for r in index} == {s["split"] for s in segments.values()}
    data_list = (tmp_path / "out" / "data.list").read_text().split()
    assert data_list == [str((tmp_path / "out" / r["path"]).resolve()) for r in index if r["split"] == "train"]


def test_whole_16k_flac_is_copied_and_everything_else_transcoded(manifests, corpus_factory, tmp_path):
    result = shard(manifests, tmp_path / "out")
    librispeech = corpus_factory("librispeech")
    samples = all_samples(tmp_path / "out")
    for key, sample in samples.items():
        if key.startswith("librispeech-"):
            utt = key.removeprefix("librispeech-")
            speaker, chapter, _ = utt.split("-")
            source = next(librispeech.root.rglob(f"{utt}.flac"))
            assert sample.audio == source.read_bytes(), "a whole 16 kHz FLAC is copied byte for byte"
        elif key.startswith("wenetspeech-"):
            assert sample.audio_format == "flac" and sample.meta["start"] >= 0  # cut out of an opus recording
    assert result.copied == sum(1 for k in samples if k.startswith("librispeech-"))
    # a WAV source (AISHELL-2) is decoded and re-encoded to FLAC with the same samples
    aishell = [s for k, s in samples.items() if k.startswith("aishell2-")][0]
    decoded, _ = sf.read(io.BytesIO(aishell.audio), dtype="int16")
    original = corpus_factory("aishell2").root / "iOS"
    wav = next(original.rglob(f"{aishell.key.removeprefix('aishell2-')}.wav"))
    assert np.array_equal(decoded, sf.read(wav, dtype="int16")[0])


def test_rebuild_is_byte_identical_and_a_killed_run_rebuilds_only_what_is_missing(manifests, tmp_path):
    shard(manifests, tmp_path / "a", jobs=2)
    shard(manifests, tmp_path / "b")
    first = {p.relative_to(tmp_path / "a"): p.read_bytes() for p in (tmp_path / "a").glob("*/*.tar")}
    second = {p.relative_to(tmp_path / "b"): p.read_bytes() for p in (tmp_path / "b").glob("*/*.tar")}
    assert first == second
    # a killed run: one shard never renamed into place, one half-written .tmp left behind
    victim = sorted((tmp_path / "a").glob("train/shard-*.tar"))[1]
    victim.unlink()
    (victim.parent / (victim.name + ".tmp")).write_bytes(b"half a tar")
    rerun = shard(manifests, tmp_path / "a")
    assert rerun.built == 1 and rerun.skipped_existing == rerun.shards - 1
    assert victim.read_bytes() == second[victim.relative_to(tmp_path / "a")]
    assert not list((tmp_path / "a").glob("*/*.tmp"))
    assert pq.read_table(tmp_path / "a" / "index.parquet").equals(pq.read_table(tmp_path / "b" / "index.parquet"))
    assert verify_shards(tmp_path / "a") == []


def test_seed_decides_the_mix(manifests, tmp_path):
    shard(manifests, tmp_path / "s1", seed=1)
    shard(manifests, tmp_path / "s2", seed=2)
    members = lambda out: [sorted(s.key for s in iter_shard(p)) for p in sorted(out.glob("train/*.tar"))]  # noqa: E731
    assert members(tmp_path / "s1") != members(tmp_path / "s2")
    assert sorted(sum(members(tmp_path / "s1"), [])) == sorted(sum(members(tmp_path / "s2"), []))


def test_wav_format_and_plain_webdataset_reading(manifests, tmp_path):
    import webdataset as wds

    shard(manifests, tmp_path / "wav", audio_format="wav")
    urls = [str(p) for p in sorted((tmp_path / "wav").glob("*/shard-*.tar"))]
    dataset = wds.WebDataset(urls, shardshuffle=False, empty_check=False)
    keys = []
    for sample in dataset:
        assert {"wav", "txt", "json"} <= set(sample)
        assert json.loads(sample["json"])["id"] == sample["__key__"]
        keys.append(sample["__key__"])
    assert len(keys) == len(set(keys)) == len(all_samples(tmp_path / "wav"))


def test_verify_finds_tampering_and_unknown_shards(manifests, tmp_path):
    shard(manifests, tmp_path / "out")
    victim = sorted((tmp_path / "out").glob("train/shard-*.tar"))[0]
    data = bytearray(victim.read_bytes())
    data[700] ^= 0xFF
    victim.write_bytes(bytes(data))
    (tmp_path / "out" / "train" / "shard-999999.tar").write_bytes(b"")
    problems = verify_shards(tmp_path / "out")
    assert any(victim.name in p and "sha256" in p for p in problems)
    assert any("shard-999999.tar" in p and "does not list" in p for p in problems)


@pytest.mark.parametrize(
    "name, kind",
    [("/etc/evil.txt", "file"), ("../evil.txt", "file"), ("link.txt", "symlink"), ("a.b.txt", "file"), ("x.exe", "file")],
)
def test_the_reader_refuses_what_we_never_write(tmp_path, name, kind):
    path = tmp_path / "bad.tar"
    with tarfile.open(path, "w") as archive:
        info = tarfile.TarInfo(name)
        if kind == "symlink":
            info.type = tarfile.SYMTYPE
            info.linkname = "/etc/passwd"
            archive.addfile(info)
        else:
            info.size = 3
            archive.addfile(info, io.BytesIO(b"abc"))
    with pytest.raises(ShardError, match="bad.tar"):
        list(iter_shard(path))


def test_unlabelled_segments_are_skipped_with_a_reason(manifests, tmp_path):
    from mooer_data.manifest import TableSink

    source = manifests[0]
    rows = pq.read_table(source / "segments.parquet").to_pylist()
    rows[0] = dict(rows[0], text=None)
    target = tmp_path / "partial"
    with TableSink(target / "segments.parquet", "segments", {"librispeech": str(json.loads((source / "manifest.json").read_text())["root"])}) as sink:
        sink.add_many(rows)
    (target / "recordings.parquet").write_bytes((source / "recordings.parquet").read_bytes())
    result = shard([target], tmp_path / "out")
    assert result.samples == len(rows) - 1 and result.skipped_segments == {"no text": 1}
    skipped = pq.read_table(tmp_path / "out" / "skipped.parquet").to_pylist()
    assert skipped == [{"id": rows[0]["id"], "reason": "no text: label it first (mooer-data pseudolabel)"}]


def test_sizes_parse():
    assert parse_size("1GB") == 10**9 and parse_size("64MiB") == 64 * 2**20 and parse_size("1000") == 1000
    with pytest.raises(ValueError, match="expected a size"):
        parse_size("big")


def test_tar_writer_output_reads_back_with_tarfile_including_long_names(tmp_path):
    from mooer_data.shards import TarWriter

    long_key = "inhouse-" + "meetings__2024_03_weekly_sync__" * 5 + "standup-2c244682"
    path = tmp_path / "t.tar"
    writer = TarWriter(path)
    writer.add(f"{long_key}.json", b'{"id": 1}')
    writer.add("short.txt", b"hello")
    writer.close()
    with tarfile.open(path) as archive:
        members = archive.getmembers()
        assert [m.name for m in members] == [f"{long_key}.json", "short.txt"]
        assert archive.extractfile(members[1]).read() == b"hello" and members[0].mtime == members[1].mtime
    assert path.stat().st_size % 10240 == 0
    import hashlib

    assert writer.digest.hexdigest() == hashlib.sha256(path.read_bytes()).hexdigest()


def test_every_inhouse_format_is_converted_to_16k_mono(corpus_factory, tmp_path, monkeypatch):
    """wav 44.1 kHz stereo, flac, opus, mp3, m4a and a 40 s file, once pseudo-labelled."""
    from mooer_data.providers import registry
    from mooer_data.pseudolabel import PseudolabelConfig, pseudolabel

    monkeypatch.setitem(registry._EXTRA, ("asr", "fake"), registry.ProviderSpec("asr", "fake", "mooer_data.testing.fakes:FakeAsr"))
    expected = corpus_factory("inhouse")
    prepare_corpus("inhouse", expected.root, tmp_path / "m", PrepareConfig(show_progress=False), log=lambda _: None)
    pseudolabel(tmp_path / "m", tmp_path / "p", PseudolabelConfig(provider="fake", show_progress=False), log=lambda _: None)
    result = shard([tmp_path / "p"], tmp_path / "s")
    assert result.samples == len(expected.recordings) and not result.skipped_segments
    for sample in all_samples(tmp_path / "s").values():
        audio, rate = sf.read(io.BytesIO(sample.audio), dtype="int16")
        assert rate == 16000 and audio.ndim == 1
        assert len(audio) == pytest.approx(sample.meta["duration"] * 16000, abs=0.05 * 16000)
        assert np.abs(audio).max() > 500, "speech survived the conversion"

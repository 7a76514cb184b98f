"""Every recipe on its miniature corpus: exact ids, counts, speakers, splits, durations,
normalised text and reject reasons (the fixtures carry every quirk of corpora.md §5)."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter

import pyarrow.parquet as pq
import pytest

from mooer_data.corpora.registry import RECIPES
from mooer_data.manifest import ID_PATTERN, SCHEMA_VERSION, ManifestDir, read_roots
from mooer_data.prepare import PrepareConfig, prepare_corpus

CORPORA = [
    "aishell2",
    "aishell2_eval",
    "librispeech",
    "wenetspeech",
    "multi_cn",
    "aidatatang_200zh",
    "aishell",
    "magicdata",
    "primewords",
    "stcmds",
    "thchs30",
    "corrupt",
]


def prepare(expected, out_dir, **options):
    corpus = expected.corpus
    return prepare_corpus(corpus, expected.root, out_dir, PrepareConfig(show_progress=False, **options), log=lambda _: None)


def rows_by_id(path):
    return {row["id"]: row for row in pq.read_table(path).to_pylist()}


@pytest.mark.parametrize("name", CORPORA)
def test_recipe_matches_the_corpus_exactly(name, corpus_factory, tmp_path):
    expected = corpus_factory(name)
    prepare(expected, tmp_path, jobs=2)
    segments = rows_by_id(tmp_path / "segments.parquet")
    recordings = rows_by_id(tmp_path / "recordings.parquet")
    rejects = pq.read_table(tmp_path / "rejects.parquet").to_pylist()

    assert sorted(segments) == sorted(expected.segments)
    for segment_id, want in expected.segments.items():
        got = segments[segment_id]
        assert got["recording_id"] == want.recording_id, segment_id
        assert got["speaker"] == want.speaker, segment_id
        assert (got["split"], got["subset"], got["language"]) == (want.split, want.subset, want.language), segment_id
        assert got["text"] == want.text, segment_id
        assert got["text_raw"] == want.text_raw, segment_id
        assert got["start"] == pytest.approx(want.start, abs=1e-3), segment_id
        assert got["duration"] == pytest.approx(want.duration, abs=2e-3), segment_id
        assert got["label_origin"] == "manual" and got["translation"] is None

    assert sorted(recordings) == sorted(expected.recordings)
    for recording_id, seconds in expected.recordings.items():
        assert recordings[recording_id]["duration"] == pytest.approx(seconds, abs=2e-3), recording_id
        assert not recordings[recording_id]["path"].startswith("/"), "paths are stored relative to the root"

    found = Counter((row["item"], row["reason"].split(":", 1)[0]) for row in rejects)
    want = Counter(expected.rejects.items())
    for item, count in expected.duplicate_rejects.items():
        want[(item, "duplicate-id")] += count
    assert found == want
    assert all(len(row["reason"].split(":", 1)[1].strip()) > 10 for row in rejects), "every reason explains itself"


@pytest.mark.parametrize("name", ["aishell2", "librispeech", "wenetspeech", "multi_cn", "inhouse"])
def test_ids_are_source_prefixed_unique_and_dot_free(name, corpus_factory, tmp_path):
    expected = corpus_factory(name)
    prepare(expected, tmp_path)
    for table in ("segments", "recordings"):
        rows = pq.read_table(tmp_path / f"{table}.parquet").to_pylist()
        ids = [row["id"] for row in rows]
        assert len(ids) == len(set(ids))
        for row in rows:
            assert row["id"].startswith(row["source"] + "-") and ID_PATTERN.match(row["id"]), row["id"]


def test_manifest_records_schema_version_and_root_once(corpus_factory, tmp_path):
    expected = corpus_factory("librispeech")
    prepare(expected, tmp_path)
    schema = pq.read_schema(tmp_path / "segments.parquet")
    assert schema.metadata[b"mooer.schema_version"] == SCHEMA_VERSION.encode()
    assert read_roots(tmp_path / "recordings.parquet") == {"librispeech": str(expected.root.resolve())}
    info = json.loads((tmp_path / "manifest.json").read_text())
    assert info["root"] == str(expected.root.resolve()) and info["counts"]["segments"] == len(expected.segments)
    # relative path + root gives the audio file back
    recording = ManifestDir(tmp_path).read("recordings").to_pylist()[0]
    assert (expected.root.resolve() / recording["path"]).is_file()


def test_inhouse_is_recordings_only(corpus_factory, tmp_path):
    expected = corpus_factory("inhouse")
    prepare(expected, tmp_path)
    recordings = rows_by_id(tmp_path / "recordings.parquet")
    assert sorted(recordings) == sorted(expected.recordings)
    assert pq.read_metadata(tmp_path / "segments.parquet").num_rows == 0
    formats = {row["format"] for row in recordings.values()}
    assert {"wav", "flac", "opus", "mp3", "m4a"} <= formats
    assert max(row["channels"] for row in recordings.values()) == 2  # stereo is fine for in-house
    rejects = {row["item"]: row["reason"].split(":", 1)[0] for row in pq.read_table(tmp_path / "rejects.parquet").to_pylist()}
    assert rejects == expected.rejects


def test_parts_selection(corpus_factory, tmp_path):
    expected = corpus_factory("librispeech")
    prepare(expected, tmp_path, parts=["dev-clean"])
    segments = pq.read_table(tmp_path / "segments.parquet").to_pylist()
    assert segments and {row["subset"] for row in segments} == {"dev-clean"}
    with pytest.raises(ValueError, match="unknown part"):
        prepare(expected, tmp_path / "x", parts=["train-clean-999"])


def test_wenetspeech_subset_tags_filter_segments(corpus_factory, tmp_path):
    expected = corpus_factory("wenetspeech")
    prepare(expected, tmp_path, parts=["M"])
    segments = pq.read_table(tmp_path / "segments.parquet").to_pylist()
    want = {sid for sid, seg in expected.segments.items() if "M" in (seg.subset or "").split()}
    assert want and {row["id"] for row in segments} == want


def test_rerun_skips_finished_parts_and_gives_the_same_tables(corpus_factory, tmp_path):
    expected = corpus_factory("librispeech")
    first = prepare(expected, tmp_path)
    before = {name: (tmp_path / name).read_bytes() for name in ("segments.parquet", "recordings.parquet", "rejects.parquet")}
    again = prepare(expected, tmp_path)
    assert first.parts_prepared and not first.parts_skipped
    assert again.parts_skipped == first.parts_prepared and not again.parts_prepared
    assert {name: (tmp_path / name).read_bytes() for name in before} == before


def test_a_killed_part_is_redone(corpus_factory, tmp_path, monkeypatch):
    """Kill the run while the second part is written: the first part is kept, the
    half-written one is redone, and the result equals an uninterrupted run."""
    from mooer_data.corpora import librispeech

    expected = corpus_factory("librispeech")
    reference = tmp_path / "reference"
    prepare(expected, reference)
    original = librispeech.RECIPE.prepare_part
    calls = []

    def dies_on_second_part(layout, part, context, writers):
        calls.append(part)
        if len(calls) == 2:
            writers.segments.add({"id": "librispeech-partial", "recording_id": "x", "source": "librispeech"})
            raise KeyboardInterrupt("killed")
        return original(layout, part, context, writers)

    monkeypatch.setitem(RECIPES, "librispeech", dataclasses.replace(librispeech.RECIPE, prepare_part=dies_on_second_part))
    with pytest.raises(KeyboardInterrupt):
        prepare(expected, tmp_path / "out")
    monkeypatch.setitem(RECIPES, "librispeech", librispeech.RECIPE)
    assert not (tmp_path / "out" / "segments.parquet").exists()
    resumed = prepare(expected, tmp_path / "out")
    assert resumed.parts_skipped == [calls[0]]
    for name in ("segments.parquet", "recordings.parquet", "rejects.parquet"):
        assert pq.read_table(tmp_path / "out" / name).equals(pq.read_table(reference / name)), name


@pytest.mark.parametrize(
    "corpus, expected_hint",
    [
        ("aishell2", "iOS/data/{wav.scp, trans.txt"),
        ("librispeech", "<speaker>-<chapter>.trans.txt"),
        ("wenetspeech", "WenetSpeech.json"),
        ("multi_cn", "aidatatang_200zh/"),
        ("magicdata", "TRANS.txt"),
    ],
)
def test_wrong_corpus_dir_says_what_was_expected_and_found(corpus, expected_hint, tmp_path):
    (tmp_path / "some_dir").mkdir()
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError) as error:
        prepare_corpus(corpus, tmp_path, tmp_path / "out", PrepareConfig(show_progress=False), log=lambda _: None)
    message = str(error.value)
    assert expected_hint in message and "found:" in message and "some_dir/" in message and "notes.txt" in message


def test_an_id_in_two_parts_is_kept_once_and_reported(tmp_path):
    from mooer_data.manifest import TableSink
    from mooer_data.prepare import _merge_parts

    def write_part(name, ids):
        part = tmp_path / name
        for kind in ("recordings", "segments", "rejects"):
            with TableSink(part / f"{kind}.parquet", kind, {}) as sink:
                if kind == "recordings":
                    sink.add_many({"id": i, "source": "demo", "path": f"{i}.wav"} for i in ids)
                elif kind == "segments":
                    sink.add_many({"id": i, "recording_id": i, "source": "demo", "text": name} for i in ids)
        return part

    parts = [write_part("train", ["demo-a", "demo-b"]), write_part("dev", ["demo-b", "demo-c"])]
    counts = _merge_parts(parts, tmp_path / "out", "demo", {})
    segments = pq.read_table(tmp_path / "out" / "segments.parquet").to_pylist()
    assert [(s["id"], s["text"]) for s in segments] == [("demo-a", "train"), ("demo-b", "train"), ("demo-c", "dev")]
    rejects = pq.read_table(tmp_path / "out" / "rejects.parquet").to_pylist()
    assert [(r["item"], r["reason"].split(":")[0]) for r in rejects] == [("demo-b", "duplicate-id")]
    assert counts == {"recordings": 3, "segments": 3, "rejects": 1}


def test_an_id_with_a_dot_is_rejected_not_written(tmp_path):
    import numpy as np
    import soundfile as sf

    chapter = tmp_path / "LibriSpeech" / "dev-clean" / "7" / "8"
    chapter.mkdir(parents=True)
    for utt in ("7-8-0000", "7-8-00.01"):
        sf.write(chapter / f"{utt}.flac", np.zeros(1600, dtype=np.int16) + 3, 16000)
    (chapter / "7-8.trans.txt").write_text("7-8-0000 HELLO\n7-8-00.01 WORLD\n")
    prepare_corpus("librispeech", tmp_path / "LibriSpeech", tmp_path / "out", PrepareConfig(show_progress=False), log=lambda _: None)
    assert [r["id"] for r in pq.read_table(tmp_path / "out/segments.parquet").to_pylist()] == ["librispeech-7-8-0000"]
    rejects = pq.read_table(tmp_path / "out/rejects.parquet").to_pylist()
    assert [(r["item"], r["reason"].split(":")[0]) for r in rejects] == [("librispeech-7-8-00.01", "bad-id")]

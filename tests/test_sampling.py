import json
import random

import duckdb
import pyarrow.parquet as pq
import pytest

from mooer_data.manifest import TableSink
from mooer_data.sampling import SampleConfig, parse_hours_per_source, rank_key, sample_manifests


def segment(source: str, index: int, duration: float) -> dict:
    sid = f"{source}-utt{index:05d}"
    return {"id": sid, "recording_id": sid, "source": source, "subset": None, "split": "train", "language": "zh",
            "speaker": "s1", "start": 0.0, "duration": duration, "text": "好", "text_raw": "好", "translation": None,
            "label_origin": "manual", "confidence": None}


def recording(source: str, index: int, duration: float) -> dict:
    return {"id": f"{source}-rec{index:04d}", "source": source, "path": f"r/{index}.wav", "format": "wav",
            "sample_rate": 16000, "channels": 1, "duration": duration}


def make_corpus(directory, source, count, shuffle_seed=None, with_recordings=True):
    rows = [segment(source, i, 1.0 + (i % 7) * 0.5) for i in range(count)]
    if shuffle_seed is not None:
        random.Random(shuffle_seed).shuffle(rows)
    with TableSink(directory / "segments.parquet", "segments", {source: f"/data/{source}"}, batch_rows=37) as sink:
        sink.add_many(rows)
    if with_recordings:
        with TableSink(directory / "recordings.parquet", "recordings", {source: f"/data/{source}"}) as sink:
            sink.add_many(recording(source, 0, 1.0) | {"id": r["id"]} for r in rows)
    return directory


def make_inhouse(directory, count):
    with TableSink(directory / "recordings.parquet", "recordings", {"inhouse": "/data/inhouse"}) as sink:
        sink.add_many(recording("inhouse", i, 600.0 + i) for i in range(count))
    with TableSink(directory / "segments.parquet", "segments", {"inhouse": "/data/inhouse"}):
        pass
    return directory


def selected_ids(out_dir, table="segments"):
    return sorted(pq.read_table(out_dir / f"{table}.parquet", columns=["id"]).column("id").to_pylist())


def test_rank_key_matches_duckdb():
    value = duckdb.execute("SELECT md5_number_lower('7:aishell2-IC0001W0001')").fetchall()[0][0]
    assert rank_key(7, "aishell2-IC0001W0001") == value


def test_selection_is_the_shortest_prefix_in_rank_order(tmp_path):
    corpus = make_corpus(tmp_path / "a", "aishell2", 500)
    result = sample_manifests([corpus], tmp_path / "out", SampleConfig(seed=3, hours_per_source={"aishell2": 0.1}))
    rows = pq.read_table(corpus / "segments.parquet").to_pylist()
    rows.sort(key=lambda r: rank_key(3, r["id"]))
    total, expected = 0.0, []
    for row in rows:
        expected.append(row["id"])
        total += row["duration"]
        if total >= 360.0:
            break
    assert selected_ids(tmp_path / "out") == sorted(expected)
    group = result.groups["aishell2"]
    assert group.reached_hours == pytest.approx(total / 3600) and group.reached_hours >= 0.1
    assert group.items == len(expected)
    # the recordings of the chosen segments come along, for the shard stage
    assert selected_ids(tmp_path / "out", "recordings") == sorted(expected)


def test_same_seed_same_selection_whatever_the_row_order(tmp_path):
    ordered = make_corpus(tmp_path / "ordered", "aishell2", 400)
    shuffled = make_corpus(tmp_path / "shuffled", "aishell2", 400, shuffle_seed=11)
    config = SampleConfig(seed=5, hours_per_source={"aishell2": 0.05})
    sample_manifests([ordered], tmp_path / "o1", config)
    sample_manifests([shuffled], tmp_path / "o2", config)
    assert selected_ids(tmp_path / "o1") == selected_ids(tmp_path / "o2")
    sample_manifests([ordered], tmp_path / "o1-again", config)  # a rerun writes the same bytes
    assert (tmp_path / "o1/segments.parquet").read_bytes() == (tmp_path / "o1-again/segments.parquet").read_bytes()
    sample_manifests([ordered], tmp_path / "o3", SampleConfig(seed=6, hours_per_source={"aishell2": 0.05}))
    assert selected_ids(tmp_path / "o3") != selected_ids(tmp_path / "o1")


def test_a_grown_corpus_keeps_earlier_picks(tmp_path):
    small = make_corpus(tmp_path / "small", "aishell2", 300)
    grown = make_corpus(tmp_path / "grown", "aishell2", 600)
    sample_manifests([small], tmp_path / "s", SampleConfig(seed=1, hours_per_source={"aishell2": 0.05}))
    # twice the rows with a budget grown a little more than in proportion: the cutoff key
    # moves up, and every earlier pick (a key below the old cutoff) is still chosen
    sample_manifests([grown], tmp_path / "g", SampleConfig(seed=1, hours_per_source={"aishell2": 0.13}))
    small_ids, grown_ids = set(selected_ids(tmp_path / "s")), set(selected_ids(tmp_path / "g"))
    assert small_ids <= grown_ids and len(grown_ids) > len(small_ids)


def test_per_source_budgets_and_inhouse_by_recording(tmp_path):
    a = make_corpus(tmp_path / "a", "aishell2", 300)
    b = make_corpus(tmp_path / "b", "librispeech", 300)
    house = make_inhouse(tmp_path / "house", 20)
    budgets = {"aishell2": 0.05, "librispeech": 0.02, "inhouse": 0.5}
    result = sample_manifests([a, b, house], tmp_path / "out", SampleConfig(seed=2, hours_per_source=budgets))
    record = json.loads((tmp_path / "out/sample.json").read_text())
    assert record["seed"] == 2
    assert {name: g["requested_hours"] for name, g in record["groups"].items()} == budgets
    for name, hours in budgets.items():
        assert hours <= record["groups"][name]["reached_hours"] < hours + 0.2
    assert result.groups["inhouse"].unit == "recordings"
    recordings = pq.read_table(tmp_path / "out/recordings.parquet").to_pylist()
    inhouse = [r for r in recordings if r["source"] == "inhouse"]
    assert 3 <= len(inhouse) == result.groups["inhouse"].items < 20
    assert sum(r["duration"] for r in inhouse) / 3600 == pytest.approx(result.groups["inhouse"].reached_hours)
    roots = json.loads(pq.read_schema(tmp_path / "out/segments.parquet").metadata[b"mooer.roots"])
    assert roots == {"aishell2": "/data/aishell2", "librispeech": "/data/librispeech", "inhouse": "/data/inhouse"}


def test_total_budget_over_the_pool_and_shortfall(tmp_path):
    a = make_corpus(tmp_path / "a", "aishell2", 50)
    result = sample_manifests([a], tmp_path / "out", SampleConfig(seed=1, hours=100.0))
    group = result.groups["*"]
    assert group.items == 50 and group.reached_hours == pytest.approx(group.available_hours)
    assert len(selected_ids(tmp_path / "out")) == 50


def test_budget_errors(tmp_path):
    a = make_corpus(tmp_path / "a", "aishell2", 10)
    with pytest.raises(ValueError, match="exactly one"):
        SampleConfig(seed=1)
    with pytest.raises(ValueError, match="manifests hold only"):
        sample_manifests([a], tmp_path / "out", SampleConfig(seed=1, hours_per_source={"nope": 1.0}))
    with pytest.raises(ValueError, match="SOURCE=HOURS"):
        parse_hours_per_source("aishell2:137")
    assert parse_hours_per_source("aishell2=137, librispeech=131") == {"aishell2": 137.0, "librispeech": 131.0}


def test_too_tight_candidate_threshold_is_widened(tmp_path, monkeypatch):
    import mooer_data.sampling as sampling

    corpus = make_corpus(tmp_path / "a", "aishell2", 500)
    config = SampleConfig(seed=3, hours_per_source={"aishell2": 0.1})
    sample_manifests([corpus], tmp_path / "normal", config)
    monkeypatch.setattr(sampling, "CANDIDATE_MARGIN", 0.2)  # candidates now fall short of the budget
    result = sample_manifests([corpus], tmp_path / "tight", config)
    assert selected_ids(tmp_path / "tight") == selected_ids(tmp_path / "normal")
    assert result.groups["aishell2"].reached_hours >= 0.1

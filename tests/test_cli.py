"""The `mooer-data` commands through Typer's runner."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
from typer.testing import CliRunner

from mooer_data.cli import app

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_prepare_stats_query_sample(corpus_factory, tmp_path):
    libri = corpus_factory("librispeech")
    house = corpus_factory("inhouse")
    result = invoke("prepare", "librispeech", libri.root, tmp_path / "libri", "-j", "2", "-q")
    assert result.exit_code == 0, result.output
    assert f"{len(libri.segments)} segments" in result.output
    assert invoke("prepare", "inhouse", house.root, tmp_path / "house", "-q").exit_code == 0

    again = invoke("prepare", "librispeech", libri.root, tmp_path / "libri", "-q")
    assert "already prepared, skipping" in again.output

    stats = invoke("stats", tmp_path / "libri", tmp_path / "house")
    assert stats.exit_code == 0, stats.output
    for title in ("segments by source", "segments by language", "segments by split", "segments by label_origin", "rejects by reason"):
        assert title in stats.output
    assert "librispeech" in stats.output and "inhouse" in stats.output

    query = invoke("query", "SELECT count(*) AS n FROM segments WHERE split = 'dev'", tmp_path / "libri")
    dev = sum(1 for s in libri.segments.values() if s.split == "dev")
    assert query.exit_code == 0 and query.output.splitlines()[-1].strip() == str(dev)

    sampled = invoke(
        "sample", tmp_path / "libri", tmp_path / "house", "-o", tmp_path / "mix", "--seed", "9",
        "--hours-per-source", "librispeech=0.001,inhouse=0.005",
    )
    assert sampled.exit_code == 0, sampled.output
    assert "librispeech" in sampled.output and "reached" in sampled.output
    dry = invoke("sample", tmp_path / "libri", "-o", tmp_path / "dry", "--seed", "9", "--hours", "0.001", "--dry-run")
    assert dry.exit_code == 0 and "dry run: nothing written" in dry.output and not (tmp_path / "dry").exists()
    record = json.loads((tmp_path / "mix" / "sample.json").read_text())
    assert record["seed"] == 9 and set(record["groups"]) == {"librispeech", "inhouse"}
    assert pq.read_metadata(tmp_path / "mix" / "segments.parquet").num_rows == record["groups"]["librispeech"]["items"]


def test_errors_are_one_clear_line_and_exit_2(tmp_path):
    result = invoke("prepare", "aishell2", tmp_path, tmp_path / "out")
    assert result.exit_code == 2
    assert "expected: CORPUS_DIR/iOS/data" in result.output and "Traceback" not in result.output
    result = invoke("prepare", "timit", tmp_path, tmp_path / "out")
    assert result.exit_code == 2 and "expected one of" in result.output
    result = invoke("sample", tmp_path, "-o", tmp_path / "o", "--seed", "1", "--hours", "1")
    assert result.exit_code == 2 and "run `mooer-data prepare` first" in result.output
    result = invoke("query", "SELECT nope FROM segments", tmp_path)
    assert result.exit_code == 2


def test_corpora_lists_every_recipe():
    result = invoke("corpora")
    for name in ("aishell2", "librispeech", "wenetspeech", "multi_cn", "aidatatang_200zh", "thchs30", "inhouse"):
        assert name in result.output


def test_demo_generates_prepares_samples_and_prints_stats(tmp_path):
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    recipe = repo / "pipelines" / "mt5k-demo.yaml"
    # the whole demo, with training cut to a few steps (the steps count is all that differs from `make demo`)
    result = invoke("demo", "--out", tmp_path, "--recipe", recipe, "--train-config", repo / "pipelines" / "train" / "tiny.yaml",
                    "--train-steps", "4")
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "manifests" / "mt5k" / "sample.json").read_text())
    assert set(record["groups"]) == {"aishell2", "librispeech", "multi_cn", "wenetspeech", "inhouse"}
    for group in record["groups"].values():
        assert group["reached_hours"] >= group["requested_hours"] or group["reached_hours"] == group["available_hours"]
    assert "segments by source" in result.output and "rejects by reason" in result.output
    assert "demo finished" in result.output
    # the sampled in-house audio was pseudo-labelled and the Mandarin translated via the emulator
    labelled = pq.read_table(tmp_path / "manifests" / "mt5k" / "segments.parquet").to_pylist()
    assert any(s["label_origin"] == "pseudo:tencent" for s in labelled)
    assert all(s["translation"] for s in labelled if s["language"] == "zh")
    assert "EMULATED" in result.output and "came from the emulator" in result.output
    # and packed into shards that verify
    from mooer_data.shards import verify_shards

    assert (tmp_path / "manifests" / "mt5k" / "data.list").is_file() and verify_shards(tmp_path / "manifests" / "mt5k") == []
    # the tiny model trained with mooer-train, exported to MooER's layout, and the test split decoded with mooer-infer
    assert "$ mooer-train --shards" in result.output and "trained to step 4" in result.output
    assert (tmp_path / "exp" / "tiny-release" / "asr" / "adapter_project.pt").is_file()
    decoded = [json.loads(line) for line in (tmp_path / "decode" / "test" / "results.jsonl").read_text().splitlines()]
    test_keys = {s["id"] for s in labelled if s["split"] == "test"}
    assert decoded and {row["key"] for row in decoded} <= test_keys and all("hyp" in row for row in decoded)
    assert "hyp " in result.output and "Notice: ffmpeg" not in result.output
    # built by build-mt5k, ending with the report
    assert f"the report is at {tmp_path / 'manifests' / 'mt5k' / 'report' / 'report.html'}" in result.output

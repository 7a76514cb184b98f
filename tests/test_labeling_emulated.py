"""Pseudo-labelling through real adapters against the emulator: a fault storm, kill -9
and rerun, and no secret anywhere."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from mooer_data import minicorpora
from mooer_data.labeling import RetryPolicy
from mooer_data.prepare import PrepareConfig, prepare_corpus
from mooer_data.providers.emulator import DEFAULT_CREDENTIALS, Oracle, build_emulator, client_environment
from mooer_data.pseudolabel import PseudolabelConfig, pseudolabel

FAST = RetryPolicy(attempts=10, resubmits=6, base_delay=0.01, max_delay=0.05)


@pytest.fixture(scope="module")
def inhouse(corpus_factory, tmp_path_factory):
    expected = corpus_factory("inhouse")
    manifest = tmp_path_factory.mktemp("inhouse-manifest")
    prepare_corpus("inhouse", expected.root, manifest, PrepareConfig(show_progress=False), log=lambda _: None)
    oracle = minicorpora.oracle_for(expected)
    return manifest, expected, Oracle(oracle["audio"], oracle["translations"])


@pytest.fixture()
def emulator(inhouse, monkeypatch):
    def start(faults: str | None = None, **options):
        options = {"hang_seconds": 0.6, "job_seconds": 0.05, **options}
        emu = build_emulator(oracle=inhouse[2], faults=faults, **options)
        url = emu.start()
        for name, value in client_environment(url).items():
            monkeypatch.setenv(name, value)
        started.append(emu)
        return emu

    started: list = []
    yield start
    for emu in started:
        emu.stop()


def ledger_counts(out: Path) -> dict[str, int]:
    con = duckdb.connect(str(out / "ledger.duckdb"), read_only=True)
    try:
        return dict(con.execute("SELECT state, count(*) FROM events WHERE task = 'asr' GROUP BY state").fetchall())
    finally:
        con.close()


def url_stager(provider, emu, expected) -> str | None:
    """Alibaba FileTrans fetches audio by URL: the emulator serves the corpus tree."""
    return f"{emu.base_url}/audio" if provider == "aliyun" else None


@pytest.mark.parametrize("provider", ["tencent", "openai", "aliyun"])
def test_clean_run_labels_every_recording_with_the_oracle_text(provider, inhouse, emulator, tmp_path):
    manifest, expected, _ = inhouse
    emu = emulator(audio_root=expected.root)
    config = PseudolabelConfig(provider=provider, timeout=5, policy=FAST, show_progress=False, stager_url_prefix=url_stager(provider, emu, expected))
    result = pseudolabel(manifest, tmp_path / "out", config, log=lambda _: None)
    assert result.labelled == len(expected.recordings) and result.failed == 0
    segments = pq.read_table(tmp_path / "out" / "segments.parquet").to_pylist()
    lecture = minicorpora.inhouse_recording_id("lectures/long_lecture.wav")
    spoken = expected.spoken[lecture]
    lecture_rows = [s for s in segments if s["recording_id"] == lecture]
    assert len(lecture_rows) == len(spoken)  # one segment per sentence the service returned
    for row, (start, end, text, _) in zip(lecture_rows, spoken):
        assert row["start"] == pytest.approx(start, abs=0.01) and row["duration"] == pytest.approx(end - start, abs=0.02)
        assert row["label_origin"] == f"pseudo:{provider}"
    billed = emu.billing.snapshot()["by_key"]
    assert all(count == 1 for count in billed.values()) and len(billed) == len(expected.recordings)


@pytest.mark.parametrize("provider", ["tencent", "openai", "aliyun"])
def test_fault_storm_loses_nothing_and_pays_what_the_ledger_says(provider, inhouse, emulator, tmp_path):
    manifest, expected, _ = inhouse
    emu = emulator("storm=0.2,seed=11", audio_root=expected.root)
    config = PseudolabelConfig(provider=provider, timeout=0.4, policy=FAST, show_progress=False, stager_url_prefix=url_stager(provider, emu, expected))
    result = pseudolabel(manifest, tmp_path / "out", config, log=lambda _: None)
    assert result.labelled + result.failed == result.items == len(expected.recordings)
    rejects = {r["item"]: r["reason"] for r in pq.read_table(tmp_path / "out" / "rejects.parquet").to_pylist()
               if r["item"] in expected.recordings}  # (the prepare stage's rejects are carried along too)
    labelled = {s["recording_id"] for s in pq.read_table(tmp_path / "out" / "segments.parquet").to_pylist()}
    assert labelled | set(rejects) == set(expected.recordings), "every item labelled or failed with a reason"
    assert not labelled & set(rejects)
    assert all(":" in reason and len(reason) > 12 for reason in rejects.values())
    counts = ledger_counts(tmp_path / "out")
    billed = sum(v for k, v in emu.billing.snapshot()["calls"].items())
    # every labelled item was paid for (Tencent bills at creation, Alibaba when a task
    # completes); nothing is paid beyond the jobs the ledger confirmed plus the counted
    # ambiguous submits (the possible double charges)
    assert counts.get("done", 0) <= billed <= counts.get("submitted", 0) + counts.get("ambiguous", 0)
    assert result.ambiguous_submits == counts.get("ambiguous", 0)


def test_kill_9_mid_run_then_rerun_pays_no_finished_item_twice(inhouse, emulator, tmp_path):
    manifest, expected, _ = inhouse
    emu = emulator(job_seconds=1.5)
    env = {**os.environ, **client_environment(emu.base_url)}
    command = [sys.executable, "-m", "mooer_data.cli", "pseudolabel", str(manifest), "--provider", "tencent", "-o", str(tmp_path / "out"),
               "-q", "--concurrency", "2"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    # kill once the first jobs are paid for (however slow the machine is to start Python)
    deadline = time.monotonic() + 60
    while not emu.billing.snapshot()["by_key"] and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    time.sleep(0.3)
    assert process.poll() is None, "the run finished before it could be killed"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    before = dict(emu.billing.snapshot()["by_key"])
    assert before, "some jobs were submitted before the kill"
    finished = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert finished.returncode == 0, finished.stderr
    after = emu.billing.snapshot()["by_key"]
    con = duckdb.connect(str(tmp_path / "out" / "ledger.duckdb"), read_only=True)
    ambiguous = con.execute("SELECT count(*) FROM events WHERE state = 'ambiguous'").fetchall()[0][0]
    con.close()
    # A job whose id reached the ledger before the kill is resumed by polling and never paid
    # again; only a submit cut off before its job id was written (counted as an ambiguous,
    # possible double charge) may have been paid twice. (The emulator bills by audio hash.)
    assert sum(count - 1 for count in after.values()) <= ambiguous
    if ambiguous == 0:
        assert all(after[key] == count for key, count in before.items())

    reference = tmp_path / "reference"
    emulator()  # a fresh emulator for an uninterrupted run
    pseudolabel(manifest, reference, PseudolabelConfig(provider="tencent", timeout=5, policy=FAST, show_progress=False), log=lambda _: None)
    for name in ("segments.parquet", "rejects.parquet"):
        assert pq.read_table(tmp_path / "out" / name).equals(pq.read_table(reference / name)), name


def test_no_secret_reaches_any_output(inhouse, emulator, tmp_path, capfd, monkeypatch):
    manifest, expected, _ = inhouse
    emulator("storm=0.2,seed=3")
    pseudolabel(manifest, tmp_path / "out", PseudolabelConfig(provider="tencent", fallbacks=("openai",), timeout=0.4, policy=FAST, show_progress=False))
    # a wrong key: the auth error must not echo it either
    monkeypatch.setenv("TENCENTCLOUD_SECRET_KEY", "wrong-secret-value-1234567")
    bad = pseudolabel(manifest, tmp_path / "bad", PseudolabelConfig(provider="tencent", timeout=2, policy=FAST, show_progress=False))
    assert bad.failed == bad.items
    secrets = [value for creds in DEFAULT_CREDENTIALS.values() for value in creds.values() if len(value) > 8] + ["wrong-secret-value-1234567"]
    captured = capfd.readouterr()
    blobs = {"stdout": captured.out, "stderr": captured.err}
    for path in list((tmp_path / "out").rglob("*")) + list((tmp_path / "bad").rglob("*")):
        if path.is_file():
            blobs[str(path)] = path.read_bytes().decode("latin-1")
    con = duckdb.connect(str(tmp_path / "bad" / "ledger.duckdb"), read_only=True)
    blobs["ledger rows"] = repr(con.execute("SELECT * FROM events").fetchall())
    con.close()
    for where, blob in blobs.items():
        for secret in secrets:
            assert secret not in blob, f"a secret leaked into {where}"

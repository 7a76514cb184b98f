"""`kill -9` during `mooer-data prepare`, then a rerun: the same tables as an
uninterrupted run, whatever moment the kill hit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest

TABLES = ("segments.parquet", "recordings.parquet", "rejects.parquet")


def run_cli(arguments: list[str], kill_after: float | None = None) -> None:
    """Run `mooer-data ARGUMENTS` to completion, or SIGKILL its process group after a delay."""
    command = [sys.executable, "-m", "mooer_data.cli", *arguments]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    if kill_after is None:
        _, err = process.communicate(timeout=120)
        assert process.returncode == 0, err.decode()
        return
    time.sleep(kill_after)
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


def run_prepare(expected, out_dir, kill_after: float | None = None) -> None:
    run_cli(["prepare", expected.corpus, str(expected.root), str(out_dir), "-q", "-j", "2"], kill_after)


@pytest.mark.parametrize("corpus", ["multi_cn", "wenetspeech"])
def test_kill_at_any_moment_then_rerun(corpus, corpus_factory, tmp_path):
    expected = corpus_factory(corpus)
    run_prepare(expected, tmp_path / "reference")
    for delay in (0.4, 0.8, 1.2, 1.6):
        out = tmp_path / f"killed-{delay}"
        run_prepare(expected, out, kill_after=delay)
        leftovers = [p for p in out.rglob("*.parquet")] if out.exists() else []
        for path in leftovers:
            pq.read_metadata(path)  # anything under a final name is a complete table
        run_prepare(expected, out)
        for name in TABLES:
            assert pq.read_table(out / name).equals(pq.read_table(tmp_path / "reference" / name)), (delay, name)


def test_kill_shard_at_any_moment_then_rerun_gives_the_same_bytes(corpus_factory, tmp_path):
    expected = corpus_factory("wenetspeech")
    run_prepare(expected, tmp_path / "manifest")

    def run(out, kill_after=None):
        run_cli(["shard", str(tmp_path / "manifest"), "--max-count", "2", "-j", "2", "-q", "-o", str(out)], kill_after)

    run(tmp_path / "reference")
    reference = {p.relative_to(tmp_path / "reference"): p.read_bytes() for p in (tmp_path / "reference").glob("*/*.tar")}
    for delay in (0.6, 0.9, 1.2):
        out = tmp_path / f"killed-{delay}"
        run(out, kill_after=delay)
        run(out)
        assert {p.relative_to(out): p.read_bytes() for p in out.glob("*/*.tar")} == reference, delay
        assert not list(out.glob("*/*.tmp"))

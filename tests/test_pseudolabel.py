"""The runner's policy through an in-process fake provider: retries, fallbacks, the
circuit breaker, resume without paying twice, dry run."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from mooer_data.prepare import PrepareConfig, prepare_corpus
from mooer_data.providers import registry
from mooer_data.providers.errors import AuthError, ItemFatal, RateLimited, ServerError
from mooer_data.pseudolabel import PseudolabelConfig, pseudolabel
from mooer_data.testing import fakes
from mooer_data.text import normalize_transcript


@pytest.fixture(scope="module", autouse=True)
def fake_providers():
    for name in ("fake", "fake2"):
        spec = registry.ProviderSpec("asr", name, "mooer_data.testing.fakes:FakeAsr")
        registry._EXTRA[("asr", name)] = spec
    yield
    for name in ("fake", "fake2"):
        registry._EXTRA.pop(("asr", name), None)


@pytest.fixture()
def inhouse(corpus_factory, tmp_path):
    expected = corpus_factory("inhouse")
    prepare_corpus("inhouse", expected.root, tmp_path / "inhouse", PrepareConfig(show_progress=False), log=lambda _: None)
    fakes.SCRIPT.clear()
    fakes.CALLS.clear()
    return tmp_path / "inhouse", expected


def run(manifest, out, **options):
    config = PseudolabelConfig(show_progress=False, **{"provider": "fake", **options})
    return pseudolabel(manifest, out, config, log=lambda _: None)


def test_every_recording_gets_pseudo_labels(inhouse, tmp_path):
    manifest, expected = inhouse
    result = run(manifest, tmp_path / "out")
    segments = pq.read_table(tmp_path / "out" / "segments.parquet").to_pylist()
    assert result.labelled == len(expected.recordings) == len(segments)
    for segment in segments:
        assert segment["id"] == f"{segment['recording_id']}-S0001"
        assert segment["label_origin"] == "pseudo:fake" and segment["confidence"] == pytest.approx(0.9)
        assert segment["text"] == normalize_transcript(f"fake heard {segment['recording_id']}")
    summary = json.loads((tmp_path / "out" / "pseudolabel.json").read_text())
    assert summary["requests"] == len(expected.recordings) and summary["ambiguous_submits"] == 0
    assert (tmp_path / "out" / "quality.parquet").is_file()


def test_transient_errors_are_retried(inhouse, tmp_path):
    manifest, expected = inhouse
    first = sorted(expected.recordings)[0]
    fakes.SCRIPT[f"fake:{first}"] = [RateLimited("fake", "slow down", retry_after=0.01), ServerError("fake", "oops")]
    result = run(manifest, tmp_path / "out")
    assert result.failed == 0 and fakes.CALLS[("fake", first)] == 3


def test_item_fatal_moves_the_item_to_the_fallback(inhouse, tmp_path):
    manifest, expected = inhouse
    first = sorted(expected.recordings)[0]
    fakes.SCRIPT[f"fake:{first}"] = [ItemFatal("fake", "too large")]
    result = run(manifest, tmp_path / "out", fallbacks=("fake2",))
    assert result.by_provider == {"fake": len(expected.recordings) - 1, "fake2": 1}
    origins = {s["recording_id"]: s["label_origin"] for s in pq.read_table(tmp_path / "out" / "segments.parquet").to_pylist()}
    assert origins[first] == "pseudo:fake2"


def test_auth_failure_opens_the_breaker_and_everything_falls_back(inhouse, tmp_path):
    manifest, expected = inhouse
    for key in expected.recordings:
        fakes.SCRIPT[f"fake:{key}"] = [AuthError("fake", "bad key")]
    result = run(manifest, tmp_path / "out", fallbacks=("fake2",), concurrency=1)
    assert result.by_provider == {"fake2": len(expected.recordings)}
    assert sum(n for (p, _), n in fakes.CALLS.items() if p == "fake") == 1
    assert "fake" in result.open_breakers


def test_an_item_no_provider_can_label_is_a_reject_with_its_reason(inhouse, tmp_path):
    manifest, expected = inhouse
    first = sorted(expected.recordings)[0]
    fakes.SCRIPT[f"fake:{first}"] = [ItemFatal("fake", "unsupported audio")]
    result = run(manifest, tmp_path / "out")
    assert result.failed == 1
    rejects = {r["item"]: r["reason"] for r in pq.read_table(tmp_path / "out" / "rejects.parquet").to_pylist()}
    assert rejects[first].startswith("provider-rejected-item: fake: unsupported audio")


def test_rerun_pays_nothing_twice_and_gives_the_same_tables(inhouse, tmp_path):
    manifest, expected = inhouse
    run(manifest, tmp_path / "out")
    calls = sum(fakes.CALLS.values())
    before = pq.read_table(tmp_path / "out" / "segments.parquet")
    run(manifest, tmp_path / "out")
    assert sum(fakes.CALLS.values()) == calls
    assert pq.read_table(tmp_path / "out" / "segments.parquet").equals(before)


def test_dry_run_sends_nothing_and_estimates_cost(inhouse, tmp_path):
    manifest, expected = inhouse
    lines = []
    result = pseudolabel(manifest, tmp_path / "out", PseudolabelConfig(provider="fake", dry_run=True, show_progress=False), log=lines.append)
    assert not fakes.CALLS and not (tmp_path / "out").exists()
    hours = sum(expected.recordings.values()) / 3600
    assert result.estimated_cost["fake"] == pytest.approx(hours * 1.0, abs=1e-3)
    assert any("would be sent" in line for line in lines)

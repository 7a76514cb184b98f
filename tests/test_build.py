"""`build-mt5k` end to end on miniature corpora, with the cloud services emulated on
loopback: shares that add up to the unsplit result, two parts merged equal to one build,
kill -9 at any moment then a rerun equal to an uninterrupted run, stages skipped when
complete and redone when their settings change, the dry run, and the errors that name
what to run."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from mooer_data import demo
from mooer_data.build import BuildError, BuildOptions, build_mt5k, merge_parts
from mooer_data.cli import app
from mooer_data.labeling import RetryPolicy
from mooer_data.manifest import SEGMENT_SCHEMA, ManifestError, TableSink
from mooer_data.parts import MergeError, PartSpec, merge_manifest_parts, part_key, write_share
from mooer_data.prepare import PrepareConfig, prepare_corpus
from mooer_data.providers.emulator import client_environment
from mooer_data.recipe import ProviderChain, RecipeError, load_recipe
from mooer_data.sampling import SampleConfig, sample_manifests
from mooer_data.shards import verify_shards

CORPORA = ("librispeech", "wenetspeech", "inhouse")
TABLES = ("segments", "recordings", "rejects", "quality", "index")
FAST = RetryPolicy(attempts=8, base_delay=0.02, max_delay=0.2)
runner = CliRunner()


def quiet(_message: str) -> None:
    pass


@pytest.fixture(scope="module")
def corpora(corpus_factory):
    return {name: corpus_factory(name) for name in CORPORA}


@pytest.fixture(scope="module")
def emulator(corpora):
    with demo.emulated_services(corpora["inhouse"]) as emulator:
        yield emulator


def write_recipe(directory: Path, corpora, output: Path, max_count: int = 4) -> Path:
    """The demo recipe scaled down to three corpora (one of each kind: short files,
    long recordings cut into segments, unlabelled in-house audio)."""
    roots = "\n".join(f"  {name}: {{root: {corpora[name].root}}}" for name in CORPORA)
    path = directory / f"recipe-{output.name}.yaml"
    path.write_text(f"""
name: mt5k-test
seed: 20240808
corpora:
{roots}
budgets_minutes: {{librispeech: 0.12, wenetspeech: 0.24, inhouse: 0.6}}
providers:
  asr: [tencent, local]
  mt: [tencent, baidu]
translate: {{rate: 100}}
shards: {{max_count: {max_count}}}
output: {output}
""")
    return path


def options(**kwargs) -> BuildOptions:
    return BuildOptions(show_progress=False, retry_policy=FAST, **kwargs)


@pytest.fixture(scope="module")
def whole(corpora, emulator, tmp_path_factory):
    """One uninterrupted, unsplit build."""
    directory = tmp_path_factory.mktemp("whole")
    recipe = load_recipe(write_recipe(directory, corpora, directory / "out"))
    result = build_mt5k(recipe, options(), log=quiet)
    return recipe, result


def tables(output: Path) -> dict:
    return {name: pq.read_table(output / f"{name}.parquet") for name in TABLES}


def shard_bytes(output: Path) -> dict:
    return {p.relative_to(output).as_posix(): p.read_bytes() for p in sorted(output.glob("*/shard-*.tar"))}


# -- shares ----------------------------------------------------------------------------
def test_part_key_is_duckdbs_and_shares_are_balanced():
    ids = [f"aishell2-IC{i:04d}W0001" for i in range(3000)]
    con = duckdb.connect()
    sql = con.execute("SELECT (md5_number('part:' || id) >> 64)::UBIGINT FROM unnest(?) AS t(id)", [ids[:50]]).fetchall()
    assert [row[0] for row in sql] == [part_key(i) for i in ids[:50]]
    parts = PartSpec(0, 3).siblings()
    owners = [[p.owns(i) for p in parts] for i in ids]
    assert all(sum(row) == 1 for row in owners)  # every id in exactly one share
    sizes = [sum(row[k] for row in owners) for k in range(3)]
    assert min(sizes) > 900  # about a third each
    sql_owned = con.execute(f"SELECT count(*) FROM unnest(?) AS t(id) WHERE {parts[1].sql('id')}", [ids]).fetchone()[0]
    assert sql_owned == sizes[1]


def test_part_spec_is_checked():
    assert PartSpec.parse(" 2/4 ") == PartSpec(2, 4) and PartSpec(2, 4).name == "part-2-of-4"
    for bad in ("4/4", "1-2", "-1/2", "", "1/0"):
        with pytest.raises(ValueError, match="expected"):
            PartSpec.parse(bad)


def rows(path: Path) -> list[tuple]:
    table = pq.read_table(path)
    return sorted(tuple(row.values()) for row in table.to_pylist())


def test_prepare_and_sample_shares_add_up_to_the_unsplit_result(corpora, tmp_path):
    whole_dirs, share_dirs = [], {p: [] for p in PartSpec(0, 3).siblings()}
    for name in CORPORA:
        whole_dir = tmp_path / "whole" / name
        prepare_corpus(name, corpora[name].root, whole_dir, PrepareConfig(show_progress=False), log=quiet)
        whole_dirs.append(whole_dir)
        for part in share_dirs:
            out = tmp_path / part.name / name
            prepare_corpus(name, corpora[name].root, out, PrepareConfig(show_progress=False, share=part), log=quiet)
            share_dirs[part].append(out)
        for kind in ("segments", "recordings", "rejects"):
            union = sorted(r for part in share_dirs for r in rows(tmp_path / part.name / name / f"{kind}.parquet"))
            assert union == rows(whole_dir / f"{kind}.parquet"), (name, kind)
        counts = [pq.read_metadata(tmp_path / p.name / name / "recordings.parquet").num_rows for p in share_dirs]
        assert sum(1 for c in counts if c) >= 2, (name, counts)  # the files really were shared out

    config = SampleConfig(seed=7, hours_per_source={"librispeech": 0.002, "wenetspeech": 0.004, "inhouse": 0.01})
    sample_manifests(whole_dirs, tmp_path / "sample-whole", config)
    all_share_dirs = [d for dirs in share_dirs.values() for d in dirs]
    for part in share_dirs:
        result = sample_manifests(all_share_dirs, tmp_path / f"sample-{part.name}", config, share=part)
        assert result.share == str(part)
    segments = sorted(r for p in share_dirs for r in rows(tmp_path / f"sample-{p.name}" / "segments.parquet"))
    assert segments == rows(tmp_path / "sample-whole" / "segments.parquet")
    recordings = sorted(set(r for p in share_dirs for r in rows(tmp_path / f"sample-{p.name}" / "recordings.parquet")))
    assert recordings == rows(tmp_path / "sample-whole" / "recordings.parquet")


def test_shares_of_a_manifest_partition_it(whole, tmp_path):
    recipe, _ = whole
    output = Path(recipe.output)
    parts = PartSpec(0, 3).siblings()
    for part in parts:
        write_share(output, part, tmp_path / part.name)
    for kind in ("segments", "rejects"):
        union = [r for p in parts for r in rows(tmp_path / p.name / f"{kind}.parquet")]
        assert sorted(union) == rows(output / f"{kind}.parquet")  # disjoint and complete
    recordings = {r for p in parts for r in rows(tmp_path / p.name / "recordings.parquet")}
    assert sorted(recordings) == rows(output / "recordings.parquet")
    merged = merge_manifest_parts([tmp_path / p.name for p in parts], tmp_path / "merged")
    assert merged["segments"] == pq.read_metadata(output / "segments.parquet").num_rows
    assert pq.read_table(tmp_path / "merged" / "segments.parquet").equals(pq.read_table(output / "segments.parquet"))
    with pytest.raises(MergeError, match="appear in more than one part"):
        merge_manifest_parts([tmp_path / parts[0].name, tmp_path / parts[0].name], tmp_path / "twice")



def write_recordings_manifest(directory: Path, recording_ids: list[str], segment_recordings: list[str | None]) -> None:
    """A hand-made manifest: the recordings, and one segment per entry of
    ``segment_recordings`` (its recording id, or None for a segment that names none)."""
    directory.mkdir(parents=True)
    roots = {"inhouse": "/data/inhouse"}
    with TableSink(directory / "recordings.parquet", "recordings", roots) as sink:
        sink.add_many({"id": rid, "source": "inhouse", "path": f"{rid}.wav"} for rid in recording_ids)
    if segment_recordings:
        # written without our schema's NOT NULL on recording_id: a table from another tool may hold one
        schema = pa.schema([field.with_nullable(True) for field in SEGMENT_SCHEMA])
        rows = [{"id": f"seg{i:03d}", "recording_id": rid, "source": "inhouse"} for i, rid in enumerate(segment_recordings)]
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), directory / "segments.parquet")


@pytest.mark.parametrize("segment_recordings", [[], ["rec000", "rec001", "rec002"]], ids=["recordings-only", "some-referenced"])
def test_shares_of_recordings_without_segments_partition_them(tmp_path, segment_recordings):
    recording_ids = [f"rec{i:03d}" for i in range(40)]
    write_recordings_manifest(tmp_path / "manifest", recording_ids, segment_recordings)
    shares = []
    for part in PartSpec(0, 2).siblings():
        write_share(tmp_path / "manifest", part, tmp_path / part.name)
        shares.append(pq.read_table(tmp_path / part.name / "recordings.parquet").column("id").to_pylist())
    assert sorted(shares[0] + shares[1]) == recording_ids  # none lost, none in two shares
    assert all(shares)  # split between the parts, not all sent to one
    unreferenced = [rid for rid in recording_ids if rid not in segment_recordings]
    for part, share in zip(PartSpec(0, 2).siblings(), shares):
        assert [rid for rid in share if rid in unreferenced] == sorted(rid for rid in unreferenced if part.owns(rid))


def test_a_segment_without_recording_id_is_named_before_any_share_is_written(tmp_path):
    recording_ids = [f"rec{i:03d}" for i in range(40)]
    write_recordings_manifest(tmp_path / "manifest", recording_ids, ["rec000", None, "rec001"])
    for part in PartSpec(0, 2).siblings():
        # not a silent loss of every unreferenced recording (what NOT IN over a NULL did)
        with pytest.raises(ManifestError, match=r"expected every segment to name its recording, found 1 with no recording_id \('seg001'\)"):
            write_share(tmp_path / "manifest", part, tmp_path / part.name)
        assert not (tmp_path / part.name / "recordings.parquet").exists()

# -- whole builds, split builds ----------------------------------------------------------
def test_whole_build_writes_manifest_shards_and_report(whole):
    recipe, result = whole
    output = Path(recipe.output)
    assert result.ran == ["prepare", "sample", "pseudolabel", "translate", "shard", "merge", "report"]
    assert verify_shards(output) == []
    segments = pq.read_table(output / "segments.parquet").to_pylist()
    origins = {s["source"]: s["label_origin"] for s in segments}
    assert origins == {"librispeech": "manual", "wenetspeech": "manual", "inhouse": "pseudo:tencent"}
    assert all(s["translation"] for s in segments if s["language"] == "zh")
    record = json.loads((output / "sample.json").read_text())
    assert set(record["groups"]) == set(CORPORA)
    # every reject of every stage lands in the final table: prepare's included
    prepared = sum(pq.read_metadata(output / "work" / "part-0-of-1" / "prepared" / n / "rejects.parquet").num_rows for n in CORPORA)
    assert pq.read_metadata(output / "rejects.parquet").num_rows >= prepared > 0
    assert (output / "report" / "report.html").is_file() and result.report == output / "report" / "report.html"


def test_two_parts_merged_equal_one_build(whole, corpora, emulator, tmp_path):
    recipe, _ = whole
    split = replace(recipe, output=tmp_path / "out")
    halves = PartSpec(0, 2).siblings()
    for part in halves:  # each machine prepares its share of the corpus files
        build_mt5k(split, options(part=part, to_stage="prepare"), log=quiet)
    for part in halves:
        build_mt5k(split, options(part=part, to_stage="translate"), log=quiet)
    for part in halves:
        build_mt5k(split, options(part=part), log=quiet)  # shard: the rest is complete
    result = merge_parts(split, 2, options(), log=quiet)
    assert result.ran == ["merge", "report"]
    one, two = tables(Path(recipe.output)), tables(split.output)
    for name in TABLES:
        assert two[name].equals(one[name]), name
    assert shard_bytes(split.output) == shard_bytes(Path(recipe.output))
    assert verify_shards(split.output) == []
    # each part built its own shards: positions R, R+2, ...
    built = {p: sorted(x.name for x in (split.output / "work" / p.name / "shards").glob("*/shard-*.tar")) for p in halves}
    assert all(built.values()) and len(shard_bytes(split.output)) == sum(len(v) for v in built.values())


def test_split_stages_name_the_parts_they_wait_for(whole, tmp_path):
    recipe, _ = whole
    split = replace(recipe, output=tmp_path / "out")
    build_mt5k(split, options(part=PartSpec(0, 2), to_stage="prepare"), log=quiet)
    with pytest.raises(BuildError, match=r"sample needs the prepare stage of part 1/2.*--part 1/2 --from prepare` on its machine"):
        build_mt5k(split, options(part=PartSpec(0, 2)), log=quiet)
    started = time.monotonic()
    with pytest.raises(BuildError, match="part 1/2"):
        build_mt5k(split, options(part=PartSpec(0, 2), wait_for_parts=0.3, poll_seconds=0.1), log=quiet)
    assert time.monotonic() - started >= 0.3  # it waited for the other machine before giving up
    with pytest.raises(BuildError, match="merge needs the shard stage of part 0/2"):
        merge_parts(split, 2, options(), log=quiet)
    with pytest.raises(ValueError, match="merge and report run once over all parts"):
        build_mt5k(split, options(part=PartSpec(0, 2), from_stage="merge"), log=quiet)


def test_a_stage_whose_input_is_missing_names_the_stage_to_run(whole, tmp_path):
    recipe, _ = whole
    fresh = replace(recipe, output=tmp_path / "out")
    with pytest.raises(BuildError, match=r"translate needs the pseudolabel stage.*--from pseudolabel"):
        build_mt5k(fresh, options(from_stage="translate"), log=quiet)
    assert not (tmp_path / "out" / "work" / "part-0-of-1" / "labelled").exists()


def test_rerun_skips_complete_stages_and_redoes_those_whose_settings_changed(whole, emulator, tmp_path):
    recipe, _ = whole
    copy = tmp_path / "out"
    shutil.copytree(recipe.output, copy)
    rebuilt = replace(recipe, output=copy)
    billed = dict(emulator.billing.snapshot()["calls"])
    again = build_mt5k(rebuilt, options(), log=quiet)
    assert again.ran == [] and len(again.skipped) == 7
    before = shard_bytes(copy)
    changed = build_mt5k(replace(rebuilt, shards=replace(rebuilt.shards, max_count=2)), options(), log=quiet)
    assert changed.ran == ["shard", "merge", "report"]
    after = shard_bytes(copy)
    assert len(after) > len(before) and verify_shards(copy) == []
    assert not list((copy / "work" / "part-0-of-1" / "shards").glob("*/*.tmp"))
    assert emulator.billing.snapshot()["calls"] == billed  # nothing was sent again
    asr_only = build_mt5k(replace(rebuilt, mt=ProviderChain()), options(), log=quiet)  # as MooER-80K: no AST labels
    assert asr_only.ran == ["translate", "shard", "merge", "report"]
    segments = pq.read_table(copy / "segments.parquet").to_pylist()
    assert len(segments) == pq.read_metadata(Path(recipe.output) / "segments.parquet").num_rows
    assert not any(s["translation"] for s in segments) and verify_shards(copy) == []


# -- dry run ---------------------------------------------------------------------------
def test_dry_run_writes_nothing_and_estimates_the_cost(whole, tmp_path):
    recipe, _ = whole
    lines: list[str] = []
    build_mt5k(replace(recipe, output=tmp_path / "out"), options(dry_run=True), log=lines.append)
    text = "\n".join(lines)
    assert not (tmp_path / "out").exists()
    for stage in ("prepare", "sample", "pseudolabel", "translate", "shard", "merge", "report"):
        assert f"== {stage}: would run" in text
    assert "requested 0.0100 h" in text and "exact figures once prepare is complete" in text
    assert "pseudolabel via tencent (primary):" in text and "translate via baidu (fallback 1):" in text
    assert "provider cost estimate" in text

    lines.clear()
    build_mt5k(recipe, options(dry_run=True), log=lines.append)
    assert all(f"== {stage}: complete, would be skipped" in "\n".join(lines) for stage in ("prepare", "report"))

    lines.clear()
    build_mt5k(replace(recipe, output=tmp_path / "split"), options(dry_run=True, part=PartSpec(1, 2)), log=lines.append)
    text = "\n".join(lines)
    assert "WOULD FAIL: sample needs the prepare stage of part 0/2" in text and not (tmp_path / "split").exists()


# -- the command line: kill -9 at any moment, then rerun ----------------------------------
def run_cli(arguments: list[str], env: dict, kill_when=None, delay: float = 0.0) -> bool:
    """Run `mooer-data ARGUMENTS` to completion, or SIGKILL its process group ``delay``
    seconds after ``kill_when()`` turns true; True when it was killed."""
    command = [sys.executable, "-m", "mooer_data.cli", *arguments]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    if kill_when is None:
        out, _ = process.communicate(timeout=180)
        assert process.returncode == 0, out.decode()
        return False
    while process.poll() is None and not kill_when():
        time.sleep(0.02)
    time.sleep(delay)
    killed = process.poll() is None
    if killed:
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    return killed


def test_kill_at_any_moment_then_rerun_gives_the_same_dataset(whole, corpora, emulator, tmp_path):
    """One output, killed in the middle of stage after stage (each run resuming the last),
    then run to the end: the same tables and shard bytes as the uninterrupted build."""
    reference, _ = whole
    env = dict(os.environ, **client_environment(emulator.base_url))
    output = tmp_path / "out"
    recipe = write_recipe(tmp_path, corpora, output)
    markers = output / "work" / "part-0-of-1" / ".build"
    kills = [("prepare", 0.3), ("pseudolabel", 0.5), ("translate", 0.3), ("shard", 0.2), ("merge", 0.0)]
    killed = []
    for stage, delay in kills:
        marker = (output / ".build" if stage == "merge" else markers) / f"{stage}.started.json"
        if run_cli(["build-mt5k", "--recipe", str(recipe), "-q"], env, kill_when=marker.is_file, delay=delay):
            killed.append(stage)
        for path in output.rglob("*.parquet"):
            pq.read_metadata(path)  # anything under a final name is a complete table
    assert len(killed) >= 3, killed  # the kills really landed mid-build
    run_cli(["build-mt5k", "--recipe", str(recipe), "-q"], env)
    got, expected = tables(output), tables(Path(reference.output))
    for name in TABLES:
        assert got[name].equals(expected[name]), name
    assert shard_bytes(output) == shard_bytes(Path(reference.output))
    assert not list(output.rglob("*.tmp"))


def test_cli_errors_are_one_clear_message_and_exit_2(corpora, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"seed: 1\ncorpora: {{inhouse: {{root: {tmp_path / 'nowhere'}}}}}\nbudgets_hours: {{inhouse: 1}}\nproviders: {{asr: [tencent]}}\n")
    result = runner.invoke(app, ["build-mt5k", "--recipe", str(bad)])
    assert result.exit_code == 2 and "corpora.inhouse:" in result.output and "does not exist" in result.output
    assert "Traceback" not in result.output
    result = runner.invoke(app, ["build-mt5k", "--recipe", str(bad), "--part", "2/2"])
    assert result.exit_code == 2 and "expected a part R/W with 0 <= R < W, found 2/2" in result.output
    result = runner.invoke(app, ["build-mt5k", "--recipe", str(bad), "--from", "labels"])
    assert result.exit_code == 2 and "--from: expected one of prepare" in result.output


def test_roots_and_credentials_are_checked_together_before_anything_runs(whole, tmp_path, monkeypatch):
    recipe, _ = whole
    monkeypatch.setenv("MOOER_PROVIDERS_CONFIG", str(tmp_path / "no-config.yaml"))
    for name in ("TENCENTCLOUD_SECRET_ID", "TENCENTCLOUD_SECRET_KEY"):
        monkeypatch.delenv(name, raising=False)
    corpora = dict(recipe.corpora)
    corpora["wenetspeech"] = replace(corpora["wenetspeech"], root=tmp_path / "absent")
    broken = replace(recipe, corpora=corpora, output=tmp_path / "out")
    with pytest.raises(RecipeError) as caught:
        build_mt5k(broken, options(), log=quiet)
    text = "\n".join(caught.value.problems)
    assert len(caught.value.problems) == 3, text
    assert "corpora.wenetspeech:" in text and "CORPUS_DIR/WenetSpeech.json" in text
    assert "providers.asr: the primary provider 'tencent' is not ready" in text and "TENCENTCLOUD_SECRET_ID" in text
    assert "providers.mt: the primary provider 'tencent' is not ready" in text
    assert not (tmp_path / "out").exists()


def test_pseudolabel_translate_and_shard_take_a_part_and_merge_parts_joins_them(whole, emulator, tmp_path):
    recipe, _ = whole
    pseudo = Path(recipe.output) / "work" / "part-0-of-1" / "pseudo"
    labelled = Path(recipe.output) / "work" / "part-0-of-1" / "labelled"
    for index in range(2):
        result = runner.invoke(app, ["translate", str(pseudo), "--provider", "tencent", "--rate", "100/s", "--part", f"{index}/2",
                                     "-o", str(tmp_path / f"mt-{index}"), "-q"])
        assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["merge-parts", str(tmp_path / "mt-0"), str(tmp_path / "mt-1"), "-o", str(tmp_path / "mt")])
    assert result.exit_code == 0, result.output
    assert pq.read_table(tmp_path / "mt" / "segments.parquet").equals(pq.read_table(labelled / "segments.parquet"))

    for index in range(2):
        result = runner.invoke(app, ["shard", str(labelled), "--max-count", "4", "--seed", str(recipe.seed), "--part", f"{index}/2",
                                     "-o", str(tmp_path / f"shards-{index}"), "-q"])
        assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["merge-parts", str(tmp_path / "shards-0"), str(tmp_path / "shards-1"), "-o", str(tmp_path / "shards")])
    assert result.exit_code == 0, result.output
    assert shard_bytes(tmp_path / "shards") == shard_bytes(Path(recipe.output)) and verify_shards(tmp_path / "shards") == []
    (tmp_path / "shards-1" / "index.parquet").unlink()
    result = runner.invoke(app, ["merge-parts", str(tmp_path / "shards-0"), str(tmp_path / "shards-1"), "-o", str(tmp_path / "again")])
    assert result.exit_code == 2 and "expected plan.json and index.parquet" in result.output

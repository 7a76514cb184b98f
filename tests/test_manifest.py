from pathlib import Path

import pyarrow.parquet as pq
import pytest

from mooer_data.manifest import (
    SCHEMA_VERSION,
    ManifestDir,
    ManifestError,
    TableSink,
    check_id,
    duckdb_views,
    open_manifest_dirs,
    read_roots,
    resolve_audio_path,
)


def recording(index: int) -> dict:
    return {"id": f"demo-{index}", "source": "demo", "path": f"a/{index}.wav", "format": "wav",
            "sample_rate": 16000, "channels": 1, "duration": 1.5}


def test_ids_follow_the_contract():
    check_id("aishell2-IC0001W0001", "aishell2")
    check_id("wenetspeech-Y0000000000_--5llN02F84_S00001", "wenetspeech")
    with pytest.raises(ManifestError, match="prefix"):
        check_id("IC0001W0001", "aishell2")
    with pytest.raises(ManifestError, match="no '.'"):
        check_id("inhouse-a.b", "inhouse")


def test_sink_writes_in_row_groups_with_metadata(tmp_path):
    path = tmp_path / "recordings.parquet"
    with TableSink(path, "recordings", {"demo": "/corpora/demo"}, batch_rows=10) as sink:
        sink.add_many(recording(i) for i in range(25))
    parquet = pq.ParquetFile(path)
    assert parquet.metadata.num_rows == 25 and parquet.metadata.num_row_groups == 3
    metadata = parquet.schema_arrow.metadata
    assert metadata[b"mooer.schema_version"] == SCHEMA_VERSION.encode()
    assert read_roots(path) == {"demo": "/corpora/demo"}


def test_killed_sink_leaves_no_table(tmp_path):
    path = tmp_path / "recordings.parquet"
    with pytest.raises(RuntimeError):
        with TableSink(path, "recordings", {}) as sink:
            sink.add(recording(1))
            raise RuntimeError("killed")
    assert not path.exists() and not list(tmp_path.iterdir())


def test_paths_resolve_against_the_recorded_root_or_an_override(tmp_path, monkeypatch):
    assert resolve_audio_path("/data/demo", "a/1.wav", "demo") == Path("/data/demo/a/1.wav")
    monkeypatch.setenv("MOOER_ROOT_DEMO", str(tmp_path))
    assert resolve_audio_path("/data/demo", "a/1.wav", "demo") == tmp_path / "a/1.wav"


def test_open_dirs_explains_what_is_missing(tmp_path):
    (tmp_path / "x.txt").write_text("")
    with pytest.raises(ManifestError, match="expected recordings.parquet"):
        open_manifest_dirs([tmp_path])
    with pytest.raises(ManifestError, match="found nothing there"):
        open_manifest_dirs([tmp_path / "absent"])


def test_schema_version_is_checked(tmp_path):
    import pyarrow as pa

    pq.write_table(pa.table({"id": ["demo-1"]}), tmp_path / "segments.parquet")
    with pytest.raises(ManifestError, match="schema version"):
        ManifestDir(tmp_path).read("segments")


def test_duckdb_views_union_directories(tmp_path):
    for name in ("one", "two"):
        with TableSink(tmp_path / name / "recordings.parquet", "recordings", {}) as sink:
            sink.add_many(recording(i) for i in range(3))
    con = duckdb_views(open_manifest_dirs([tmp_path / "one", tmp_path / "two"]))
    assert con.execute("SELECT count(*) FROM recordings").fetchone()[0] == 6
    assert con.execute("SELECT count(*) FROM segments").fetchone()[0] == 0

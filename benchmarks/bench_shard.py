"""Benchmark `mooer-data shard` against a bare tar copy, a bare FLAC transcode and Lhotse Shar.

    flock /tmp/bench.lock .venv/bin/python benchmarks/bench_shard.py [--files 20000] [--wav-files 5000] [--jobs 2]
        [--repeat 2] [--shard-count 1000] [--cases copy,transcode] [--skip-lhotse]
        [--breakdown auto|always|never] [--ours-from OLD/shards.py]

Two cases, each on one data set, with the same number of worker processes and the same
number of samples per shard (--shard-count) for every tool:

* copy - the synthetic LibriSpeech tree of bench_prepare.py (FLAC, 16 kHz mono 16-bit,
  1-6 s, generated once under benchmarks/data/librispeech-<n>/ and reused). Whole files of
  the wanted format, so ours copies their bytes into the tars.
    - ours:   mooer_data.shards.write_shards on the prepared librispeech manifest;
    - bare:   os.walk the .flac files, read each and add its bytes to a tar with tarfile,
              --shard-count files per tar, N processes (the floor for copying bytes into tars);
    - Lhotse: CutSet.to_shar(fields={"recording": "flac"}, shard_size, num_jobs=N), what
              `lhotse shar export` runs, on cuts from lhotse.recipes.prepare_librispeech.
* transcode - the first --wav-files utterances of the same tree decoded once and written as
  16 kHz 16-bit WAV in an AISHELL-2 layout (benchmarks/data/aishell2-wav-<n>/AISHELL-2/iOS/
  data/{wav.scp,trans.txt,wav/<spk>/<utt>.wav}, TAB separated), so every tool decodes the
  WAV and encodes FLAC.
    - ours:   write_shards on the prepared aishell2 manifest;
    - bare:   soundfile.read of each WAV + soundfile.write FLAC into a BytesIO (no tar, no
              metadata), N processes (the floor for transcoding, the bar's reference);
    - bare, direct read: the WAV's data chunk read with numpy instead of soundfile.read,
              then the same soundfile.write (shown for comparison: ours reads 16 kHz mono
              16-bit PCM WAV this way, so this is the floor for what ours does);
    - Lhotse: to_shar as above on cuts built from the same WAV files.
  Every FLAC here is libsndfile's, at its default compression level (5): ours, both bare
  floors and Lhotse (soundfile backend) call soundfile.write without a level, and the run
  checks that one of ours' FLAC members is byte-identical to the floor's encoding of its WAV.

Manifests and CutSets are built beforehand, outside the timings (imports too). Before each
run the tool's previous output is deleted and dirty pages are flushed (os.sync), untimed.
Every tool runs once as a warm-up (warm page cache); then --repeat rounds run every tool
once, interleaved (on a shared machine a burst of load from elsewhere then hits all tools
alike; each round runs them in its own seeded order), and each tool's best wall-clock
time is reported, with the CPU seconds (user + system, this process and its worker
processes) of that run. Throughput is audio seconds per wall second; the audio duration
is the sum of the prepared segments' durations. With --ours-from, an older shards.py
(e.g. `git show HEAD:mooer_data/shards.py > /tmp/shards_before.py`) runs as one more tool
in the same rounds: a before/after comparison under the same load.
Lhotse 1.33 writes FLAC here with its libsndfile backend (soundfile; torchaudio is not
installed). Nothing is written outside benchmarks/data/. The machine is shared: run it under
`flock /tmp/bench.lock` so two benchmarks never overlap.
"""

from __future__ import annotations

import argparse
import cProfile
import importlib.util
import io
import json
import os
import pstats
import random
import shutil
import sys
import tarfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_prepare import DATA, PART, _fmt_count, ensure_tree  # noqa: E402

WORK = DATA / "shard-bench"
WAV_MARKER = ".bench-complete.json"
# common characters for the synthetic AISHELL-2 transcripts
HANZI = (
    "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能下过子说产种面而方后多定行学法所"
    "民得经十三之进着等部度家电力里如水化高自二理起小物现实加量都两体制机当使点从业本去把性好应开它合还因由其些然前外天政四日"
    "那社义事平形相全表间样与关各重新线内数正心反你明看原又么利比或但质气第向道命此变条只没结解问意建月公无系军很情者最立代想"
    "已通并提直题党程展五果料象员革位入常文总次品式活设及管特件长求老头基资边流路级少图山统接知较将组见计别她手角期根论运农指"
    "几九区强放决西被干做必战先回则任取据处理府研"
)


def _cpu_seconds() -> float:
    """User + system CPU of this process and of its reaped children (the worker pools)."""
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _measure(tools: dict[str, tuple[str, Callable[[], dict], Path]], repeat: int) -> dict[str, tuple[float, float, dict]]:
    """Each tool once as a warm-up, then `repeat` rounds in which every tool runs once, in
    turn (interleaved, so a burst of load from elsewhere on a shared machine hits all of
    them alike), each round in its own order (a seeded shuffle: no tool always runs right
    after the same other one, e.g. after a long Lhotse run). Before every run the tool's
    output dir is deleted and dirty pages flushed. Returns {name: (best wall seconds, CPU
    seconds of that run, info)}."""
    best: dict[str, tuple[float, float, dict]] = {}
    names = list(tools)
    order = random.Random(0)
    for attempt in range(repeat + 1):
        for name in names if attempt == 0 else order.sample(names, len(names)):
            label, fn, fresh = tools[name]
            if fresh.exists():
                shutil.rmtree(fresh)
            os.sync()  # no run pays for writing back an earlier run's dirty pages
            cpu = _cpu_seconds()
            started = time.perf_counter()
            info = fn()
            elapsed = time.perf_counter() - started
            cpu = _cpu_seconds() - cpu
            tag = "warm-up" if attempt == 0 else f"run {attempt}"
            print(f"  {label:24s} {tag:8s} {elapsed:7.2f} s  ({cpu:6.2f} CPU s)", flush=True)
            if attempt and (name not in best or elapsed < best[name][0]):
                best[name] = (elapsed, cpu, info)
    return {name: best[name] for name in names}


def _flac_paths(root: Path) -> list[str]:
    return sorted(
        os.path.join(dirpath, name) for dirpath, _dirs, names in os.walk(root) for name in names if name.endswith(".flac")
    )


# --------------------------------------------------------------------------- the WAV tree


def _write_wavs(args) -> int:
    import soundfile as sf

    pairs = args
    for flac, wav in pairs:
        samples, rate = sf.read(flac, dtype="int16")
        Path(wav).parent.mkdir(parents=True, exist_ok=True)
        sf.write(wav, samples, rate, subtype="PCM_16", format="WAV")
    return len(pairs)


def ensure_wav_tree(flac_root: Path, files: int, seed: int, jobs: int) -> tuple[Path, float | None]:
    """AISHELL-2 layout of WAV copies of the first `files` FLACs; the corpus dir (AISHELL-2/)."""
    root = DATA / f"aishell2-wav-{_fmt_count(files)}"
    corpus = root / "AISHELL-2"
    data = corpus / "iOS" / "data"
    params = {"files": files, "seed": seed, "from": str(flac_root), "version": 1}
    marker = corpus / WAV_MARKER
    if marker.is_file() and json.loads(marker.read_text()) == params:
        return corpus, None
    if root.exists():
        shutil.rmtree(root)
    started = time.perf_counter()
    flacs = _flac_paths(flac_root)[:files]
    assert len(flacs) == files, f"only {len(flacs)} FLAC files under {flac_root}"
    rng = np.random.default_rng(seed)
    speakers: dict[str, str] = {}
    counters: dict[str, int] = {}
    pairs, scp, trans = [], [], []
    for flac in flacs:
        ls_speaker = Path(flac).name.split("-")[0]
        spk = speakers.setdefault(ls_speaker, f"C{len(speakers) + 1:04d}")
        counters[spk] = counters.get(spk, 0) + 1
        utt = f"I{spk}W{counters[spk]:04d}"
        relative = f"wav/{spk}/{utt}.wav"
        pairs.append((flac, str(data / relative)))
        scp.append(f"{utt}\t{relative}\n")
        text = "".join(HANZI[i] for i in rng.integers(0, len(HANZI), int(rng.integers(6, 25))))
        trans.append(f"{utt}\t{text}\n")
    data.mkdir(parents=True)
    chunks = [pairs[i : i + 250] for i in range(0, len(pairs), 250)]
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        written = sum(pool.map(_write_wavs, chunks))
    assert written == files
    (data / "wav.scp").write_text("".join(scp), encoding="utf-8")
    (data / "trans.txt").write_text("".join(trans), encoding="utf-8")
    marker.write_text(json.dumps(params))
    return corpus, time.perf_counter() - started


# --------------------------------------------------------------------------- preparation (untimed)


def prepare_manifest(corpus: str, corpus_dir: Path, out: Path, jobs: int) -> float:
    """Prepare our manifest (fresh); returns its total segment seconds."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from mooer_data.prepare import PrepareConfig, prepare_corpus

    if out.exists():
        shutil.rmtree(out)
    result = prepare_corpus(corpus, corpus_dir, out, PrepareConfig(jobs=jobs, show_progress=False), log=lambda s: None)
    assert result.counts["rejects"] == 0, f"{corpus}: {result.counts}"
    return pc.sum(pq.read_table(out / "segments.parquet", columns=["duration"]).column("duration")).as_py()


def lhotse_cuts_librispeech(flac_root: Path, jobs: int):
    from lhotse import CutSet
    from lhotse.recipes import prepare_librispeech

    manifests = prepare_librispeech(flac_root / "LibriSpeech", dataset_parts=[PART], num_jobs=jobs)[PART]
    return CutSet.from_manifests(recordings=manifests["recordings"], supervisions=manifests["supervisions"])


def lhotse_cuts_wav(corpus: Path):
    from lhotse import CutSet, Recording, RecordingSet, SupervisionSegment, SupervisionSet

    data = corpus / "iOS" / "data"
    texts = dict(line.split("\t", 1) for line in (data / "trans.txt").read_text(encoding="utf-8").splitlines())
    recordings, supervisions = [], []
    for line in (data / "wav.scp").read_text(encoding="utf-8").splitlines():
        utt, relative = line.split("\t", 1)
        recording = Recording.from_file(data / relative, recording_id=utt)
        recordings.append(recording)
        supervisions.append(
            SupervisionSegment(utt, utt, 0.0, recording.duration, channel=0, text=texts[utt], language="Chinese",
                               speaker=Path(relative).parent.name)
        )
    return CutSet.from_manifests(recordings=RecordingSet.from_recordings(recordings),
                                 supervisions=SupervisionSet.from_segments(supervisions))


# --------------------------------------------------------------------------- the tools


def run_ours(manifest: Path, out: Path, jobs: int, count: int, module=None) -> dict:
    import mooer_data.shards

    shards = module or mooer_data.shards
    config = shards.ShardConfig(shard_size=None, max_count=count, audio_format="flac", jobs=jobs, show_progress=False)
    result = shards.write_shards([manifest], out, config, log=lambda s: None)
    return {"samples": result.samples, "copied": result.copied, "seconds": result.seconds, "shards": result.shards,
            "skipped": dict(result.skipped_segments)}


def load_older_shards(path: Path):
    """An older mooer_data/shards.py as the module mooer_data.shards_before (its relative
    imports resolve in the package as it is now)."""
    spec = importlib.util.spec_from_file_location("mooer_data.shards_before", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _bare_tar(args: tuple[list[str], str]) -> int:
    paths, tar_path = args
    with tarfile.open(tar_path, "w", format=tarfile.GNU_FORMAT) as archive:
        for path in paths:
            with open(path, "rb") as handle:
                data = handle.read()
            info = tarfile.TarInfo(os.path.basename(path))
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return len(paths)


def run_bare_copy(root: Path, out: Path, jobs: int, count: int) -> dict:
    paths = [
        os.path.join(dirpath, name) for dirpath, _dirs, names in os.walk(root) for name in names if name.endswith(".flac")
    ]
    out.mkdir(parents=True)
    tasks = [(paths[i : i + count], str(out / f"bare-{i // count:06d}.tar")) for i in range(0, len(paths), count)]
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        written = sum(pool.map(_bare_tar, tasks))
    return {"samples": written, "tars": len(tasks)}


def _bare_transcode(paths: list[str]) -> tuple[int, int]:
    import soundfile as sf

    total = 0
    for path in paths:
        samples, rate = sf.read(path, dtype="int16")
        buffer = io.BytesIO()
        sf.write(buffer, samples, rate, format="FLAC", subtype="PCM_16")
        total += buffer.getbuffer().nbytes
    return len(paths), total


def _pcm16_wav_data(path: str) -> np.ndarray:
    """The samples of a canonical 16-bit PCM WAV, straight from its data chunk."""
    with open(path, "rb") as handle:
        data = handle.read()
    offset = 12
    while data[offset : offset + 4] != b"data":
        offset += 8 + int.from_bytes(data[offset + 4 : offset + 8], "little")
    size = int.from_bytes(data[offset + 4 : offset + 8], "little")
    return np.frombuffer(data, dtype="<i2", count=size // 2, offset=offset + 8)


def _bare_transcode_direct(paths: list[str]) -> tuple[int, int]:
    import soundfile as sf

    total = 0
    for path in paths:
        buffer = io.BytesIO()
        sf.write(buffer, _pcm16_wav_data(path), 16000, format="FLAC", subtype="PCM_16")
        total += buffer.getbuffer().nbytes
    return len(paths), total


def run_bare_transcode(root: Path, jobs: int, chunk: int = 250, direct: bool = False) -> dict:
    paths = [
        os.path.join(dirpath, name) for dirpath, _dirs, names in os.walk(root) for name in names if name.endswith(".wav")
    ]
    chunks = [paths[i : i + chunk] for i in range(0, len(paths), chunk)]
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        results = list(pool.map(_bare_transcode_direct if direct else _bare_transcode, chunks))
    return {"samples": sum(n for n, _ in results), "flac_bytes": sum(b for _, b in results)}


def same_flac_as_the_floor(shard_dir: Path, corpus: Path) -> bool:
    """One FLAC member of ours is byte-identical to the floor's soundfile.write of its WAV
    (the same encoder at the same compression level)."""
    import soundfile as sf

    from mooer_data.shard_format import iter_shard

    sample = next(iter_shard(sorted(shard_dir.glob("*/shard-*.tar"))[0]))
    utt = sample.key.removeprefix("aishell2-")
    wav = next(corpus.rglob(f"{utt}.wav"))
    buffer = io.BytesIO()
    sf.write(buffer, sf.read(wav, dtype="int16")[0], 16000, format="FLAC", subtype="PCM_16")
    return buffer.getvalue() == sample.audio


def run_lhotse(cuts, out: Path, jobs: int, count: int) -> dict:
    paths = cuts.to_shar(out, fields={"recording": "flac"}, shard_size=count, num_jobs=jobs)
    return {"tars": len(paths["recording"]), "cut_files": len(paths["cuts"])}


def count_lhotse_samples(out: Path) -> int:
    n = 0
    for tar in sorted(out.glob("recording.*.tar")):
        with tarfile.open(tar) as archive:
            n += sum(1 for name in archive.getnames() if name.endswith(".flac"))
    return n


# --------------------------------------------------------------------------- breakdown of ours


def breakdown_ours(manifest: Path, out: Path, count: int, max_shards: int) -> tuple[list[tuple[str, float]], int, str]:
    """write_shards with jobs=1 (no pool, no helper threads: the phases add up) on the first
    `max_shards` shards of the plan, with functions of mooer_data.shards wrapped with
    timers (patched in this process only, then restored); then the same under cProfile.
    The library is not edited."""
    import mooer_data.shards as shards
    from mooer_data.shard_format import TarWriter

    spent: dict[str, float] = {}
    labels = {
        "collect_refs": "collect_refs (main: 5 columns of the manifest, filters)",
        "plan_shards": "plan_shards (main: rank-key order; whole manifest)",
        "_task_rows": "_task_rows (worker: the shard's manifest rows as columns)",
        "SampleJson": "SampleJson (every json member of the shard)",
        "_read_file": "_read_file (copy: the whole source file)",
        "read_segment": "read_segment (decode)",
        "encode": "encode (FLAC)",
        "sample_pieces": "sample_pieces (tar headers, members)",
        "TarWriter.add_pieces": "TarWriter.add_pieces (sha256 + writev)",
        "write_index": "write_index (parquet, lists)",
    }
    samples = {"n": 0}

    def wrap(owner, attribute: str, name: str):
        original = getattr(owner, attribute)

        def timed_call(*a, **k):
            started = time.perf_counter()
            try:
                value = original(*a, **k)
            finally:
                spent[name] = spent.get(name, 0.0) + time.perf_counter() - started
            if name == "plan_shards":
                value = value[:max_shards]
                samples["n"] = sum(len(t.rows) for t in value)
            return value

        setattr(owner, attribute, timed_call)
        return owner, attribute, original

    patches = [wrap(TarWriter, "add_pieces", name) if name == "TarWriter.add_pieces" else wrap(shards, name, name) for name in labels]
    if out.exists():
        shutil.rmtree(out)
    started = time.perf_counter()
    try:
        run_ours(manifest, out, 1, count)
    finally:
        for owner, attribute, original in patches:
            setattr(owner, attribute, original)
    total = time.perf_counter() - started
    rows = [(labels[name], spent.get(name, 0.0)) for name in labels]
    rows.append(("other (stats, the sample loop, file open/rename, ...)", total - sum(spent.values())))
    rows.append(("total", total))

    # the same under cProfile (plan cut the same way)
    original_plan = shards.plan_shards
    shards.plan_shards = lambda *a, **k: original_plan(*a, **k)[:max_shards]
    shutil.rmtree(out)
    profile = cProfile.Profile()
    try:
        profile.enable()
        run_ours(manifest, out, 1, count)
        profile.disable()
    finally:
        shards.plan_shards = original_plan
    text = io.StringIO()
    pstats.Stats(profile, stream=text).sort_stats("tottime").print_stats(18)
    shutil.rmtree(out, ignore_errors=True)
    return rows, samples["n"], text.getvalue()


# --------------------------------------------------------------------------- main


def _table(title: str, audio_seconds: float, results: dict[str, tuple[float, float, dict]], labels: dict[str, str]) -> None:
    ours_s = results["ours"][0]
    print()
    print(f"### {title}")
    print()
    print("| tool | seconds | audio-s/s | speed vs ours | CPU s (that run) |")
    print("|---|---:|---:|---:|---:|")
    for name, (seconds, cpu, _info) in results.items():
        bold = "**" if name == "ours" else ""
        print(f"| {bold}{labels[name]}{bold} | {seconds:.2f} | {audio_seconds / seconds:,.0f} | "
              f"{ours_s / seconds:.2f}× | {cpu:.2f} |")


def _bar(text: str, results: dict[str, tuple[float, float, dict]], other: str, threshold: float | None) -> bool:
    """ours' throughput ÷ `other`'s on wall time (the bar, when `threshold` is given); the
    same on CPU seconds as a check that is less sensitive to load from elsewhere."""
    value = results[other][0] / results["ours"][0]
    on_cpu = results[other][1] / results["ours"][1]
    ok = threshold is None or value >= threshold
    verdict = "" if threshold is None else f" (needs ≥ {threshold:.2f}) — {'MET' if ok else 'MISSED'}"
    print(f"- {'bar' if threshold is not None else 'ratio'}: {text}: {value:.2f}{verdict}  [on CPU seconds: {on_cpu:.2f}]")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=20000, help="FLAC files in the copy case")
    parser.add_argument("--wav-files", type=int, default=5000, help="WAV files in the transcode case")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--shard-count", type=int, default=1000, help="samples per shard (every tool)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-lhotse", action="store_true")
    parser.add_argument("--cases", type=lambda text: text.split(","), default=["copy", "transcode"],
                        help="comma-separated: copy, transcode (default both)")
    parser.add_argument("--breakdown", choices=("auto", "always", "never"), default="auto",
                        help="timer breakdown + cProfile of ours (jobs=1, a few shards); auto: when a bar is missed")
    parser.add_argument("--breakdown-shards", type=int, default=3)
    parser.add_argument("--ours-from", type=Path, default=None,
                        help="an older mooer_data/shards.py to run as one more tool in the same rounds (before/after)")
    args = parser.parse_args()
    os.environ.setdefault("TQDM_DISABLE", "1")

    one, five, _ = os.getloadavg()
    print(f"load average at start: {one:.2f} (1 min), {five:.2f} (5 min) ({os.cpu_count()} cores)")
    flac_root, generated = ensure_tree(args.files, args.seed, args.jobs)
    print(f"copy corpus: {flac_root} ({'cached' if generated is None else f'generated in {generated:.1f} s'})")
    wav_corpus, generated = ensure_wav_tree(flac_root, args.wav_files, args.seed, args.jobs)
    print(f"transcode corpus: {wav_corpus} ({'cached' if generated is None else f'generated in {generated:.1f} s'})")

    if WORK.exists():
        shutil.rmtree(WORK)
    WORK.mkdir(parents=True)
    started = time.perf_counter()
    ls_manifest, ws_manifest = WORK / "manifest-librispeech", WORK / "manifest-aishell2"
    ls_seconds = prepare_manifest("librispeech", flac_root, ls_manifest, args.jobs)
    ws_seconds = prepare_manifest("aishell2", wav_corpus, ws_manifest, args.jobs)
    import mooer_data.shards  # noqa: F401

    before = load_older_shards(args.ours_from) if args.ours_from else None

    ls_cuts = ws_cuts = None
    if not args.skip_lhotse:
        import lhotse  # noqa: F401

        if "copy" in args.cases:
            ls_cuts = lhotse_cuts_librispeech(flac_root, args.jobs)
            assert len(ls_cuts) == args.files, len(ls_cuts)
            lhotse_hours = sum(c.duration for c in ls_cuts) / 3600
            assert abs(lhotse_hours - ls_seconds / 3600) < 0.001 * lhotse_hours, (lhotse_hours, ls_seconds / 3600)
        if "transcode" in args.cases:
            ws_cuts = lhotse_cuts_wav(wav_corpus)
            assert len(ws_cuts) == args.wav_files, len(ws_cuts)
    print(f"manifests and cuts prepared in {time.perf_counter() - started:.1f} s (untimed)")
    print(f"jobs: {args.jobs}; {args.shard_count} samples per shard; best of {args.repeat} after one warm-up", flush=True)

    out = WORK / "out"
    n = args.shard_count
    met: list[bool] = []
    results: dict[str, dict] = {}

    if "copy" in args.cases:
        print(f"\ncopy case: {args.files} FLAC files, {ls_seconds / 3600:.2f} h")
        tools = {
            "ours": ("ours", lambda: run_ours(ls_manifest, out / "ours", args.jobs, n), out / "ours"),
            "bare": ("bare copy", lambda: run_bare_copy(flac_root, out / "bare", args.jobs, n), out / "bare"),
        }
        if before is not None:
            tools["before"] = ("ours before", lambda: run_ours(ls_manifest, out / "before", args.jobs, n, before), out / "before")
        if ls_cuts is not None:
            tools["lhotse"] = ("lhotse to_shar", lambda: run_lhotse(ls_cuts, out / "lhotse", args.jobs, n), out / "lhotse")
        copy = results["copy"] = _measure(tools, args.repeat)
        if ls_cuts is not None:
            copy["lhotse"][2]["samples"] = count_lhotse_samples(out / "lhotse")
        shutil.rmtree(out, ignore_errors=True)
        ours = copy["ours"][2]
        assert ours["samples"] == args.files, f"copy: ours wrote {ours['samples']} samples for {args.files} files"
        assert ours["copied"] == args.files, f"copy: ours copied only {ours['copied']} of {args.files}"
        assert abs(ours["seconds"] - ls_seconds) <= 0.001 * ls_seconds, (ours["seconds"], ls_seconds)
        assert copy["bare"][2]["samples"] == args.files
        _table(
            f"copy case: {args.files} FLAC files (16 kHz mono 16-bit, 1–6 s), {ls_seconds / 3600:.2f} h, "
            f"jobs={args.jobs}, {n} samples/shard, best of {args.repeat}",
            ls_seconds,
            copy,
            {
                "ours": "ours: write_shards (bytes copied)",
                "bare": f"bare copy: os.walk + read + tarfile.addfile, {args.jobs} processes",
                "before": f"ours before ({args.ours_from})",
                "lhotse": "Lhotse 1.33: CutSet.to_shar(recording=flac), decode + encode",
            },
        )

    if "transcode" in args.cases:
        print(f"\ntranscode case: {args.wav_files} WAV files, {ws_seconds / 3600:.2f} h")
        tools = {
            "ours": ("ours", lambda: run_ours(ws_manifest, out / "ours", args.jobs, n), out / "ours"),
            "bare": ("bare decode+encode", lambda: run_bare_transcode(wav_corpus, args.jobs), out / "bare"),
            "direct": ("bare direct read+encode", lambda: run_bare_transcode(wav_corpus, args.jobs, direct=True), out / "direct"),
        }
        if before is not None:
            tools["before"] = ("ours before", lambda: run_ours(ws_manifest, out / "before", args.jobs, n, before), out / "before")
        if ws_cuts is not None:
            tools["lhotse"] = ("lhotse to_shar", lambda: run_lhotse(ws_cuts, out / "lhotse", args.jobs, n), out / "lhotse")
        trans = results["transcode"] = _measure(tools, args.repeat)
        if ws_cuts is not None:
            trans["lhotse"][2]["samples"] = count_lhotse_samples(out / "lhotse")
        same_flac = same_flac_as_the_floor(out / "ours", wav_corpus)
        shutil.rmtree(out, ignore_errors=True)
        ours = trans["ours"][2]
        assert ours["samples"] == args.wav_files, f"transcode: ours wrote {ours['samples']} for {args.wav_files} files"
        assert ours["copied"] == 0, ours
        assert abs(ours["seconds"] - ws_seconds) <= 0.001 * ws_seconds, (ours["seconds"], ws_seconds)
        assert trans["bare"][2]["samples"] == trans["direct"][2]["samples"] == args.wav_files
        assert trans["direct"][2]["flac_bytes"] == trans["bare"][2]["flac_bytes"]
        assert same_flac, "ours' FLAC differs from the floor's soundfile.write of the same WAV (another encoder or level?)"
        _table(
            f"transcode case: {args.wav_files} WAV files → FLAC, {ws_seconds / 3600:.2f} h, "
            f"jobs={args.jobs}, {n} samples/shard, best of {args.repeat}",
            ws_seconds,
            trans,
            {
                "ours": "ours: write_shards (WAV → FLAC)",
                "bare": f"bare: sf.read + sf.write FLAC to BytesIO, {args.jobs} processes, no tar",
                "direct": "bare, direct read: WAV data chunk via numpy + sf.write FLAC (for comparison)",
                "before": f"ours before ({args.ours_from})",
                "lhotse": "Lhotse 1.33: CutSet.to_shar(recording=flac)",
            },
        )

    # ---- correctness and bars
    print()
    for name, expected in (("copy", args.files), ("transcode", args.wav_files)):
        case = results.get(name)
        if case is None:
            continue
        for other in ("before", "lhotse"):
            if other in case:
                assert case[other][2]["samples"] == expected, (name, other, case[other][2], expected)
        ours = case["ours"][2]
        rounds = -(-ours["shards"] // args.jobs)
        print(f"correctness, {name}: ours wrote {ours['samples']} samples ({ours['copied']} copied as they were) in "
              f"{ours['shards']} shards, {ours['seconds'] / 3600:.4f} h as in the manifest; every tool's sample count matches"
              + ("; ours' FLAC is byte-identical to the floor's soundfile.write (libsndfile's default level) of the same WAV"
                 if name == "transcode" else ""))
        print(f"{name}: {ours['shards']} shards over {args.jobs} workers: Lhotse works shard by shard, so its busiest worker "
              f"builds {rounds}, {rounds / (ours['shards'] / args.jobs):.2f}× an even share; ours' helper threads make samples "
              f"of the shards still building whenever a worker has none left")
    print()
    if "copy" in results:
        if "lhotse" in results["copy"]:
            met.append(_bar("copy: ours ÷ Lhotse throughput", results["copy"], "lhotse", 2.0))
        met.append(_bar("copy: ours ÷ bare copy throughput", results["copy"], "bare", 0.70))
    if "transcode" in results:
        if "lhotse" in results["transcode"]:
            met.append(_bar("transcode: ours ÷ Lhotse throughput", results["transcode"], "lhotse", 2.0))
        met.append(_bar("transcode: ours ÷ bare decode+encode throughput", results["transcode"], "bare", 0.85))
        _bar("transcode: ours ÷ bare direct read+encode throughput (the floor for ours' own reading)", results["transcode"],
             "direct", None)
    for name, case in results.items():
        if "before" in case:
            _bar(f"{name}: ours ÷ ours before (same rounds)", case, "before", None)

    if args.breakdown == "always" or (args.breakdown == "auto" and not all(met)):
        for name, manifest in (("copy", ls_manifest), ("transcode", ws_manifest)):
            if name not in args.cases:
                continue
            rows, samples, profile = breakdown_ours(manifest, WORK / "breakdown", n, args.breakdown_shards)
            print()
            print(f"where ours spends its time — {name} case, jobs=1, first {args.breakdown_shards} shards "
                  f"({samples} samples), one instrumented run (phases nest inside build_shard):")
            print()
            print("| phase | seconds | ms/sample |")
            print("|---|---:|---:|")
            for label, seconds in rows:
                print(f"| {label} | {seconds:.2f} | {seconds / samples * 1000:.3f} |")
            print()
            print(f"cProfile ({name} case, same subset, top by tottime):")
            print("\n".join("    " + line for line in profile.strip().splitlines()))

    one, five, _ = os.getloadavg()
    print(f"\nload average at end: {one:.2f} (1 min), {five:.2f} (5 min)")
    shutil.rmtree(WORK, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

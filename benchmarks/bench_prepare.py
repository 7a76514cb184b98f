"""Benchmark `mooer-data prepare librispeech` against a bare header scan and Lhotse.

    .venv/bin/python benchmarks/bench_prepare.py [--files 20000] [--jobs 2] [--repeat 3]

A synthetic LibriSpeech-layout tree (train-clean-100 only; FLAC, 16 kHz mono 16-bit,
uniform 1-6 s durations, upper-case transcripts, SPEAKERS.TXT) is generated once under
benchmarks/data/ and reused while its parameters match. Then, on the same tree with the
same number of worker processes/threads, three things are timed:

* floor  - os.walk + soundfile.info(path).duration for every .flac, over N processes;
* ours   - mooer_data.prepare.prepare_corpus("librispeech", ...) into a fresh out dir;
* lhotse - lhotse.recipes.prepare_librispeech(..., num_jobs=N) into a fresh out dir.

Each runs once as a warm-up (so every run sees a warm page cache), then the best of
--repeat wall-clock timings is reported. Timings cover the library call only (imports
done beforehand). Nothing is written outside benchmarks/data/.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
DATA = REPO / "benchmarks" / "data"
PART = "train-clean-100"
SAMPLE_RATE = 16000
UTTS_PER_CHAPTER = 40
CHAPTERS_PER_SPEAKER = 2
MARKER = ".bench-complete.json"

WORDS = (
    "THE AND OF TO A IN THAT HE WAS IT HIS I WITH AS HAD FOR YOU HER BUT SHE NOT AT ON BE IS "
    "ALL BY WHICH THEY THIS SO HAVE FROM WERE ONE HIM SAID WE THERE MY ME OR NO WHEN AN WHAT "
    "WOULD IF THEM THEIR WHO ARE BEEN UPON MORE OUT WILL COULD THEN LITTLE SOME NOW VERY MAN "
    "ABOUT INTO DON'T LIKE TIME ONLY SEE WELL OLD KNOW DOWN AGAIN GREAT BEFORE HOUSE AWAY "
    "THOUGHT MUST THROUGH NIGHT MOTHER CAME NEVER LONG EYES HAND FATHER MORNING CHILDREN "
    "GARDEN WINDOW RIVER BEAUTIFUL SUDDENLY PERHAPS CAPTAIN QUITE SILENCE WHISPERED ANSWERED"
).split()


def _fmt_count(n: int) -> str:
    return f"{n // 1000}k" if n % 1000 == 0 else str(n)


def tree_dir(files: int) -> Path:
    return DATA / f"librispeech-{_fmt_count(files)}"


# --------------------------------------------------------------------------- generation


def _plan(files: int, seed: int):
    """[(speaker, chapter, [(utt_id, frames, text), ...]), ...] and speaker sexes."""
    rng = np.random.default_rng(seed)
    chapters = math.ceil(files / UTTS_PER_CHAPTER)
    speakers = math.ceil(chapters / CHAPTERS_PER_SPEAKER)
    speaker_ids = np.sort(rng.choice(np.arange(10, 10000), size=speakers, replace=False))
    chapter_ids = rng.choice(np.arange(1000, 300000), size=chapters, replace=False)
    frames = rng.integers(1 * SAMPLE_RATE, 6 * SAMPLE_RATE + 1, size=files)  # uniform 1-6 s
    words = np.array(WORDS)
    plan = []
    index = 0
    for c in range(chapters):
        spk = int(speaker_ids[c // CHAPTERS_PER_SPEAKER])
        chap = int(chapter_ids[c])
        utts = []
        for u in range(min(UTTS_PER_CHAPTER, files - index)):
            n_words = int(rng.integers(4, 30))
            text = " ".join(words[rng.integers(0, len(words), n_words)])
            utts.append((f"{spk}-{chap}-{u:04d}", int(frames[index]), text))
            index += 1
        plan.append((spk, chap, utts))
    sexes = {int(s): ("F" if rng.random() < 0.5 else "M") for s in speaker_ids}
    return plan, sexes


def _write_chapter(args) -> int:
    import soundfile as sf

    part_dir, spk, chap, utts, seed = args
    chapter_dir = Path(part_dir) / str(spk) / str(chap)
    chapter_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, spk, chap])
    for utt_id, frames, _text in utts:
        t = np.arange(frames) / SAMPLE_RATE
        freq = rng.uniform(120, 400)
        # quiet sine (~-40 dBFS) plus +-1 LSB noise: compresses to ~6 KB per second
        signal = 300 * np.sin(2 * np.pi * freq * t) + rng.integers(-1, 2, frames)
        sf.write(chapter_dir / f"{utt_id}.flac", signal.astype(np.int16), SAMPLE_RATE, subtype="PCM_16", format="FLAC")
    with open(chapter_dir / f"{spk}-{chap}.trans.txt", "w") as handle:
        for utt_id, _frames, text in utts:
            handle.write(f"{utt_id} {text}\n")
    return len(utts)


def ensure_tree(files: int, seed: int, jobs: int) -> tuple[Path, float | None]:
    """The corpus root (the dir holding LibriSpeech/) and generation seconds (None if cached)."""
    root = tree_dir(files)
    librispeech = root / "LibriSpeech"
    params = {"files": files, "seed": seed, "part": PART, "utts_per_chapter": UTTS_PER_CHAPTER, "version": 1}
    marker = librispeech / MARKER
    if marker.is_file() and json.loads(marker.read_text()) == params:
        return root, None
    if root.exists():
        shutil.rmtree(root)  # partial or different parameters
    started = time.perf_counter()
    plan, sexes = _plan(files, seed)
    part_dir = librispeech / PART
    part_dir.mkdir(parents=True)
    minutes: dict[int, float] = {}
    for spk, _chap, utts in plan:
        minutes[spk] = minutes.get(spk, 0.0) + sum(f for _, f, _ in utts) / SAMPLE_RATE / 60
    tasks = [(str(part_dir), spk, chap, utts, seed) for spk, chap, utts in plan]
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        written = sum(pool.map(_write_chapter, tasks, chunksize=8))
    assert written == files, (written, files)
    with open(librispeech / "SPEAKERS.TXT", "w") as handle:
        handle.write("; Synthetic speaker table in the LibriSpeech SPEAKERS.TXT layout (benchmark data)\n")
        handle.write(";ID  |SEX| SUBSET           |MINUTES| NAME\n")
        for spk in sorted(minutes):
            handle.write(f"{spk:<5}| {sexes[spk]} | {PART:<16} | {minutes[spk]:5.2f} | Reader {spk}\n")
    marker.write_text(json.dumps(params))
    return root, time.perf_counter() - started


def tree_size_mb(root: Path) -> float:
    total = 0
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            total += os.path.getsize(os.path.join(dirpath, name))
    return total / 2**20


# --------------------------------------------------------------------------- the three tools


def _floor_chunk(paths: list[str]) -> tuple[int, float]:
    import soundfile as sf

    return len(paths), sum(sf.info(p).duration for p in paths)


def run_floor(root: Path, jobs: int, chunk: int = 512) -> dict:
    paths = [
        os.path.join(dirpath, name)
        for dirpath, _dirs, names in os.walk(root)
        for name in names
        if name.endswith(".flac")
    ]
    chunks = [paths[i : i + chunk] for i in range(0, len(paths), chunk)]
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        results = list(pool.map(_floor_chunk, chunks))
    return {"files": sum(n for n, _ in results), "seconds_audio": sum(s for _, s in results)}


def run_ours(root: Path, out: Path, jobs: int) -> dict:
    from mooer_data.prepare import PrepareConfig, prepare_corpus

    result = prepare_corpus("librispeech", root, out, PrepareConfig(jobs=jobs, show_progress=False), log=lambda s: None)
    return {"segments": result.counts["segments"], "rejects": result.counts["rejects"]}


def run_lhotse(root: Path, out: Path, jobs: int) -> dict:
    from lhotse.recipes import prepare_librispeech

    manifests = prepare_librispeech(root / "LibriSpeech", dataset_parts=[PART], output_dir=out, num_jobs=jobs)
    return {"recordings": len(manifests[PART]["recordings"]), "supervisions": len(manifests[PART]["supervisions"])}


def breakdown_ours(root: Path, out: Path, jobs: int) -> list[tuple[str, float]]:
    """One extra run of ours with timers wrapped around its phases (the library is not
    edited: module attributes are patched in this process only, then restored)."""
    import mooer_data.corpora.base as base
    import mooer_data.corpora.librispeech as librispeech
    import mooer_data.prepare as prepare

    spent: dict[str, float] = {}

    def wrap(module, name: str, label: str):
        original = getattr(module, name)

        def timed_call(*a, **k):
            started = time.perf_counter()
            try:
                return original(*a, **k)
            finally:
                spent[label] = spent.get(label, 0.0) + time.perf_counter() - started

        setattr(module, name, timed_call)
        return module, name, original

    patches = [
        wrap(librispeech, "collect", "scan dirs + read transcripts (collect)"),
        wrap(base, "probe_many", "probe headers (probe_many, N processes)"),
        wrap(base, "normalize_transcript", "normalize_transcript (per utterance)"),
        wrap(base, "relative_to_root", "relative_to_root (per utterance)"),
        wrap(prepare, "_merge_parts", "merge parts into final tables"),
    ]
    if out.exists():
        shutil.rmtree(out)
    started = time.perf_counter()
    try:
        run_ours(root, out, jobs)
    finally:
        for module, name, original in patches:
            setattr(module, name, original)
    total = time.perf_counter() - started
    rows = list(spent.items())
    rows.append(("other (row building, TableSink.add, parquet writes, ...)", total - sum(spent.values())))
    rows.append(("total", total))
    return rows


def timed(label: str, fn, repeat: int, fresh: Path | None) -> tuple[list[float], dict]:
    """One warm-up, then `repeat` timed runs; `fresh` is deleted before every run."""
    times: list[float] = []
    info: dict = {}
    for attempt in range(repeat + 1):
        if fresh is not None and fresh.exists():
            shutil.rmtree(fresh)
        started = time.perf_counter()
        info = fn()
        elapsed = time.perf_counter() - started
        tag = "warm-up" if attempt == 0 else f"run {attempt}"
        print(f"  {label:7s} {tag:8s} {elapsed:7.2f} s", flush=True)
        if attempt:
            times.append(elapsed)
    return times, info


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=20000)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-lhotse", action="store_true", help="time only the floor and ours")
    parser.add_argument("--breakdown", action="store_true", help="add a per-phase timing of ours (one extra run)")
    args = parser.parse_args()
    os.environ.setdefault("TQDM_DISABLE", "1")  # Lhotse's progress bars

    one, five, _ = os.getloadavg()
    print(f"load average at start: {one:.2f} (1 min), {five:.2f} (5 min) (2-core machine: anything near 1+ skews timings)")
    root, generated = ensure_tree(args.files, args.seed, args.jobs)
    if generated is None:
        print(f"corpus: {root} (cached)")
    else:
        print(f"corpus: {root} (generated {args.files} files in {generated:.1f} s with {args.jobs} processes)")
    print(f"tree size: {tree_size_mb(root):.0f} MiB; jobs: {args.jobs}; best of {args.repeat} after one warm-up", flush=True)

    work = DATA / "prepare-out"
    work.mkdir(parents=True, exist_ok=True)
    results: dict[str, tuple[float, dict]] = {}

    floor_times, floor_info = timed("floor", lambda: run_floor(root, args.jobs), args.repeat, None)
    results["floor"] = (min(floor_times), floor_info)

    ours_out = work / "ours"
    ours_times, ours_info = timed("ours", lambda: run_ours(root, ours_out, args.jobs), args.repeat, ours_out)
    results["ours"] = (min(ours_times), ours_info)

    if not args.skip_lhotse:
        import lhotse  # noqa: F401  (import cost kept out of the timing)

        lhotse_out = work / "lhotse"
        lhotse_times, lhotse_info = timed("lhotse", lambda: run_lhotse(root, lhotse_out, args.jobs), args.repeat, lhotse_out)
        results["lhotse"] = (min(lhotse_times), lhotse_info)

    # ---- correctness of ours against the floor
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    n_flac = floor_info["files"]
    floor_hours = floor_info["seconds_audio"] / 3600
    segments = pq.read_table(ours_out / "segments.parquet", columns=["duration"])
    ours_hours = pc.sum(segments.column("duration")).as_py() / 3600
    assert n_flac == args.files, f"floor found {n_flac} .flac files, expected {args.files}"
    assert ours_info["segments"] == n_flac, f"ours wrote {ours_info['segments']} segments for {n_flac} flac files"
    assert abs(ours_hours - floor_hours) <= 0.001 * floor_hours, f"ours {ours_hours:.4f} h vs floor {floor_hours:.4f} h"
    if "lhotse" in results:
        assert results["lhotse"][1]["recordings"] == n_flac, f"lhotse: {results['lhotse'][1]} for {n_flac} files"

    # ---- table
    floor_s = results["floor"][0]
    print()
    print(f"### prepare librispeech: {n_flac} FLAC files, {floor_hours:.2f} h, jobs={args.jobs}, best of {args.repeat}")
    print()
    print("| tool | seconds | files/s | × floor time |")
    print("|---|---:|---:|---:|")
    labels = {
        "floor": "floor: os.walk + soundfile.info",
        "ours": "ours: prepare_corpus",
        "lhotse": "Lhotse: prepare_librispeech",
    }
    for name, (seconds, _info) in results.items():
        print(f"| {labels[name]} | {seconds:.2f} | {n_flac / seconds:,.0f} | {seconds / floor_s:.2f} |")
    print()
    print(f"correctness: ours wrote {ours_info['segments']} segments for {n_flac} flac files "
          f"({ours_info['rejects']} rejects); {ours_hours:.4f} h vs floor {floor_hours:.4f} h "
          f"(diff {abs(ours_hours - floor_hours) / floor_hours * 100:.5f}%)")
    if "lhotse" in results:
        print(f"ours is {results['lhotse'][0] / results['ours'][0]:.1f}× faster than Lhotse")
    if args.breakdown:
        print()
        print("where ours spends its time (one extra instrumented run; the phases nest inside the recipe):")
        print()
        print("| phase | seconds |")
        print("|---|---:|")
        for label, seconds in breakdown_ours(root, work / "ours-breakdown", args.jobs):
            print(f"| {label} | {seconds:.2f} |")
    one, five, _ = os.getloadavg()
    print(f"\nload average at end: {one:.2f} (1 min), {five:.2f} (5 min)")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

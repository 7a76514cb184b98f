"""The trainer's data wait on CPU: the share of step time spent waiting for the next batch.

    .venv/bin/python benchmarks/bench_train.py [--steps 60] [--skip 10] [--workers 0 2] [--max-frames 2400]
                                              [--features compute precomputed] [--grad-accum 2]

Data: the load benchmark's shards (benchmarks/data/load-bench-20k/: 20,000 FLAC utterances
of 1-6 s, 19.4 h, and the same with fbank-lfr features), built by bench_load.py's setup if
missing (cached; untimed). Model: the tiny MooER (pipelines/train/tiny.yaml's shapes, bf16
under DeepSpeed ZeRO-2 on the CPU). The real trainer runs (mooer_model.train.train, one
process, gloo), for each number of loader workers and each feature mode, ``--steps``
optimizer steps; the first ``--skip`` steps (worker start-up, shuffle buffers filling)
are left out of the figures, which are read from its metrics.jsonl (logged every step).

What it shows: on a GPU the step is the model's and the loader's workers run on idle host
cores, so the wait is what the loader cannot hide (DESIGN.md bar: <= 2% of step time on a
GPU; benchmarks/bench_train_gpu.py measures that). Here the tiny model's step and the
workers share two cores, so the wait is the loader's CPU cost made visible, not hidden.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH))

from mooer_model.testing import write_tiny_assets  # noqa: E402
from mooer_model.train import train  # noqa: E402
from mooer_model.train_config import load_run_config  # noqa: E402

TINY = BENCH.parent / "pipelines" / "train" / "tiny.yaml"


def shard_dirs(files: int) -> tuple[Path, Path, Path]:
    """(flac shards, fbank-lfr shards, am.mvn) of the load benchmark, built if missing."""
    from bench_load import setup  # noqa: E402 - the load benchmark's cached data set

    s = setup(files, seed=0, jobs=2, shard_count=1000)  # bench_load.py's defaults, so its cache is reused
    return Path(s.shards), Path(s.feature_shards), Path(s.cmvn)


def run_once(shards: Path, cmvn: Path, tokenizer: Path, out: Path, workers: int, features: str, args) -> dict:
    overrides = [f"model.llm.tokenizer={tokenizer}", f"model.cmvn_file={cmvn}", f"train.output_dir={out}",
                 f"train.max_steps={args.steps}", "train.log_every=1", "train.save_every=0", "train.progress_bar=false",
                 "train.tensorboard=false", f"train.grad_accum={args.grad_accum}", f"data.num_workers={workers}",
                 f"data.features={features}", f"data.max_frames={args.max_frames}", "data.persistent_workers=false",
                 "optim.lr=1.0e-3"]
    started = time.perf_counter()
    train(load_run_config(TINY, overrides, shards=shards))
    wall = time.perf_counter() - started
    steps = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in steps if "lr" in r and r["step"] > args.skip]
    step_s = sum(r["step_time_s"] for r in steps)
    wait_s = sum(r["data_wait"] * r["step_time_s"] for r in steps)
    audio = sum(r["audio_s_per_s"] * r["step_time_s"] for r in steps)
    tokens = sum(r["tokens_per_s"] * r["step_time_s"] for r in steps)
    return {"workers": workers, "features": features, "steps": len(steps), "step_time_s": step_s / len(steps),
            "data_wait": wait_s / step_s, "audio_s_per_s": audio / step_s, "tokens_per_s": tokens / step_s,
            "wall_s": wall}


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=20000, help="the load benchmark's data set size")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--skip", type=int, default=10, help="first steps left out (start-up)")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--features", nargs="+", default=["compute", "precomputed"])
    parser.add_argument("--max-frames", type=int, default=2400)
    parser.add_argument("--grad-accum", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    args = parser.parse_args(argv)

    flac, feats, cmvn = shard_dirs(args.files)
    print(f"load average at start: {os.getloadavg()[0]:.2f}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-train-") as scratch:
        tokenizer = write_tiny_assets(Path(scratch) / "assets").tokenizer_dir
        for features in args.features:
            for workers in args.workers:
                shards = feats if features == "precomputed" else flac
                out = Path(scratch) / f"run-{features}-{workers}"
                rows.append(run_once(shards, cmvn, tokenizer, out, workers, features, args))
                print(json.dumps(rows[-1]), flush=True)
    print(f"load average at end: {os.getloadavg()[0]:.2f}")
    print()
    print("| features | loader workers | step time | data wait (share of step) | audio-s/s | LLM tokens/s |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['features']} | {r['workers']} | {1000 * r['step_time_s']:.0f} ms | {100 * r['data_wait']:.1f}% | "
              f"{r['audio_s_per_s']:,.0f} | {r['tokens_per_s']:,.0f} |")
    if args.out is not None:
        args.out.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    return rows


if __name__ == "__main__":
    main()

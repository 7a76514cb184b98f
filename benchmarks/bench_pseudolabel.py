"""Benchmark the pseudo-labelling runner against a provider's rate limit.

    .venv/bin/python benchmarks/bench_pseudolabel.py [--items 600] [--rate 20] [--latency 0.2] [--provider openai]

The emulator runs in its own process (`mooer-data emulate`) with the provider's rate
limit R enforced server side (requests beyond it get the provider's 429) and 200 ms added
to every answer. The runner labels N short in-house recordings through the real adapter
with `--rate R`. Reported side by side: the provider's allowed rate (the peer: the most
any client can get), our achieved items/s and its share of R, 429s received, and the
runner's CPU per item (this process only; the emulator's CPU is in its own process).
Bars: >= 95% of R, <= 1 ms runner CPU per item.
"""

from __future__ import annotations

import argparse
import os
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
DATA = REPO / "benchmarks" / "data" / "pseudolabel"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_corpus(items: int) -> Path:
    root = DATA / f"inhouse-{items}"
    marker = root / ".complete"
    if marker.is_file():
        return root
    rng = np.random.default_rng(0)
    for index in range(items):
        path = root / f"batch{index // 100:02d}" / f"call_{index:05d}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        seconds = 1.0 + (index % 5) * 0.5
        sf.write(path, (rng.standard_normal(int(seconds * 16000)) * 200).astype(np.int16), 16000)
    marker.write_text("ok")
    return root


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=600)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--provider", default="openai")
    args = parser.parse_args()

    from mooer_data.labeling import RetryPolicy
    from mooer_data.prepare import PrepareConfig, prepare_corpus
    from mooer_data.providers.emulator import client_environment
    from mooer_data.pseudolabel import PseudolabelConfig, pseudolabel

    corpus = make_corpus(args.items)
    manifest = DATA / f"manifest-{args.items}"
    prepare_corpus("inhouse", corpus, manifest, PrepareConfig(jobs=2, show_progress=False), log=lambda _: None)
    out = DATA / "out"
    if out.exists():
        import shutil

        shutil.rmtree(out)

    port = free_port()
    emulator = subprocess.Popen(
        [str(REPO / ".venv/bin/mooer-data"), "emulate", "--port", str(port), "--latency", str(args.latency), "--rate", str(args.rate)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        banner = emulator.stdout.readline()
        if "EMULATOR" not in banner:
            raise RuntimeError(f"the emulator did not start: {banner}")
        os.environ.update(client_environment(f"http://127.0.0.1:{port}"))
        # enough requests in flight to cover the latency at rate R, with headroom
        concurrency = max(4, int(args.rate * (args.latency + 0.1) * 2))
        config = PseudolabelConfig(
            provider=args.provider, rate=args.rate, concurrency=concurrency, language="en", timeout=10,
            policy=RetryPolicy(base_delay=0.05, max_delay=1.0), show_progress=False,
        )
        cpu_before = resource.getrusage(resource.RUSAGE_SELF)
        started = time.perf_counter()
        result = pseudolabel(manifest, out, config, log=lambda _: None)
        wall = time.perf_counter() - started
        cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    finally:
        emulator.terminate()
        emulator.wait()

    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    achieved = result.labelled / wall

    # The runner's own machinery (scheduling, retries, ledger, outputs) without any HTTP:
    # the same items through an in-process provider that answers at once.
    from mooer_data.providers import registry

    registry._EXTRA[("asr", "fake")] = registry.ProviderSpec("asr", "fake", "mooer_data.testing.fakes:FakeAsr")
    import shutil

    shutil.rmtree(out, ignore_errors=True)
    fake_config = PseudolabelConfig(provider="fake", concurrency=concurrency, language="en", show_progress=False)
    before = resource.getrusage(resource.RUSAGE_SELF)
    fake_result = pseudolabel(manifest, out, fake_config, log=lambda _: None)
    after = resource.getrusage(resource.RUSAGE_SELF)
    runner_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    print(f"### pseudolabel: {args.items} items via {args.provider} (emulated), rate limit R = {args.rate:g}/s, latency {args.latency * 1000:.0f} ms")
    print()
    print("| | items/s | share of R | runner CPU per item |")
    print("|---|---:|---:|---:|")
    print(f"| provider's allowed rate (the ceiling any client can reach) | {args.rate:.2f} | 100% | |")
    print(f"| ours: `mooer-data pseudolabel --rate {args.rate:g}/s --concurrency {concurrency}`, whole process | {achieved:.2f} | {achieved / args.rate:.1%} | {cpu / max(1, result.items) * 1000:.2f} ms |")
    print(f"| ours: the runner alone (same items, in-process provider, no HTTP) | | | {runner_cpu / max(1, fake_result.items) * 1000:.2f} ms |")
    print()
    print(f"labelled {result.labelled}/{result.items}, failed {result.failed}, wall {wall:.1f} s, CPU {cpu:.2f} s "
          f"(includes the ledger writes, parsing, segment and quality tables)")
    print(f"bars: throughput {'meets' if achieved >= 0.95 * args.rate else 'MISSES'} >= 95% of R; "
          f"runner CPU {'meets' if runner_cpu / max(1, fake_result.items) <= 0.001 else 'MISSES'} <= 1 ms per item "
          f"(whole process incl. httpx and the adapter: {'meets' if cpu / max(1, result.items) <= 0.001 else 'misses'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

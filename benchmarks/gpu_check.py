"""GPU checks, run where a CUDA device exists (CI has none; the device tool, when lent):

    .venv/bin/python benchmarks/gpu_check.py

* the frontend on CUDA under bf16 autocast and TF32 equals the CPU frontend (≤ 0.01),
* its speed on the GPU in audio-seconds per second for a batch of 16 × 4 s.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mooer_model import frontend as F  # noqa: E402
from mooer_model.testing_cmvn import write_am_mvn  # noqa: E402


def main() -> int:
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check here")
        return 2
    generator = torch.Generator().manual_seed(0)
    lengths = torch.tensor([64000, 48000, 16000, 8000])
    waves = torch.randn(4, 64000, generator=generator) * 0.1
    with tempfile.TemporaryDirectory() as tmp:
        mvn = Path(tmp) / "am.mvn"
        write_am_mvn(mvn, seed=1)
        cpu, cpu_lens = F.Frontend(str(mvn))(waves, lengths)
        torch.backends.cuda.matmul.allow_tf32 = True  # must not matter
        frontend = F.Frontend(str(mvn)).to("cuda")
        with torch.autocast("cuda", dtype=torch.bfloat16):
            gpu, gpu_lens = frontend(waves.cuda(), lengths.cuda())
        diff = (gpu.float().cpu() - cpu).abs()
        print(f"cuda vs cpu: max |diff| {diff.max():.2e}, mean {diff.mean():.2e}, lengths equal: {gpu_lens.tolist() == cpu_lens.tolist()}")
        batch = torch.randn(16, 64000, device="cuda") * 0.1
        batch_lengths = torch.full((16,), 64000, device="cuda")
        for _ in range(3):
            frontend(batch, batch_lengths)
        torch.cuda.synchronize()
        started = time.perf_counter()
        for _ in range(20):
            frontend(batch, batch_lengths)
        torch.cuda.synchronize()
        seconds = time.perf_counter() - started
        print(f"GPU frontend: {20 * 16 * 4 / seconds:,.0f} audio-s/s (batch 16 x 4 s)")
        return 0 if float(diff.max()) <= 0.01 and gpu_lens.tolist() == cpu_lens.tolist() else 1


if __name__ == "__main__":
    sys.exit(main())

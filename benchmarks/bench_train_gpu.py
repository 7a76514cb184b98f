"""Training throughput of the real MooER shapes: tokens/s, samples/s, memory and MFU.

    # one GPU (what to run on a GPU box; shards from `mooer-data shard`):
    python benchmarks/bench_train_gpu.py --shards manifests/mt5k [--steps 20] [--warmup 5] [--max-frames 2400]
        [--grad-accum 2] [--features compute|precomputed|waveform] [--workers 4] [--gradient-checkpointing]
        [--peak-tflops 989] [--out bench-train.json]
    # 8 GPUs (per-GPU numbers are reported by rank 0; tokens/s is the sum over ranks):
    torchrun --nproc_per_node 8 benchmarks/bench_train_gpu.py --shards manifests/mt5k
    # CPU smoke run of the same code with the tiny shapes (tests/test_trainer.py runs it):
    python benchmarks/bench_train_gpu.py --tiny --shards DIR --steps 3 --warmup 1

The model is built with random weights at the released shapes, so nothing is downloaded:
Paraformer-large's SAN-M encoder (50 blocks of 512, frozen), the 2-frame adapter
(1024 -> 2048 -> 3584) and Qwen2-7B-Instruct's architecture (28 layers of 3584, GQA 28/4
heads, MLP 18944, vocabulary 152,064) in bf16 with LoRA r=64 on all seven projections.
The tokenizer is the project's small test tokenizer (its ids fit the 152,064-row table;
only the text lengths differ a little from Qwen2's). It trains with the trainer's own
pieces (mooer_model.train: DeepSpeed ZeRO-2, bf16, the generated config, the same step
function and loader), on real shards, ``resampled`` so no rank runs dry.

Timing: ``--warmup`` steps are run untimed (CUDA kernels, allocator, loader start-up),
then ``--steps`` optimizer steps are timed one by one with a device synchronisation at
the end of each. Data wait is the time spent in ``next(loader)``; the rest is compute.

MFU counts *model* FLOPs of useful (non-padding) positions, PaLM-style, per step:
  LLM linear layers   (2 forward + 2 input-gradient) x N_base x tokens, + 2 more for
                      weight gradients when the base is trained; LoRA 6 x N_lora x tokens
  LLM attention       12 x layers x width x length^2 per row (forward + backward)
  encoder (frozen)    2 x N_encoder x frames + 4 x blocks x width x frames^2 per row (forward only)
  adapter             6 x N_adapter x frames / 2
Recomputation under gradient checkpointing is not counted (it is not model work). The
peak is --peak-tflops, else looked up from the device name (dense bf16: H100/H200 989,
A100 312, L40S 362, A10 125); MFU is left out on a CPU.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from mooer_model.config import AdapterConfig, EncoderConfig, LlmConfig, LoraSettings, ModelConfig  # noqa: E402
from mooer_model.testing import write_tiny_assets, tiny_model_config  # noqa: E402
from mooer_model.train import distributed, fetch_step, setup_data, setup_model_and_engine, train_step  # noqa: E402
from mooer_model.metrics import Window  # noqa: E402
from mooer_model.train_config import DataConfig, OptimConfig, RunConfig, TrainConfig  # noqa: E402

# Qwen2-7B-Instruct's config.json (architecture only).
QWEN2_7B = dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                num_key_value_heads=4, max_position_embeddings=32768, rope_theta=1000000.0, rms_norm_eps=1e-6,
                tie_word_embeddings=False)
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "H800": 989.0, "A100": 312.0, "A800": 312.0, "L40S": 362.0, "A10": 125.0}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shards", required=True, help="a shard directory (or data.list) to train on")
    parser.add_argument("--tiny", action="store_true", help="the tiny shapes on the CPU (a smoke run of this script)")
    parser.add_argument("--steps", type=int, default=20, help="timed optimizer steps")
    parser.add_argument("--warmup", type=int, default=5, help="untimed optimizer steps first")
    parser.add_argument("--grad-accum", type=int, default=2, help="micro-batches per step (MooER: 2)")
    parser.add_argument("--max-frames", type=int, default=2400, help="LFR frames per micro-batch, padding included")
    parser.add_argument("--features", default="compute", choices=("compute", "precomputed", "waveform"))
    parser.add_argument("--workers", type=int, default=None, help="loader workers per rank (default 4; 0 with --tiny)")
    parser.add_argument("--gradient-checkpointing", action="store_true", help="recompute the LLM's blocks in backward")
    parser.add_argument("--device", default=None, help="auto (default) or cpu; --tiny implies cpu")
    parser.add_argument("--peak-tflops", type=float, default=None, help="the device's dense bf16 peak, for MFU")
    parser.add_argument("--out", type=Path, default=None, help="write the report as JSON here")
    return parser.parse_args(argv)


def build_run(args: argparse.Namespace, assets_dir: Path) -> RunConfig:
    assets = write_tiny_assets(assets_dir)  # the test tokenizer and a seeded am.mvn
    if args.tiny:
        model = tiny_model_config(assets, **{"llm.dtype": "bfloat16", "llm.gradient_checkpointing": args.gradient_checkpointing})
    else:
        model = ModelConfig(encoder=EncoderConfig(), adapter=AdapterConfig(),
                            llm=LlmConfig(tiny=dict(QWEN2_7B), tokenizer=str(assets.tokenizer_dir), dtype="bfloat16",
                                          gradient_checkpointing=args.gradient_checkpointing),
                            lora=LoraSettings(), cmvn_file=str(assets.cmvn_file))
    workers = args.workers if args.workers is not None else (0 if args.tiny else 4)
    # --tiny: small buffers, so the smoke run does not read hundreds of samples before its first batch.
    data = DataConfig(shards=str(args.shards), features=args.features, max_frames=args.max_frames, resampled=True,
                      num_workers=workers, pin_memory=not args.tiny, persistent_workers=workers > 0,
                      shuffle_buffer=10 if args.tiny else 1000, bins_estimate=20 if args.tiny else 500)
    device = "cpu" if args.tiny else (args.device or "auto")
    train = TrainConfig(max_steps=args.warmup + args.steps, grad_accum=args.grad_accum, device=device,
                        tensorboard=False, progress_bar=False, save_every=0, eval_every=0)
    return RunConfig(model=model, data=data, train=train, optim=OptimConfig())


def parameter_counts(model) -> dict[str, int]:
    def count(module, trainable_only=False):
        return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)

    lora = sum(p.numel() for n, p in model.llm.named_parameters() if "lora_" in n)
    embeddings = model.llm.get_input_embeddings().weight.numel()
    return {"encoder": count(model.encoder), "adapter": count(model.encoder_projector), "llm": count(model.llm) - lora,
            "llm_embeddings": embeddings, "lora": lora, "trainable": count(model, trainable_only=True)}


def model_flops(batch: dict, model, params: dict[str, int]) -> float:
    """Model FLOPs of one micro-batch (see the module docstring)."""
    llm_cfg = model.llm.config
    enc_cfg = model.config.encoder
    base_trained = any(p.requires_grad for n, p in model.llm.named_parameters() if "lora_" not in n)
    rows = batch["attention_mask"].sum(dim=1).double()  # useful positions per row
    frames = batch["audio_lengths"].double()
    n_base = params["llm"] - params["llm_embeddings"]  # the lookup is not a matmul; the LM head is
    llm = (6.0 if base_trained else 4.0) * n_base * rows.sum() + 6.0 * params["lora"] * rows.sum()
    llm += 12.0 * llm_cfg.num_hidden_layers * llm_cfg.hidden_size * (rows ** 2).sum()
    encoder = 2.0 * params["encoder"] * frames.sum() + 4.0 * enc_cfg.num_blocks * enc_cfg.output_size * (frames ** 2).sum()
    adapter = 6.0 * params["adapter"] * (frames / 2).sum()
    return float(llm + encoder + adapter)


def peak_tflops(args: argparse.Namespace, device: torch.device) -> float | None:
    if args.peak_tflops:
        return args.peak_tflops
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((value for key, value in PEAK_BF16_TFLOPS.items() if key in name), None)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "musa":
        torch.musa.synchronize(device)


def main(argv=None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="bench-train-") as scratch:
        run = build_run(args, Path(scratch) / "assets")
        with distributed(run.train.device) as dist:
            # Build the weights on the device itself: a 7B random init on the host is minutes.
            with torch.device(dist.device):
                model, engine = setup_model_and_engine(run, dist)
            loader, _ = setup_data(run, model.tokenizer, dist)
            params = parameter_counts(model)
            if dist.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(dist.device)
            batches = iter(loader)
            engine.train()
            timings = []
            for step in range(args.warmup + args.steps):
                started = time.perf_counter()
                micro_batches, wait_s = fetch_step(batches, run.train.grad_accum)
                window = Window()
                train_step(engine, micro_batches, dist.device, window)
                window.settle()  # reads the losses back: the step's work is done
                synchronize(dist.device)
                if step >= args.warmup:
                    timings.append({**window.sums, "wait_s": wait_s, "step_s": time.perf_counter() - started,
                                    "flops": sum(model_flops(b, model, params) for b in micro_batches)})
            report = summarise(args, dist, params, timings)
    text = json.dumps(report, indent=2)
    if dist.rank == 0:
        print(text)
        if args.out is not None:
            args.out.write_text(text + "\n", encoding="utf-8")
    return report


def summarise(args, dist, params: dict[str, int], timings: list[dict]) -> dict:
    total = {key: sum(t[key] for t in timings) for key in ("wait_s", "step_s", "positions", "samples", "audio_s", "flops")}
    world = dist.world_size
    step_s = total["step_s"] / len(timings)
    report = {
        "device": dist.device.type if dist.device.type == "cpu" else torch.cuda.get_device_name(dist.device),
        "ranks": world, "shapes": "tiny" if args.tiny else "Paraformer-large + Qwen2-7B, LoRA r=64",
        "steps": len(timings), "grad_accum": args.grad_accum, "max_frames": args.max_frames, "features": args.features,
        "gradient_checkpointing": args.gradient_checkpointing,
        "step_time_s": step_s,
        # Per-rank sums scaled by the ranks: every rank runs the same number of steps.
        "tokens_per_s": world * total["positions"] / total["step_s"],
        "samples_per_s": world * total["samples"] / total["step_s"],
        "audio_s_per_s": world * total["audio_s"] / total["step_s"],
        "data_wait": total["wait_s"] / total["step_s"],
        "model_tflops_per_step": total["flops"] / len(timings) / 1e12,
        "params": params,
    }
    achieved = total["flops"] / total["step_s"] / 1e12  # per rank
    peak = peak_tflops(args, dist.device)
    report["achieved_tflops_per_device"] = achieved
    if peak:
        report["peak_tflops"] = peak
        report["mfu"] = achieved / peak
    if dist.device.type == "cuda":
        report["max_memory_allocated_gib"] = torch.cuda.max_memory_allocated(dist.device) / 2**30
        report["max_memory_reserved_gib"] = torch.cuda.max_memory_reserved(dist.device) / 2**30
    report["host_max_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return report


if __name__ == "__main__":
    main()

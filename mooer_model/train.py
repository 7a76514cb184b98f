"""The trainer. ``train(run)`` reads top to bottom, like nanoGPT's train.py and wenet's main():

    distributed setup → device → seed → model → DeepSpeed engine → loaders → resume
    → loop (fetch a step's micro-batches, forward, backward, step; log, evaluate, save)
    → final save.

DeepSpeed does what MooER's loop relied on it for (reference/mooer-model.md §2): ZeRO-2
partitioning of the optimizer state and gradients, bf16, the Adam + WarmupDecayLR
schedule, and gradient accumulation (``engine.backward`` / ``engine.step`` know where the
accumulation boundary is). The rest is here, with MooER's risks fixed: a step is fetched
whole before it runs, and the ranks agree by one small all-reduce that all of them still
have a step's worth of batches, so a rank whose shards run out first ends the epoch for
everyone instead of hanging them in a collective; validation on held-out shards; losses
reported as the global mean; and checkpoints that resume exactly (checkpoint.py).

Runs as one process (it then sets up a one-rank process group itself), or under
``torchrun`` / the ``deepspeed`` launcher, which set RANK, WORLD_SIZE and LOCAL_RANK.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import random
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import yaml
from tqdm import tqdm

from mooer_model import checkpoint as ckpt
from mooer_model.data import ShardLoader, make_loader
from mooer_model.device import distributed_backend, resolve_device
from mooer_model.errors import CheckpointError
from mooer_model.metrics import MetricsLog, Window
from mooer_model.train_config import RunConfig, check_paths, resolve_input_paths, run_config_to_dict, to_deepspeed_dict

log = logging.getLogger(__name__)


@dataclass
class Dist:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device


@dataclass
class TrainResult:
    step: int  # optimizer steps done (the resumed ones included)
    epoch: int  # the epoch the loader was in at the end
    output_dir: Path
    checkpoint: Path | None  # the last checkpoint written
    last_log: dict | None  # the last training record (global loss, throughput, data wait)
    last_eval: dict | None  # the last validation record
    data_wait: float  # share of step time spent waiting for the next batch, whole run, all ranks
    trainables_digest: str  # sha256 of the trainable tensors (equal on every rank: they stay in sync)


# --------------------------------------------------------------------------------------
# Setup
# --------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


_LAUNCH_ENV = ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK")


@contextlib.contextmanager
def distributed(device_name: str) -> Iterator[Dist]:
    """Join (or, alone, create) the process group on the device's backend (nccl / mccl / gloo).

    A lone process gets a one-rank group on loopback. A group created here is destroyed on
    exit and the environment put back, so a second run in the same process (a notebook, a
    test session) starts clean and later code does not see a stale one-rank world.
    """
    env = os.environ
    saved = {name: env.get(name) for name in _LAUNCH_ENV}
    if "RANK" not in env or "WORLD_SIZE" not in env:
        env.setdefault("MASTER_ADDR", "127.0.0.1")
        env.setdefault("MASTER_PORT", str(_free_port()))
        env.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
    rank, world_size, local_rank = int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name)
    if device.type != "cpu" and device.index is None:
        device = torch.device(device.type, local_rank)  # one device per local rank
    if device.type == "cpu":
        env.setdefault("DS_ACCELERATOR", "cpu")  # also on a GPU box asked to train on its CPU
    import deepspeed

    if device.type in ("cuda", "musa"):
        getattr(torch, device.type).set_device(device)
    else:
        # DeepSpeed JIT-compiles a shared-memory all-reduce on CPU (25 s on a fresh machine)
        # that only its inference path uses; training all-reduces go through gloo anyway.
        import deepspeed.ops

        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    created = not torch.distributed.is_initialized()
    if created:
        deepspeed.init_distributed(dist_backend=distributed_backend(device), auto_mpi_discovery=False)
    try:
        yield Dist(rank, world_size, local_rank, device)
    finally:
        if created:
            import deepspeed.comm

            deepspeed.comm.destroy_process_group()  # also drops DeepSpeed's cached groups
        for name, value in saved.items():
            if value is None:
                env.pop(name, None)
            else:
                env[name] = value


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def setup_model_and_engine(run: RunConfig, dist: Dist):
    """The model on the device, wrapped by DeepSpeed with the generated config."""
    import deepspeed

    from mooer_model.model import build_model

    # The same seed on every rank: the randomly initialised trainables (adapter, LoRA) must
    # start identical, since ZeRO-2 keeps a full copy of the parameters on each rank.
    seed_everything(run.train.seed)
    model = build_model(run.model, dist.device)
    # From here each rank draws its own dropout masks.
    seed_everything(run.train.seed + dist.rank)
    trainables = [p for p in model.parameters() if p.requires_grad]
    if not trainables:
        raise ValueError("expected trainable parameters (adapter, LoRA or unfrozen parts), found none: "
                         "everything is frozen in model config")
    ds_config = to_deepspeed_dict(run, dist.world_size, dist.device.type)
    rotary = {name: buffer.detach().clone() for name, buffer in model.named_buffers()
              if name.endswith("inv_freq") and buffer.dtype == torch.float32}
    engine, _, _, _ = deepspeed.initialize(model=model, model_parameters=trainables, config=ds_config)
    # DeepSpeed's bf16 casts the whole module, buffers included. RoPE's inverse frequencies
    # are computed constants the pretrained LLM used in float32; transformers upcasts them in
    # forward, but by then they are rounded to 8 bits: at position 1,000 some rotation angles
    # are off by up to ~0.2 rad. Put the float32 tables back.
    for name, table in rotary.items():
        owner, _, attribute = name.rpartition(".")
        engine.module.get_submodule(owner)._buffers[attribute] = table
    return model, engine


def setup_data(run: RunConfig, tokenizer, dist: Dist) -> tuple[ShardLoader, ShardLoader | None]:
    """The training loader of this rank and, if configured, its validation loader."""
    cmvn, template = run.model.cmvn_file, run.model.prompt_template
    train_loader = make_loader(run.data.loader_config(cmvn, template), tokenizer, dist.rank, dist.world_size)
    valid_loader = None
    if run.data.has_validation and run.train.eval_every > 0:
        # Evaluation needs no data on every rank (see evaluate): a one-shard dev split on 8 GPUs is fine.
        valid_loader = make_loader(run.data.loader_config(cmvn, template, valid=True), tokenizer, dist.rank,
                                   dist.world_size, allow_idle_ranks=True)
    return train_loader, valid_loader


# --------------------------------------------------------------------------------------
# Small collectives and helpers
# --------------------------------------------------------------------------------------
def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """Sum over ranks (gloo reduces CPU tensors; nccl / mccl want them on the device)."""
    backend = torch.distributed.get_backend()
    if backend == "nccl":
        device = torch.device("cuda", torch.cuda.current_device())
    elif backend == "mccl":
        device = torch.device("musa", torch.musa.current_device())
    else:
        device = torch.device("cpu")
    tensor = values.to(device, copy=True)
    torch.distributed.all_reduce(tensor)
    return tensor.cpu()


def all_ranks_have(flag: bool) -> bool:
    """True when every rank has ``flag`` (an all-reduce of one number)."""
    return bool(all_reduce_sum(torch.tensor([0.0 if flag else 1.0], dtype=torch.float64))[0] == 0)


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def trainables_digest(model: torch.nn.Module) -> str:
    """sha256 over the trainable tensors' names and raw bytes (ranks in sync have equal digests)."""
    digest = hashlib.sha256()
    for name, parameter in sorted(model.named_parameters()):
        if parameter.requires_grad:
            digest.update(name.encode())
            digest.update(parameter.detach().cpu().contiguous().view(torch.uint8).numpy().data)
    return digest.hexdigest()


def train_step(engine, micro_batches: list[dict], device: torch.device, window: Window) -> int:
    """One optimizer step over ``grad_accum`` micro-batches; returns DeepSpeed's step count."""
    for batch in micro_batches:
        output = engine(to_device(batch, device))
        engine.backward(output.loss)  # DeepSpeed scales by 1/grad_accum; ZeRO reduces the gradients
        engine.step()  # the optimizer and LR step happen at the accumulation boundary only
        window.add_micro_batch(batch, output.loss, output.correct)
    return engine.global_steps


def fetch_step(batches: Iterator[dict], grad_accum: int) -> tuple[list[dict], float]:
    """Up to ``grad_accum`` batches (fewer when the epoch ends) and the seconds spent waiting for them."""
    started = time.perf_counter()
    step: list[dict] = []
    for _ in range(grad_accum):
        batch = next(batches, None)
        if batch is None:
            break
        step.append(batch)
    return step, time.perf_counter() - started


# --------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------
@torch.no_grad()
def evaluate(engine, loader: ShardLoader, max_batches: int | None, dist: Dist, zero_stage: int) -> dict:
    """Mean loss and token accuracy over the held-out batches of all ranks (the same batches every time)."""
    engine.eval()
    loader.set_epoch(0)
    sums = torch.zeros(3, dtype=torch.float64)  # loss x tokens, correct, tokens
    batches = iter(loader)
    done = 0
    try:
        while max_batches is None or done < max_batches:
            batch = next(batches, None)
            # ZeRO-3 gathers parameters inside forward (a collective): ranks must go in lockstep.
            # Below it, each rank evaluates all its own batches and only the sums are reduced.
            if zero_stage == 3 and not all_ranks_have(batch is not None):
                break
            if batch is None:
                break
            out = engine(to_device(batch, dist.device))
            tokens = float(out.tokens)
            sums += torch.tensor([float(out.loss) * tokens, float(out.correct), tokens], dtype=torch.float64)
            done += 1
    finally:
        if hasattr(batches, "close"):
            batches.close()  # frees the workers now, not at garbage collection
    engine.train()
    total = all_reduce_sum(sums)
    tokens = max(float(total[2]), 1.0)
    return {"loss": float(total[0]) / tokens, "acc": float(total[1]) / tokens, "tokens": int(total[2])}


# --------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------
def train(run: RunConfig) -> TrainResult:
    """Train ``run`` to ``train.max_steps`` (or ``max_epochs``); see the module docstring."""
    cfg = run.train
    check_paths(run)
    run = resolve_input_paths(run)  # config.yaml and checkpoints are read from other directories
    with distributed(cfg.device) as dist:
        return _train(run, dist)


def _train(run: RunConfig, dist: Dist) -> TrainResult:
    """The run inside the process group: model, engine, loaders, resume, loop, final save."""
    cfg = run.train
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    config_dict = run_config_to_dict(run)
    config_yaml = yaml.safe_dump(config_dict, sort_keys=False, allow_unicode=True)
    if dist.rank == 0:
        (out / "config.yaml").write_text(config_yaml, encoding="utf-8")

    model, engine = setup_model_and_engine(run, dist)
    train_loader, valid_loader = setup_data(run, model.tokenizer, dist)

    # Resume: an explicit checkpoint, else the newest complete one in output_dir.
    resume_from = ckpt.resolve_checkpoint(cfg.resume) if cfg.resume else ckpt.latest_checkpoint(out)
    pending_rng = None
    step = 0
    if resume_from is not None:
        state = ckpt.load_for_resume(engine, resume_from, dist.rank, dist.world_size)
        try:
            train_loader.load_state(state.loader)
        except ValueError as error:  # shards, split or batching changed since the save
            raise CheckpointError(f"{resume_from}: cannot continue its data position: {error}") from None
        # The RNG goes back only after the next iter(train_loader): a DataLoader draws a base
        # seed from torch's RNG in iter() (for its workers), a draw the saved state already includes.
        pending_rng, step = state.rng, state.step
        if dist.rank == 0:
            log.info("resumed from %s at step %d", resume_from, step)
    metrics = MetricsLog(out, dist.rank, cfg.tensorboard, resume_step=step if resume_from is not None else None)
    metrics.write({"step": step, "event": "start", "trainables_digest": trainables_digest(engine.module)})

    def save(at_step: int) -> Path:
        trainer_state = {"step": at_step, "epoch": train_loader.epoch or 0, "world_size": dist.world_size,
                         "rank": dist.rank, "loader": train_loader.loader_state(), "rng": ckpt.capture_rng(dist.device.type)}
        path = ckpt.save_checkpoint(engine, out, at_step, dist.rank, trainer_state, config_dict, config_yaml, cfg.keep_checkpoints)
        if dist.rank == 0:
            log.info("step %d: checkpoint %s", at_step, path)
        return path

    bar = tqdm(total=cfg.max_steps, initial=step, unit="step", dynamic_ncols=True,
               disable=dist.rank != 0 or not cfg.progress_bar, desc="train")
    window, totals = Window(), Window()  # the current log window; the whole run
    last_log = last_eval = None
    last_saved: Path | None = resume_from
    epochs_run = 0  # in this process (the loader's epoch counts from the run's start)
    engine.train()
    try:
        while step < cfg.max_steps:
            batches = iter(train_loader)  # the next epoch, or the resumed one from its saved position
            if pending_rng is not None:
                ckpt.restore_rng(pending_rng)
                pending_rng = None
            steps_in_epoch = 0
            while step < cfg.max_steps:
                started = time.perf_counter()
                micro_batches, wait_s = fetch_step(batches, cfg.grad_accum)
                # Every rank must run the same number of steps (each ends in collectives). A
                # partial step at the end of an epoch is dropped on all ranks alike.
                if not all_ranks_have(len(micro_batches) == cfg.grad_accum):
                    break
                steps_in_epoch += 1
                step = train_step(engine, micro_batches, dist.device, window)
                window.add_step(wait_s, time.perf_counter() - started)
                bar.update(1)

                if step % cfg.log_every == 0 or step == cfg.max_steps:
                    record = {"step": step, "epoch": train_loader.epoch, "lr": engine.get_lr()[0], "time": time.time(),
                              **window.summary(all_reduce_sum, dist.world_size)}
                    if not cfg.log_batch_keys:
                        record.pop("keys_digest")
                    metrics.write(record)
                    last_log = record
                    totals.absorb(window)
                    window = Window()
                    bar.set_postfix(loss=f"{record['loss']:.4f}", tok_s=f"{record['tokens_per_s']:.0f}",
                                    wait=f"{100 * record['data_wait']:.1f}%")
                if valid_loader is not None and step % cfg.eval_every == 0:
                    last_eval = {"step": step, "split": "valid", **evaluate(engine, valid_loader, cfg.eval_batches, dist, cfg.zero_stage)}
                    metrics.write(last_eval, prefix="valid")
                    if dist.rank == 0:
                        log.info("step %d: valid loss %.4f acc %.4f", step, last_eval["loss"], last_eval["acc"])
                if cfg.save_every and step % cfg.save_every == 0:
                    last_saved = save(step)
            else:
                break  # max_steps reached inside the epoch
            if hasattr(batches, "close"):
                batches.close()  # ranks that still held batches let their workers go now
            epochs_run += 1
            continued_epoch = resume_from is not None and epochs_run == 1  # may have had nothing left
            if steps_in_epoch == 0 and not continued_epoch:
                raise RuntimeError(f"epoch {train_loader.epoch} gave no full step on some rank: expected at least "
                                   f"{cfg.grad_accum} batch(es) per rank (train.grad_accum), found fewer; "
                                   "use more data, a smaller data.max_frames or a smaller grad_accum")
            if cfg.max_epochs is not None and train_loader.epoch + 1 >= cfg.max_epochs:
                break
            if run.data.resampled:
                raise RuntimeError("the resampled loader ran dry, which it never should (all shards empty?)")
        bar.close()

        if last_saved is None or ckpt.checkpoint_step(last_saved) != step:
            last_saved = save(step)
        totals.absorb(window)
        digest = trainables_digest(engine.module)
        metrics.write({"step": step, "event": "end", "trainables_digest": digest})
    finally:
        bar.close()
        metrics.close()
    wait_s, step_s = all_reduce_sum(torch.tensor([totals.sums["wait_s"], totals.sums["step_s"]], dtype=torch.float64)).tolist()
    data_wait = wait_s / step_s if step_s else 0.0
    return TrainResult(step, train_loader.epoch or 0, out, last_saved, last_log, last_eval, data_wait, digest)

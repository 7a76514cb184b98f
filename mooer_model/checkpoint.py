"""Training checkpoints: save, find, resume exactly, read the trainables back.

A checkpoint is ``<output_dir>/checkpoints/step-<N>/``:

* DeepSpeed's files (``engine.save_checkpoint``): the trainable parameters only
  (``exclude_frozen_parameters=True``: the frozen encoder and LLM are rebuilt from their own
  checkpoints, so a LoRA run saves megabytes, not the 7B model), the ZeRO-partitioned
  optimizer state of every rank, the LR scheduler and DeepSpeed's step counters;
* ``trainer_state.rank<R>.json``, one per rank: step, epoch, that rank's loader position
  (:meth:`ShardLoader.loader_state`) and its RNG states. Per rank because DeepSpeed writes
  ``client_state`` into rank 0's model file only, and every rank has its own data position
  and RNG streams. JSON, so reading it back executes nothing;
* ``config.yaml``: the resolved run config (also inside ``client_state``).

``checkpoints/latest`` names the newest *complete* checkpoint. It is replaced atomically
(write a temporary file, ``os.replace``) after every rank has finished writing, so a
``kill -9`` during a save leaves it pointing at the previous checkpoint, which is whole.
Checkpoints older than the newest ``keep`` are deleted after the marker moves.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import random
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mooer_model.errors import CheckpointError
from mooer_model.weights import load_weights_only

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
LATEST = "latest"
CONFIG_FILE = "config.yaml"
MODEL_STATES = "mp_rank_00_model_states.pt"  # DeepSpeed's module file (model-parallel rank 0)
STATE_VERSION = 1
_TAG = re.compile(r"^step-(\d+)$")


def tag_for(step: int) -> str:
    return f"step-{step}"


def checkpoint_root(output_dir: str | Path) -> Path:
    return Path(output_dir) / CHECKPOINTS


def trainer_state_file(checkpoint: Path, rank: int) -> Path:
    return checkpoint / f"trainer_state.rank{rank}.json"


# --------------------------------------------------------------------------------------
# RNG states as plain data
# --------------------------------------------------------------------------------------
def _tensor_to_text(state: torch.Tensor) -> str:
    return base64.b64encode(state.cpu().numpy().tobytes()).decode("ascii")


def _text_to_tensor(text: str) -> torch.Tensor:
    return torch.from_numpy(np.frombuffer(base64.b64decode(text), dtype=np.uint8).copy())


def _accelerator_module(device_type: str):
    module = getattr(torch, device_type, None)
    return module if module is not None and hasattr(module, "get_rng_state_all") and module.is_available() else None


def capture_rng(device_type: str = "cpu") -> dict:
    """Python, NumPy (legacy global), torch CPU and, on cuda/musa, every device generator."""
    py_version, py_state, py_gauss = random.getstate()
    numpy_state = np.random.get_state(legacy=False)
    state = {
        "python": [py_version, list(py_state), py_gauss],
        "numpy": {**numpy_state, "state": {"key": numpy_state["state"]["key"].tolist(), "pos": int(numpy_state["state"]["pos"])}},
        "torch": _tensor_to_text(torch.get_rng_state()),
        "device_type": device_type,
        "device": [],
    }
    module = _accelerator_module(device_type) if device_type != "cpu" else None
    if module is not None:
        state["device"] = [_tensor_to_text(s) for s in module.get_rng_state_all()]
    return state


def restore_rng(state: dict) -> None:
    """Put back what :func:`capture_rng` took."""
    py_version, py_state, py_gauss = state["python"]
    random.setstate((py_version, tuple(py_state), py_gauss))
    numpy_state = dict(state["numpy"])
    numpy_state["state"] = {"key": np.asarray(numpy_state["state"]["key"], dtype=np.uint32), "pos": numpy_state["state"]["pos"]}
    np.random.set_state(numpy_state)
    torch.set_rng_state(_text_to_tensor(state["torch"]))
    if state.get("device"):
        module = _accelerator_module(state["device_type"])
        if module is None:
            log.warning("the checkpoint holds %s RNG states, and this run has no %s device: not restored",
                        state["device_type"], state["device_type"])
        else:
            module.set_rng_state_all([_text_to_tensor(s) for s in state["device"]])


# --------------------------------------------------------------------------------------
# Finding checkpoints
# --------------------------------------------------------------------------------------
def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest complete checkpoint under ``output_dir`` (by its ``latest`` marker), or None."""
    root = checkpoint_root(output_dir)
    marker = root / LATEST
    if not marker.is_file():
        return None
    tag = marker.read_text(encoding="utf-8").strip()
    path = root / tag
    if not _TAG.match(tag) or not path.is_dir():
        raise CheckpointError(f"{marker}: expected the name of a checkpoint directory (step-N) beside it, found {tag!r}")
    return path


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint directory from a path to one, to a ``checkpoints/`` dir or to a run's output dir."""
    path = Path(path)
    if (path / MODEL_STATES).is_file():
        return path
    for output_dir in (path, path.parent):
        if (output_dir / CHECKPOINTS / LATEST).is_file():
            found = latest_checkpoint(output_dir)
            if found is not None:
                return found
    raise CheckpointError(f"expected a checkpoint directory (with {MODEL_STATES}) or a run directory with "
                          f"{CHECKPOINTS}/{LATEST}, found neither at {path}")


def checkpoint_step(path: Path) -> int:
    match = _TAG.match(path.name)
    if match is None:
        raise CheckpointError(f"expected a checkpoint directory named step-N, found {path.name!r}")
    return int(match.group(1))


# --------------------------------------------------------------------------------------
# Save
# --------------------------------------------------------------------------------------
def _barrier() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


def _write_atomic(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


def save_checkpoint(engine, output_dir: str | Path, step: int, rank: int, trainer_state: dict, config: dict,
                    config_yaml: str, keep: int) -> Path:
    """Write checkpoint ``step-<step>`` on every rank (a collective: all ranks call it).

    ``trainer_state`` is this rank's plain-data state (step, epoch, loader, rng).
    """
    root = checkpoint_root(output_dir)
    tag = tag_for(step)
    path = root / tag
    if rank == 0:
        root.mkdir(parents=True, exist_ok=True)
        if path.exists():  # a save of this step was killed half way; the marker never named it
            shutil.rmtree(path)
    _barrier()
    # client_state goes to rank 0's model file: the run-wide facts, for tools reading one file.
    engine.save_checkpoint(str(root), tag=tag, client_state={"step": step, "config": config},
                           save_latest=False, exclude_frozen_parameters=True)
    trainer_state = {"version": STATE_VERSION, **trainer_state}
    _write_atomic(trainer_state_file(path, rank), json.dumps(trainer_state))
    if rank == 0:
        _write_atomic(path / CONFIG_FILE, config_yaml)
    _barrier()  # every rank's files are on disk before the marker names the checkpoint
    if rank == 0:
        _write_atomic(root / LATEST, tag + "\n")
        prune_checkpoints(root, keep)
    _barrier()
    return path


def prune_checkpoints(root: Path, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` checkpoints up to the one ``latest`` names; returns the deleted."""
    marker = root / LATEST
    if not marker.is_file():
        return []
    newest = checkpoint_step(root / marker.read_text(encoding="utf-8").strip())
    steps = sorted((int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _TAG.match(p.name)))
    complete = [p for s, p in steps if s <= newest]
    deleted = complete[:-keep] if keep > 0 else []
    for path in deleted:
        shutil.rmtree(path, ignore_errors=True)
    return deleted


# --------------------------------------------------------------------------------------
# Resume
# --------------------------------------------------------------------------------------
@dataclass
class ResumeState:
    """What a rank continues from: ``step``, ``epoch`` and the plain data to restore."""

    path: Path
    step: int
    epoch: int
    loader: dict
    rng: dict


def _load_trainables_into(module: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load a trainables-only state dict, refusing one that misses a trainable or names an unknown key."""
    own = dict(module.state_dict())
    trainable = {name for name, p in module.named_parameters() if p.requires_grad}
    missing = sorted(trainable - set(state))
    unknown = sorted(set(state) - set(own))
    if missing or unknown:
        raise CheckpointError(f"{source}: expected the model's {len(trainable)} trainable tensors, found "
                              f"{len(missing)} missing (e.g. {missing[:3]}) and {len(unknown)} unknown (e.g. {unknown[:3]}); "
                              "was it saved from a different model config?")
    for name, tensor in state.items():
        if tuple(own[name].shape) != tuple(tensor.shape):
            raise CheckpointError(f"{source}: {name}: expected shape {tuple(own[name].shape)}, found {tuple(tensor.shape)}")
    module.load_state_dict(state, strict=False)


def load_for_resume(engine, checkpoint: Path, rank: int, world_size: int) -> ResumeState:
    """Restore model trainables, optimizer, scheduler and step counters into ``engine``; return
    this rank's trainer state (loader position and RNG, restored by the caller at the right time)."""
    state_file = trainer_state_file(checkpoint, rank)
    if not state_file.is_file():
        found = sorted(p.name for p in checkpoint.glob("trainer_state.rank*.json"))
        raise CheckpointError(f"{checkpoint}: expected {state_file.name} for rank {rank} of {world_size}, found {found}; "
                              "resume with the number of ranks the checkpoint was saved with")
    state = json.loads(state_file.read_text(encoding="utf-8"))
    if state.get("version") != STATE_VERSION or state.get("world_size") != world_size:
        raise CheckpointError(f"{state_file}: expected version {STATE_VERSION} saved by {world_size} rank(s), "
                              f"found version {state.get('version')!r} by {state.get('world_size')!r}")
    loaded, _ = engine.load_checkpoint(
        str(checkpoint.parent), tag=checkpoint.name, load_optimizer_states=True, load_lr_scheduler_states=True,
        custom_load_fn=lambda src, dst: _load_trainables_into(dst, src, str(checkpoint)))
    if loaded is None:
        raise CheckpointError(f"{checkpoint}: DeepSpeed could not load it (see its log above)")
    if engine.global_steps != state["step"]:
        raise CheckpointError(f"{checkpoint}: DeepSpeed restored step {engine.global_steps}, the trainer state says {state['step']}")
    return ResumeState(checkpoint, int(state["step"]), int(state["epoch"]), state["loader"], state["rng"])


# --------------------------------------------------------------------------------------
# Reading trainables without DeepSpeed (export, decode)
# --------------------------------------------------------------------------------------
def read_trainables(checkpoint: str | Path) -> dict[str, torch.Tensor]:
    """The trainable tensors of a checkpoint (``module`` of DeepSpeed's model file), loaded
    with ``weights_only=True``. They are the bf16/fp32 *model* copies; under ZeRO the fp32
    master copies live in the optimizer files and equal them up to the model dtype."""
    path = Path(checkpoint) / MODEL_STATES
    if not path.is_file():
        raise CheckpointError(f"expected DeepSpeed's {MODEL_STATES} in {checkpoint}, found nothing")
    content: Any = load_weights_only(path, "DeepSpeed's model states (tensors and plain data)")
    module = content.get("module") if isinstance(content, dict) else None
    if not isinstance(module, dict) or not module:
        raise CheckpointError(f"{path}: expected a 'module' state dict, found {type(module).__name__}")
    return module


def load_trainables(model: torch.nn.Module, checkpoint: str | Path) -> None:
    """Load a training checkpoint's trainables into a freshly built model (same config)."""
    _load_trainables_into(model, read_trainables(checkpoint), str(checkpoint))


def model_from_checkpoint(checkpoint: str | Path, device: str | torch.device = "cpu"):
    """Rebuild a training checkpoint's model, in eval mode: its saved config, frozen parts made
    exactly as the run made them (same seed, same construction), then the trained tensors loaded."""
    import yaml

    from mooer_model.model import build_model
    from mooer_model.train_config import run_config_from_dict

    path = resolve_checkpoint(checkpoint)
    config_file = path / CONFIG_FILE
    if not config_file.is_file():
        raise CheckpointError(f"expected the run config {CONFIG_FILE} in {path}, found nothing")
    run = run_config_from_dict(yaml.safe_load(config_file.read_text(encoding="utf-8")))
    # Frozen weights without a checkpoint of their own (a tiny random LLM or encoder) are not
    # saved with the trainables; the trainer built them from this seed, on the CPU, as here.
    state = torch.random.get_rng_state()
    torch.manual_seed(run.train.seed)
    try:
        model = build_model(run.model, "cpu")
    finally:
        torch.random.set_rng_state(state)
    load_trainables(model, path)
    return model.to(device).eval()  # ready to decode; call .train() to continue training it


def export_checkpoint(checkpoint: str | Path, out_dir: str | Path, task_dir: str = "asr") -> Path:
    """Write a training checkpoint in MooER's released layout (``paraformer_encoder/``,
    ``<task_dir>/adapter_project.pt``, ``<task_dir>/lora_weights/``)."""
    from mooer_model.release import export_release

    return export_release(model_from_checkpoint(checkpoint), out_dir, task_dir)

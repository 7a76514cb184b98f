"""MooER's released checkpoint layout: export to it, load from it (reference §1.7, appendix).

::

    <release>/paraformer_encoder/am.mvn                  Kaldi-nnet CMVN of the frontend
    <release>/paraformer_encoder/paraformer-encoder.pth  SANMEncoder state dict, funasr names
    <release>/<task>/adapter_project.pt                  trainable non-LLM tensors: encoder_projector.*
    <release>/<task>/lora_weights/                       a peft directory (adapter_config.json +
                                                         adapter_model.safetensors or .bin)

``<task>`` is ``asr``, ``ast`` or ``asr_ast_mtl`` in MooER's releases; MooER's training
writes the same files as ``<name>_merged/{adapter_project.pt, new_llm/}``, also accepted.
Qwen2-7B-Instruct is not part of a release: it is a separate local directory.

Our exports add ``mooer-model.json`` (the resolved :class:`ModelConfig`, so our tools can
rebuild the model from the export alone) and, when the LLM was built from a tiny config
rather than read from a directory, ``llm/`` (its weights and tokenizer: random weights
cannot be rebuilt otherwise).

Every file is read without running code (``weights_only=True`` or safetensors), every
expected key is checked, and anything missing raises :class:`CheckpointError` naming it.
All files are read and checked before the model is touched, so a failed load leaves the
model as it was.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import torch
from torch import Tensor

from mooer_model.config import (AdapterConfig, ConfigError, EncoderConfig, LlmConfig, LoraSettings, ModelConfig,
                                from_dict, to_dict, with_overrides)
from mooer_model.encoder import check_encoder_state, encoder_shape_from_state, read_encoder_state
from mooer_model.errors import CheckpointError
from mooer_model.weights import load_weights_only
from mooer_model.frontend import CmvnFormatError, load_cmvn

log = logging.getLogger(__name__)

__all__ = ["CheckpointError", "export_release", "load_release", "model_config_for_release", "locate_release",
           "ReleaseLayout", "ENCODER_DIR", "ENCODER_FILE", "CMVN_FILE", "ADAPTER_FILE", "LORA_DIRS", "CONFIG_FILE", "LLM_DIR"]

ENCODER_DIR = "paraformer_encoder"
ENCODER_FILE = "paraformer-encoder.pth"
CMVN_FILE = "am.mvn"
ADAPTER_FILE = "adapter_project.pt"
LORA_DIRS = ("lora_weights", "new_llm")  # release name, training-output name
LORA_CONFIG = "adapter_config.json"
LORA_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
CONFIG_FILE = "mooer-model.json"
LLM_DIR = "llm"
_PROJECTOR = "encoder_projector."
_ENCODER = "encoder."


# --------------------------------------------------------------------------------------
# Layout
# --------------------------------------------------------------------------------------
@dataclass
class ReleaseLayout:
    """Where the parts of one task of a release are (``None``: not found)."""

    task_dir: Path
    encoder_dir: Path | None
    config_file: Path | None
    searched_encoder_dirs: tuple[Path, ...]

    @property
    def lora_dir(self) -> Path | None:
        for name in LORA_DIRS:
            if (self.task_dir / name).is_dir():
                return self.task_dir / name
        return None


def locate_release(release_dir, task_dir: str = "asr") -> ReleaseLayout:
    """Find ``<task>`` and ``paraformer_encoder/`` from a release root or a task directory
    (then ``paraformer_encoder/`` is looked for inside it, next to it, or one level above)."""
    path = Path(release_dir)
    if not path.is_dir():
        raise CheckpointError(f"expected a MooER release directory, found no directory at {path}")
    if (path / task_dir).is_dir():
        task, roots = path / task_dir, [path]
    elif (path / ADAPTER_FILE).is_file():
        task, roots = path, [path, path.parent, path.parent.parent]
    else:
        entries = sorted(p.name for p in path.iterdir())[:20]
        raise CheckpointError(f"expected a release root holding {task_dir}/ or a task directory holding {ADAPTER_FILE}, "
                              f"found {path} with {entries}")
    searched = tuple(root / ENCODER_DIR for root in roots)
    encoder_dir = next((candidate for candidate in searched if candidate.is_dir()), None)
    config_file = next((root / CONFIG_FILE for root in roots if (root / CONFIG_FILE).is_file()), None)
    return ReleaseLayout(task, encoder_dir, config_file, searched)


def _need_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise CheckpointError(f"expected {what} at {path}, found no such file")
    return path


def _load_tensors(path: Path, mmap: bool = False) -> dict[str, Tensor]:
    """A ``torch.save``'d dict of tensors, unpickled with ``weights_only=True``: a file that
    would run code (or hold anything but tensors and containers) is refused."""
    state = load_weights_only(path, "a plain dict of tensors", mmap=mmap)
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: expected a dict of tensors, found {type(state).__name__}")
    return dict(state)


def _check_shapes(where: str, expected: Mapping[str, Tensor], found: Mapping[str, Tensor]) -> None:
    missing = [key for key in expected if key not in found]
    if missing:
        shown = ", ".join(missing[:5]) + (f" ... ({len(missing)} in all)" if len(missing) > 5 else "")
        raise CheckpointError(f"{where}: expected key(s) {shown}, found them missing")
    for key, tensor in expected.items():
        if tuple(found[key].shape) != tuple(tensor.shape):
            raise CheckpointError(f"{where}: {key}: expected shape {tuple(tensor.shape)}, found {tuple(found[key].shape)}")


# --------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------
def check_task_dir(task_dir: str) -> None:
    """Refuse a task directory name that is not one plain name: ``a/b``, ``..`` or ``.``
    would write the export (and replace a directory) outside the release."""
    if not isinstance(task_dir, str) or not task_dir or "/" in task_dir or "\\" in task_dir or task_dir in (".", ".."):
        raise CheckpointError(f"task_dir: expected a plain directory name such as asr, ast or asr_ast_mtl, "
                              f"found {task_dir!r}")


def export_release(model, out_dir, task_dir: str = "asr") -> Path:
    """Write ``model`` in MooER's release layout under ``out_dir`` (see the module doc).

    Everything is written into a temporary sibling directory first and renamed into place,
    so a crash leaves no half-written export. Exporting another task into an existing
    release replaces that task's directory, ``paraformer_encoder/`` and ``mooer-model.json``
    (each renamed whole) and keeps the other tasks.
    """
    from peft import PeftModel

    out_dir = Path(out_dir)
    check_task_dir(task_dir)
    config: ModelConfig = model.config
    if config.cmvn_file is None:
        raise CheckpointError("expected a model with a cmvn_file (am.mvn) to export, found cmvn_file=None")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        encoder_dir = staging / ENCODER_DIR
        encoder_dir.mkdir()
        shutil.copyfile(config.cmvn_file, encoder_dir / CMVN_FILE)
        torch.save(_fp32(model.encoder.state_dict()), encoder_dir / ENCODER_FILE)

        task = staging / task_dir
        task.mkdir()
        torch.save(_fp32(_adapter_project(model)), task / ADAPTER_FILE)
        if isinstance(model.llm, PeftModel):
            model.llm.save_pretrained(task / LORA_DIRS[0], save_embedding_layers=False)
        llm_section = dict(to_dict(config.llm))
        if config.llm.tiny is not None:
            _save_base_llm(model, staging / LLM_DIR)
            llm_section.update(path=LLM_DIR, tiny=None, tokenizer=None)
        elif config.llm.path is not None and Path(config.llm.path).exists():
            # an export is read from elsewhere: a path relative to the training directory would dangle
            llm_section.update(path=str(Path(config.llm.path).resolve()),
                               tokenizer=None if config.llm.tokenizer is None else str(Path(config.llm.tokenizer).resolve()))
        if config.llm.tiny is None and any(p.requires_grad for n, p in model.llm.named_parameters() if "lora_" not in n):
            log.warning("the LLM's base weights were trainable; a release keeps only LoRA and the adapter, "
                        "so base-weight changes are not exported")
        saved = to_dict(config)
        saved.update(llm=llm_section, cmvn_file=None, init_from=None, init_task=task_dir)
        saved["encoder"]["checkpoint"] = None
        (staging / CONFIG_FILE).write_text(json.dumps(saved, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        _install(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir


def _fp32(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    # clone: torch.save writes whole storages, so a view would drag its base along.
    return {key: value.detach().to("cpu", torch.float32 if value.is_floating_point() else value.dtype).clone()
            for key, value in state.items()}


def _adapter_project(model) -> dict[str, Tensor]:
    """The adapter, plus any trainable encoder weights (what MooER's DeepSpeed consolidation
    collects as "trainable, not in the LLM")."""
    state = {_PROJECTOR + key: value for key, value in model.encoder_projector.state_dict().items()}
    for name, parameter in model.encoder.named_parameters():
        if parameter.requires_grad:
            state[_ENCODER + name] = parameter
    return state


def _save_base_llm(model, directory: Path) -> None:
    from peft import PeftModel

    llm = model.llm
    if isinstance(llm, PeftModel):
        llm = copy.deepcopy(llm).unload()  # the base without LoRA layers (not merged)
    llm.save_pretrained(directory)
    model.tokenizer.save_pretrained(directory)


def _install(staging: Path, out_dir: Path) -> None:
    if not out_dir.exists():
        os.rename(staging, out_dir)
        return
    if not out_dir.is_dir():
        raise CheckpointError(f"expected {out_dir} to be a directory (or absent), found a file")
    for entry in sorted(staging.iterdir()):
        target = out_dir / entry.name
        if target.exists():
            target.rename(staging / f".replaced-{entry.name}")
        entry.rename(target)


# --------------------------------------------------------------------------------------
# Load
# --------------------------------------------------------------------------------------
def load_release(model, release_dir, task_dir: str = "asr") -> None:
    """Load a release's encoder, adapter and LoRA into ``model`` (built with matching sizes,
    e.g. from :func:`model_config_for_release`). The release's ``am.mvn`` must equal the
    model's CMVN: features normalised differently would silently degrade the model."""
    layout = locate_release(release_dir, task_dir)
    if layout.encoder_dir is None:
        raise CheckpointError(f"expected {ENCODER_DIR}/ at one of {[str(p) for p in layout.searched_encoder_dirs]}, found none")
    _check_cmvn(model, _need_file(layout.encoder_dir / CMVN_FILE, "the encoder's CMVN"))
    encoder_path = _need_file(layout.encoder_dir / ENCODER_FILE, "the encoder weights")
    encoder_state = check_encoder_state(model.encoder, read_encoder_state(encoder_path), str(encoder_path))

    adapter_path = _need_file(layout.task_dir / ADAPTER_FILE, "the adapter weights")
    project = _load_tensors(adapter_path)
    projector_expected = {_PROJECTOR + k: v for k, v in model.encoder_projector.state_dict().items()}
    _check_shapes(str(adapter_path), projector_expected, project)
    # Encoder weights trained along with the adapter (an unfrozen run) override the base ones.
    trained_encoder = {k[len(_ENCODER):]: v for k, v in project.items() if k.startswith(_ENCODER)}
    if trained_encoder:
        _check_shapes(str(adapter_path), {k: encoder_state[k] for k in trained_encoder if k in encoder_state}, trained_encoder)
        unknown = [k for k in trained_encoder if k not in encoder_state]
        if unknown:
            raise CheckpointError(f"{adapter_path}: expected encoder keys the model has, found encoder.{unknown[0]}")
        encoder_state = {**encoder_state, **trained_encoder}
    ignored = [k for k in project if k not in projector_expected and not k.startswith(_ENCODER)]
    if ignored:
        log.warning("%s: %d key(s) that are neither adapter nor encoder were ignored, e.g. %s", adapter_path, len(ignored), ignored[0])

    lora_state = _read_lora(model, layout)

    model.encoder.load_state_dict(encoder_state, strict=True)
    model.encoder_projector.load_state_dict({k[len(_PROJECTOR):]: project[k] for k in projector_expected}, strict=True)
    if lora_state is not None:
        from peft import set_peft_model_state_dict

        result = set_peft_model_state_dict(model.llm, lora_state)
        if result.unexpected_keys:
            raise CheckpointError(f"peft did not place LoRA key(s) {result.unexpected_keys[:3]} into the model")


def _check_cmvn(model, path: Path) -> None:
    try:
        shift, scale = load_cmvn(path)
    except CmvnFormatError as error:
        raise CheckpointError(f"{path}: expected a Kaldi-nnet am.mvn, found: {error}") from None
    frontend = model.frontend
    if frontend.cmvn_shift is None:
        raise CheckpointError(f"the release carries {path} but the model has no CMVN: build it with cmvn_file={str(path)!r}")
    same = (torch.allclose(shift, frontend.cmvn_shift.cpu(), rtol=1e-6, atol=1e-7)
            and torch.allclose(scale, frontend.cmvn_scale.cpu(), rtol=1e-6, atol=1e-7))
    if not same:
        raise CheckpointError(f"expected the release's CMVN ({path}) to equal the model's ({frontend.cmvn_file}), "
                              f"found different values: build the model with cmvn_file={str(path)!r}")


def _read_lora(model, layout: ReleaseLayout) -> dict[str, Tensor] | None:
    from peft import PeftModel

    from mooer_model.llm import lora_state_dict

    lora_dir = layout.lora_dir
    has_lora = isinstance(model.llm, PeftModel)
    if not has_lora:
        if lora_dir is not None:
            raise CheckpointError(f"{lora_dir}: the release has LoRA weights, expected a model with LoRA "
                                  "(lora.enabled), found one without")
        return None
    if lora_dir is None:
        raise CheckpointError(f"expected LoRA weights at {layout.task_dir / LORA_DIRS[0]}, found no such directory")
    settings = json.loads(_need_file(lora_dir / LORA_CONFIG, "the LoRA config").read_text(encoding="utf-8"))
    ours = model.llm.peft_config["default"]
    for key, mine in (("r", ours.r), ("lora_alpha", ours.lora_alpha),
                      ("target_modules", _module_set(ours.target_modules))):
        theirs = settings.get(key)
        if key == "target_modules":
            theirs = _module_set(theirs)
        if theirs != mine:
            raise CheckpointError(f"{lora_dir / LORA_CONFIG}: {key}: expected the model's {mine!r}, found {theirs!r} "
                                  "(build the model from model_config_for_release, or set lora.* to match)")
    weights = next((lora_dir / name for name in LORA_WEIGHTS if (lora_dir / name).is_file()), None)
    if weights is None:
        raise CheckpointError(f"expected {' or '.join(LORA_WEIGHTS)} in {lora_dir}, found neither")
    if weights.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(weights))
    else:
        state = _load_tensors(weights)
    expected = lora_state_dict(model.llm)
    _check_shapes(str(weights), expected, state)
    unexpected = [key for key in state if key not in expected]
    if unexpected:
        raise CheckpointError(f"{weights}: expected only the model's LoRA keys, found {len(unexpected)} more, e.g. {unexpected[0]}")
    return state


def _module_set(modules) -> frozenset | str | None:
    if modules is None or isinstance(modules, str):
        return modules
    return frozenset(modules)


# --------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------
def model_config_for_release(release_dir, llm_dir: str | None, task_dir: str = "asr", **overrides) -> ModelConfig:
    """A :class:`ModelConfig` that :func:`~mooer_model.model.build_model` turns into the
    release's model (``init_from`` points at it).

    For our exports, the saved ``mooer-model.json`` (``llm_dir``, when given, replaces its
    LLM). For a MooER release: encoder and adapter sizes read off the checkpoint tensors
    (Paraformer-large's for the real files; the head count, which no shape records, stays
    4), CMVN from ``paraformer_encoder/am.mvn``, LoRA from ``adapter_config.json``, and the
    Qwen2 directory ``llm_dir`` in bfloat16. ``overrides``: dotted keys, e.g.
    ``**{"llm.dtype": "float32"}``.
    """
    layout = locate_release(release_dir, task_dir)
    if layout.encoder_dir is None:
        raise CheckpointError(f"expected {ENCODER_DIR}/ at one of {[str(p) for p in layout.searched_encoder_dirs]}, found none")
    cmvn = _need_file(layout.encoder_dir / CMVN_FILE, "the encoder's CMVN")
    task_name = layout.task_dir.name if layout.task_dir != Path(release_dir) else task_dir
    if layout.config_file is not None:
        data = json.loads(layout.config_file.read_text(encoding="utf-8"))
        llm = data.get("llm") or {}
        if llm_dir:
            llm.update(path=str(llm_dir), tiny=None, tokenizer=None)
        else:
            base = layout.config_file.parent
            for key in ("path", "tokenizer"):
                if llm.get(key) and not Path(llm[key]).is_absolute():
                    llm[key] = str(base / llm[key])
        data.update(llm=llm, cmvn_file=str(cmvn), init_from=str(release_dir), init_task=task_name)
        try:
            config = from_dict(ModelConfig, data)
        except ConfigError as error:
            raise CheckpointError(f"{layout.config_file}: not a valid model config: {error}") from None
        return with_overrides(config, overrides)

    if not llm_dir:
        raise CheckpointError("a MooER release does not contain the LLM: expected llm_dir (a local Qwen2-7B-Instruct "
                              "directory), found none")
    encoder_path = _need_file(layout.encoder_dir / ENCODER_FILE, "the encoder weights")
    encoder_sizes = encoder_shape_from_state(read_encoder_state(encoder_path, mmap=True))
    adapter_path = _need_file(layout.task_dir / ADAPTER_FILE, "the adapter weights")
    first = _load_tensors(adapter_path, mmap=True).get(_PROJECTOR + "linear1.weight")
    if first is None or first.dim() != 2:
        raise CheckpointError(f"{adapter_path}: expected {_PROJECTOR}linear1.weight (a matrix), found it missing")
    hidden, stacked = first.shape
    if stacked % encoder_sizes["output_size"]:
        raise CheckpointError(f"{adapter_path}: expected linear1 input size a multiple of the encoder width "
                              f"{encoder_sizes['output_size']}, found {stacked}")
    lora_dir = layout.lora_dir
    if lora_dir is None:
        raise CheckpointError(f"expected LoRA weights at {layout.task_dir / LORA_DIRS[0]}, found no such directory")
    settings = json.loads(_need_file(lora_dir / LORA_CONFIG, "the LoRA config").read_text(encoding="utf-8"))
    try:
        lora = LoraSettings(r=int(settings["r"]), alpha=int(settings["lora_alpha"]),
                            dropout=float(settings.get("lora_dropout", 0.0)),
                            target_modules=list(settings["target_modules"]) if not isinstance(settings["target_modules"], str)
                            else settings["target_modules"])
    except KeyError as error:
        raise CheckpointError(f"{lora_dir / LORA_CONFIG}: expected r, lora_alpha and target_modules, found no {error}") from None
    config = ModelConfig(
        encoder=EncoderConfig(**encoder_sizes),
        adapter=AdapterConfig(downsample_rate=stacked // encoder_sizes["output_size"], hidden_size=int(hidden)),
        llm=LlmConfig(path=str(llm_dir), dtype="bfloat16"),
        lora=lora,
        cmvn_file=str(cmvn),
        init_from=str(release_dir),
        init_task=task_name,
    )
    return with_overrides(config, overrides)

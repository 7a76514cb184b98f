"""The speech encoder: funasr's ``SANMEncoder`` as Paraformer-large uses it (reference §1.1).

MooER vendors a copy of this class and loads ``paraformer-encoder.pth`` with
``strict=False``, which loads *nothing* when the key names do not match (e.g. a full
Paraformer ``model.pt`` whose keys start with ``encoder.``) and trains on a random encoder
without a word. Here the loader accepts that prefix, requires every key the encoder has,
checks shapes, and raises :class:`CheckpointError` naming what is missing.

The module is funasr's own class, so its state-dict names are funasr's (``encoders0.0.…``,
``encoders.N.…``, ``after_norm.…``) and checkpoints move between the two unchanged.
"""

from __future__ import annotations

import logging
import os
import types
from typing import Mapping

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from mooer_model.config import EncoderConfig
from mooer_model.errors import CheckpointError
from mooer_model.weights import load_weights_only

log = logging.getLogger(__name__)

__all__ = ["build_encoder", "run_encoder", "load_encoder_checkpoint", "load_encoder_state", "check_encoder_state",
           "read_encoder_state", "encoder_shape_from_state", "enable_block_checkpointing"]

_PREFIX = "encoder."


def build_encoder(cfg: EncoderConfig) -> nn.Module:
    """A ``SANMEncoder`` of ``cfg``'s sizes (float32), loaded from ``cfg.checkpoint`` when set.

    Frozen (``requires_grad`` off, ``eval()``) when ``cfg.freeze``. With
    ``cfg.gradient_checkpointing`` each block recomputes its activations in backward
    (only while training an unfrozen encoder: a frozen one stores none).
    """
    # funasr is imported here, not at module import: ``import funasr`` costs seconds.
    from funasr.models.sanm.encoder import SANMEncoder
    from funasr.models.transformer.embedding import SinusoidalPositionEncoder

    encoder = SANMEncoder(
        input_size=cfg.input_size,
        output_size=cfg.output_size,
        attention_heads=cfg.attention_heads,
        linear_units=cfg.linear_units,
        num_blocks=cfg.num_blocks,
        dropout_rate=cfg.dropout_rate,
        positional_dropout_rate=cfg.positional_dropout_rate,
        attention_dropout_rate=cfg.attention_dropout_rate,
        input_layer="pe",
        pos_enc_class=SinusoidalPositionEncoder,
        normalize_before=True,
        kernel_size=cfg.kernel_size,
        sanm_shfit=cfg.sanm_shfit,
        selfattention_layer_type="sanm",
    )
    if cfg.checkpoint is not None:
        load_encoder_checkpoint(encoder, cfg.checkpoint)
    if cfg.freeze:
        encoder.requires_grad_(False)
        encoder.eval()
    if cfg.gradient_checkpointing:
        enable_block_checkpointing(encoder)
    return encoder


def enable_block_checkpointing(encoder: nn.Module) -> None:
    """Wrap every SAN-M block's ``forward`` in ``torch.utils.checkpoint``.

    The wrapper replaces the bound method on each block instance instead of wrapping the
    module, so parameter names (and therefore checkpoints) stay funasr's.
    """
    for block in list(encoder.encoders0) + list(encoder.encoders):
        block.forward = types.MethodType(_checkpointed_block_forward, block)


def _checkpointed_block_forward(self, *args, **kwargs):
    # The class's own forward, looked up at call time (not captured), so a deep copy of the
    # encoder runs its own weights.
    plain = types.MethodType(type(self).forward, self)
    # Recomputing only pays off when gradients flow into the block's weights.
    if self.training and torch.is_grad_enabled() and any(p.requires_grad for p in self.parameters()):
        return checkpoint(plain, *args, use_reentrant=False, **kwargs)
    return plain(*args, **kwargs)


def read_encoder_state(path: str | os.PathLike, mmap: bool = False) -> dict[str, Tensor]:
    """The encoder's tensors from ``path`` (a plain state dict, weights_only, no code run),
    with a leading ``encoder.`` stripped (a full funasr Paraformer ``model.pt`` works; its
    decoder / predictor keys are dropped)."""
    state = load_weights_only(path, "an encoder checkpoint (a plain state dict of tensors)", mmap=mmap)
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{path}: expected a state dict (a mapping of names to tensors), found {type(state).__name__}")
    if any(key.startswith(_PREFIX) for key in state):
        others = [key for key in state if not key.startswith(_PREFIX)]
        if others:
            log.info("%s: using the %d 'encoder.' keys, ignoring %d others (e.g. %s)", path,
                     len(state) - len(others), len(others), others[0])
        state = {key[len(_PREFIX):]: value for key, value in state.items() if key.startswith(_PREFIX)}
    bad = [key for key, value in state.items() if not isinstance(value, Tensor)]
    if bad:
        raise CheckpointError(f"{path}: expected tensors, found {type(state[bad[0]]).__name__} under {bad[0]!r}")
    return dict(state)


def load_encoder_checkpoint(encoder: nn.Module, path: str | os.PathLike) -> None:
    """Load ``path`` into ``encoder``: every key of the encoder must be there with its shape."""
    load_encoder_state(encoder, read_encoder_state(path), str(path))


def check_encoder_state(encoder: nn.Module, state: Mapping[str, Tensor], where: str) -> dict[str, Tensor]:
    """The entries of ``state`` that ``encoder`` takes, after checking that every key is
    there with the right shape (:class:`CheckpointError` otherwise); extra keys are logged."""
    expected = encoder.state_dict()
    missing = [key for key in expected if key not in state]
    if missing:
        shown = ", ".join(missing[:5]) + (f" ... ({len(missing)} in all)" if len(missing) > 5 else "")
        raise CheckpointError(f"{where}: expected every SANMEncoder key, found {len(missing)} missing: {shown}")
    for key, tensor in expected.items():
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise CheckpointError(f"{where}: {key}: expected shape {tuple(tensor.shape)} (the configured encoder), "
                                  f"found {tuple(state[key].shape)}")
    unexpected = [key for key in state if key not in expected]
    if unexpected:
        log.warning("%s: %d key(s) the encoder does not have were ignored, e.g. %s", where, len(unexpected), unexpected[0])
    return {key: state[key] for key in expected}


def load_encoder_state(encoder: nn.Module, state: Mapping[str, Tensor], where: str) -> None:
    encoder.load_state_dict(check_encoder_state(encoder, state, where), strict=True)


def encoder_shape_from_state(state: Mapping[str, Tensor]) -> dict[str, int]:
    """EncoderConfig sizes read off a SANMEncoder state dict (all but the head count,
    which no tensor shape records)."""
    try:
        blocks = {int(key.split(".")[1]) for key in state if key.startswith("encoders.")}
        return {
            "input_size": int(state["encoders0.0.norm1.weight"].shape[0]),
            "output_size": int(state["after_norm.weight"].shape[0]),
            "linear_units": int(state["encoders0.0.feed_forward.w_1.weight"].shape[0]),
            "num_blocks": 1 + (max(blocks) + 1 if blocks else 0),
            "kernel_size": int(state["encoders0.0.self_attn.fsmn_block.weight"].shape[-1]),
        }
    except (KeyError, IndexError, ValueError) as error:
        raise CheckpointError(f"expected a SANMEncoder state dict, found one without {error}") from None


def run_encoder(encoder: nn.Module, feats: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
    """Encode ``feats [B, T, 560]`` with ``lengths [B]``: returns ``(out [B, T, D], lengths)``.

    The features are cast to the encoder's parameter dtype first: DeepSpeed bf16 casts the
    whole model, frozen encoder included, while features arrive float32.
    """
    weight = next(encoder.parameters())
    feats = feats.to(device=weight.device, dtype=weight.dtype)
    lengths = lengths.to(device=weight.device)
    out, out_lengths, _ = encoder(feats, lengths)
    return out, out_lengths

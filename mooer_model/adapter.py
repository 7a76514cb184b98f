"""MooER's adapter (``src/mooer/models/adapter.py`` ``LinearAdapter``, reference §1.2).

``k`` consecutive encoder frames (60 ms each) are concatenated into one vector, so one LLM
position carries 120 ms of audio at k=2, then Linear → ReLU → Linear maps it into the
LLM's embedding space. Trailing frames that do not fill a group of ``k`` are dropped, as
MooER does. The attribute names are MooER's, so state-dict keys read
``encoder_projector.linear1.weight`` … once the model holds it as ``encoder_projector``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["LinearAdapter"]


class LinearAdapter(nn.Module):
    def __init__(self, encoder_dim: int, llm_dim: int, downsample_rate: int = 2, hidden_size: int = 2048):
        super().__init__()
        for name, value in (("encoder_dim", encoder_dim), ("llm_dim", llm_dim),
                            ("downsample_rate", downsample_rate), ("hidden_size", hidden_size)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"LinearAdapter {name}: expected a positive integer, found {value!r}")
        self.encoder_dim = encoder_dim
        self.downsample_rate = downsample_rate
        self.linear1 = nn.Linear(encoder_dim * downsample_rate, hidden_size)
        self.relu = nn.ReLU()
        self.linear2 = nn.Linear(hidden_size, llm_dim)

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """``x [B, T, encoder_dim]``, ``lengths [B]`` → ``([B, T // k, llm_dim], lengths // k)``.

        Stacking is positional, so a padded row's valid frames still land in its first
        ``lengths // k`` outputs; the rest are padding for the caller to ignore.
        """
        if x.dim() != 3 or x.shape[-1] != self.encoder_dim:
            raise ValueError(f"expected encoder output [B, T, {self.encoder_dim}], found shape {tuple(x.shape)}")
        k = self.downsample_rate
        batch, frames, dim = x.shape
        kept = frames - frames % k
        x = x[:, :kept].reshape(batch, kept // k, dim * k)
        x = self.linear2(self.relu(self.linear1(x)))
        return x, torch.div(lengths, k, rounding_mode="floor")

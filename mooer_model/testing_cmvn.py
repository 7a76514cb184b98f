"""Write ``am.mvn`` files for tests: the Kaldi-nnet text layout FunASR's ``load_cmvn`` parses.

The layout is the one shipped with Paraformer / MooER checkpoints::

    <Nnet> 
    <Splice> 560 560
    [ 0 ]
    <AddShift> 560 560 
    <LearnRateCoef> 0 [ -8.311879 -8.600912 ... ]
    <Rescale> 560 560 
    <LearnRateCoef> 0 [ 0.155775 0.154484 ... ]
    </Nnet> 

(each vector on one line, which FunASR's line-based parser requires).  Values are written
with 9 significant digits, so they read back as exactly the same float32 numbers.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

DIM = 560


def random_cmvn(seed: int = 0, dim: int = DIM) -> tuple[np.ndarray, np.ndarray]:
    """Plausible seeded-random CMVN: shift ~ -(mean log-mel) in [-16, -8], scale in [0.1, 0.4]."""
    rng = np.random.default_rng(seed)
    shift = (-rng.uniform(8.0, 16.0, dim)).astype(np.float32)
    scale = rng.uniform(0.1, 0.4, dim).astype(np.float32)
    return shift, scale


def _fmt(vec: np.ndarray) -> str:
    return " ".join(f"{float(v):.9g}" for v in vec)


def am_mvn_text(shift, scale) -> str:
    """The am.mvn text for the given shift (``<AddShift>``) and scale (``<Rescale>``)."""
    shift = np.asarray(torch.as_tensor(shift, dtype=torch.float32).cpu(), dtype=np.float32).ravel()
    scale = np.asarray(torch.as_tensor(scale, dtype=torch.float32).cpu(), dtype=np.float32).ravel()
    if shift.shape != scale.shape:
        raise ValueError(f"shift and scale sizes differ: {shift.size} vs {scale.size}")
    d = shift.size
    return (
        "<Nnet> \n"
        f"<Splice> {d} {d}\n"
        "[ 0 ]\n"
        f"<AddShift> {d} {d} \n"
        f"<LearnRateCoef> 0 [ {_fmt(shift)} ]\n"
        f"<Rescale> {d} {d} \n"
        f"<LearnRateCoef> 0 [ {_fmt(scale)} ]\n"
        "</Nnet> \n"
    )


def write_am_mvn(path: str | os.PathLike, shift=None, scale=None, *, seed: int = 0,
                 dim: int = DIM) -> tuple[torch.Tensor, torch.Tensor]:
    """Write an ``am.mvn`` at ``path``; returns the float32 ``(shift, scale)`` written.

    ``shift`` / ``scale`` default to :func:`random_cmvn` ``(seed, dim)`` (each one that is
    not given).  Use ``shift=np.zeros(560), scale=np.ones(560)`` for an identity CMVN.
    """
    rnd_shift, rnd_scale = random_cmvn(seed, dim)
    shift = rnd_shift if shift is None else shift
    scale = rnd_scale if scale is None else scale
    text = am_mvn_text(shift, scale)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return (torch.as_tensor(np.asarray(shift, dtype=np.float32)).clone(),
            torch.as_tensor(np.asarray(scale, dtype=np.float32)).clone())

"""Reading untrusted weight files without running code, in one place.

Every ``.pt`` / ``.pth`` / ``.bin`` the toolkit reads (a MooER release, a funasr encoder, our
own checkpoints) goes through :func:`load_weights_only`: ``torch.load(weights_only=True)``
refuses any pickle that would construct something other than tensors and plain
containers, so a tampered file fails with a :class:`CheckpointError` instead of executing.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from mooer_model.errors import CheckpointError


def load_weights_only(path: str | os.PathLike, expected: str, mmap: bool = False) -> Any:
    """The unpickled content of ``path``; ``expected`` says what it should hold (for errors)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except FileNotFoundError:
        raise CheckpointError(f"expected {expected} at {path}, found no such file") from None
    except Exception as error:  # an unpickling refusal or a damaged file
        raise CheckpointError(f"{path}: expected {expected} (loaded with weights_only=True, no code run), "
                              f"found a file that cannot be loaded that way ({type(error).__name__}: {error})") from None

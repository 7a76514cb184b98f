"""Where the model runs: Moore Threads MUSA, NVIDIA CUDA or the CPU.

MooER picks MUSA first, then CUDA (``utils/utils.py get_device``); so does ``"auto"`` here.
``torch_musa`` is not on PyPI (Moore Threads ships the wheel with its driver stack), so it
is imported only when asked for and its absence is an ordinary, explained condition.
"""

from __future__ import annotations

import contextlib
import re

import torch

__all__ = ["resolve_device", "autocast", "distributed_backend", "musa_available"]

_DEVICE_NAME = re.compile(r"^(cpu|cuda|musa)(?::(\d+))?$")
_BACKENDS = {"cuda": "nccl", "musa": "mccl", "cpu": "gloo"}


def _import_torch_musa() -> bool:
    """``import torch_musa`` (it registers the ``musa`` device type with torch)."""
    try:
        import torch_musa  # noqa: F401
    except ImportError:
        return False
    return True


def musa_available() -> bool:
    """True when torch_musa imports and sees at least one MUSA device."""
    if not _import_torch_musa():
        return False
    musa = getattr(torch, "musa", None)
    return bool(musa is not None and musa.is_available() and musa.device_count() > 0)


def resolve_device(name: str = "auto") -> torch.device:
    """``"auto"`` (musa > cuda > cpu), ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"musa:0"`` ...

    Raises ``ValueError`` for an unknown name or a device this machine does not have.
    """
    if not isinstance(name, str):
        raise ValueError(f"expected a device name (auto, cpu, cuda[:N], musa[:N]), found {name!r}")
    text = name.strip().lower()
    if text == "auto":
        if musa_available():
            return torch.device("musa")
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("cpu")
    match = _DEVICE_NAME.match(text)
    if match is None:
        raise ValueError(f"expected a device name among auto, cpu, cuda[:N], musa[:N], found {name!r}")
    kind, index = match.group(1), match.group(2)
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"expected a CUDA device for {name!r}, found none (torch.cuda.is_available() is False)")
        count = torch.cuda.device_count()
    elif kind == "musa":
        if not _import_torch_musa():
            raise ValueError(f"expected torch_musa for {name!r}, found it not installed "
                             "(it is not on PyPI: install Moore Threads' torch_musa wheel for your MUSA driver)")
        if not musa_available():
            raise ValueError(f"expected a MUSA device for {name!r}, found none (torch.musa.is_available() is False)")
        count = torch.musa.device_count()
    else:
        return torch.device("cpu")
    if index is not None and int(index) >= count:
        raise ValueError(f"expected a {kind} index below {count} (devices present), found {name!r}")
    return torch.device(text)


def autocast(device: torch.device, dtype: torch.dtype | None):
    """Mixed precision on ``device`` (MooER runs its fp32 encoder + adapter under bf16
    autocast at inference); a no-op context for ``None`` or float32."""
    if dtype is None or dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


def distributed_backend(device: torch.device) -> str:
    """The torch.distributed backend for ``device``: nccl (cuda), mccl (musa), gloo (cpu)."""
    # A string is split by hand: torch.device("musa") fails unless torch_musa is imported.
    kind = device.partition(":")[0].strip().lower() if isinstance(device, str) else getattr(device, "type", None)
    if kind not in _BACKENDS:
        raise ValueError(f"expected a cpu, cuda or musa device, found {device!r}")
    return _BACKENDS[kind]

"""Voice activity detection for long recordings: where the speech is, in seconds.

Local engines decode one region at a time, so a long file becomes a list of short
speech regions (each at most ``max_region_s``), and each region's transcript becomes a
timestamped sentence. The detector is silero-vad from its PyPI package (the model ships
inside the wheel: nothing is downloaded); it is fed float32 16 kHz torch tensors, never
read through torchaudio (broken on the CPU torch build, see reference/stack.md).

:func:`fit_regions` is the pure part (merge close neighbours, split long regions), kept
separate so it is tested without the model.
"""

from __future__ import annotations

import math
import threading

import numpy as np

SAMPLE_RATE = 16000

_model = None
# The silero model keeps recurrent state between windows: one caller at a time.
_model_lock = threading.Lock()


def _silero_model():
    global _model
    if _model is None:
        from silero_vad import load_silero_vad

        _model = load_silero_vad()
    return _model


def fit_regions(
    regions: list[tuple[float, float]],
    *,
    min_gap_s: float,
    max_region_s: float,
    total_s: float | None = None,
) -> list[tuple[float, float]]:
    """Sorted, non-overlapping regions, each no longer than ``max_region_s``.

    Neighbours separated by less than ``min_gap_s`` are merged (a short pause is not a
    sentence break) unless the merged region would exceed ``max_region_s``; a region
    longer than ``max_region_s`` is cut into equal parts, each within the limit.
    Regions are clipped to ``[0, total_s]``; empty ones are dropped.
    """
    if max_region_s <= 0:
        raise ValueError(f"max_region_s must be positive, found {max_region_s}")
    cleaned = []
    for start, end in sorted(regions):
        start = max(0.0, float(start))
        end = float(end) if total_s is None else min(float(end), float(total_s))
        if end > start:
            cleaned.append((start, end))

    merged: list[tuple[float, float]] = []
    for start, end in cleaned:
        if merged:
            last_start, last_end = merged[-1]
            overlapping = start <= last_end
            close = start - last_end < min_gap_s
            if overlapping or (close and max(end, last_end) - last_start <= max_region_s):
                merged[-1] = (last_start, max(end, last_end))
                continue
        merged.append((start, end))

    fitted = []
    for start, end in merged:
        parts = max(1, math.ceil((end - start) / max_region_s - 1e-9))
        step = (end - start) / parts
        fitted.extend((start + i * step, end if i == parts - 1 else start + (i + 1) * step) for i in range(parts))
    return fitted


def speech_regions(
    samples: np.ndarray,
    min_silence_s: float = 0.5,
    max_region_s: float = 30.0,
    threshold: float = 0.5,
    speech_pad_s: float = 0.1,
) -> list[tuple[float, float]]:
    """(start_s, end_s) of the speech in mono float32 16 kHz ``samples``.

    A pause shorter than ``min_silence_s`` does not end a region; a region longer than
    ``max_region_s`` is split (silero cuts at its longest inner pause first; whatever
    is still too long, after padding, is cut evenly).
    """
    import torch
    from silero_vad import get_speech_timestamps

    samples = np.asarray(samples, dtype=np.float32)
    if samples.ndim != 1:
        raise ValueError(f"expected mono samples (1-D), found shape {samples.shape}")
    total_s = len(samples) / SAMPLE_RATE
    if not len(samples):
        return []
    with _model_lock:
        stamps = get_speech_timestamps(
            torch.from_numpy(samples),
            _silero_model(),
            threshold=threshold,
            sampling_rate=SAMPLE_RATE,
            min_silence_duration_ms=int(min_silence_s * 1000),
            max_speech_duration_s=max_region_s,
            speech_pad_ms=int(speech_pad_s * 1000),
        )
    regions = [(s["start"] / SAMPLE_RATE, s["end"] / SAMPLE_RATE) for s in stamps]
    return fit_regions(regions, min_gap_s=min_silence_s, max_region_s=max_region_s, total_s=total_s)

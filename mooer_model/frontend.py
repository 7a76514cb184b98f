"""MooER's acoustic frontend as batched torch operations.

The pipeline is the one MooER (``src/mooer/datasets/speech_processor.py``) and FunASR's
``WavFrontend`` run, one utterance at a time, on the CPU:

1. Kaldi fbank on ``waveform * 32768``: 16 kHz, 25 ms Hamming window, 10 ms shift,
   ``snip_edges=True``, dither 0, DC offset removed, pre-emphasis 0.97, 512-point FFT,
   power spectrum, 80 triangular mel bins (Kaldi mel scale ``1127 ln(1 + f/700)``,
   20 Hz .. Nyquist), natural log floored at float32 epsilon.
2. LFR (low frame rate) stacking, m=7, n=6: the first frame is repeated 3 times on the
   left, ``T_lfr = ceil(T / 6)``, the tail is padded by repeating the last frame.
3. CMVN from a Kaldi-nnet ``am.mvn``: ``(x + <AddShift>) * <Rescale>``, 560-dim.

Here every step works on a padded batch at once (``unfold`` framing, one ``rfft`` call per
chunk of frames, one mel projection), on whatever device the input lives on.  Results match
kaldi-native-fbank to ~3e-4 in log-mel (float32 rounding only; see tests/test_frontend.py).
:class:`Frontend` runs the three steps fused: the fbank writes its frames into a buffer with
the LFR edge frames around them, so LFR is a strided view of it (no gather) and CMVN reads
that view straight into the output; the values are exactly those of ``fbank`` ->
``apply_lfr`` -> ``apply_cmvn`` (tests/test_frontend_fused.py).

Where to run it
---------------
:class:`Frontend` is an ``nn.Module`` without parameters, so it can run either

* in the data workers, on the CPU (``Frontend(cmvn)(waves, lengths)`` on a collated batch,
  or :func:`frontend_numpy` per utterance), or
* inside the trainer, on the GPU: move it with ``.to(device)`` (the window, mel matrix and
  CMVN vectors are buffers) and feed it the padded waveform batch; the host's CPUs then only
  decode audio.  ``forward`` disables autocast and keeps the mel projection out of TF32 /
  reduced precision, so features do not depend on the trainer's precision settings.

Deliberate difference from FunASR: for an utterance shorter than one window (< 400 samples)
FunASR shrinks the window to the utterance length and emits one frame; Kaldi / MooER (and
this module) emit zero frames.
"""

from __future__ import annotations

import math
import os
import threading
import weakref
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor, nn

__all__ = [
    "SAMPLE_RATE", "FRAME_LENGTH", "FRAME_SHIFT", "N_FFT", "N_MELS", "LFR_M", "LFR_N",
    "FEAT_DIM", "LOG_FLOOR", "CmvnFormatError", "load_cmvn", "num_frames", "num_lfr_frames",
    "mel_banks", "hamming_window", "fbank", "apply_lfr", "apply_cmvn", "Frontend",
    "frontend_numpy",
]

SAMPLE_RATE = 16000
FRAME_LENGTH = 400          # 25 ms
FRAME_SHIFT = 160           # 10 ms
N_FFT = 512                 # the window padded to a power of two
N_MELS = 80
LOW_FREQ = 20.0
HIGH_FREQ = SAMPLE_RATE / 2  # Kaldi's high_freq=0 means Nyquist
PREEMPH = 0.97
LFR_M = 7
LFR_N = 6
FEAT_DIM = N_MELS * LFR_M   # 560
LOG_FLOOR = float(torch.finfo(torch.float32).eps)
INT16_SCALE = 32768.0       # FunASR's ``waveform * (1 << 15)``


# --------------------------------------------------------------------------- #
# CMVN file (Kaldi nnet text: <AddShift> / <Rescale> components)
# --------------------------------------------------------------------------- #
class CmvnFormatError(ValueError):
    """A malformed ``am.mvn``; the message says what was expected and what was found."""


def _tokens(text: str) -> list[tuple[str, int]]:
    out = []
    for lineno, line in enumerate(text.splitlines(), 1):
        out.extend((tok, lineno) for tok in line.split())
    return out


def _parse_component(toks: list[tuple[str, int]], i: int, tag: str, where: str):
    """Parse ``<Tag> [out in] <LearnRateCoef> c [ v1 ... vn ]`` starting after the tag.

    Returns ``(values, declared_dims, next_index)``.
    """
    n = len(toks)

    def found(j: int) -> str:
        return f"{toks[j][0]!r} at line {toks[j][1]}" if j < n else "end of file"

    dims: list[int] = []
    j = i
    while j < n and len(dims) < 2 and toks[j][0].isdigit():
        dims.append(int(toks[j][0]))
        j += 1
    if dims and len(dims) != 2:
        raise CmvnFormatError(
            f"{where}: expected two dimensions '<{tag}> OUT IN', found only {dims[0]}")
    if j >= n or toks[j][0] != "<LearnRateCoef>":
        raise CmvnFormatError(
            f"{where}: expected '<LearnRateCoef>' after <{tag}>, found {found(j)}")
    j += 1
    try:
        float(toks[j][0])
    except (IndexError, ValueError):
        raise CmvnFormatError(
            f"{where}: expected a number after <LearnRateCoef> in <{tag}>, found {found(j)}"
        ) from None
    j += 1
    if j >= n or toks[j][0] != "[":
        raise CmvnFormatError(f"{where}: expected '[' opening the <{tag}> vector, found {found(j)}")
    j += 1
    start_line = toks[j - 1][1]
    values: list[float] = []
    while True:
        if j >= n:
            raise CmvnFormatError(
                f"{where}: expected ']' closing the <{tag}> vector opened at line {start_line}, "
                f"found end of file after {len(values)} values")
        tok = toks[j][0]
        if tok == "]":
            j += 1
            break
        try:
            v = float(tok)
        except ValueError:
            raise CmvnFormatError(
                f"{where}: expected a number or ']' in the <{tag}> vector "
                f"(value #{len(values) + 1}), found {found(j)}") from None
        if not math.isfinite(v):
            raise CmvnFormatError(
                f"{where}: expected finite values in the <{tag}> vector, "
                f"found {found(j)} (value #{len(values) + 1})")
        values.append(v)
        j += 1
    if dims and not (dims[0] == dims[1] == len(values)):
        raise CmvnFormatError(
            f"{where}: <{tag}> declares dimensions {dims[0]} {dims[1]} "
            f"but its vector has {len(values)} values")
    return values, dims, j


def load_cmvn(path: str | os.PathLike, dim: int | None = FEAT_DIM) -> tuple[Tensor, Tensor]:
    """Read a Kaldi-nnet ``am.mvn``: returns ``(shift, scale)``, float32 tensors of ``[dim]``.

    Accepts the layout FunASR's ``load_cmvn`` parses (and Kaldi writes)::

        <Nnet>
        <Splice> 560 560
        [ 0 ]
        <AddShift> 560 560
        <LearnRateCoef> 0 [ -8.31 -8.60 ... ]
        <Rescale> 560 560
        <LearnRateCoef> 0 [ 0.155 0.154 ... ]
        </Nnet>

    Tokens are whitespace separated (line breaks inside a vector are tolerated).  A missing,
    duplicated, unterminated, non-numeric or wrongly sized component raises
    :class:`CmvnFormatError` naming what was expected and what was found.  ``dim=None``
    accepts any size (shift and scale must still agree).
    """
    where = str(path)
    raw = Path(path).read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise CmvnFormatError(
            f"{where}: expected a UTF-8 text Kaldi-nnet am.mvn, found undecodable bytes "
            f"at offset {e.start} (a binary Kaldi file?)") from None
    toks = _tokens(text)
    found: dict[str, tuple[list[float], int]] = {}
    i = 0
    while i < len(toks):
        tok, lineno = toks[i]
        if tok in ("<AddShift>", "<Rescale>"):
            tag = tok[1:-1]
            if tok in found:
                raise CmvnFormatError(
                    f"{where}: expected one <{tag}> component, found a second one at line "
                    f"{lineno} (first at line {found[tok][1]})")
            values, _, i = _parse_component(toks, i + 1, tag, where)
            found[tok] = (values, lineno)
        else:
            i += 1
    for tok in ("<AddShift>", "<Rescale>"):
        if tok not in found:
            seen = sorted({t for t, _ in toks if t.startswith("<") and t.endswith(">")})
            raise CmvnFormatError(
                f"{where}: expected a {tok} component, found none "
                f"(components present: {', '.join(seen) or 'none'})")
    shift, scale = found["<AddShift>"][0], found["<Rescale>"][0]
    for tok, vec in (("<AddShift>", shift), ("<Rescale>", scale)):
        if dim is not None and len(vec) != dim:
            raise CmvnFormatError(
                f"{where}: expected {dim} values in the {tok} vector "
                f"({N_MELS} mel x LFR {LFR_M}), found {len(vec)}")
    if len(shift) != len(scale):
        raise CmvnFormatError(
            f"{where}: expected <AddShift> and <Rescale> of the same size, "
            f"found {len(shift)} and {len(scale)}")
    return (torch.tensor(np.asarray(shift, dtype=np.float32)),
            torch.tensor(np.asarray(scale, dtype=np.float32)))


# --------------------------------------------------------------------------- #
# Constant tensors (window, mel matrix), built once per device
# --------------------------------------------------------------------------- #
def hamming_window() -> Tensor:
    """Kaldi's Hamming window (``0.54 - 0.46 cos(2 pi i / (N-1))`` in double, stored float)."""
    i = torch.arange(FRAME_LENGTH, dtype=torch.float64)
    return (0.54 - 0.46 * torch.cos(2 * math.pi / (FRAME_LENGTH - 1) * i)).to(torch.float32)


def mel_banks() -> Tensor:
    """Kaldi's mel filterbank as a ``[N_FFT // 2 + 1, N_MELS]`` float32 matrix.

    Computed in float32 exactly as Kaldi / kaldi-native-fbank ``MelBanks`` do; the Nyquist
    bin (row 256) is all zero, as in Kaldi, which only uses bins ``0 .. N_FFT/2 - 1``.
    """
    f32 = torch.float32

    def mel(f: Tensor) -> Tensor:
        return 1127.0 * torch.log(1.0 + f / 700.0)

    mel_low = mel(torch.tensor(LOW_FREQ, dtype=f32))
    mel_high = mel(torch.tensor(HIGH_FREQ, dtype=f32))
    delta = (mel_high - mel_low) / (N_MELS + 1)
    bins = torch.arange(N_MELS, dtype=f32)[None, :]
    left = mel_low + bins * delta
    center = mel_low + (bins + 1.0) * delta
    right = mel_low + (bins + 2.0) * delta
    fft_bin_width = torch.tensor(SAMPLE_RATE / N_FFT, dtype=f32)
    m = mel(fft_bin_width * torch.arange(N_FFT // 2, dtype=f32))[:, None]
    up = (m - left) / (center - left)
    down = (right - m) / (right - center)
    w = torch.where((m > left) & (m < right), torch.where(m <= center, up, down),
                    torch.zeros((), dtype=f32))
    return torch.cat([w, torch.zeros(1, N_MELS, dtype=f32)]).contiguous()


_CONST_CACHE: dict[tuple[str, torch.device], Tensor] = {}


def _const(name: str, device: torch.device) -> Tensor:
    key = (name, device)
    t = _CONST_CACHE.get(key)
    if t is None:
        t = (hamming_window() if name == "window" else mel_banks()).to(device)
        _CONST_CACHE[key] = t
    return t


# --------------------------------------------------------------------------- #
# Lengths
# --------------------------------------------------------------------------- #
def num_frames(lengths: Tensor) -> Tensor:
    """Kaldi fbank frames with ``snip_edges``: ``1 + (N - 400) // 160`` for N >= 400, else 0."""
    lengths = torch.as_tensor(lengths, dtype=torch.long)
    return torch.where(lengths >= FRAME_LENGTH,
                       1 + (lengths - FRAME_LENGTH).clamp_min(0) // FRAME_SHIFT,
                       torch.zeros_like(lengths))


def num_lfr_frames(frames: Tensor, n: int = LFR_N) -> Tensor:
    """``ceil(T / n)`` (FunASR's ``T_lfr``)."""
    frames = torch.as_tensor(frames, dtype=torch.long)
    return (frames + (n - 1)) // n


def _lengths_tensor(lengths, batch: int, n_samples: int, device: torch.device) -> Tensor:
    if lengths is None:
        return torch.full((batch,), n_samples, dtype=torch.long, device=device)
    lengths = torch.as_tensor(lengths, device=device)
    if lengths.is_floating_point() or lengths.dtype == torch.bool:
        raise TypeError(f"lengths must be integer sample counts, got dtype {lengths.dtype}")
    lengths = lengths.long().reshape(-1)
    if lengths.numel() != batch:
        raise ValueError(f"expected {batch} lengths (one per row of waves), got {lengths.numel()}")
    if batch and (int(lengths.min()) < 0 or int(lengths.max()) > n_samples):
        raise ValueError(
            f"lengths must lie in [0, {n_samples}] (the padded width of waves), "
            f"got min {int(lengths.min())} max {int(lengths.max())}")
    return lengths


def _time_mask(lengths: Tensor, t_max: int) -> Tensor:
    return torch.arange(t_max, device=lengths.device)[None, :] < lengths[:, None]


class _FullPrecision:
    """Autocast off for the enclosed block (restored on exit); features are always float32."""

    def __init__(self, device: torch.device):
        self.device = device

    def __enter__(self):
        self._autocast = None
        dt = self.device.type
        if torch.amp.is_autocast_available(dt) and torch.is_autocast_enabled(dt):
            self._autocast = torch.autocast(dt, enabled=False)
            self._autocast.__enter__()
        return self

    def __exit__(self, *exc):
        if self._autocast is not None:
            self._autocast.__exit__(*exc)
        return False


# --------------------------------------------------------------------------- #
# fbank
# --------------------------------------------------------------------------- #
_CHUNK_FRAMES_CPU = 2048
_CHUNK_FRAMES_DEVICE = 1 << 20
# The 32768 of FunASR's ``waveform * (1 << 15)`` is folded into the mel weights as 2**30:
# scaling by a power of two is exact in floating point and commutes with every step before
# the projection (DC removal, pre-emphasis, window, FFT are linear; the power squares it),
# so the projected energies are bit for bit those of the scaled waveform, without a pass
# that scales the samples.
_POWER_SCALE = INT16_SCALE * INT16_SCALE
# Mel filters per block of the CPU projection. Each filter covers a few FFT bins (2 at
# 20 Hz, 14 near 8 kHz), so the dense [257, 80] matrix is 97% zeros; five blocks of 16
# filters, each multiplying only the bins its filters cover, do a fifth of the dense
# multiply-adds. 16 because the CPU GEMM kernels are much slower for other widths here.
_MEL_BLOCK = 16


class _Projection:
    """The mel weights (scaled by 2**30) laid out for their device: in blocks on the CPU, in
    float64 on CUDA (out of TF32 whatever the trainer's matmul settings), dense elsewhere."""

    def __init__(self, mel: Tensor):
        scaled = mel.to(torch.float32) * _POWER_SCALE
        self.dense = scaled.double() if mel.device.type == "cuda" else scaled
        self.blocks: list[tuple[int, int, int, int, Tensor]] = []
        if mel.device.type == "cpu":
            used = scaled != 0
            for f0 in range(0, scaled.shape[1], _MEL_BLOCK):
                f1 = min(f0 + _MEL_BLOCK, scaled.shape[1])
                rows = used[:, f0:f1].any(1).nonzero().flatten()
                b0, b1 = (int(rows[0]), int(rows[-1]) + 1) if len(rows) else (0, 1)
                self.blocks.append((b0, b1, f0, f1, scaled[b0:b1, f0:f1].contiguous()))

    def __call__(self, power: Tensor) -> Tensor:
        """``power [n, 257]`` -> mel energies ``[n, 80]`` of the 32768-scaled waveform."""
        if self.blocks:
            out = power.new_empty(power.shape[0], self.dense.shape[1])
            for b0, b1, f0, f1, weights in self.blocks:
                torch.mm(power[:, b0:b1], weights, out=out[:, f0:f1])
            return out
        if self.dense.dtype == torch.float64:
            return (power.double() @ self.dense).to(torch.float32)
        return power @ self.dense


_PROJECTIONS: dict[int, tuple[Any, int, _Projection]] = {}
# Frontends run in several threads at once (decoding, thread-pool loaders): the sweep below
# iterates the dict, which raises if another thread inserts meanwhile.
_PROJECTIONS_LOCK = threading.Lock()


def _version(t: Tensor) -> int:
    """``t``'s in-place modification counter (-1 for inference tensors, which have none)."""
    try:
        return t._version
    except RuntimeError:
        return -1


def _projection(mel: Tensor) -> _Projection:
    """The projection of ``mel``, built once per mel tensor (and rebuilt if it is modified)."""
    key = id(mel)
    with _PROJECTIONS_LOCK:
        hit = _PROJECTIONS.get(key)
    if hit is not None and hit[0]() is mel and hit[1] == _version(mel):
        return hit[2]
    projection = _Projection(mel)  # built outside the lock: two threads may both build one, harmlessly
    with _PROJECTIONS_LOCK:
        for stale in [k for k, (ref, _, _) in _PROJECTIONS.items() if ref() is None]:
            del _PROJECTIONS[stale]
        _PROJECTIONS[key] = (weakref.ref(mel), _version(mel), projection)
    return projection


_WORKSPACE = threading.local()


def _fft_input(frames: int, device: torch.device) -> Tensor:
    """A ``[frames, 512]`` float32 buffer whose columns 400..511 are zero.

    On the CPU it is a per-thread workspace reused across chunks and calls: only columns
    0..399 are ever written, so its zero padding is set once, and the chunk's largest
    intermediate costs neither an allocation (fresh pages fault in) nor a zeroing pass.
    """
    if device.type != "cpu":
        return torch.zeros(frames, N_FFT, dtype=torch.float32, device=device)
    space = getattr(_WORKSPACE, "fft_input", None)
    if space is None or space.shape[0] < frames:
        with torch.inference_mode(False):  # made in inference mode, it could not be written outside it
            space = torch.zeros(frames, N_FFT, dtype=torch.float32)
        _WORKSPACE.fft_input = space
    return space[:frames]


def _log_mel_into(seg: Tensor, window: Tensor, window_dc: Tensor, projection: _Projection, dest: Tensor) -> None:
    """Log-mel of every full frame of ``seg [b, n]`` (frames start at sample 0), written to
    ``dest [b, t, 80]`` (any strides).  ``window_dc`` is ``(1 - PREEMPH) * window``."""
    x = seg if seg.dtype == torch.float32 else seg.to(torch.float32)
    rows = x.shape[0]
    raw = x.unfold(1, FRAME_LENGTH, FRAME_SHIFT)                     # [b, t, 400] view
    frames = raw.shape[1]
    mean = raw.mean(-1, keepdim=True)                                 # DC offset per frame
    # Pre-emphasis commutes with the DC removal up to a constant: for k >= 1,
    # (x_k - m) - a (x_{k-1} - m) = (x_k - a x_{k-1}) - (1 - a) m, so pre-emphasise the
    # whole segment once and frame it; sample 0 of a frame uses Kaldi's convention
    # y_0 = (x_0 - m) - a (x_0 - m).  (Written with out=: assigning into the shifted
    # slice instead takes torch's slow strided copy, ~25x slower.)
    pre = torch.empty_like(x)
    torch.sub(x[:, 1:], x[:, :-1], alpha=PREEMPH, out=pre[:, 1:])
    pre[:, 0] = 0
    buf = _fft_input(rows * frames, x.device).view(rows, frames, N_FFT)  # zero-padded to 512
    y = buf[..., :FRAME_LENGTH]
    # (pre - (1 - a) m) * w in two passes: pre * w, then minus m * ((1 - a) w)
    torch.mul(pre.unfold(1, FRAME_LENGTH, FRAME_SHIFT), window, out=y)
    y.addcmul_(mean, window_dc, value=-1.0)
    y[..., 0] = (raw[..., 0] - mean[..., 0]) * window_dc[0]
    spec = torch.fft.rfft(buf, dim=-1)                                # [b, t, 257]
    parts = torch.view_as_real(spec).square_()                        # re², im² in place
    power = torch.add(parts[..., 0], parts[..., 1])
    energies = projection(power.view(rows * frames, N_FFT // 2 + 1))
    torch.log(energies.clamp_min_(LOG_FLOOR).view(rows, frames, N_MELS), out=dest)


def _fbank_into(waves: Tensor, t_max: int, dest: Tensor, window: Tensor, mel: Tensor) -> None:
    """Log-mel frames ``0 .. t_max - 1`` of every row of ``waves [B, N]`` into ``dest [B, t_max, 80]``
    (frames past a row's length are computed on its padding and left for the caller)."""
    device = waves.device
    projection = _projection(mel)
    window_dc = (1.0 - PREEMPH) * window
    # Work through the batch in chunks of about ``budget`` frames, which bounds the
    # intermediates (~4 KiB per frame) and keeps them cache-sized on the CPU.
    budget = _CHUNK_FRAMES_CPU if device.type == "cpu" else _CHUNK_FRAMES_DEVICE
    batch = waves.shape[0]
    rows = max(1, budget // t_max)
    t_step = t_max if rows > 1 else min(t_max, budget)
    with _FullPrecision(device):
        for b0 in range(0, batch, rows):
            for t0 in range(0, t_max, t_step):
                t1 = min(t_max, t0 + t_step)
                seg = waves[b0 : b0 + rows, t0 * FRAME_SHIFT : (t1 - 1) * FRAME_SHIFT + FRAME_LENGTH]
                _log_mel_into(seg, window, window_dc, projection, dest[b0 : b0 + rows, t0:t1])


def _check_waves(waves: Tensor) -> None:
    if waves.dim() != 2:
        raise ValueError(f"waves must be [B, N], got shape {tuple(waves.shape)}")
    if waves.is_complex() or not (waves.is_floating_point()):
        raise TypeError(f"waves must be a float tensor in [-1, 1], got dtype {waves.dtype} "
                        "(divide int16 PCM by 32768 first, or use frontend_numpy)")


def fbank(waves: Tensor, lengths: Tensor | Sequence[int] | None = None,
          *, window: Tensor | None = None, mel: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Batched Kaldi fbank (MooER / FunASR options) of float waveforms in [-1, 1].

    ``waves``: ``[B, N]`` (rows right-padded), ``lengths``: ``[B]`` valid samples per row
    (default: all ``N``).  Returns ``feats [B, T, 80]`` float32, with ``T = max(frames)`` and
    rows past each item's frame count zeroed, and ``frames [B]`` (long).  The input is scaled
    by 32768 as FunASR does.  Pure torch; runs on the device of ``waves``; deterministic.
    ``window`` / ``mel`` override the cached constants (``Frontend`` passes its buffers).
    """
    _check_waves(waves)
    device = waves.device
    batch, n_samples = waves.shape
    lengths = _lengths_tensor(lengths, batch, n_samples, device)
    frames = num_frames(lengths)
    t_max = int(frames.max()) if batch else 0
    if t_max == 0:
        return waves.new_zeros(batch, 0, N_MELS, dtype=torch.float32), frames
    feats = torch.empty(batch, t_max, N_MELS, dtype=torch.float32, device=device)
    _fbank_into(waves, t_max, feats, _const("window", device) if window is None else window,
                _const("mel", device) if mel is None else mel)
    if bool((frames < t_max).any()):
        feats.masked_fill_(~_time_mask(frames, t_max)[..., None], 0.0)
    return feats, frames


# --------------------------------------------------------------------------- #
# LFR and CMVN
# --------------------------------------------------------------------------- #
def apply_lfr(feats: Tensor, frames: Tensor | Sequence[int] | None = None,
              m: int = LFR_M, n: int = LFR_N) -> tuple[Tensor, Tensor]:
    """Batched LFR stacking, FunASR ``apply_lfr`` semantics per item.

    ``feats [B, T, D]``, ``frames [B]`` valid frames per item (default: all ``T``).  Output
    frame ``j`` of an item concatenates input frames ``6j - 3 .. 6j + 3`` with indices clamped
    to ``[0, frames - 1]`` (left: the first frame repeated ``(m-1)//2`` times; right: the last
    frame repeated).  Returns ``([B, T_lfr, m*D], lfr_frames)`` with ``lfr_frames =
    ceil(frames / n)`` and rows past an item's length zeroed.
    """
    if feats.dim() != 3:
        raise ValueError(f"feats must be [B, T, D], got shape {tuple(feats.shape)}")
    batch, t_in, dim = feats.shape
    device = feats.device
    if frames is None:
        frames = torch.full((batch,), t_in, dtype=torch.long, device=device)
    frames = torch.as_tensor(frames, device=device).long().reshape(-1)
    if frames.numel() != batch:
        raise ValueError(f"expected {batch} frame counts, got {frames.numel()}")
    if batch and (int(frames.min()) < 0 or int(frames.max()) > t_in):
        raise ValueError(f"frame counts must lie in [0, {t_in}], got {frames.tolist()}")
    lfr_frames = num_lfr_frames(frames, n)
    t_out = int(lfr_frames.max()) if batch else 0
    if t_out == 0:
        return feats.new_zeros(batch, 0, m * dim), lfr_frames
    base = (torch.arange(t_out, device=device)[:, None] * n
            + torch.arange(m, device=device)[None, :] - (m - 1) // 2)    # [T_lfr, m]
    last = (frames - 1).clamp_min(0)[:, None, None]
    idx = torch.minimum(base[None].clamp_min(0), last)                   # [B, T_lfr, m]
    out = torch.gather(feats, 1, idx.reshape(batch, t_out * m, 1).expand(-1, -1, dim))
    out = out.reshape(batch, t_out, m * dim)
    if bool((lfr_frames < t_out).any()):
        out = out.masked_fill(~_time_mask(lfr_frames, t_out)[..., None], 0.0)
    return out, lfr_frames


def apply_cmvn(feats: Tensor, shift: Tensor, scale: Tensor,
               lengths: Tensor | None = None) -> Tensor:
    """``(feats + shift) * scale`` over the last dimension (FunASR ``apply_cmvn``).

    With ``lengths`` (``[B]`` valid frames of a ``[B, T, D]`` batch) the padding rows are
    left at zero, as FunASR's ``pad_sequence`` after CMVN does.
    """
    if shift.shape[-1] != feats.shape[-1] or scale.shape[-1] != feats.shape[-1]:
        raise ValueError(f"CMVN size mismatch: features have {feats.shape[-1]} dims, "
                         f"shift {shift.shape[-1]}, scale {scale.shape[-1]}")
    out = (feats + shift.to(feats.device, feats.dtype)) * scale.to(feats.device, feats.dtype)
    if lengths is not None and feats.dim() == 3:
        lengths = torch.as_tensor(lengths, device=feats.device).long()
        if bool((lengths < feats.shape[1]).any()):
            out = out.masked_fill_(~_time_mask(lengths, feats.shape[1])[..., None], 0.0)
    return out


# --------------------------------------------------------------------------- #
# fbank + LFR + CMVN fused (what Frontend runs)
# --------------------------------------------------------------------------- #
def _lfr_buffer_fill(buf: Tensor, frames: Tensor) -> None:
    """Repeat the first frame into the 3 rows before it, and the last into the 3 after it."""
    batch, rows, _ = buf.shape
    left = (LFR_M - 1) // 2
    buf[:, :left] = buf[:, left : left + 1]
    # the last frame of item b sits in row left + T_b - 1; an LFR frame of b reads up to
    # row LFR_N * T_lfr_b, at most ``left`` rows past it.  Clipping the target rows to the
    # buffer only ever lands on rows no valid LFR frame of b reads, or on the source row.
    source = (frames - 1).clamp_min(0) + left
    targets = (source[:, None] + torch.arange(1, left + 1, device=buf.device)).clamp_max_(rows - 1)
    items = torch.arange(batch, device=buf.device)[:, None].expand(-1, left)
    buf[items, targets] = buf[torch.arange(batch, device=buf.device), source][:, None, :].expand(-1, left, -1)


def _features(waves: Tensor, lengths, window: Tensor, mel: Tensor, shift: Tensor | None, scale: Tensor | None,
              out: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """fbank -> LFR -> CMVN in one go: the same values as ``apply_cmvn(*apply_lfr(*fbank(...)))``.

    The fbank writes its frames into a buffer with ``(m - 1) // 2`` spare rows on the left
    and the edge frames repeated into them, so LFR frame ``j`` of an item is the 560
    contiguous floats starting at row ``6 j``: LFR is a strided view (no gather, no copy),
    and CMVN reads that view straight into the output.  Only padding rows are then zeroed.
    ``out``, if given, receives the features (``[B, T_lfr, 560]`` float32, contiguous).
    """
    _check_waves(waves)
    device = waves.device
    batch, n_samples = waves.shape
    lengths = _lengths_tensor(lengths, batch, n_samples, device)
    frames = num_frames(lengths)
    lfr_frames = num_lfr_frames(frames)
    t_max = int(frames.max()) if batch else 0
    t_out = int(lfr_frames.max()) if batch else 0
    shape = (batch, t_out, FEAT_DIM)
    if out is None:
        out = torch.empty(shape, dtype=torch.float32, device=device)
    elif (tuple(out.shape) != shape or out.dtype != torch.float32 or not out.is_contiguous()
          or out.device != device):
        raise ValueError(f"expected out to be a contiguous float32 tensor of shape {shape} on {device}, "
                         f"found {out.dtype} {tuple(out.shape)} on {out.device}"
                         f"{'' if out.is_contiguous() else ' (not contiguous)'}")
    if t_out == 0:
        return out, lfr_frames
    left = (LFR_M - 1) // 2
    rows = max(LFR_N * (t_out - 1) + LFR_M, left + t_max)
    buf = torch.empty(batch, rows, N_MELS, dtype=torch.float32, device=device)
    _fbank_into(waves, t_max, buf[:, left : left + t_max], window, mel)
    _lfr_buffer_fill(buf, frames)
    stacked = buf.as_strided(shape, (rows * N_MELS, LFR_N * N_MELS, 1), buf.storage_offset())
    with _FullPrecision(device):
        if shift is None:
            out.copy_(stacked)
        else:
            # (x + shift) * scale, as apply_cmvn computes it
            torch.add(stacked, shift, out=out).mul_(scale)
    padding = ~_time_mask(lfr_frames, t_out)
    if bool(padding.any()):
        out.view(batch * t_out, FEAT_DIM).index_fill_(0, padding.view(-1).nonzero().view(-1), 0.0)
    return out, lfr_frames


# --------------------------------------------------------------------------- #
# Module
# --------------------------------------------------------------------------- #
class Frontend(nn.Module):
    """fbank -> LFR(7, 6) -> CMVN on a padded waveform batch; no parameters.

    ``Frontend(cmvn_file)(waves [B, N] float in [-1, 1], lengths [B]) ->
    (feats [B, T_lfr, 560], lfr_lengths [B])`` — the same output as FunASR
    ``WavFrontend(cmvn_file, lfr_m=7, lfr_n=6, dither=0.0)`` (padding rows zero).

    Use it in CPU data workers or on the trainer's GPU: ``.to(device)`` moves the window,
    mel matrix and CMVN vectors (non-persistent buffers, so they never enter a checkpoint;
    the CMVN comes from ``cmvn_file``).  ``cmvn_file=None`` skips CMVN.
    """

    def __init__(self, cmvn_file: str | os.PathLike | None = None):
        super().__init__()
        self.cmvn_file = None if cmvn_file is None else str(cmvn_file)
        self.register_buffer("window", hamming_window(), persistent=False)
        self.register_buffer("mel", mel_banks(), persistent=False)
        if cmvn_file is not None:
            shift, scale = load_cmvn(cmvn_file)
            self._cmvn_master = (shift.clone(), scale.clone())  # float32 CPU originals
            self.register_buffer("cmvn_shift", shift, persistent=False)
            self.register_buffer("cmvn_scale", scale, persistent=False)
        else:
            self.cmvn_shift = None
            self.cmvn_scale = None

    def _apply(self, fn, recurse=True):
        # ``model.to(torch.bfloat16)`` / ``.half()`` must not degrade the frontend: move the
        # buffers, but keep them float32 (rebuilt exactly from the float32 originals).
        super()._apply(fn, recurse)
        masters = {"window": hamming_window, "mel": mel_banks}
        for name in ("window", "mel", "cmvn_shift", "cmvn_scale"):
            buf = getattr(self, name)
            if buf is not None and buf.dtype != torch.float32:
                if name in masters:
                    fresh = masters[name]()
                else:
                    fresh = self._cmvn_master[0 if name == "cmvn_shift" else 1]
                self._buffers[name] = fresh.to(buf.device)
        return self

    @staticmethod
    def output_size() -> int:
        return FEAT_DIM

    def forward(self, waves: Tensor, lengths: Tensor | Sequence[int] | None = None, *,
                out: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``(feats [B, T_lfr, 560], lfr_lengths [B])``; ``out``, if given, is a contiguous
        float32 tensor of that shape that receives the features (e.g. one in shared memory)."""
        device = self.window.device
        waves = waves.to(device)
        return _features(waves, lengths, self.window, self.mel, self.cmvn_shift, self.cmvn_scale, out)

    def extra_repr(self) -> str:
        return f"cmvn_file={self.cmvn_file!r}"


@lru_cache(maxsize=8)
def _cached_cmvn(path: str, mtime_ns: int, size: int) -> tuple[Tensor, Tensor]:
    return load_cmvn(path)


def frontend_numpy(wave: np.ndarray,
                   cmvn: str | os.PathLike | tuple[Tensor, Tensor] | None = None
                   ) -> np.ndarray:
    """Features of one utterance: ``[T_lfr, 560]`` float32 (CPU).

    ``wave``: 1-D int16 PCM or float in [-1, 1], 16 kHz.  ``cmvn``: an ``am.mvn`` path
    (parsed once and cached while the file is unchanged), a ``(shift, scale)`` pair, or
    ``None`` for no CMVN.
    """
    wave = np.asarray(wave)
    if wave.ndim != 1:
        raise ValueError(f"expected a 1-D mono waveform, got shape {wave.shape}")
    if wave.dtype == np.int16:
        x = torch.from_numpy(wave.astype(np.float32) / np.float32(INT16_SCALE))
    elif np.issubdtype(wave.dtype, np.floating):
        x = torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32))
    else:
        raise TypeError(f"expected int16 PCM or float samples, got dtype {wave.dtype}")
    if cmvn is None:
        shift = scale = None
    elif isinstance(cmvn, (str, os.PathLike)):
        st = os.stat(cmvn)
        shift, scale = _cached_cmvn(os.fspath(cmvn), st.st_mtime_ns, st.st_size)
    else:
        shift, scale = (torch.as_tensor(v, dtype=torch.float32) for v in cmvn)
    feats, frames = fbank(x[None])
    feats, _ = apply_lfr(feats, frames)
    if shift is not None:
        feats = apply_cmvn(feats, shift, scale)
    return feats[0].numpy()

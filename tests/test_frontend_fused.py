"""Frontend's fused path (mooer_model/frontend.py): fbank written into the LFR buffer, LFR as a
strided view, CMVN straight into the output, must give exactly what the separate public steps
give; the blocked mel projection must equal the dense one; cached constants must follow the
tensors they come from."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mooer_model import frontend as F
from mooer_model.testing_cmvn import write_am_mvn


@pytest.fixture(scope="module")
def mvn_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("cmvn") / "am.mvn"
    write_am_mvn(path, seed=3)
    return path


def _batch(lengths: list[int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of noise plus a tone (int16 grid), right-padded with zeros."""
    rng = np.random.default_rng(seed)
    waves = torch.zeros(len(lengths), max(lengths))
    for row, n in enumerate(lengths):
        t = np.arange(n) / 16000
        wave = 0.2 * np.sin(2 * np.pi * (300 + 50 * row) * t) + 0.05 * rng.standard_normal(n)
        waves[row, :n] = torch.from_numpy(np.round(np.clip(wave, -1, 1) * 32767) / 32768)
    return waves, torch.tensor(lengths)


# Kaldi frame counts 0..14 and beyond: every remainder modulo LFR_N = 6, the edges of the
# left/right repetition, and items with no frame at all next to long ones.
LENGTHS = [0, 399, 400] + [400 + 160 * t for t in range(1, 14)] + [16000, 24480, 12345]


def test_frontend_equals_the_separate_steps_exactly(mvn_path):
    waves, lengths = _batch(LENGTHS)
    shift, scale = F.load_cmvn(mvn_path)
    feats, frames = F.fbank(waves, lengths)
    lfr, lfr_frames = F.apply_lfr(feats, frames)
    want = F.apply_cmvn(lfr, shift, scale, lfr_frames)
    got, got_frames = F.Frontend(mvn_path)(waves, lengths)
    assert got_frames.tolist() == lfr_frames.tolist()
    assert got.shape == want.shape and torch.equal(got, want)
    plain, _ = F.Frontend(None)(waves, lengths)  # no CMVN: LFR of the fbank, padding rows zero
    assert torch.equal(plain, lfr)


def test_frontend_writes_into_a_given_output(mvn_path):
    waves, lengths = _batch([16000, 9000, 500])
    frontend = F.Frontend(mvn_path)
    want, frames = frontend(waves, lengths)
    out = torch.full(want.shape, float("nan"))
    got, got_frames = frontend(waves, lengths, out=out)
    assert got is out and torch.equal(out, want) and got_frames.tolist() == frames.tolist()
    with pytest.raises(ValueError, match=r"expected out to be a contiguous float32 tensor of shape \(3, 17, 560\) on cpu, found"):
        frontend(waves, lengths, out=torch.empty(3, 16, 560))
    with pytest.raises(ValueError, match=r"\(not contiguous\)"):
        frontend(waves, lengths, out=torch.empty(3, 560, 17).transpose(1, 2))
    with pytest.raises(ValueError, match="found torch.float64"):
        frontend(waves, lengths, out=torch.empty(want.shape, dtype=torch.float64))


def test_blocked_mel_projection_equals_the_dense_matrix():
    mel = F.mel_banks()
    projection = F._Projection(mel)
    # the blocks hold every non-zero weight of the matrix, once
    assert sum(int((w != 0).sum()) for *_, w in projection.blocks) == int((mel != 0).sum())
    power = torch.rand(700, F.N_FFT // 2 + 1, generator=torch.Generator().manual_seed(0)) * 1e3
    want = (power.double() @ (mel.double() * F.INT16_SCALE ** 2))
    got = projection(power).double()
    assert float(((got - want).abs() / want.abs().clamp_min(1e-30)).max()) < 1e-5


def test_a_mel_matrix_changed_in_place_is_not_served_from_the_cache():
    waves, lengths = _batch([8000, 6000])
    mel = F.mel_banks()
    before, _ = F.fbank(waves, lengths, mel=mel)
    mel.mul_(0.5)  # same tensor object, new values
    after, _ = F.fbank(waves, lengths, mel=mel)
    fresh, _ = F.fbank(waves, lengths, mel=mel.clone())
    assert torch.equal(after, fresh)
    # half the energy: log-mel lower by ln 2 (away from the floor)
    assert torch.allclose(before[0, :10] - after[0, :10], torch.full((10, 80), float(np.log(2.0))), atol=1e-4)


def test_the_fft_workspace_keeps_its_zero_padding_across_chunk_sizes(monkeypatch):
    waves, lengths = _batch([20000, 7000, 3000])
    want, _ = F.fbank(waves, lengths)
    for budget in (5, 300, 2048, 37):  # chunks of other shapes reuse the same buffer
        monkeypatch.setattr(F, "_CHUNK_FRAMES_CPU", budget)
        got, _ = F.fbank(waves, lengths)
        torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    space = F._fft_input(1, torch.device("cpu"))
    assert torch.all(F._WORKSPACE.fft_input[:, F.FRAME_LENGTH:] == 0) and space.shape == (1, F.N_FFT)


def test_a_frontend_first_used_in_inference_mode_works_outside_it(mvn_path):
    # in a fresh thread, so the per-thread FFT workspace is first made inside inference mode
    waves, lengths = _batch([12000, 5000])
    results = {}

    def run():
        with torch.inference_mode():
            frontend = F.Frontend(mvn_path)  # its buffers are inference tensors (no version counter)
            results["inside"] = frontend(waves, lengths)[0].clone()
        results["outside"] = frontend(waves, lengths)[0]

    import threading

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert set(results) == {"inside", "outside"}, "the call outside inference mode failed"
    assert torch.equal(results["inside"], results["outside"])

"""mooer_model.frontend: batched torch fbank / LFR / CMVN against kaldi-native-fbank and
FunASR's WavFrontend (funasr is imported lazily: ``import funasr`` takes seconds)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mooer_model import frontend as F
from mooer_model.testing_cmvn import am_mvn_text, random_cmvn, write_am_mvn

ZH_TEXT = "今天天气很好我们去公园散步吧"
EN_TEXT = "The weather is lovely today, so let us take a walk in the park."


# --------------------------------------------------------------------------- #
# Signals and references
# --------------------------------------------------------------------------- #
@pytest.fixture(scope="module")
def signals(synth) -> dict[str, np.ndarray]:
    """float32 waveforms in [-1, 1] (int16 grid for the speech)."""
    rng = np.random.default_rng(1234)
    zh = synth.speech(ZH_TEXT, "zh").astype(np.float32) / 32768
    en = synth.speech(EN_TEXT, "en").astype(np.float32) / 32768
    noise = np.clip(rng.normal(0, 0.1, 24000), -1, 1).astype(np.float32)
    # near-silent: +-1..2 LSB of int16 with a DC offset, then a stretch of exact zeros
    quiet = np.concatenate([np.round(rng.normal(3, 0.8, 12000)), np.zeros(4000)])
    quiet = (quiet / 32768).astype(np.float32)
    tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(9000) / 16000) + 0.05).astype(np.float32)
    return {"zh": zh, "en": en, "noise": noise, "quiet": quiet, "tone": tone}


def knf_fbank(wave: np.ndarray) -> np.ndarray:
    """kaldi-native-fbank with the options FunASR's fbank fallback passes for WavFrontend."""
    import kaldi_native_fbank as knf

    opts = knf.FbankOptions()
    fo = opts.frame_opts
    fo.samp_freq = 16000.0
    fo.frame_length_ms = 25.0
    fo.frame_shift_ms = 10.0
    fo.dither = 0.0
    fo.snip_edges = True
    fo.window_type = "hamming"
    fo.preemph_coeff = 0.97
    fo.remove_dc_offset = True
    fo.round_to_power_of_two = True
    opts.mel_opts.num_bins = 80
    opts.mel_opts.low_freq = 20.0
    opts.mel_opts.high_freq = 0.0
    opts.energy_floor = 0.0
    opts.raw_energy = True
    opts.use_energy = False
    opts.use_log_fbank = True
    opts.use_power = True
    opts.htk_compat = False
    fb = knf.OnlineFbank(opts)
    fb.accept_waveform(16000, (wave * 32768).astype(np.float32))
    fb.input_finished()
    n = fb.num_frames_ready
    if n == 0:
        return np.zeros((0, 80), np.float32)
    return np.stack([fb.get_frame(i) for i in range(n)])


@pytest.fixture(scope="module")
def mvn_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("cmvn") / "am.mvn"
    write_am_mvn(path, seed=7)
    return path


@pytest.fixture(scope="module")
def funasr_wav_frontend(mvn_path):
    from funasr.frontends.wav_frontend import WavFrontend

    return WavFrontend(cmvn_file=str(mvn_path), fs=16000, window="hamming", n_mels=80,
                       frame_length=25, frame_shift=10, lfr_m=7, lfr_n=6, dither=0.0)


def _batch(waves: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    lens = [len(w) for w in waves]
    out = torch.zeros(len(waves), max(lens))
    for i, w in enumerate(waves):
        out[i, : len(w)] = torch.from_numpy(w)
    return out, torch.tensor(lens)


# --------------------------------------------------------------------------- #
# (1) fbank vs kaldi-native-fbank
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("name", ["zh", "en", "noise", "quiet", "tone"])
def test_fbank_matches_kaldi_native_fbank(signals, name):
    wave = signals[name]
    ref = knf_fbank(wave)
    feats, frames = F.fbank(torch.from_numpy(wave)[None])
    ours = feats[0].numpy()
    assert int(frames[0]) == ref.shape[0] == 1 + (len(wave) - 400) // 160
    assert ours.shape == ref.shape == (ref.shape[0], 80)
    diff = np.abs(ours - ref)
    print(f"\nfbank vs knf [{name}]: {ref.shape[0]} frames, "
          f"max |diff| {diff.max():.2e}, mean {diff.mean():.2e}")
    assert diff.max() <= 0.01, (name, diff.max())
    assert diff.mean() <= 1e-3, (name, diff.mean())
    if name == "quiet":  # the all-zero tail sits exactly on the log floor
        assert np.all(ours[-5:] == np.float32(np.log(F.LOG_FLOOR)))


def test_fbank_frame_counts_and_padding(signals):
    lens = [0, 1, 399, 400, 559, 560, 561, 16000]
    frames = F.num_frames(torch.tensor(lens))
    assert frames.tolist() == [0, 0, 0, 1, 1, 2, 2, 98]
    wave = signals["en"][:16000]
    waves, lengths = _batch([wave[:n] if n else wave[:0] for n in lens])
    feats, got = F.fbank(waves, lengths)
    assert got.tolist() == frames.tolist()
    assert feats.shape == (len(lens), 98, 80) and feats.dtype == torch.float32
    for i, t in enumerate(frames.tolist()):
        assert torch.all(feats[i, t:] == 0)
        if t:
            alone, _ = F.fbank(waves[i : i + 1, : lens[i]])
            torch.testing.assert_close(feats[i, :t], alone[0], rtol=0, atol=1e-5)
    empty, n0 = F.fbank(torch.zeros(3, 399))
    assert empty.shape == (3, 0, 80) and n0.tolist() == [0, 0, 0]


def test_fbank_input_validation():
    with pytest.raises(ValueError, match="B, N"):
        F.fbank(torch.zeros(1000))
    with pytest.raises(TypeError, match="float"):
        F.fbank(torch.zeros(1, 1000, dtype=torch.int16))
    with pytest.raises(ValueError, match=r"\[0, 1000\]"):
        F.fbank(torch.zeros(2, 1000), torch.tensor([1000, 1001]))
    with pytest.raises(ValueError, match="expected 2 lengths"):
        F.fbank(torch.zeros(2, 1000), torch.tensor([1000]))


# --------------------------------------------------------------------------- #
# (2) the whole pipeline vs funasr WavFrontend
# --------------------------------------------------------------------------- #
def test_pipeline_matches_funasr_wav_frontend(signals, mvn_path, funasr_wav_frontend):
    items = [signals["zh"], signals["en"], signals["noise"], signals["quiet"],
             signals["tone"], signals["zh"][:1000], signals["en"][:400]]
    waves, lengths = _batch(items)
    ref, ref_lens = funasr_wav_frontend(waves, lengths)
    fe = F.Frontend(mvn_path)
    ours, lens = fe(waves, lengths)
    expected_lens = [-(-(1 + (len(w) - 400) // 160) // 6) for w in items]
    assert lens.tolist() == ref_lens.tolist() == expected_lens
    assert ours.shape == ref.shape == (len(items), max(expected_lens), 560)
    diff = (ours - ref).abs()
    print(f"\npipeline vs WavFrontend: max |diff| {diff.max():.2e}, mean {diff.mean():.2e}")
    assert float(diff.max()) <= 0.01
    for i, t in enumerate(expected_lens):
        assert torch.all(ours[i, t:] == 0)
        alone, alone_len = fe(waves[i : i + 1, : len(items[i])])
        assert alone_len.tolist() == [t] and alone.shape == (1, t, 560)
        torch.testing.assert_close(ours[i, :t], alone[0], rtol=0, atol=1e-5)
        np.testing.assert_allclose(F.frontend_numpy(items[i], mvn_path), alone[0].numpy(),
                                   rtol=0, atol=1e-5)


def test_pipeline_without_cmvn_matches_identity_funasr(signals, tmp_path):
    from funasr.frontends.wav_frontend import WavFrontend

    write_am_mvn(tmp_path / "id.mvn", np.zeros(560), np.ones(560))
    ref_fe = WavFrontend(cmvn_file=str(tmp_path / "id.mvn"), lfr_m=7, lfr_n=6, dither=0.0)
    waves, lengths = _batch([signals["en"], signals["tone"]])
    ref, _ = ref_fe(waves, lengths)
    ours, _ = F.Frontend(None)(waves, lengths)
    assert float((ours - ref).abs().max()) <= 0.01


def test_frontend_numpy_int16_and_float_agree(signals, mvn_path):
    pcm = np.round(signals["zh"] * 32768).astype(np.int16)
    a = F.frontend_numpy(pcm, mvn_path)
    b = F.frontend_numpy(pcm.astype(np.float32) / 32768, F.load_cmvn(mvn_path))
    assert a.dtype == np.float32 and a.shape == (-(-(1 + (len(pcm) - 400) // 160) // 6), 560)
    np.testing.assert_array_equal(a, b)
    with pytest.raises(TypeError, match="int16"):
        F.frontend_numpy(pcm.astype(np.int32))
    with pytest.raises(ValueError, match="1-D"):
        F.frontend_numpy(np.zeros((2, 800), np.float32))


def test_frontend_module_properties(signals, mvn_path):
    fe = F.Frontend(mvn_path)
    assert list(fe.parameters()) == [] and fe.state_dict() == {}
    assert fe.output_size() == 560
    waves, lengths = _batch([signals["tone"], signals["noise"]])
    want, want_lens = fe(waves, lengths)
    # a whole-model cast to bf16 keeps the frontend float32 and exact
    fe.to(torch.bfloat16)
    assert {b.dtype for b in fe.buffers()} == {torch.float32}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got, got_lens = fe(waves, lengths)
    assert got.dtype == torch.float32 and got_lens.tolist() == want_lens.tolist()
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    # nothing to frame
    feats, lens = fe(torch.zeros(2, 300), torch.tensor([300, 10]))
    assert feats.shape == (2, 0, 560) and lens.tolist() == [0, 0]


# --------------------------------------------------------------------------- #
# (3) LFR and CMVN vs funasr's helpers
# --------------------------------------------------------------------------- #
def test_lfr_matches_funasr_for_every_length():
    from funasr.frontends.wav_frontend import apply_lfr as ref_lfr

    gen = torch.Generator().manual_seed(0)
    t_max = 45
    feats = torch.randn(t_max, t_max, 80, generator=gen)
    frames = torch.arange(1, t_max + 1)
    out, lens = F.apply_lfr(feats, frames)
    assert lens.tolist() == [-(-t // 6) for t in range(1, t_max + 1)]
    assert out.shape == (t_max, -(-t_max // 6), 560)
    for b, t in enumerate(frames.tolist()):
        ref = ref_lfr(feats[b, :t].clone(), 7, 6)
        assert ref.shape == (lens[b], 560)
        torch.testing.assert_close(out[b, : lens[b]], ref, rtol=0, atol=0)
        assert torch.all(out[b, lens[b]:] == 0)
    # other (m, n) and a zero-length item
    out, lens = F.apply_lfr(feats[:3], torch.tensor([10, 0, 7]), m=5, n=3)
    assert lens.tolist() == [4, 0, 3]
    torch.testing.assert_close(out[0, :4], ref_lfr(feats[0, :10].clone(), 5, 3))
    torch.testing.assert_close(out[2, :3], ref_lfr(feats[2, :7].clone(), 5, 3))
    assert torch.all(out[1] == 0)


def test_cmvn_matches_funasr(tmp_path):
    from funasr.frontends.wav_frontend import apply_cmvn as ref_cmvn
    from funasr.frontends.wav_frontend import load_cmvn as ref_load

    shift, scale = write_am_mvn(tmp_path / "am.mvn", seed=11)
    ours_shift, ours_scale = F.load_cmvn(tmp_path / "am.mvn")
    ref = ref_load(str(tmp_path / "am.mvn"))
    assert ours_shift.dtype == torch.float32 and ours_shift.shape == (560,)
    assert torch.equal(ours_shift, shift) and torch.equal(ours_scale, scale)
    assert torch.equal(ref[0], shift) and torch.equal(ref[1], scale)
    x = torch.randn(2, 9, 560, generator=torch.Generator().manual_seed(1))
    got = F.apply_cmvn(x, ours_shift, ours_scale)
    for b in range(2):
        torch.testing.assert_close(got[b], ref_cmvn(x[b].clone(), ref), rtol=0, atol=0)
    masked = F.apply_cmvn(x, ours_shift, ours_scale, lengths=torch.tensor([9, 4]))
    assert torch.equal(masked[0], got[0]) and torch.equal(masked[1, :4], got[1, :4])
    assert torch.all(masked[1, 4:] == 0)
    with pytest.raises(ValueError, match="560"):
        F.apply_cmvn(torch.zeros(1, 3, 80), ours_shift, ours_scale)


def test_random_cmvn_is_seeded():
    a, b = random_cmvn(5), random_cmvn(5)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], random_cmvn(6)[0])


# --------------------------------------------------------------------------- #
# (4) malformed am.mvn
# --------------------------------------------------------------------------- #
def _good_text(dim: int = 560) -> str:
    shift, scale = random_cmvn(0, dim)
    return am_mvn_text(shift, scale)


def _vals(n: int, v: str = "0.5") -> str:
    return " ".join([v] * n)


@pytest.mark.parametrize(
    "text, pattern",
    [
        pytest.param(_good_text().split("<Rescale>")[0], r"expected a <Rescale> component, found none",
                     id="no-rescale"),
        pytest.param("<Nnet>\n</Nnet>\n", r"expected a <AddShift> component, found none \(components present: </Nnet>, <Nnet>\)",
                     id="empty-nnet"),
        pytest.param(f"<AddShift> 560 560\n<LearnRateCoef> 0 [ {_vals(559)} ]\n"
                     f"<Rescale> 560 560\n<LearnRateCoef> 0 [ {_vals(560)} ]\n",
                     r"<AddShift> declares dimensions 560 560 but its vector has 559 values",
                     id="declared-vs-count"),
        pytest.param(f"<AddShift>\n<LearnRateCoef> 0 [ {_vals(80)} ]\n"
                     f"<Rescale>\n<LearnRateCoef> 0 [ {_vals(80)} ]\n",
                     r"expected 560 values in the <AddShift> vector .*found 80",
                     id="wrong-dim"),
        pytest.param(f"<AddShift> 560 560\n<LearnRateCoef> 0 [ {_vals(559)} abc ]\n"
                     f"<Rescale> 560 560\n<LearnRateCoef> 0 [ {_vals(560)} ]\n",
                     r"expected a number or '\]' in the <AddShift> vector \(value #560\), found 'abc' at line 2",
                     id="non-numeric"),
        pytest.param(f"<AddShift> 560 560\n<LearnRateCoef> 0 [ {_vals(560)} ]\n"
                     f"<Rescale> 560 560\n<LearnRateCoef> 0 [ {_vals(560)}\n",
                     r"expected '\]' closing the <Rescale> vector opened at line 4, found end of file after 560 values",
                     id="unterminated"),
        pytest.param(f"<AddShift> 560 560\n[ {_vals(560)} ]\n",
                     r"expected '<LearnRateCoef>' after <AddShift>, found '\[' at line 2",
                     id="no-learnratecoef"),
        pytest.param(f"<AddShift> 560 560\n<LearnRateCoef> [ {_vals(560)} ]\n",
                     r"expected a number after <LearnRateCoef> in <AddShift>, found '\[' at line 2",
                     id="no-coef-value"),
        pytest.param(f"<AddShift> 560 560\n<LearnRateCoef> 0 {_vals(560)} ]\n",
                     r"expected '\[' opening the <AddShift> vector, found '0.5' at line 2",
                     id="no-open-bracket"),
        pytest.param(f"<AddShift> 560\n<LearnRateCoef> 0 [ {_vals(560)} ]\n",
                     r"expected two dimensions '<AddShift> OUT IN', found only 560",
                     id="one-dim"),
        pytest.param(_good_text() + f"<AddShift> 560 560\n<LearnRateCoef> 0 [ {_vals(560)} ]\n",
                     r"expected one <AddShift> component, found a second one at line 9 \(first at line 4\)",
                     id="duplicate"),
        pytest.param(f"<AddShift> 560 560\n<LearnRateCoef> 0 [ {_vals(559)} nan ]\n"
                     f"<Rescale> 560 560\n<LearnRateCoef> 0 [ {_vals(560)} ]\n",
                     r"expected finite values in the <AddShift> vector, found 'nan'",
                     id="nan"),
    ],
)
def test_malformed_am_mvn(tmp_path, text, pattern):
    path = tmp_path / "am.mvn"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(F.CmvnFormatError, match=pattern) as info:
        F.load_cmvn(path)
    assert str(path) in str(info.value)
    with pytest.raises(F.CmvnFormatError):
        F.Frontend(path)


def test_malformed_am_mvn_binary_and_missing(tmp_path):
    path = tmp_path / "am.mvn"
    path.write_bytes(b"\x00B<Nnet> \xff\xfe\x00")
    with pytest.raises(F.CmvnFormatError, match="expected a UTF-8 text Kaldi-nnet am.mvn"):
        F.load_cmvn(path)
    with pytest.raises(FileNotFoundError):
        F.load_cmvn(tmp_path / "missing.mvn")


def test_load_cmvn_accepts_wrapped_vectors_and_other_dims(tmp_path):
    shift, scale = random_cmvn(3, 12)
    text = am_mvn_text(shift, scale).replace(" ]", "\n]").replace(
        f"{float(shift[5]):.9g} ", f"{float(shift[5]):.9g}\n")
    path = tmp_path / "am.mvn"
    path.write_text(text)
    got_shift, got_scale = F.load_cmvn(path, dim=None)
    assert np.array_equal(got_shift.numpy(), shift) and np.array_equal(got_scale.numpy(), scale)
    with pytest.raises(F.CmvnFormatError, match="expected 560 values"):
        F.load_cmvn(path)


@pytest.mark.parametrize("budget", [1, 7, 50, 1000])
def test_fbank_chunking_is_invisible(signals, monkeypatch, budget):
    waves, lengths = _batch([signals["en"][:20000], signals["tone"], signals["noise"][:5000]])
    want, want_frames = F.fbank(waves, lengths)
    monkeypatch.setattr(F, "_CHUNK_FRAMES_CPU", budget)
    got, got_frames = F.fbank(waves, lengths)
    assert got_frames.tolist() == want_frames.tolist()
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)

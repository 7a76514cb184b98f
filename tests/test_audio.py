import struct

import numpy as np
import pytest
import soundfile as sf

from mooer_data.audio import (
    EMPTY_FILE,
    MISSING_AUDIO,
    NOT_AUDIO,
    NOT_MONO,
    TRUNCATED,
    WRONG_SAMPLE_RATE,
    AudioInfo,
    AudioProblem,
    check_format,
    probe,
    probe_many,
    read_opus_head,
)


def tone(seconds: float, rate: int = 16000, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    mono = (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16)
    return mono if channels == 1 else np.stack([mono] * channels, axis=1)


@pytest.mark.parametrize("fmt, subtype, suffix", [("WAV", "PCM_16", "wav"), ("FLAC", "PCM_16", "flac")])
def test_header_parsers_agree_with_libsndfile(tmp_path, fmt, subtype, suffix):
    path = tmp_path / f"a.{suffix}"
    sf.write(path, tone(1.234), 16000, format=fmt, subtype=subtype)
    info = probe(path)
    reference = sf.info(path)
    assert isinstance(info, AudioInfo)
    assert (info.format, info.sample_rate, info.channels, info.frames) == (suffix, 16000, 1, reference.frames)
    assert info.duration == pytest.approx(1.234, abs=1e-4)


def test_wav_with_extra_chunks_before_data(tmp_path):
    path = tmp_path / "list.wav"
    pcm = tone(0.5).tobytes()
    fmt = struct.pack("<HHIIHH", 1, 1, 16000, 32000, 2, 16)
    junk = b"LIST" + struct.pack("<I", 6) + b"INFOab"
    body = b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt + junk + b"data" + struct.pack("<I", len(pcm)) + pcm
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    info = probe(path)
    assert isinstance(info, AudioInfo) and info.frames == 8000


def test_truncated_wav_is_detected(tmp_path):
    path = tmp_path / "cut.wav"
    sf.write(path, tone(1.0), 16000, subtype="PCM_16")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    result = probe(path)
    assert isinstance(result, AudioProblem) and result.category == TRUNCATED
    assert "declares" in result.message


def test_empty_missing_and_non_audio(tmp_path):
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "text.wav").write_text("this is not a wav file\n" * 10)
    assert probe(tmp_path / "empty.wav").category == EMPTY_FILE
    assert probe(tmp_path / "nothing.wav").category == MISSING_AUDIO
    assert probe(tmp_path / "text.wav").category == NOT_AUDIO


def test_other_containers_through_libsndfile_and_av(tmp_path):
    sf.write(tmp_path / "a.ogg", tone(1.0).astype(np.float32) / 32768, 16000, format="OGG", subtype="OPUS")
    sf.write(tmp_path / "b.mp3", tone(1.0).astype(np.float32) / 32768, 16000, format="MP3")
    opus, mp3 = probe(tmp_path / "a.ogg"), probe(tmp_path / "b.mp3")
    assert opus.format == "opus" and opus.duration == pytest.approx(1.0, abs=0.05)
    assert mp3.format == "mp3" and mp3.duration == pytest.approx(1.0, abs=0.1)
    head = read_opus_head(tmp_path / "a.ogg")
    assert (head.format, head.sample_rate, head.channels) == ("opus", 16000, 1)
    assert read_opus_head(tmp_path / "b.mp3").category == NOT_AUDIO


def test_m4a_through_av(tmp_path):
    import av  # a core dependency: m4a is read through PyAV
    path = tmp_path / "c.m4a"
    with av.open(str(path), "w", format="ipod") as container:
        stream = container.add_stream("aac", rate=16000)
        stream.layout = "mono"
        samples = tone(2.0).astype(np.float32)[None, :] / 32768
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
        frame.sample_rate = 16000
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    info = probe(path)
    assert isinstance(info, AudioInfo) and info.format == "m4a"
    assert info.duration == pytest.approx(2.0, abs=0.1)


def test_contract_checks():
    assert check_format(AudioInfo("wav", 8000, 1, 8000), "x.wav", 16000, mono=True).category == WRONG_SAMPLE_RATE
    assert check_format(AudioInfo("wav", 16000, 2, 8000), "x.wav", 16000, mono=True).category == NOT_MONO
    assert check_format(AudioInfo("wav", 16000, 1, 8000), "x.wav", 16000, mono=True) is None
    assert check_format(AudioInfo("wav", 44100, 2, 8000), "x.wav", None, mono=False) is None


def test_probe_many_in_processes_keeps_order(tmp_path):
    paths = []
    for index in range(40):
        path = tmp_path / f"{index:03d}.wav"
        sf.write(path, tone(0.1 + index / 100), 16000)
        paths.append(path)
    paths.insert(7, tmp_path / "missing.wav")
    serial = probe_many(paths, jobs=1)
    parallel = probe_many(paths, jobs=2, chunk_size=4)
    assert serial == parallel
    assert parallel[7].category == MISSING_AUDIO
    assert [round(r.duration, 2) for r in parallel if isinstance(r, AudioInfo)][:3] == [0.1, 0.11, 0.12]


@pytest.mark.parametrize("seconds", [1.0, 4.7])
def test_truncated_flac_is_detected_from_its_last_frame(tmp_path, seconds):
    # A cut that removes at least one whole frame is caught from the header probe; one
    # that falls inside the final frame (< 4096 samples lost) is left to the decoder.
    rng = np.random.default_rng(0)
    audio = (tone(seconds) + rng.normal(0, 300, int(seconds * 16000))).astype(np.int16)
    path = tmp_path / "speech.flac"
    sf.write(path, audio, 16000, format="FLAC")
    intact = probe(path)
    assert isinstance(intact, AudioInfo) and intact.frames == audio.size
    data = path.read_bytes()
    for keep in (0.5, 0.6):
        cut = tmp_path / f"cut{keep}.flac"
        cut.write_bytes(data[: int(len(data) * keep)])
        result = probe(cut)
        assert isinstance(result, AudioProblem) and result.category == TRUNCATED, keep
        assert f"declares {audio.size} samples" in result.message


def test_flac_at_other_rates_and_channels(tmp_path):
    for rate, channels in ((8000, 1), (44100, 2), (48000, 1)):
        path = tmp_path / f"{rate}-{channels}.flac"
        sf.write(path, tone(2.5, rate, channels), rate, format="FLAC")
        info = probe(path)
        assert (info.sample_rate, info.channels, info.frames) == (rate, channels, sf.info(path).frames)

"""Audio probing: format, rate, channels and duration from file headers, in parallel.

Durations come from headers, never from decoding: a corpus of a million utterances must
be probed in the time it takes to read a few kilobytes of each file. WAV and FLAC headers
are parsed here directly (several times cheaper than opening each file through
libsndfile); everything else goes through soundfile, and containers libsndfile cannot
read (m4a/mp4/aac) through PyAV.
"""

from __future__ import annotations

import os
import struct
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

# Reject categories shared by every recipe; the text after the colon says what was found.
EMPTY_FILE = "empty-file"
TRUNCATED = "truncated"
NOT_AUDIO = "not-audio"
MISSING_AUDIO = "missing-audio"
WRONG_SAMPLE_RATE = "wrong-sample-rate"
NOT_MONO = "not-mono"

_HEADER_BYTES = 4096
_WAV_FORMATS = {1: "pcm", 3: "float", 6: "alaw", 7: "ulaw", 0xFFFE: "extensible"}


@dataclass(frozen=True)
class AudioInfo:
    format: str  # container/codec family: wav, flac, ogg, opus, mp3, m4a
    sample_rate: int
    channels: int
    frames: int

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0


@dataclass(frozen=True)
class AudioProblem:
    category: str
    message: str

    @property
    def reason(self) -> str:
        return f"{self.category}: {self.message}"


class _Truncated(Exception):
    pass


def _parse_wav(header: bytes, file_size: int) -> AudioInfo | None:
    if len(header) < 12 or header[:4] != b"RIFF" or header[8:12] != b"WAVE":
        return None
    offset = 12
    channels = sample_rate = block_align = None
    while offset + 8 <= len(header):
        chunk_id = header[offset : offset + 4]
        (chunk_size,) = struct.unpack_from("<I", header, offset + 4)
        body = offset + 8
        if chunk_id == b"fmt ":
            if body + 16 > len(header):
                return None
            _fmt, channels, sample_rate, _rate, block_align, _bits = struct.unpack_from("<HHIIHH", header, body)
        elif chunk_id == b"data":
            if not (channels and sample_rate and block_align):
                return None  # data before fmt: unusual, let libsndfile decide
            available = file_size - body
            declared = available if chunk_size in (0, 0xFFFFFFFF) else chunk_size
            if declared > available:
                raise _Truncated(f"header declares {declared} bytes of audio, the file holds {max(available, 0)}")
            return AudioInfo("wav", sample_rate, channels, declared // block_align)
        offset = body + chunk_size + (chunk_size & 1)
    return None  # chunks beyond the first 4 KB (big LIST/JUNK chunks): fall back


def _parse_flac(header: bytes, handle, file_size: int) -> AudioInfo | None:
    if len(header) < 42 or header[:4] != b"fLaC" or (header[4] & 0x7F) != 0:
        return None
    info = header[8:42]
    max_block = int.from_bytes(info[2:4], "big")
    max_frame_bytes = int.from_bytes(info[7:10], "big")
    sample_rate = (info[10] << 12) | (info[11] << 4) | (info[12] >> 4)
    channels = ((info[12] >> 1) & 0x07) + 1
    frames = ((info[13] & 0x0F) << 32) | int.from_bytes(info[14:18], "big")
    if not sample_rate or not frames:
        return None  # streamed FLAC without a sample count: ask libsndfile
    # FLAC's header states the sample count up front, so a cut file still "probes" fine.
    # The last frame header in the file's tail tells where the audio really ends (a cut
    # inside the final frame, under one block of samples, is left for the decoder).
    tail_bytes = min(file_size, 2 * max_frame_bytes + 4096 if max_frame_bytes else 65536)
    handle.seek(file_size - tail_bytes)
    end = _flac_last_frame_end(handle.read(tail_bytes), max_block)
    if end is not None and end < frames:
        raise _Truncated(f"header declares {frames} samples, the last complete frame ends at sample {end}")
    return AudioInfo("flac", sample_rate, channels, frames)


def _crc8(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def _flac_frame_span(data: bytes, pos: int, fixed_block: int) -> tuple[int, int] | None:
    """(first sample, block size) of a FLAC frame header at ``pos``, if its CRC-8 holds."""
    if pos + 6 > len(data):
        return None
    variable = data[pos + 1] & 1
    size_code, rate_code = data[pos + 2] >> 4, data[pos + 2] & 0x0F
    if size_code == 0 or rate_code == 15 or data[pos + 3] & 1:
        return None
    cursor = pos + 4
    # The frame/sample number is UTF-8-style coded: the count of leading 1 bits of the
    # first byte is the byte length (0 of them: a single byte).
    lead = data[cursor]
    ones = 8 - ((~lead) & 0xFF).bit_length()
    length = 1 if ones == 0 else ones if 2 <= ones <= 7 else 0
    if length == 0 or cursor + length > len(data):
        return None
    number = lead & (0xFF >> (length + 1)) if length > 1 else lead
    for byte in data[cursor + 1 : cursor + length]:
        if byte & 0xC0 != 0x80:
            return None
        number = (number << 6) | (byte & 0x3F)
    cursor += length
    if size_code == 1:
        block = 192
    elif 2 <= size_code <= 5:
        block = 576 << (size_code - 2)
    elif size_code == 6:
        block, cursor = data[cursor] + 1 if cursor < len(data) else 0, cursor + 1
    elif size_code == 7:
        block, cursor = int.from_bytes(data[cursor : cursor + 2], "big") + 1, cursor + 2
    else:
        block = 256 << (size_code - 8)
    cursor += {12: 1, 13: 2, 14: 2}.get(rate_code, 0)
    if cursor >= len(data) or _crc8(data[pos:cursor]) != data[cursor]:
        return None
    first_sample = number if variable else number * fixed_block
    return first_sample, block


def _flac_last_frame_end(tail: bytes, fixed_block: int) -> int | None:
    pos = len(tail)
    while True:
        pos = max(tail.rfind(b"\xff\xf8", 0, pos), tail.rfind(b"\xff\xf9", 0, pos))
        if pos < 0:
            return None
        span = _flac_frame_span(tail, pos, fixed_block)
        if span is not None:
            return span[0] + span[1]


def _probe_soundfile(path: str) -> AudioInfo:
    import soundfile

    info = soundfile.info(path)
    container = info.format.lower()
    if container == "ogg" and info.subtype.upper() == "OPUS":
        container = "opus"
    return AudioInfo(container, int(info.samplerate), int(info.channels), int(info.frames))


def _probe_av(path: str) -> AudioInfo:
    import av

    with av.open(path) as container:
        streams = container.streams.audio
        if not streams:
            raise ValueError("no audio stream")
        stream = streams[0]
        rate = stream.rate or stream.codec_context.sample_rate
        channels = stream.codec_context.channels if hasattr(stream.codec_context, "channels") else stream.channels
        if stream.duration is not None and stream.time_base is not None:
            seconds = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            seconds = container.duration / 1_000_000
        else:
            raise ValueError("container reports no duration")
        return AudioInfo("m4a", int(rate), int(channels), int(round(seconds * rate)))


def _format_from_suffix(path: str) -> str:
    return os.path.splitext(path)[1].lower().lstrip(".")


def probe(path: str | os.PathLike) -> AudioInfo | AudioProblem:
    """Header facts of one audio file, or the reason it cannot be used."""
    path = os.fspath(path)
    try:
        file_size = os.stat(path).st_size
    except FileNotFoundError:
        return AudioProblem(MISSING_AUDIO, f"audio file {path} does not exist")
    except OSError as error:
        return AudioProblem(NOT_AUDIO, f"cannot stat {path}: {error.strerror}")
    if file_size == 0:
        return AudioProblem(EMPTY_FILE, f"{path} is 0 bytes")
    try:
        with open(path, "rb") as handle:
            header = handle.read(_HEADER_BYTES)
            info = _parse_wav(header, file_size) or _parse_flac(header, handle, file_size)
        if info is None:
            if _format_from_suffix(path) in ("m4a", "mp4", "aac"):
                info = _probe_av(path)
            else:
                info = _probe_soundfile(path)
    except _Truncated as error:
        return AudioProblem(TRUNCATED, f"{path}: {error}")
    except Exception as error:  # libsndfile/ffmpeg raise many types; all mean "unusable"
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        return AudioProblem(NOT_AUDIO, f"{path} is not readable audio ({message})")
    if info.frames <= 0:
        return AudioProblem(EMPTY_FILE, f"{path} holds no audio samples")
    return info


def check_format(info: AudioInfo, path: str, sample_rate: int | None, mono: bool) -> AudioProblem | None:
    """A corpus contract check: the rate and channel count the corpus promises."""
    if sample_rate is not None and info.sample_rate != sample_rate:
        return AudioProblem(WRONG_SAMPLE_RATE, f"{path}: expected {sample_rate} Hz, found {info.sample_rate} Hz")
    if mono and info.channels != 1:
        return AudioProblem(NOT_MONO, f"{path}: expected 1 channel, found {info.channels}")
    return None


def _probe_chunk(paths: Sequence[str]) -> list[AudioInfo | AudioProblem]:
    return [probe(p) for p in paths]


def probe_many(
    paths: Sequence[str | os.PathLike],
    jobs: int = 1,
    progress: Callable[[int], None] | None = None,
    chunk_size: int = 512,
) -> list[AudioInfo | AudioProblem]:
    """Probe many files; with ``jobs > 1`` in worker processes, results in input order."""
    paths = [os.fspath(p) for p in paths]
    if jobs <= 1 or len(paths) < 2 * chunk_size:
        results = []
        for start in range(0, len(paths), chunk_size):
            results.extend(_probe_chunk(paths[start : start + chunk_size]))
            if progress:
                progress(min(chunk_size, len(paths) - start))
        return results
    chunks = [paths[start : start + chunk_size] for start in range(0, len(paths), chunk_size)]
    results = []
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        for chunk_result in pool.map(_probe_chunk, chunks):
            results.extend(chunk_result)
            if progress:
                progress(len(chunk_result))
    return results


def relative_to_root(path: Path, root: Path) -> str:
    """A POSIX path relative to the corpus root, as stored in manifests."""
    text, prefix = os.fspath(path), os.fspath(root).rstrip(os.sep) + os.sep
    if text.startswith(prefix) and os.sep == "/" and "/." not in text:
        return text[len(prefix) :]  # the common case, a million times per corpus: no Path objects
    return Path(os.path.relpath(path, root)).as_posix()


def read_opus_head(path: str | os.PathLike) -> AudioInfo | AudioProblem:
    """Channels and input rate from an Ogg/Opus file's first page (no decoding, no
    seeking to the end): for corpora whose metadata already gives the duration."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as handle:
            header = handle.read(128)
    except FileNotFoundError:
        return AudioProblem(MISSING_AUDIO, f"audio file {path} does not exist")
    except OSError as error:
        return AudioProblem(NOT_AUDIO, f"cannot read {path}: {error.strerror}")
    if not header:
        return AudioProblem(EMPTY_FILE, f"{path} is 0 bytes")
    start = header.find(b"OpusHead")
    if not header.startswith(b"OggS") or start < 0 or start + 16 > len(header):
        return AudioProblem(NOT_AUDIO, f"{path} is not an Ogg/Opus file (no OggS page with an OpusHead)")
    channels = header[start + 9]
    (input_rate,) = struct.unpack_from("<I", header, start + 12)
    return AudioInfo("opus", input_rate or 48000, channels, 0)

"""Audio delivery: how a provider gets the bytes of an item.

URL-only services (Alibaba FileTrans) fetch the audio themselves, so the user serves the
corpus from a bucket or web server and gives its URL prefix; services that accept an
upload (OpenAI multipart, Tencent base64 up to 5 MB) get the bytes inline. Items that are
cuts of a longer recording are cut and sent as 16-bit WAV.
"""

from __future__ import annotations

import abc
import io
import urllib.parse
from pathlib import Path

import soundfile as sf

from .types import AudioItem, StagedAudio


def read_audio_bytes(audio: AudioItem) -> tuple[bytes, str, str]:
    """(bytes, mime type, file name) of the item: the file itself when it is whole,
    otherwise the cut as a WAV."""
    if audio.whole:
        data = Path(audio.path).read_bytes()
        suffix = Path(audio.path).suffix.lower().lstrip(".") or "wav"
        return data, f"audio/{'mpeg' if suffix == 'mp3' else suffix}", f"{audio.key}.{suffix}"
    with sf.SoundFile(str(audio.path)) as handle:
        handle.seek(int(round(audio.start * handle.samplerate)))
        samples = handle.read(int(round(audio.duration * handle.samplerate)), dtype="int16")
        rate = handle.samplerate
    buffer = io.BytesIO()
    sf.write(buffer, samples, rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue(), "audio/wav", f"{audio.key}.wav"


class Stager(abc.ABC):
    @abc.abstractmethod
    def stage(self, audio: AudioItem) -> StagedAudio: ...


class NoStager(Stager):
    """Local engines read the file themselves: nothing to stage."""

    def stage(self, audio: AudioItem) -> StagedAudio:
        return StagedAudio(filename=Path(audio.path).name)


class InlineStager(Stager):
    """The bytes travel in the request (base64 or multipart)."""

    def stage(self, audio: AudioItem) -> StagedAudio:
        data, mime, name = read_audio_bytes(audio)
        return StagedAudio(data=data, mime=mime, filename=name)


class UrlPrefixStager(Stager):
    """``<prefix>/<path relative to root>``: the user's bucket or web server serves the
    corpus tree under that prefix (cuts of long files cannot be staged this way)."""

    def __init__(self, prefix: str, root: Path):
        if not prefix.startswith(("http://", "https://")):
            raise ValueError(f"expected an http(s) URL prefix for the audio stager, found {prefix!r}")
        self.prefix = prefix.rstrip("/")
        self.root = Path(root)

    def stage(self, audio: AudioItem) -> StagedAudio:
        relative = Path(audio.path).resolve().relative_to(self.root.resolve()).as_posix()
        return StagedAudio(url=f"{self.prefix}/{urllib.parse.quote(relative)}", filename=Path(relative).name)

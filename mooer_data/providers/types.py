"""Value types shared by providers, the runner and the emulator."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class AudioItem:
    """One unit of ASR work: a recording (or a cut of one) to transcribe."""

    key: str  # the manifest id: the unit key in the ledger
    path: Path
    duration: float
    language: str  # "zh" or "en"
    sample_rate: int = 16000
    channels: int = 1
    format: str = "wav"
    start: float = 0.0  # offset into the file when the item is a cut of a longer one
    whole: bool = True  # the item is the whole file (its bytes can be sent as they are)


@dataclass(frozen=True)
class StagedAudio:
    """How the provider will receive the audio: a URL it can fetch, or inline bytes."""

    url: str | None = None
    data: bytes | None = None
    mime: str = "audio/wav"
    filename: str = "audio.wav"


@dataclass(frozen=True)
class Sentence:
    start: float  # seconds from the start of the submitted audio
    end: float
    text: str
    confidence: float | None = None


@dataclass(frozen=True)
class Transcript:
    sentences: tuple[Sentence, ...]
    language: str | None = None
    confidence: float | None = None
    confidence_kind: str = "none"  # none | provider | avg_logprob

    @property
    def text(self) -> str:
        return "".join(s.text for s in self.sentences) if self.language == "zh" else " ".join(s.text for s in self.sentences)

    @property
    def empty(self) -> bool:
        return not any(s.text.strip() for s in self.sentences)


class JobStatus(enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"


@dataclass(frozen=True)
class JobHandle:
    """A submitted job, persisted as-is in the ledger (JSON)."""

    provider: str
    job_id: str
    key: str
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Capabilities:
    kind: str  # "asr" or "mt"
    languages: tuple[str, ...] = ("zh", "en")
    sync: bool = False  # the result comes back with the submit
    delivery: tuple[str, ...] = ("url",)  # url | base64 | multipart
    max_bytes: int | None = None
    max_texts: int = 1  # MT: texts per request
    max_chars: int = 5000  # MT: characters per request
    rate: float = 10.0  # default requests per second
    concurrency: int = 8
    poll_interval: float = 1.0  # seconds between polls of one job
    price_per_hour: float = 0.0  # ASR, in the configured currency
    price_per_million_chars: float = 0.0  # MT

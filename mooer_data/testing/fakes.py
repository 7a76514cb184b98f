"""An in-process ASR provider with scripted failures, for testing the runner's policy
(retries, resubmits, fallbacks, circuit breaker, resume) without any network."""

from __future__ import annotations

import json
import threading
from collections import Counter

from ..providers.base import AsrProvider
from ..providers.errors import ProviderError
from ..providers.types import Capabilities, JobHandle, JobStatus, Sentence, Transcript

# item key -> list of exceptions (or None for success) consumed one per submit
SCRIPT: dict[str, list] = {}
CALLS: Counter = Counter()
_LOCK = threading.Lock()


class FakeAsr(AsrProvider):
    name = "fake"
    capabilities = Capabilities(kind="asr", sync=True, delivery=("local",), rate=0, concurrency=4, poll_interval=0.0, price_per_hour=1.0)

    @property
    def name(self) -> str:  # one class, registered under several names in tests
        return self.config.name

    async def submit(self, client, audio, staged) -> JobHandle:
        with _LOCK:
            CALLS[(self.config.name, audio.key)] += 1
            steps = SCRIPT.get(f"{self.config.name}:{audio.key}") or []
            step = steps.pop(0) if steps else None
        if isinstance(step, ProviderError):
            raise step
        text = f"{self.config.name} heard {audio.key}"
        return JobHandle(self.config.name, f"job-{audio.key}", audio.key, {"raw": json.dumps({"text": text, "duration": audio.duration})})

    async def poll(self, client, handle) -> JobStatus:
        return JobStatus.SUCCEEDED

    async def fetch(self, client, handle) -> str:
        return handle.extra["raw"]

    def parse(self, raw: str, audio) -> Transcript:
        data = json.loads(raw)
        return Transcript((Sentence(0.0, data["duration"], data["text"], 0.9),), "en", 0.9, "provider")


class PluginAsr(FakeAsr):
    """What a third-party package registers under the ``mooer_data.providers`` group."""

    name = "acme"

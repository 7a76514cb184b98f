"""The job runner: many items through a chain of providers, fast, safely and resumably.

For each item it walks the provider chain (``--provider`` then each ``--fallback``):
a transient failure is retried with jittered backoff that honours Retry-After
(tenacity); an ambiguous submit (timeout after the body was sent) is counted as a
possible double charge and resubmitted; a failed or expired job is resubmitted a few
times; an item-fatal error moves the item to the next provider; a provider-fatal error
(auth, quota, retired API) opens that provider's circuit breaker so every item moves on.
Every step is written to the ledger first, so a killed run resumes without paying twice
for any finished item.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Generic, Sequence, TypeVar

import httpx
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt

from .ledger import Ledger, UnitState
from .providers.errors import (
    AmbiguousSubmit,
    ItemFatal,
    JobFailed,
    MalformedResponse,
    ProviderError,
    ProviderFatal,
    TransientError,
)
from .providers.secrets import redact

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 6  # tenacity attempts per network call for transient errors
    resubmits: int = 3  # new jobs per item and provider after failed/expired/ambiguous jobs
    base_delay: float = 0.5
    max_delay: float = 30.0
    max_polls: int = 10_000


class RateLimiter:
    """Requests per second, evenly spaced (a provider's quota is a rate, not a burst)."""

    def __init__(self, rate: float | None):
        self.interval = 1.0 / rate if rate else 0.0
        self._next = 0.0
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        if not self.interval:
            return
        async with self._lock:
            now = time.monotonic()
            wait = self._next - now
            self._next = max(now, self._next) + self.interval
        if wait > 0:
            await asyncio.sleep(wait)


class CircuitBreaker:
    def __init__(self) -> None:
        self.open: dict[str, str] = {}  # provider -> reason

    def trip(self, provider: str, reason: str) -> None:
        self.open.setdefault(provider, reason)

    def is_open(self, provider: str) -> bool:
        return provider in self.open


def _wait(policy: RetryPolicy):
    """Prefer the provider's own hint (Retry-After); else exponential backoff, full jitter."""

    def wait(state) -> float:
        error = state.outcome.exception() if state.outcome else None
        hint = getattr(error, "retry_after", None)
        if hint is not None:
            return min(float(hint), policy.max_delay) + random.uniform(0, 0.05)
        return random.uniform(0, min(policy.max_delay, policy.base_delay * 2 ** (state.attempt_number - 1)))

    return wait


@dataclass
class Stats:
    done: int = 0
    failed: int = 0
    retries: int = 0
    ambiguous: int = 0
    cost: float = 0.0
    fallbacks: int = 0
    started: float = field(default_factory=time.monotonic)


@dataclass(frozen=True)
class Outcome(Generic[T]):
    item: str
    provider: str | None
    result: T | None
    error: str | None  # "category: message" when the item failed everywhere


class Runner:
    """Shared machinery for the ASR and MT drivers (labeling_asr / labeling_mt)."""

    def __init__(
        self,
        ledger: Ledger,
        task: str,
        policy: RetryPolicy = RetryPolicy(),
        progress: Callable[[Stats], None] | None = None,
        timeout: float = 30.0,
    ):
        self.ledger = ledger
        self.task = task
        self.policy = policy
        self.breaker = CircuitBreaker()
        self.stats = Stats()
        self.progress = progress
        self.client = httpx.AsyncClient(timeout=timeout, limits=httpx.Limits(max_connections=256, max_keepalive_connections=256))
        self.limiters: dict[str, RateLimiter] = {}
        self.semaphores: dict[str, asyncio.Semaphore] = {}
        self.previous: dict[tuple[str, str], UnitState] = ledger.states(task)

    def limiter(self, provider: str, rate: float | None) -> RateLimiter:
        return self.limiters.setdefault(provider, RateLimiter(rate))

    def semaphore(self, provider: str, concurrency: int) -> asyncio.Semaphore:
        return self.semaphores.setdefault(provider, asyncio.Semaphore(concurrency))

    async def call(self, make_call: Callable[[], Awaitable[T]], limiter: RateLimiter | None = None) -> T:
        """One provider request, retried while it fails transiently."""
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type(TransientError),
            stop=stop_after_attempt(self.policy.attempts),
            wait=_wait(self.policy),
            reraise=True,
        ):
            with attempt:
                if attempt.retry_state.attempt_number > 1:
                    self.stats.retries += 1
                if limiter is not None:
                    await limiter.acquire()
                return await make_call()
        raise AssertionError("unreachable: tenacity re-raises the last error")

    def report(self) -> None:
        if self.progress:
            self.progress(self.stats)

    async def close(self) -> None:
        await self.client.aclose()
        self.ledger.flush()


def classify_failure(error: BaseException) -> str:
    """``category: message`` for a reject row / ledger error (secrets redacted)."""
    if isinstance(error, ProviderError):
        category = {
            ItemFatal: "provider-rejected-item",
            ProviderFatal: "provider-unavailable",
            JobFailed: "job-failed",
            AmbiguousSubmit: "ambiguous-submit",
            MalformedResponse: "malformed-response",
            TransientError: "provider-transient",
        }
        for cls, name in category.items():
            if isinstance(error, cls):
                return redact(f"{name}: {error}")
        return redact(f"provider-error: {error}")
    return redact(f"internal-error: {type(error).__name__}: {error}")


async def run_items(items: Sequence[T], worker: Callable[[T], Awaitable[Outcome]], concurrency: int) -> list[Outcome]:
    """Run ``worker`` over items with at most ``concurrency`` in flight, keeping order."""
    results: list[Outcome | None] = [None] * len(items)
    queue: asyncio.Queue = asyncio.Queue()
    for index, item in enumerate(items):
        queue.put_nowait((index, item))

    async def consume() -> None:
        while True:
            try:
                index, item = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            results[index] = await worker(item)

    await asyncio.gather(*(consume() for _ in range(max(1, min(concurrency, len(items))))))
    return results  # type: ignore[return-value]


def dumps(value) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True)

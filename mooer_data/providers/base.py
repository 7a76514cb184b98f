"""The provider interface: ASR jobs (submit / poll / fetch) and MT calls (translate).

Request building and response parsing are pure methods, separate from the network call,
so they are tested on recorded payloads; the network goes through the shared
``httpx.AsyncClient`` the runner passes in. Sync services complete inside ``submit`` and
return a handle carrying the raw result, so the runner treats every ASR provider as
submit -> poll -> fetch.
"""

from __future__ import annotations

import abc
import os
from dataclasses import dataclass, field
from typing import ClassVar

import httpx

from .errors import AmbiguousSubmit, InvalidRequest, NetworkError, NotConfigured
from .secrets import Secret
from .types import AudioItem, Capabilities, JobHandle, JobStatus, StagedAudio, Transcript


# Failures that happen before the request is fully out: nothing reached the service.
NOT_DELIVERED = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.WriteError, httpx.WriteTimeout)


async def send(provider: str, what: str, request, *, billable: bool) -> httpx.Response:
    """Await an httpx request, mapping transport failures onto the error classes.

    Not delivered: NetworkError (safe to resend). Sent but unanswered (timeout, dropped
    connection): for a request the service bills, AmbiguousSubmit (it may have done, and
    billed, the work); for a read-only one, NetworkError.
    """
    try:
        return await request
    except NOT_DELIVERED as error:
        raise NetworkError(provider, f"{what}: request not delivered ({type(error).__name__}); nothing was sent") from None
    except httpx.UnsupportedProtocol:
        raise InvalidRequest(provider, f"{what}: expected an http(s) endpoint") from None
    except (httpx.TimeoutException, httpx.TransportError) as error:
        if billable:
            raise AmbiguousSubmit(provider, f"{what}: no answer after the request was sent ({type(error).__name__}); it may have been billed") from None
        raise NetworkError(provider, f"{what}: no answer ({type(error).__name__}) on a read-only call; safe to resend") from None


@dataclass
class ProviderConfig:
    """Everything a provider instance needs; built from env vars and the config file.

    ``endpoint`` overrides the service URL (the emulator, a proxy, a private cloud);
    ``credentials`` hold Secret values only; ``options`` are provider specific (engine,
    region, model, price overrides...).
    """

    name: str
    endpoint: str | None = None
    credentials: dict[str, Secret] = field(default_factory=dict)
    options: dict = field(default_factory=dict)
    timeout: float = 30.0

    def credential(self, key: str, env_names: tuple[str, ...]) -> Secret:
        if key in self.credentials and self.credentials[key]:
            return self.credentials[key]
        for env in env_names:
            if os.environ.get(env):
                return Secret(os.environ[env])
        raise NotConfigured(self.name, f"missing credential {key!r}: set {' or '.join(env_names)} or add it to the provider config file")

    def option(self, key: str, env_names: tuple[str, ...] = (), default=None):
        if key in self.options:
            return self.options[key]
        for env in env_names:
            if os.environ.get(env):
                return os.environ[env]
        return default


class Provider(abc.ABC):
    name: ClassVar[str]
    kind: ClassVar[str]  # "asr" or "mt"
    capabilities: ClassVar[Capabilities]
    # env vars that configure it, for `mooer-data providers list|check`
    credential_env: ClassVar[dict[str, tuple[str, ...]]] = {}
    default_endpoint: ClassVar[str | None] = None
    is_local: ClassVar[bool] = False

    def __init__(self, config: ProviderConfig):
        self.config = config

    @property
    def endpoint(self) -> str:
        env = os.environ.get(f"MOOER_{self.name.upper()}_ENDPOINT")
        return (self.config.endpoint or env or self.default_endpoint or "").rstrip("/")

    def check_configured(self) -> None:
        """Raise NotConfigured naming what is missing (no network)."""
        for key, envs in self.credential_env.items():
            self.config.credential(key, envs)

    def price(self, field_name: str) -> float:
        return float(self.config.options.get(field_name, getattr(self.capabilities, field_name)))


class AsrProvider(Provider):
    kind = "asr"

    @abc.abstractmethod
    async def submit(self, client: httpx.AsyncClient, audio: AudioItem, staged: StagedAudio) -> JobHandle: ...

    @abc.abstractmethod
    async def poll(self, client: httpx.AsyncClient, handle: JobHandle) -> JobStatus:
        """Never raises for "still running"; raises the mapped ProviderError on failure."""

    @abc.abstractmethod
    async def fetch(self, client: httpx.AsyncClient, handle: JobHandle) -> str:
        """The raw result payload (stored in the ledger before it is parsed)."""

    @abc.abstractmethod
    def parse(self, raw: str, audio: AudioItem) -> Transcript:
        """Pure: raw payload -> Transcript (MalformedResponse when it does not fit)."""

    def estimate_cost(self, audio: AudioItem) -> float:
        return audio.duration / 3600.0 * self.price("price_per_hour")


class MtProvider(Provider):
    kind = "mt"

    @abc.abstractmethod
    async def translate_raw(self, client: httpx.AsyncClient, texts: list[str], source: str, target: str) -> str:
        """One request for ``texts`` (already packed to the capabilities); the raw body."""

    @abc.abstractmethod
    def parse(self, raw: str, count: int) -> list[str]:
        """Pure: raw body -> exactly ``count`` translations in order (else MalformedResponse)."""

    def estimate_cost(self, texts: list[str]) -> float:
        return sum(len(t) for t in texts) / 1e6 * self.price("price_per_million_chars")

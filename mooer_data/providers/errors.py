"""The few error classes every provider failure is mapped onto (DESIGN.md, Providers).

The runner decides from the class alone: a TransientError is retried (same request),
AmbiguousSubmit is reconciled, JobFailed is resubmitted when ``retryable``, ItemFatal
fails the item with its reason, ProviderFatal opens the circuit breaker and moves the
provider's items to the fallback. Messages carry provider codes and texts, never
credentials.
"""

from __future__ import annotations


class ProviderError(Exception):
    def __init__(
        self,
        provider: str,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        retry_after: float | None = None,
        request_id: str | None = None,
    ):
        self.provider = provider
        self.code = code
        self.status = status
        self.retry_after = retry_after
        self.request_id = request_id
        self.message = message
        detail = ", ".join(p for p in (f"code {code}" if code else "", f"HTTP {status}" if status else "") if p)
        super().__init__(f"{provider}: {message}" + (f" ({detail})" if detail else ""))

    @property
    def category(self) -> str:
        return type(self).__name__


class TransientError(ProviderError):
    """Retry the same request (tenacity, honouring retry_after)."""


class RateLimited(TransientError):
    pass


class ServerError(TransientError):
    pass


class NetworkError(TransientError):
    """Connection failed before the request was sent: safe to resend."""


class MalformedResponse(TransientError):
    """Bad JSON or a missing field; retried a couple of times, then fails the item."""


class AmbiguousSubmit(ProviderError):
    """A submit timed out or was reset after its body was sent: the job may exist and
    may be billed. Never blindly retried; reconciled and counted as a possible double charge."""


class JobFailed(ProviderError):
    def __init__(self, provider: str, message: str, *, retryable: bool = False, **kwargs):
        super().__init__(provider, message, **kwargs)
        self.retryable = retryable


class JobExpired(JobFailed):
    """The provider no longer knows the job (TTL passed, unknown id): resubmit."""

    def __init__(self, provider: str, message: str, **kwargs):
        super().__init__(provider, message, retryable=True, **kwargs)


class ItemFatal(ProviderError):
    """This item cannot be done by this provider (bad audio, too large, rejected)."""


class ProviderFatal(ProviderError):
    """The provider cannot do anything now (auth, quota, retired API, our bug)."""


class AuthError(ProviderFatal):
    pass


class QuotaExhausted(ProviderFatal):
    pass


class ServiceDisabled(ProviderFatal):
    pass


class InvalidRequest(ProviderFatal):
    pass


class NotConfigured(ProviderFatal):
    """Credentials or a model directory are missing; the message says which."""

"""DeepL ``POST /v2/translate`` (reference/providers.md §3.3).

Auth is the header ``Authorization: DeepL-Auth-Key <key>`` (DeepL no longer takes the
key as a parameter). Free-plan keys end in ``:fx`` and are only accepted by
api-free.deepl.com, so the host follows the key unless an endpoint is configured
(provider config, or ``MOOER_DEEPL_ENDPOINT``).

DeepL speaks in HTTP statuses, not body codes: 429 and 529 are throttling, 456 is the
exhausted character quota (fatal: it lasts until the billing period ends), 403 a rejected
key, 413 a request too large.
"""

from __future__ import annotations

import email.utils
import json
import os
import time

import httpx

from .base import MtProvider, send
from .errors import (
    AuthError,
    InvalidRequest,
    ItemFatal,
    MalformedResponse,
    NotConfigured,
    ProviderError,
    QuotaExhausted,
    RateLimited,
    ServerError,
    ServiceDisabled,
)
from .secrets import redact
from .types import Capabilities

DEEPL_PRO_ENDPOINT = "https://api.deepl.com"
DEEPL_FREE_ENDPOINT = "https://api-free.deepl.com"
MAX_TEXTS = 50  # per request, documented
HTTP_QUOTA_EXCEEDED = 456
HTTP_HIGH_LOAD = 529


def deepl_language(code: str, *, target: bool, english_variant: str = "EN-US") -> str:
    """Toolkit codes ("zh", "en") as DeepL wants them: a bare "EN" target is deprecated
    (the official client rejects it), and a Chinese target is "ZH-HANS"."""
    upper = code.upper()
    if target and upper == "EN":
        return english_variant
    if target and upper == "ZH":
        return "ZH-HANS"
    return upper


def _retry_after(headers: httpx.Headers) -> float | None:
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


def classify_error(provider: str, response: httpx.Response) -> ProviderError | None:
    """The ProviderError for a non-2xx answer (None for 2xx)."""
    status = response.status_code
    if status < 300:
        return None
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and body.get("message"):
        message = str(body["message"]) + (f" ({body['detail']})" if body.get("detail") else "")
    else:
        message = response.text[:120] or response.reason_phrase
    message = redact(message)[:400]
    context = {"code": str(status), "status": status}
    if status in (429, HTTP_HIGH_LOAD):
        return RateLimited(provider, f"too many requests: {message}", retry_after=_retry_after(response.headers), **context)
    if status == HTTP_QUOTA_EXCEEDED:
        return QuotaExhausted(provider, f"character quota for this billing period exhausted: {message}", **context)
    if status in (401, 403):
        return AuthError(provider, f"auth key rejected: {message}", **context)
    if status in (413, 414):
        return ItemFatal(provider, f"request too large: {message}", **context)
    if status == 404:
        return ServiceDisabled(provider, f"endpoint not found: {message}", **context)
    if status >= 500:
        # A 5xx is the service failing whether or not its body is JSON (gateways send HTML).
        return ServerError(provider, f"server error: {message}", **context)
    return InvalidRequest(provider, f"request rejected: {message}", **context)


class DeepLTranslate(MtProvider):
    name = "deepl"
    # DeepL API Pro lists at USD 25 per million characters (plus USD 5.49 a month); the
    # free plan gives 500,000 characters a month. DeepL publishes no request rate, so stay gentle.
    capabilities = Capabilities(
        kind="mt",
        sync=True,
        delivery=(),
        max_texts=MAX_TEXTS,
        max_chars=30_000,  # the body limit is 128 KiB: 30k CJK characters are ~90 KB of UTF-8
        rate=5.0,
        concurrency=4,
        price_per_million_chars=25.0,
    )
    credential_env = {"auth_key": ("DEEPL_AUTH_KEY",)}
    default_endpoint = DEEPL_PRO_ENDPOINT

    @property
    def endpoint(self) -> str:
        configured = self.config.endpoint or os.environ.get("MOOER_DEEPL_ENDPOINT")
        if configured:
            return configured.rstrip("/")
        try:
            key = self.config.credential("auth_key", self.credential_env["auth_key"])
        except NotConfigured:
            return self.default_endpoint
        return DEEPL_FREE_ENDPOINT if key.reveal().endswith(":fx") else DEEPL_PRO_ENDPOINT

    def translate_request(self, texts: list[str], source: str, target: str) -> dict:
        body = {
            "text": list(texts),
            "source_lang": deepl_language(source, target=False),
            "target_lang": deepl_language(target, target=True, english_variant=self.config.options.get("english_variant", "EN-US")),
        }
        for option in ("formality", "glossary_id", "split_sentences", "model_type"):
            if self.config.options.get(option) is not None:
                body[option] = self.config.options[option]
        return body

    async def translate_raw(self, client: httpx.AsyncClient, texts: list[str], source: str, target: str) -> str:
        if not 1 <= len(texts) <= MAX_TEXTS:
            raise InvalidRequest(self.name, f"expected 1 to {MAX_TEXTS} texts per request, found {len(texts)}")
        key = self.config.credential("auth_key", self.credential_env["auth_key"])
        url = f"{self.endpoint}/v2/translate"
        # DeepL bills the characters of a translation it completed: an unanswered request may have been billed
        request = client.post(
            url,
            json=self.translate_request(texts, source, target),
            headers={"Authorization": f"DeepL-Auth-Key {key.reveal()}"},
            timeout=self.config.timeout,
        )
        response = await send(self.name, f"POST {url}", request, billable=True)
        error = classify_error(self.name, response)
        if error is not None:
            raise error
        return response.text

    def parse(self, raw: str, count: int) -> list[str]:
        try:
            data = json.loads(raw)
        except (TypeError, ValueError):
            raise MalformedResponse(self.name, f"expected a JSON body with 'translations', found {redact(raw or '')[:80]!r}") from None
        translations = data.get("translations") if isinstance(data, dict) else None
        if not isinstance(translations, list):
            raise MalformedResponse(self.name, f"expected a 'translations' list, found {redact(str(raw))[:80]!r}")
        if len(translations) != count:
            raise MalformedResponse(self.name, f"length mismatch: expected {count} translations, found {len(translations)}", code="length_mismatch")
        texts = [item.get("text") if isinstance(item, dict) else None for item in translations]
        if not all(isinstance(text, str) for text in texts):
            raise MalformedResponse(self.name, "expected every translation to carry a 'text' string")
        return texts

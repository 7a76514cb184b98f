"""OpenAI-compatible services: ``/v1/audio/transcriptions`` as an ASR provider and
``/v1/chat/completions`` as a translator (reference/providers.md §2.5, §3.5).

"Compatible" is meant literally: the same adapters talk to api.openai.com, to Azure-style
proxies and to local servers (vLLM, speaches, LocalAI). Those servers differ in what they
return (§0.7), so the transcription parser is lenient: ``segments`` may be missing,
``duration`` may be a string, and ``avg_logprob = -1.0`` is vLLM's placeholder for
"unknown", not a real score.

Where the service lives: the ``endpoint`` of the provider config, else
``MOOER_OPENAI_ENDPOINT``, else ``OPENAI_BASE_URL`` (the variable the official SDK reads;
a trailing ``/v1`` is accepted and stripped), else https://api.openai.com. The key comes
from ``OPENAI_API_KEY`` (a local server that checks no key still needs a dummy one).

Both kinds share the provider name "openai" and so one entry of the config file; the
model is therefore read from ``transcription_model`` (ASR) and ``chat_model`` (MT), with
``model`` accepted as a fallback when only one kind is used.

Errors are classified by HTTP status AND the envelope's ``error.code``/``error.type``:
429 means throttling (retry) for ``rate_limit_exceeded`` but an empty balance (fatal) for
``insufficient_quota``; 413 arrives typed ``server_error`` yet is the item's fault.
"""

from __future__ import annotations

import email.utils
import json
import math
import os
import re
import time

import httpx

from .base import AsrProvider, MtProvider, send
from .errors import (
    AuthError,
    InvalidRequest,
    ItemFatal,
    JobExpired,
    MalformedResponse,
    ProviderError,
    QuotaExhausted,
    RateLimited,
    ServerError,
    ServiceDisabled,
)
from .secrets import redact
from .types import AudioItem, Capabilities, JobHandle, JobStatus, Sentence, StagedAudio, Transcript

OPENAI_DEFAULT_ENDPOINT = "https://api.openai.com"
# The documented upload limit; beyond it the service answers 413, so fail before uploading.
MAX_UPLOAD_BYTES = 26_214_400
# vLLM fills avg_logprob / compression_ratio with this when it has no real value.
PLACEHOLDER_LOGPROB = -1.0
# verbose_json names the language ("chinese"); the toolkit speaks ISO 639-1.
LANGUAGE_CODES = {"chinese": "zh", "mandarin": "zh", "cantonese": "zh", "zh": "zh", "english": "en", "en": "en"}
LANGUAGE_NAMES = {"zh": "Chinese", "en": "English"}


# -- shared by both kinds: endpoint, auth, transport and error mapping ------------------


def retry_after_seconds(headers: httpx.Headers) -> float | None:
    """The server's wait hint, in the order the official SDK reads them
    (``retry-after-ms``, then ``retry-after`` as seconds or an HTTP date), falling back
    to ``x-ratelimit-reset-requests`` ("120ms", "1.2s", "1m30s")."""
    milliseconds = headers.get("retry-after-ms")
    if milliseconds:
        try:
            return max(0.0, float(milliseconds) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value:
        try:
            return max(0.0, float(value))
        except ValueError:
            try:
                return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
            except (TypeError, ValueError):
                pass
    reset = headers.get("x-ratelimit-reset-requests")
    if reset:
        units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
        parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", reset)
        if parts:
            return sum(float(number) * units[unit] for number, unit in parts)
    return None


def _error_envelope(response: httpx.Response) -> dict | None:
    """``{"message", "type", "param", "code"}`` when the body is OpenAI's error envelope;
    None for anything else (an HTML page from a proxy, an empty body)."""
    try:
        body = response.json()
    except ValueError:
        return None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return error
    if isinstance(error, str):  # some compatible servers send {"error": "text"}
        return {"message": error}
    return None


def classify_error(provider: str, response: httpx.Response) -> ProviderError | None:
    """The ProviderError for a non-2xx answer (None for 2xx)."""
    status = response.status_code
    if status < 300:
        return None
    envelope = _error_envelope(response)
    code = str((envelope or {}).get("code") or (envelope or {}).get("type") or "") or None
    kinds = {str((envelope or {}).get(k) or "") for k in ("code", "type")}
    message = redact(str((envelope or {}).get("message") or response.text[:200] or response.reason_phrase))[:400]
    context = {"code": code, "status": status, "request_id": response.headers.get("x-request-id")}
    if status == 429:
        if "insufficient_quota" in kinds:
            return QuotaExhausted(provider, f"quota exhausted: {message}", **context)
        return RateLimited(provider, f"rate limited: {message}", retry_after=retry_after_seconds(response.headers), **context)
    if status in (401, 403):
        return AuthError(provider, f"key rejected: {message}", **context)
    if status == 413:
        if envelope is None:
            # Not the provider speaking (an HTML page from a proxy): nothing says the item
            # is at fault, so retry a bounded number of times as a malformed answer.
            return MalformedResponse(provider, f"expected OpenAI's JSON error envelope with HTTP 413, found {_snippet(response.text)}", **context)
        return ItemFatal(provider, f"upload too large: {message}", **context)
    if status == 404:
        return ServiceDisabled(provider, f"model or endpoint not available: {message}", **context)
    if status in (408, 409) or status >= 500:
        return ServerError(provider, f"server error: {message}", **context)
    if status == 400:
        param = str((envelope or {}).get("param") or "")
        if "context_length_exceeded" in kinds or param == "file" or "invalid_file_format" in kinds or "audio_too_short" in kinds:
            return ItemFatal(provider, f"request rejected for this item: {message}", **context)
        if "billing_hard_limit_reached" in kinds:
            return QuotaExhausted(provider, f"billing limit reached: {message}", **context)
    if envelope is None:
        return MalformedResponse(provider, f"expected OpenAI's JSON error envelope with HTTP {status}, found {_snippet(response.text)}", **context)
    return InvalidRequest(provider, f"request rejected: {message}", **context)


def _snippet(text: str, limit: int = 80) -> str:
    text = redact(text or "")
    return repr(text[:limit] + ("..." if len(text) > limit else ""))


async def post_billable(provider: str, client: httpx.AsyncClient, url: str, timeout: float, **request) -> httpx.Response:
    """POST a request the service bills; transport failures become ProviderErrors.

    Failing to connect means nothing was sent (NetworkError, safe to resend). A timeout or
    a dropped connection once the body is out means the service may have done, and billed,
    the work (AmbiguousSubmit).
    """
    response = await send(provider, f"POST {url}", client.post(url, timeout=timeout, **request), billable=True)
    error = classify_error(provider, response)
    if error is not None:
        raise error
    return response


class _OpenAiCompatible:
    """Endpoint and auth shared by the transcription and chat adapters."""

    name = "openai"
    default_endpoint = OPENAI_DEFAULT_ENDPOINT
    credential_env = {"api_key": ("OPENAI_API_KEY",)}

    @property
    def endpoint(self) -> str:
        configured = self.config.endpoint or os.environ.get("MOOER_OPENAI_ENDPOINT") or os.environ.get("OPENAI_BASE_URL") or self.default_endpoint
        root = configured.rstrip("/")
        return root[: -len("/v1")] if root.endswith("/v1") else root

    def _auth_headers(self) -> dict[str, str]:
        key = self.config.credential("api_key", self.credential_env["api_key"])
        return {"Authorization": f"Bearer {key.reveal()}"}

    def _model(self, option: str, env: str, default: str) -> str:
        return str(self.config.option(option, (env,), None) or self.config.option("model", (), default))


# -- ASR -------------------------------------------------------------------------------


class OpenAiTranscription(_OpenAiCompatible, AsrProvider):
    """Whisper-style transcription: one synchronous multipart upload per item.

    The service keeps no job, so ``submit`` does the work and the handle carries the raw
    answer; ``poll`` says SUCCEEDED and ``fetch`` hands the raw answer back.
    """

    # whisper-1 lists at USD 0.006 per minute = USD 0.36 per hour (gpt-4o-transcribe the
    # same, gpt-4o-mini-transcribe half). Rate: tier-1 whisper-1 allows 500 requests/min.
    capabilities = Capabilities(
        kind="asr",
        sync=True,
        delivery=("multipart",),
        max_bytes=MAX_UPLOAD_BYTES,
        rate=8.0,
        concurrency=16,
        poll_interval=0.0,
        price_per_hour=0.36,
    )

    def transcription_form(self, audio: AudioItem) -> dict[str, str | list[str]]:
        """The non-file multipart fields: verbose_json with segment timestamps (speaches
        refuses verbose_json without ``timestamp_granularities[]``)."""
        form: dict[str, str | list[str]] = {
            "model": self._model("transcription_model", "MOOER_OPENAI_ASR_MODEL", "whisper-1"),
            "response_format": "verbose_json",
            "timestamp_granularities[]": ["segment"],
        }
        if audio.language in LANGUAGE_NAMES:
            form["language"] = audio.language
        for option in ("prompt", "temperature"):
            if self.config.options.get(option) is not None:
                form[option] = str(self.config.options[option])
        return form

    async def submit(self, client: httpx.AsyncClient, audio: AudioItem, staged: StagedAudio) -> JobHandle:
        if staged.data is None:
            raise InvalidRequest(self.name, f"expected inline audio bytes for a multipart upload, found a URL-staged item ({staged.url})")
        if len(staged.data) > MAX_UPLOAD_BYTES:
            raise ItemFatal(self.name, f"expected at most {MAX_UPLOAD_BYTES} bytes per upload, found {len(staged.data)}: split or re-encode the item", code="file_too_large")
        response = await post_billable(
            self.name,
            client,
            f"{self.endpoint}/v1/audio/transcriptions",
            self.config.timeout,
            headers=self._auth_headers(),
            data=self.transcription_form(audio),
            files={"file": (staged.filename, staged.data, staged.mime)},
        )
        raw = response.text
        self.parse(raw, audio)  # a truncated answer is retried now, not discovered at fetch
        job_id = response.headers.get("x-request-id") or f"sync:{audio.key}"
        return JobHandle(self.name, job_id, audio.key, {"raw": raw})

    async def poll(self, client: httpx.AsyncClient, handle: JobHandle) -> JobStatus:
        self._raw(handle)
        return JobStatus.SUCCEEDED

    async def fetch(self, client: httpx.AsyncClient, handle: JobHandle) -> str:
        return self._raw(handle)

    def _raw(self, handle: JobHandle) -> str:
        if "raw" not in handle.extra:
            raise JobExpired(self.name, f"expected the synchronous result inside the handle of {handle.key!r}, found none: resubmit")
        return handle.extra["raw"]

    def parse(self, raw: str, audio: AudioItem) -> Transcript:
        data = _json_object(self.name, raw, "a verbose_json transcription")
        text = data.get("text")
        if text is not None and not isinstance(text, str):
            raise MalformedResponse(self.name, f"expected 'text' to be a string, found {type(text).__name__}")
        language = LANGUAGE_CODES.get(str(data.get("language") or "").lower(), audio.language)
        segments = data.get("segments")
        if segments is None or (segments == [] and (text or "").strip()):
            # json-only servers (LocalAI, gpt-4o models) or no timestamps: one sentence.
            if not (text or "").strip():
                return Transcript((), language)
            end = _number(data.get("duration"))
            return Transcript((Sentence(0.0, end if end is not None else audio.duration, text.strip()),), language)
        if not isinstance(segments, list):
            raise MalformedResponse(self.name, f"expected 'segments' to be a list, found {type(segments).__name__}")
        sentences, logprobs = [], []
        for index, segment in enumerate(segments):
            if not isinstance(segment, dict):
                raise MalformedResponse(self.name, f"expected segment {index} to be an object, found {type(segment).__name__}")
            start, end = _number(segment.get("start")), _number(segment.get("end"))
            if start is None or end is None or not isinstance(segment.get("text"), str):
                raise MalformedResponse(self.name, f"expected segment {index} with numeric start/end and a text, found {_snippet(json.dumps(segment, ensure_ascii=False))}")
            logprob = _number(segment.get("avg_logprob"))
            real = logprob is not None and logprob != PLACEHOLDER_LOGPROB
            if segment["text"].strip():
                sentences.append(Sentence(start, end, segment["text"].strip(), math.exp(logprob) if real else None))
            if real:
                logprobs.append(logprob)
        if not logprobs:
            return Transcript(tuple(sentences), language)
        return Transcript(tuple(sentences), language, math.exp(sum(logprobs) / len(logprobs)), "avg_logprob")


def _number(value) -> float | None:
    """Seconds or a log-probability; vLLM sends some numbers as strings."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _json_object(provider: str, raw: str, what: str) -> dict:
    try:
        data = json.loads(raw)
    except (TypeError, ValueError):
        raise MalformedResponse(provider, f"expected {what} as JSON, found {_snippet(raw)}") from None
    if not isinstance(data, dict):
        raise MalformedResponse(provider, f"expected {what} as a JSON object, found {type(data).__name__}")
    return data


# -- MT --------------------------------------------------------------------------------

TRANSLATION_PROMPT = (
    "You are a professional translator. The user sends a JSON array of {source} strings. "
    "Translate every string into {target}, faithfully and completely, keeping the order. "
    "Answer with only a JSON array of {target} strings with exactly as many items as the input "
    "(one translation per input string), and nothing else: no comments, no numbering, no code fences."
)
_CODE_FENCE = re.compile(r"^\s*```[a-zA-Z]*\s*\n?(.*?)\n?\s*```\s*$", re.DOTALL)


class OpenAiChatTranslation(_OpenAiCompatible, MtProvider):
    """An instruction-following chat model as a batch translator: a JSON array in, a
    JSON array of the same length out (anything else fails the whole request)."""

    # gpt-4o-mini lists at USD 0.15 per million input tokens and USD 0.60 per million output
    # tokens; a Chinese character is about 1.2 input tokens and yields about 0.9 output
    # tokens of English, so about USD 0.72, plus the prompt's overhead: USD 0.80 per
    # million source characters. Rate: tier-1 allows 500 requests/min.
    capabilities = Capabilities(
        kind="mt",
        sync=True,
        delivery=(),
        max_texts=20,  # short batches keep a miscount cheap and the answer far from max tokens
        max_chars=2000,
        rate=8.0,
        concurrency=8,
        price_per_million_chars=0.80,
    )

    def chat_request(self, texts: list[str], source: str, target: str) -> dict:
        prompt = TRANSLATION_PROMPT.format(source=LANGUAGE_NAMES.get(source, source), target=LANGUAGE_NAMES.get(target, target))
        return {
            "model": self._model("chat_model", "MOOER_OPENAI_MT_MODEL", "gpt-4o-mini"),
            "temperature": 0,
            "messages": [
                {"role": "system", "content": prompt},
                {"role": "user", "content": json.dumps(texts, ensure_ascii=False)},
            ],
        }

    async def translate_raw(self, client: httpx.AsyncClient, texts: list[str], source: str, target: str) -> str:
        response = await post_billable(
            self.name,
            client,
            f"{self.endpoint}/v1/chat/completions",
            self.config.timeout,
            headers=self._auth_headers(),
            json=self.chat_request(texts, source, target),
        )
        return response.text

    def parse(self, raw: str, count: int) -> list[str]:
        data = _json_object(self.name, raw, "a chat completion")
        try:
            choice = data["choices"][0]
            message = choice["message"]
        except (KeyError, IndexError, TypeError):
            raise MalformedResponse(self.name, f"expected choices[0].message in the chat completion, found {_snippet(raw)}") from None
        finish = choice.get("finish_reason")
        if finish == "length":
            raise ItemFatal(self.name, f"the answer was cut at the token limit after {count} inputs: split the batch", code="finish_reason_length")
        if finish == "content_filter" or message.get("refusal"):
            raise ItemFatal(self.name, "the model refused or filtered this batch", code="content_filter")
        content = message.get("content")
        if not isinstance(content, str):
            raise MalformedResponse(self.name, f"expected a string in choices[0].message.content, found {type(content).__name__}")
        translations = _json_array(content)
        if translations is None:
            raise MalformedResponse(self.name, f"expected a JSON array of {count} strings in the answer, found {_snippet(content)}", code="not_a_json_array")
        if len(translations) != count:
            raise MalformedResponse(self.name, f"length mismatch: expected {count} translations, found {len(translations)}", code="length_mismatch")
        if not all(isinstance(item, str) for item in translations):
            raise MalformedResponse(self.name, f"expected {count} strings, found item types {sorted({type(i).__name__ for i in translations})}")
        return translations


def _json_array(content: str) -> list | None:
    """The JSON array in a model's answer: bare, inside a code fence, or the only list
    inside a JSON object (what json_object mode produces)."""
    fenced = _CODE_FENCE.match(content)
    text = (fenced.group(1) if fenced else content).strip()
    try:
        value = json.loads(text)
    except ValueError:
        start, end = text.find("["), text.rfind("]")
        if start < 0 or end <= start:
            return None
        try:
            value = json.loads(text[start : end + 1])  # a sentence of chatter around it
        except ValueError:
            return None
    if isinstance(value, dict):
        lists = [v for v in value.values() if isinstance(v, list)]
        value = lists[0] if len(lists) == 1 else None
    return value if isinstance(value, list) else None

"""Tencent Cloud: recording-file ASR (CreateRecTask + DescribeTaskStatus) and TMT
TextTranslate, over httpx with TC3-HMAC-SHA256 signing (reference/providers.md §1, §2.2,
§3.1).

Tencent answers most failures with HTTP 200 and ``{"Response": {"Error": {"Code",
"Message"}, "RequestId"}}``, so every call is classified by the error code
(:func:`classify_error`), and a non-200 status means the gateway itself failed.
"""

from __future__ import annotations

import base64
import json
import re
import time

import httpx

from .base import AsrProvider, MtProvider, Provider, ProviderConfig, send
from .errors import (
    AuthError,
    InvalidRequest,
    ItemFatal,
    JobExpired,
    JobFailed,
    MalformedResponse,
    ProviderError,
    QuotaExhausted,
    RateLimited,
    ServerError,
    ServiceDisabled,
)
from .secrets import redact
from .tc3 import sign_headers
from .types import AudioItem, Capabilities, JobHandle, JobStatus, Sentence, StagedAudio, Transcript

PROVIDER = "tencent"
CREDENTIAL_ENV = {"secret_id": ("TENCENTCLOUD_SECRET_ID",), "secret_key": ("TENCENTCLOUD_SECRET_KEY",)}
REGION_ENV = ("MOOER_TENCENT_REGION", "TENCENTCLOUD_REGION")
MAX_INLINE_BYTES = 5 * 1024 * 1024  # CreateRecTask base64 Data limit ("5MB"), counted on the raw bytes
NO_HUMAN_VOICE = "InvalidParameterValue.NoHumanVoice"

# -- error code table (providers.md §2.2, §3.1 and the fault table) ----------------------
# Exact codes first, then prefixes (longest first), so a specific subcode such as
# LimitExceeded.LimitedAccessFrequency is never swallowed by its family.
_EXACT: dict[str, tuple[type[ProviderError], dict]] = {
    "RequestLimitExceeded": (RateLimited, {}),
    "LimitExceeded.LimitedAccessFrequency": (RateLimited, {}),  # TMT's per-second throttle
    "FailedOperation.RequestAiLabErr": (ServerError, {}),  # "internal request error, retry later"
    "FailedOperation.UserHasNoAmount": (QuotaExhausted, {}),
    "FailedOperation.UserHasNoFreeAmount": (QuotaExhausted, {}),
    "FailedOperation.NoFreeAmount": (QuotaExhausted, {}),
    "FailedOperation.ServiceIsolate": (QuotaExhausted, {}),  # account in arrears
    "FailedOperation.StopUsing": (QuotaExhausted, {}),
    "FailedOperation.SubmissionLimitReached": (QuotaExhausted, {}),  # TMT daily cap
    "LimitExceeded": (QuotaExhausted, {}),  # the bare code is the account quota, not a throttle
    "FailedOperation.UserNotRegistered": (ServiceDisabled, {}),
    "FailedOperation.NoSuchTask": (JobExpired, {}),  # TaskIds live 24 h
    "ActionOffline": (ServiceDisabled, {}),
    "UnauthorizedOperation.ActionNotFound": (ServiceDisabled, {}),
    "InvalidAction": (ServiceDisabled, {}),
    "NoSuchVersion": (ServiceDisabled, {}),
    "FailedOperation.ErrorDownFile": (JobFailed, {"retryable": True}),  # resubmit the task
    "FailedOperation.ErrorRecognize": (JobFailed, {"retryable": True}),
    "InvalidParameterValue.ErrorInvalidUrl": (ItemFatal, {}),
    "InvalidParameterValue.ErrorInvalidVoiceFormat": (ItemFatal, {}),
    "InvalidParameterValue.ErrorInvalidVoicedata": (ItemFatal, {}),
    "InvalidParameterValue.ErrorVoicedataTooLong": (ItemFatal, {}),
    "InvalidParameter.ErrorContentlength": (ItemFatal, {}),
    "InvalidParameter.FileEncode": (ItemFatal, {}),
    "UnsupportedOperation.TextTooLong": (ItemFatal, {}),  # the packer should have split it
}
_PREFIXES: tuple[tuple[str, type[ProviderError]], ...] = (
    ("RequestLimitExceeded.", RateLimited),
    ("InternalError", ServerError),
    ("AuthFailure", AuthError),
    ("UnauthorizedOperation", AuthError),  # CAM policy refuses this SecretId the action
    ("UnsupportedOperation.", InvalidRequest),  # e.g. an unsupported language pair: our config
    ("InvalidParameter", InvalidRequest),  # InvalidParameter*, InvalidParameterValue*: our bug
    ("MissingParameter", InvalidRequest),
    ("UnknownParameter", InvalidRequest),
)


def classify_error(code: str, message: str, *, status: int | None = 200, request_id: str | None = None, retry_after: float | None = None) -> ProviderError:
    """The error class for one ``Response.Error`` (never raises)."""
    kwargs = {"code": code, "status": status, "request_id": request_id}
    text = redact(message or "no message")
    if code in _EXACT:
        cls, extra = _EXACT[code]
    else:
        cls, extra = next(((c, {}) for prefix, c in _PREFIXES if code.startswith(prefix)), (ServerError, {}))
        if cls is ServerError and not code.startswith("InternalError"):
            text = f"unrecognised error code, treated as transient: {text}"
    if cls is RateLimited:
        kwargs["retry_after"] = retry_after
    return cls(PROVIDER, text, **extra, **kwargs)


def _retry_after(headers: httpx.Headers) -> float | None:
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value:
            try:
                return max(0.0, float(value) / scale)
            except ValueError:
                continue  # an HTTP date: Tencent never sends one, so no date parsing here
    return None


def load_envelope(raw: str, *, action: str, status: int | None = 200) -> dict:
    """``Response`` of a raw body, or MalformedResponse saying what did not fit."""
    try:
        payload = json.loads(raw)
    except ValueError:
        raise MalformedResponse(PROVIDER, f"{action}: expected a JSON body, found {len(raw)} characters that do not parse", status=status) from None
    response = payload.get("Response") if isinstance(payload, dict) else None
    if not isinstance(response, dict):
        raise MalformedResponse(PROVIDER, f"{action}: expected an object with a 'Response' object, found {type(payload).__name__} without one", status=status)
    return response


def raise_for_error(response: dict, *, action: str, status: int | None = 200, retry_after: float | None = None) -> None:
    error = response.get("Error")
    if error is None:
        return
    if not isinstance(error, dict) or not isinstance(error.get("Code"), str):
        raise MalformedResponse(PROVIDER, f"{action}: expected Error {{Code, Message}}, found {error!r:.80}", status=status)
    raise classify_error(error["Code"], f"{action}: {error.get('Message')}", status=status, request_id=response.get("RequestId"), retry_after=retry_after)


class _Tc3Service(Provider):
    """One signed POST to an API 3.0 service, with transport failures classified."""

    service: str = ""
    version: str = ""
    endpoint_option: str = ""  # per-service override: ASR and TMT share the "tencent" config

    def __init__(self, config: ProviderConfig):
        super().__init__(config)
        self.clock = time.time  # tests skew it to provoke AuthFailure.SignatureExpire

    @property
    def endpoint(self) -> str:
        override = self.config.options.get(self.endpoint_option)
        return str(override).rstrip("/") if override else super().endpoint

    @property
    def region(self) -> str | None:
        return self.config.option("region", REGION_ENV)

    async def call(self, client: httpx.AsyncClient, action: str, params: dict, *, billable: bool, not_errors: tuple[str, ...] = ()) -> tuple[str, dict]:
        """(raw body, its ``Response``) of a 200 answer; Error envelopes raise their mapped
        class, except the codes in ``not_errors`` (NoHumanVoice is an empty result)."""
        secret_id = self.config.credential("secret_id", CREDENTIAL_ENV["secret_id"])
        secret_key = self.config.credential("secret_key", CREDENTIAL_ENV["secret_key"])
        url = self.endpoint + "/"
        parsed = httpx.URL(url)
        body = json.dumps(params, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        headers = sign_headers(
            secret_id=secret_id.reveal(),
            secret_key=secret_key.reveal(),
            service=self.service,
            action=action,
            version=self.version,
            host=parsed.netloc.decode("ascii"),
            uri=parsed.raw_path.decode("ascii").split("?")[0] or "/",  # the path as sent, as the gateway sees it
            body=body,
            timestamp=int(self.clock()),
            region=self.region,
        )
        reply = await send(PROVIDER, action, client.post(url, content=body, headers=headers, timeout=self.config.timeout), billable=billable)
        raw = reply.text
        if reply.status_code != 200:
            # The gateway answers business errors with 200; anything else is the gateway itself failing.
            raise ServerError(PROVIDER, f"{action}: expected HTTP 200, found {reply.status_code}", status=reply.status_code, retry_after=_retry_after(reply.headers))
        response = load_envelope(raw, action=action)
        error = response.get("Error")
        if error is not None and not (isinstance(error, dict) and error.get("Code") in not_errors):
            raise_for_error(response, action=action, retry_after=_retry_after(reply.headers))
        return raw, response


class TencentAsr(_Tc3Service, AsrProvider):
    """Recording-file recognition: CreateRecTask, then poll DescribeTaskStatus (valid 24 h)."""

    name = PROVIDER
    service = "asr"
    version = "2019-06-14"
    endpoint_option = "asr_endpoint"
    default_endpoint = "https://asr.tencentcloudapi.com"
    credential_env = CREDENTIAL_ENV
    capabilities = Capabilities(
        kind="asr",
        languages=("zh", "en"),
        sync=False,
        delivery=("url", "base64"),
        max_bytes=MAX_INLINE_BYTES,  # for base64 delivery; a URL may point at up to 1 GB / 5 h
        rate=20.0,  # CreateRecTask 20/s (DescribeTaskStatus allows 50/s)
        concurrency=20,
        poll_interval=1.0,  # short items finish in seconds; 1 h of audio in 1-3 min
        # USD per audio hour: tencentcloud.com list price, recording file recognition, first
        # pay-as-you-go tier (0-299 h/day; large-model engines 1.8). Override with price_per_hour.
        price_per_hour=1.0,
    )

    # -- request building (pure) -------------------------------------------------------
    def engine_for(self, audio: AudioItem) -> str:
        option = self.config.option("engine", ("MOOER_TENCENT_ENGINE",))
        if isinstance(option, dict):
            option = option.get(audio.language)
        if option:
            return str(option)
        if audio.language not in ("zh", "en"):
            raise InvalidRequest(PROVIDER, f"no default engine for language {audio.language!r}: expected zh or en, or set the 'engine' option")
        rate = "8k" if audio.sample_rate <= 8000 else "16k"  # telephone audio has its own engines
        return f"{rate}_{audio.language}"

    def create_params(self, audio: AudioItem, staged: StagedAudio) -> dict:
        params = {
            "EngineModelType": self.engine_for(audio),
            "ChannelNum": 1,  # 16k engines take mono only
            # 2 = sentence detail with word timestamps and punctuation; engines that only
            # allow 0 (16k_multi_lang...) need the option, and parse falls back to Result.
            "ResTextFormat": int(self.config.options.get("res_text_format", 2)),
        }
        if staged.url:
            params.update(SourceType=0, Url=staged.url)
        elif staged.data is not None:
            if len(staged.data) > MAX_INLINE_BYTES:
                raise ItemFatal(
                    PROVIDER,
                    f"{audio.key}: expected at most {MAX_INLINE_BYTES} bytes for inline (base64) audio, found {len(staged.data)}; "
                    "use a URL stager (--audio-url-prefix) for large files",
                    code="InvalidParameterValue.ErrorVoicedataTooLong",
                )
            params.update(SourceType=1, Data=base64.b64encode(staged.data).decode("ascii"), DataLen=len(staged.data))
        else:
            raise InvalidRequest(PROVIDER, f"{audio.key}: expected staged audio with a url or data, found neither")
        return params

    # -- network -----------------------------------------------------------------------
    async def submit(self, client: httpx.AsyncClient, audio: AudioItem, staged: StagedAudio) -> JobHandle:
        raw, response = await self.call(client, "CreateRecTask", self.create_params(audio, staged), billable=True, not_errors=(NO_HUMAN_VOICE,))
        if response.get("Error") is not None:  # NoHumanVoice: the service checked up front; an empty result
            return JobHandle(PROVIDER, "no-human-voice", audio.key, {"raw": raw})
        data = response.get("Data")
        task_id = data.get("TaskId") if isinstance(data, dict) else None
        if not isinstance(task_id, int) or isinstance(task_id, bool):
            raise MalformedResponse(PROVIDER, f"CreateRecTask: expected Response.Data.TaskId as an integer, found {task_id!r:.40}", request_id=response.get("RequestId"))
        return JobHandle(PROVIDER, str(task_id), audio.key, {"request_id": response.get("RequestId")})

    async def _describe(self, client: httpx.AsyncClient, handle: JobHandle) -> tuple[str, dict]:
        raw, response = await self.call(client, "DescribeTaskStatus", {"TaskId": int(handle.job_id)}, billable=False)
        return raw, task_data(response, request_id=response.get("RequestId"))

    async def poll(self, client: httpx.AsyncClient, handle: JobHandle) -> JobStatus:
        if "raw" in handle.extra:
            return JobStatus.SUCCEEDED
        _, data = await self._describe(client, handle)
        return job_status(data, handle.job_id)

    async def fetch(self, client: httpx.AsyncClient, handle: JobHandle) -> str:
        if "raw" in handle.extra:
            return handle.extra["raw"]
        raw, data = await self._describe(client, handle)
        if job_status(data, handle.job_id) is not JobStatus.SUCCEEDED:
            raise MalformedResponse(PROVIDER, f"task {handle.job_id}: expected Status 2 (success) when fetching, found {data.get('Status')!r}")
        return raw

    # -- parsing (pure) ----------------------------------------------------------------
    def parse(self, raw: str, audio: AudioItem) -> Transcript:
        response = load_envelope(raw, action="DescribeTaskStatus")
        error = response.get("Error")
        if isinstance(error, dict) and error.get("Code") == NO_HUMAN_VOICE:
            return Transcript((), language=audio.language)
        raise_for_error(response, action="DescribeTaskStatus")
        data = task_data(response, request_id=response.get("RequestId"))
        if job_status(data, str(data.get("TaskId"))) is not JobStatus.SUCCEEDED:
            raise MalformedResponse(PROVIDER, f"expected a finished task (Status 2), found Status {data.get('Status')!r}")
        detail = data.get("ResultDetail")
        if detail is None:
            return Transcript(_sentences_from_result(data.get("Result") or ""), language=audio.language)
        if not isinstance(detail, list):
            raise MalformedResponse(PROVIDER, f"expected ResultDetail as a list, found {type(detail).__name__}")
        return Transcript(tuple(_sentence(entry, index) for index, entry in enumerate(detail)), language=audio.language)


def task_data(response: dict, *, request_id: str | None = None) -> dict:
    data = response.get("Data")
    if not isinstance(data, dict) or "Status" not in data:
        raise MalformedResponse(PROVIDER, f"expected Response.Data with a Status, found {type(data).__name__ if data is not None else 'no Data'}", request_id=request_id)
    return data


def job_status(data: dict, task_id: str) -> JobStatus:
    status = data.get("Status")
    if status == 0:
        return JobStatus.QUEUED
    if status == 1:
        return JobStatus.RUNNING
    if status == 2:
        return JobStatus.SUCCEEDED
    if status == 3:
        # Only free text comes with a failure; the reference says resubmit once, then fall back.
        message = redact(str(data.get("ErrorMsg") or "no ErrorMsg"))
        raise JobFailed(PROVIDER, f"task {task_id} failed (Status 3): {message}", retryable=True)
    raise MalformedResponse(PROVIDER, f"task {task_id}: expected Status 0-3, found {status!r}")


def _milliseconds(entry: dict, field: str, index: int) -> float:
    value = entry.get(field)
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise MalformedResponse(PROVIDER, f"ResultDetail[{index}].{field}: expected milliseconds as a number, found {value!r:.40}")
    return value / 1000.0


def _sentence(entry, index: int) -> Sentence:
    if not isinstance(entry, dict):
        raise MalformedResponse(PROVIDER, f"ResultDetail[{index}]: expected an object, found {type(entry).__name__}")
    text = entry.get("FinalSentence")
    if text is not None and not isinstance(text, str):
        raise MalformedResponse(PROVIDER, f"ResultDetail[{index}].FinalSentence: expected text, found {type(text).__name__}")
    # Tencent reports no confidence of any kind (SentenceDetail has no such field).
    return Sentence(_milliseconds(entry, "StartMs", index), _milliseconds(entry, "EndMs", index), (text or "").strip())


# "[0:1.020,0:3.460]  text" (minutes:seconds, with an hours field on long audio)
_RESULT_LINE = re.compile(r"^\[(?P<start>[\d:.]+),(?P<end>[\d:.]+)\]\s*(?P<text>.*)$")


def _clock_seconds(value: str) -> float:
    seconds = 0.0
    for part in value.split(":"):
        seconds = seconds * 60 + float(part)
    return seconds


def _sentences_from_result(result: str) -> tuple[Sentence, ...]:
    """The flat ``Result`` string, for engines that only give ResTextFormat 0 (no detail)."""
    sentences = []
    for line in filter(None, (line.strip() for line in result.splitlines())):
        match = _RESULT_LINE.match(line)
        if not match:
            raise MalformedResponse(PROVIDER, f"Result: expected lines like '[0:1.020,0:3.460]  text', found {line[:40]!r}")
        try:
            start, end = _clock_seconds(match["start"]), _clock_seconds(match["end"])
        except ValueError:
            raise MalformedResponse(PROVIDER, f"Result: expected [m:ss.fff,m:ss.fff] times, found {line[:40]!r}") from None
        sentences.append(Sentence(start, end, match["text"].strip()))
    return tuple(sentences)


class TencentTmt(_Tc3Service, MtProvider):
    """TMT TextTranslate: one text a request. The Python SDK dropped this action (3.1.129)
    but the HTTP API is still documented; the call is signed and sent here directly."""

    name = PROVIDER
    service = "tmt"
    version = "2018-03-21"
    endpoint_option = "tmt_endpoint"
    default_endpoint = "https://tmt.tencentcloudapi.com"
    default_region = "ap-guangzhou"  # TMT requires X-TC-Region
    credential_env = CREDENTIAL_ENV
    capabilities = Capabilities(
        kind="mt",
        languages=("zh", "en"),
        sync=True,
        delivery=(),
        max_texts=1,
        max_chars=2000,  # the documented request limit; the SDK docstring says < 6000
        rate=5.0,  # 5 requests/s per API by default
        concurrency=5,
        price_per_million_chars=58.0,  # CNY (cloud.tencent.com list price) after the free 5M characters a month
    )

    @property
    def region(self) -> str:
        return self.config.option("region", REGION_ENV, self.default_region)

    def translate_params(self, texts: list[str], source: str, target: str) -> dict:
        if len(texts) != 1:
            raise InvalidRequest(PROVIDER, f"TextTranslate takes exactly 1 text a request (max_texts 1), found {len(texts)}")
        return {"SourceText": texts[0], "Source": source, "Target": target, "ProjectId": 0}

    async def translate_raw(self, client: httpx.AsyncClient, texts: list[str], source: str, target: str) -> str:
        raw, _ = await self.call(client, "TextTranslate", self.translate_params(texts, source, target), billable=True)
        return raw

    def parse(self, raw: str, count: int) -> list[str]:
        response = load_envelope(raw, action="TextTranslate")
        raise_for_error(response, action="TextTranslate")
        text = response.get("TargetText")
        if not isinstance(text, str):
            raise MalformedResponse(PROVIDER, f"TextTranslate: expected Response.TargetText as text, found {type(text).__name__}", request_id=response.get("RequestId"))
        if count != 1:
            raise MalformedResponse(PROVIDER, f"TextTranslate: expected {count} translations to be asked for one at a time, found 1 TargetText")
        return [text]

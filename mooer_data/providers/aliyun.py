"""Alibaba Cloud Intelligent Speech Interaction, recording file recognition (FileTrans).

Two POP RPC calls signed with HMAC-SHA1 (:mod:`.pop_signature`): ``SubmitTask`` (POST, a
``Task`` JSON string in the form body) and ``GetTaskResult`` (GET, ``TaskId``). The
service downloads the audio itself, so it only takes a URL (``file_link``): run it with a
URL stager. Task and business outcomes come back as ``StatusText``/``StatusCode`` inside
an HTTP 200 body; the POP gateway answers throttling and signature problems with a non-200
``{RequestId, HostId, Code, Message}``. Reference: providers.md §1 and §2.1.
"""

from __future__ import annotations

import json
import urllib.parse

import httpx

from . import pop_signature
from .base import AsrProvider, send
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
)
from .secrets import redact
from .types import AudioItem, Capabilities, JobHandle, JobStatus, Sentence, StagedAudio, Transcript

API_VERSION = "2018-08-17"
DEFAULT_REGION = "cn-shanghai"

# GetTaskResult StatusText values that mean "keep polling".
IN_PROGRESS = {"QUEUEING": JobStatus.QUEUED, "RUNNING": JobStatus.RUNNING}
# Terminal successes; all but SUCCESS carry no usable text (no speech found). The doc
# spells 41050029 "ASR_RESPONSE_HAVE_HO_WORDS"; accept the sensible spelling too.
EMPTY_SUCCESS = {"SUCCESS_WITH_NO_VALID_FRAGMENT", "ASR_RESPONSE_HAVE_NO_WORDS", "ASR_RESPONSE_HAVE_HO_WORDS"}
FINISHED = {"SUCCESS"} | EMPTY_SUCCESS

# StatusText of a failed submit or task -> the error it becomes (providers.md §2.1 table).
# FileTrans retries of a task are a resubmit, so "retry" means JobFailed(retryable=True).
STATUS_ERRORS: dict[str, tuple[type[ProviderError], bool]] = {
    "USER_BIZDURATION_QUOTA_EXCEED": (QuotaExhausted, False),  # free tier's 2 h/day
    "FILE_DOWNLOAD_FAILED": (JobFailed, True),  # often a passing hiccup of the file host
    "FILE_SERVER_ERROR": (JobFailed, True),
    "FILE_CHECK_FAILED": (ItemFatal, False),
    "FILE_TOO_LARGE": (ItemFatal, False),
    "FILE_NORMALIZE_FAILED": (ItemFatal, False),
    "FILE_PARSE_FAILED": (ItemFatal, False),
    "MKV_PARSE_FAILED": (ItemFatal, False),
    "UNSUPPORTED_SAMPLE_RATE": (ItemFatal, False),
    "CONTENT_LENGTH_CHECK_FAILED": (ItemFatal, False),
    "FILE_404_NOT_FOUND": (ItemFatal, False),
    "FILE_403_FORBIDDEN": (ItemFatal, False),
    "REQUEST_INVALID_FILE_URL_VALUE": (ItemFatal, False),
    "FILE_TRANS_TASK_EXPIRED": (JobExpired, True),
    "REQUEST_EMPTY_APPKEY_VALUE": (AuthError, False),
    "REQUEST_APPKEY_UNREGISTERED": (AuthError, False),
    "RAM_CHECK_FAILED": (AuthError, False),
    "UNSUPPORTED_ASR_GROUP": (InvalidRequest, False),
    "REQUEST_INVALID_CALLBACK_VALUE": (InvalidRequest, False),
    "REQUEST_PARAMETER_INVALID": (InvalidRequest, False),
    # server side; the doc says "ignore if occasional": resubmit (the runner caps attempts)
    "INTERNAL_ERROR": (JobFailed, True),
    "VAD_FAILED": (JobFailed, True),
    "RECOGNIZE_FAILED": (JobFailed, True),
    "RECOGNIZE_INTERRUPT": (JobFailed, True),
    "OFFER_INTERRUPT": (JobFailed, True),
    "FILE_TRANS_TIMEOUT": (JobFailed, True),
    "FRAGMENT_FAILED": (JobFailed, True),
}

# POP gateway codes (non-200 answers) that mean the credentials or the signature are wrong.
GATEWAY_AUTH_CODES = (
    "SignatureDoesNotMatch",
    "IncompleteSignature",
    "InvalidAccessKeyId",  # .NotFound, .Inactive
    "SignatureNonceUsed",  # we mint a nonce per request, so a reuse is a replay, not a retry
    "InvalidTimeStamp",  # .Expired: clock skew over 15 minutes
    "Forbidden",  # .RAM, .AccessKeyDisabled, ...
    "InvalidSecurityToken",
)


class AliyunFileTrans(AsrProvider):
    name = "aliyun"
    capabilities = Capabilities(
        kind="asr",
        sync=False,
        delivery=("url",),
        max_bytes=512 * 1024 * 1024,
        rate=100.0,  # GetTaskResult allows 100 QPS per user (latest doc); SubmitTask 200
        concurrency=64,  # jobs queue on Alibaba's side; the service sets no concurrency cap
        poll_interval=2.0,  # at most 1 GetTaskResult per second per TaskId is allowed
        price_per_hour=2.5,  # CNY, pay-as-you-go list price of the standard edition
    )
    credential_env = {
        "access_key_id": ("ALIBABA_CLOUD_ACCESS_KEY_ID",),
        "access_key_secret": ("ALIBABA_CLOUD_ACCESS_KEY_SECRET",),
        "appkey": ("ALIYUN_NLS_APPKEY",),
    }
    default_endpoint = f"https://filetrans.{DEFAULT_REGION}.aliyuncs.com"

    def __init__(self, config):
        super().__init__(config)
        # GetTaskResult bodies seen SUCCESS by poll, handed to fetch without a second call
        self._finished: dict[str, str] = {}

    # -- configuration -----------------------------------------------------------------
    @property
    def region(self) -> str:
        return str(self.config.option("region", ("ALIBABA_CLOUD_REGION_ID",), DEFAULT_REGION))

    @property
    def endpoint(self) -> str:
        endpoint = super().endpoint
        if endpoint == self.default_endpoint and self.region != DEFAULT_REGION:
            return f"https://filetrans.{self.region}.aliyuncs.com"  # the host follows the region
        return endpoint

    def appkey(self, language: str) -> str:
        """The appkey selects the model (language, sample rate) in the console, so a
        per-language ``appkey_zh``/``appkey_en`` credential wins over the plain one."""
        specific = self.config.credentials.get(f"appkey_{language}")
        return (specific or self.config.credential("appkey", self.credential_env["appkey"])).reveal()

    # -- pure request building -----------------------------------------------------------
    def build_task(self, audio: AudioItem, file_link: str) -> dict:
        task = {
            "appkey": self.appkey(audio.language),
            "file_link": file_link,
            "version": "4.0",  # the documented result shape; the default 2.0 is legacy
            "enable_words": False,  # sentence timings are all the labels need
            "enable_sample_rate_adaptive": True,  # > 16 kHz audio is downsampled, not rejected
        }
        task.update(self.config.options.get("task_options") or {})
        return task

    def signed_request(
        self,
        action: str,
        method: str,
        query: dict[str, str],
        form: dict[str, str] | None = None,
        *,
        nonce: str | None = None,
        timestamp: str | None = None,
    ) -> tuple[str, bytes | None]:
        """(absolute URL, form body) of one signed RPC call; form fields are signed too."""
        key_id = self.config.credential("access_key_id", self.credential_env["access_key_id"]).reveal()
        secret = self.config.credential("access_key_secret", self.credential_env["access_key_secret"]).reveal()
        params = pop_signature.common_parameters(key_id, action, API_VERSION, self.region, nonce=nonce, timestamp=timestamp)
        params.update(query)
        signed = dict(params, **(form or {}))
        params["Signature"] = pop_signature.sign(method, signed, secret)
        url = f"{self.endpoint}/?{pop_signature.canonical_query(params)}"
        body = urllib.parse.urlencode(form, quote_via=urllib.parse.quote).encode("utf-8") if form else None
        return url, body

    # -- network ---------------------------------------------------------------------------
    async def _call(self, client: httpx.AsyncClient, action: str, method: str, query: dict[str, str], form: dict[str, str] | None = None, *, billable: bool = False) -> tuple[dict, str]:
        url, body = self.signed_request(action, method, query, form)
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded; charset=UTF-8"
        response = await send(self.name, action, client.request(method, url, content=body, headers=headers), billable=billable)
        if response.status_code != 200:
            raise gateway_error(self.name, action, response)
        try:
            payload = response.json()
        except ValueError:
            raise MalformedResponse(self.name, f"{action}: expected a JSON body, found {_snippet(response.text)!r}", status=200) from None
        if not isinstance(payload, dict) or not isinstance(payload.get("StatusText"), str):
            raise MalformedResponse(self.name, f"{action}: expected a JSON object with StatusText, found {_snippet(response.text)!r}", status=200)
        return payload, response.text

    # -- AsrProvider ---------------------------------------------------------------------
    async def submit(self, client: httpx.AsyncClient, audio: AudioItem, staged: StagedAudio) -> JobHandle:
        if not staged.url:
            raise InvalidRequest(
                self.name,
                "FileTrans downloads the audio from a URL and takes no upload: expected a staged URL, "
                "found inline bytes; configure a URL stager (--stager-url-prefix)",
            )
        task = json.dumps(self.build_task(audio, staged.url), ensure_ascii=False, separators=(",", ":"))
        body, _ = await self._call(client, "SubmitTask", "POST", {}, {"Task": task}, billable=True)
        if body["StatusText"] != "SUCCESS":
            raise status_error(self.name, body, submitting=True)
        task_id = body.get("TaskId")
        if not isinstance(task_id, str) or not task_id:
            raise MalformedResponse(self.name, f"SubmitTask: expected a TaskId with StatusText SUCCESS, found {task_id!r}", request_id=body.get("RequestId"))
        return JobHandle(self.name, task_id, audio.key, {"request_id": body.get("RequestId"), "region": self.region})

    async def poll(self, client: httpx.AsyncClient, handle: JobHandle) -> JobStatus:
        body, raw = await self._call(client, "GetTaskResult", "GET", {"TaskId": handle.job_id})
        status = body["StatusText"]
        if status in IN_PROGRESS:
            return IN_PROGRESS[status]
        if status in FINISHED:
            self._finished[handle.job_id] = raw
            return JobStatus.SUCCEEDED
        raise status_error(self.name, body)

    async def fetch(self, client: httpx.AsyncClient, handle: JobHandle) -> str:
        raw = self._finished.pop(handle.job_id, None)
        if raw is not None:
            return raw
        body, raw = await self._call(client, "GetTaskResult", "GET", {"TaskId": handle.job_id})
        if body["StatusText"] in FINISHED:
            return raw
        if body["StatusText"] in IN_PROGRESS:
            raise MalformedResponse(self.name, f"GetTaskResult: expected a finished task to fetch, found StatusText {body['StatusText']}", request_id=body.get("RequestId"))
        raise status_error(self.name, body)

    def parse(self, raw: str, audio: AudioItem) -> Transcript:
        try:
            body = json.loads(raw)
        except ValueError:
            raise MalformedResponse(self.name, f"GetTaskResult: expected JSON, found {_snippet(raw)!r}") from None
        status = body.get("StatusText") if isinstance(body, dict) else None
        if status not in FINISHED:
            raise MalformedResponse(self.name, f"GetTaskResult: expected a finished task (StatusText SUCCESS), found {status!r}")
        if status in EMPTY_SUCCESS:
            return Transcript((), language=audio.language)
        sentences = (body.get("Result") or {}).get("Sentences") if isinstance(body.get("Result"), dict) else None
        if not isinstance(sentences, list):
            raise MalformedResponse(self.name, "GetTaskResult: expected Result.Sentences (a list) with StatusText SUCCESS, found none")
        parsed = []
        for index, sentence in enumerate(sentences):
            try:
                begin, end, text = int(sentence["BeginTime"]), int(sentence["EndTime"]), str(sentence["Text"])
                channel = int(sentence.get("ChannelId") or 0)
            except (KeyError, TypeError, ValueError):
                raise MalformedResponse(self.name, f"GetTaskResult: sentence {index}: expected BeginTime, EndTime (ms) and Text, found {_snippet(json.dumps(sentence, ensure_ascii=False))!r}") from None
            if text.strip():
                parsed.append((begin, channel, Sentence(begin / 1000.0, end / 1000.0, text)))
        # stereo files interleave both channels' sentences; order them in time
        parsed.sort(key=lambda entry: entry[:2])
        # FileTrans reports no confidence of any kind (providers.md §0.8)
        return Transcript(tuple(entry[2] for entry in parsed), language=audio.language, confidence=None, confidence_kind="none")


# -- error mapping (pure) -------------------------------------------------------------------
def status_error(provider: str, body: dict, *, submitting: bool = False) -> ProviderError:
    """The error for a StatusText that is neither in progress nor a success."""
    status = str(body.get("StatusText"))
    code = body.get("StatusCode")
    request_id = body.get("RequestId")
    message = f"{status} ({code})"
    error_class, retryable = STATUS_ERRORS.get(status, (None, False))
    if error_class is None:
        # unknown text: the code's first digit says whose fault it is (4 client, 5 server)
        error_class, retryable = (JobFailed, True) if str(code).startswith("5") else (JobFailed, False)
        message += ": a status this adapter does not know"
    if submitting and error_class is JobFailed:
        # no task was created: a server-side failure of the submit is a plain 5xx
        return ServerError(provider, f"SubmitTask: {message}", code=status, status=200, request_id=request_id)
    if error_class is JobFailed:
        return JobFailed(provider, message, retryable=retryable, code=status, status=200, request_id=request_id)
    return error_class(provider, message, code=status, status=200, request_id=request_id)


def gateway_error(provider: str, action: str, response: httpx.Response) -> ProviderError:
    """A non-200 answer of the POP gateway: keyed on ``Code``, since Throttling.User comes
    with 400 or 429 and signature errors with 400 or 404."""
    status = response.status_code
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or "Code" not in body:
        if status >= 500:
            return ServerError(provider, f"{action}: HTTP {status} without a POP error body", status=status)
        return MalformedResponse(provider, f"{action}: expected a POP error body with Code, found {_snippet(response.text)!r}", status=status)
    code = str(body.get("Code"))
    # SignatureDoesNotMatch echoes the server's string to sign (it names the key id): cut it
    message = f"{action}: {code}: {_snippet(str(body.get('Message', '')).split(' server string to sign')[0])}"
    request_id = body.get("RequestId")
    if code.startswith("Throttling") or status == 429:
        return RateLimited(provider, message, code=code, status=status, request_id=request_id, retry_after=_retry_after(response))
    if status >= 500 or code in ("InternalError", "ServiceUnavailable", "UnknownError"):
        return ServerError(provider, message, code=code, status=status, request_id=request_id)
    if any(code == auth or code.startswith(auth + ".") for auth in GATEWAY_AUTH_CODES):
        hint = " (check the host clock)" if code.startswith("InvalidTimeStamp") else ""
        return AuthError(provider, message + hint, code=code, status=status, request_id=request_id)
    return InvalidRequest(provider, message, code=code, status=status, request_id=request_id)


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None  # an HTTP date: Alibaba sends none, so the runner's backoff decides


def _snippet(text: str, limit: int = 200) -> str:
    return redact(text)[:limit]

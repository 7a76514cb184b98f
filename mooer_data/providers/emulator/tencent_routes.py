"""Tencent Cloud API 3.0 on the emulator: ASR CreateRecTask / DescribeTaskStatus and TMT
TextTranslate (reference/providers.md §1, §2.2, §3.1, fault table (b)).

Like the real gateway it checks the TC3-HMAC-SHA256 signature (shared code in
``providers/tc3.py``), answers business errors with HTTP 200 and
``{"Response": {"Error": {"Code", "Message"}, "RequestId"}}``, returns TaskIds as uint64
numbers, and knows which service an action belongs to by ``X-TC-Version`` (every host is
the loopback here, so the host cannot tell).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import time
import urllib.parse
import uuid

from ..tc3 import verify
from .core import Emulator, EmuRequest, EmuResponse

PROVIDER = "tencent"
SERVICE_BY_VERSION = {"2019-06-14": "asr", "2018-03-21": "tmt"}
MAX_INLINE_BYTES = 5 * 1024 * 1024  # base64 Data must be at most 5 MB (raw)
MAX_TMT_CHARS = 2000  # TextTranslate's documented request limit

CREATE_FAULTS = (
    "rate_limit", "server_error", "timeout", "ambiguous_submit", "malformed", "job_failed",
    "no_speech", "stuck", "auth", "quota", "too_large", "action_retired",
)  # fmt: skip
DESCRIBE_FAULTS = ("rate_limit", "server_error", "timeout", "malformed", "unknown_job")
TRANSLATE_FAULTS = ("rate_limit", "server_error", "timeout", "malformed", "auth", "quota", "too_large", "action_retired")

CREATE_REC_TASK_PARAMS = frozenset(
    {
        "EngineModelType", "ChannelNum", "ResTextFormat", "SourceType", "Data", "DataLen", "Url",
        "CallbackUrl", "SpeakerDiarization", "SpeakerNumber", "HotwordId", "ReinforceHotword",
        "CustomizationId", "EmotionRecognition", "EmotionalEnergy", "ConvertNumMode", "FilterDirty",
        "FilterPunc", "FilterModal", "SentenceMaxLength", "Extra", "HotwordList", "KeyWordLibIdList",
        "ReplaceTextId", "SpeakerRoles",
    }
)  # fmt: skip
ENGINES = frozenset(
    {
        "8k_zh", "8k_en", "8k_zh_large", "16k_zh", "16k_en", "16k_yue", "16k_zh-PY", "16k_zh-TW",
        "16k_ja", "16k_ko", "16k_zh_en", "16k_zh_en_2.0", "16k_zh_en_meeting", "16k_en_large",
        "16k_multi_lang", "16k_zh_medical", "16k_zh_dialect",
    }
)  # fmt: skip
TEXT_TRANSLATE_PARAMS = frozenset({"SourceText", "Source", "Target", "ProjectId", "UntranslatedText", "TermRepoIDList", "SentRepoIDList"})
TMT_LANGUAGES = frozenset({"zh", "zh-TW", "en", "ja", "ko", "fr", "es", "it", "de", "tr", "ru", "pt", "vi", "id", "th", "ms", "ar", "hi"})
STATUS = {"queued": (0, "waiting"), "running": (1, "doing"), "done": (2, "success"), "no_speech": (2, "success"), "failed": (3, "failed")}


def _envelope(payload: dict, request_id: str) -> EmuResponse:
    return EmuResponse.json({"Response": {**payload, "RequestId": request_id}})


def _error(code: str, message: str, request_id: str) -> EmuResponse:
    return _envelope({"Error": {"Code": code, "Message": message}}, request_id)


def _variant(key: str, fault: str) -> int:
    """0 or 1, stable per item: which of a fault's two real shapes this item gets."""
    return hashlib.sha256(f"{key}|{fault}".encode()).digest()[0] % 2


def _gateway_502() -> EmuResponse:
    return EmuResponse(502, b"<html><head><title>502 Bad Gateway</title></head><body>502 Bad Gateway</body></html>", {"Content-Type": "text/html"})


def _truncated(payload: dict, request_id: str) -> EmuResponse:
    body = json.dumps({"Response": {**payload, "RequestId": request_id}}).encode()
    return EmuResponse(200, body[: max(1, len(body) // 2)], {"Content-Type": "application/json"})


def _check_params(params: dict, known: frozenset, required: tuple[str, ...], request_id: str) -> EmuResponse | None:
    unknown = sorted(set(params) - known)
    if unknown:
        return _error("UnknownParameter", f"The parameter `{unknown[0]}` is not recognized.", request_id)
    missing = [name for name in required if params.get(name) is None]
    if missing:
        return _error("MissingParameter", f"The request is missing a required parameter `{missing[0]}`.", request_id)
    return None


def _common_fault(fault: str, key: str, request_id: str) -> EmuResponse | None:
    """The faults every action answers the same way (the gateway's own answers)."""
    if fault == "rate_limit":
        return _error("RequestLimitExceeded", "Your current request times exceeds the frequency limit for a second. Please reduce the frequency of calls.", request_id)
    if fault == "server_error":
        if _variant(key, fault):
            return _gateway_502()
        return _error("InternalError", "An internal error has occurred. Retry your request, but if the problem persists, contact us.", request_id)
    if fault == "timeout":
        return EmuResponse(action="hang")
    if fault == "auth":
        return _error("AuthFailure.SignatureFailure", "The provided credentials could not be validated. Please check your signature is correct.", request_id)
    return None


class TencentApiRoute:
    """Every Tencent API 3.0 action this project uses, behind one POST / endpoint."""

    provider = PROVIDER

    def matches(self, request: EmuRequest) -> bool:
        return request.method == "POST" and "x-tc-action" in request.headers

    def handle(self, request: EmuRequest, emulator: Emulator) -> EmuResponse:
        request_id = str(uuid.uuid4())
        action = request.headers.get("x-tc-action", "")
        version = request.headers.get("x-tc-version", "")
        if not version:
            return _error("MissingParameter", "The request is missing a required parameter `Version`.", request_id)
        service = SERVICE_BY_VERSION.get(version)
        if service is None:
            return _error("NoSuchVersion", f"The API version `{version}` does not exist.", request_id)
        handlers = {("asr", "CreateRecTask"): self.create_rec_task, ("asr", "DescribeTaskStatus"): self.describe_task_status, ("tmt", "TextTranslate"): self.text_translate}
        handler = handlers.get((service, action))
        if handler is None:
            return _error("InvalidAction", f"The action `{action}` is not found in version `{version}` of `{service}`.", request_id)
        rejection = verify(
            method=request.method,
            uri=request.path,
            query=urllib.parse.urlencode(request.query),
            headers=request.headers,
            body=request.body,
            service=service,
            secrets={emulator.secret(PROVIDER, "secret_id"): emulator.secret(PROVIDER, "secret_key")},
            now=time.time(),
        )
        if rejection:
            return _error(rejection.code, rejection.message, request_id)
        if service == "tmt" and not request.headers.get("x-tc-region"):
            return _error("MissingParameter", "The request is missing a required parameter `Region`.", request_id)
        if not emulator.within_rate(PROVIDER, action):
            return _error("RequestLimitExceeded", f"Your current request times exceeds the frequency limit of {action} for a second. Please reduce the frequency of calls.", request_id)
        try:
            params = request.json()
        except ValueError:
            return _error("InvalidParameter", "The request body is not valid JSON.", request_id)
        if not isinstance(params, dict):
            return _error("InvalidParameter", "The request body must be a JSON object.", request_id)
        return handler(params, emulator, request_id)

    # -- ASR ---------------------------------------------------------------------------
    def create_rec_task(self, params: dict, emulator: Emulator, request_id: str) -> EmuResponse:
        bad = _check_params(params, CREATE_REC_TASK_PARAMS, ("EngineModelType", "ChannelNum", "ResTextFormat", "SourceType"), request_id)
        if bad:
            return bad
        if params["EngineModelType"] not in ENGINES:
            return _error("InvalidParameterValue.ErrorInvalidEngservice", f"EngineModelType `{params['EngineModelType']}` is not a valid engine.", request_id)
        if params["SourceType"] == 1:
            data = params.get("Data")
            if not isinstance(data, str) or not data:
                return _error("MissingParameter", "The request is missing a required parameter `Data` (SourceType 1).", request_id)
            try:
                audio = base64.b64decode(data, validate=True)
            except (binascii.Error, ValueError):
                return _error("InvalidParameterValue.ErrorInvalidVoicedata", "Data is not valid base64 audio.", request_id)
            if params.get("DataLen") is not None and params["DataLen"] != len(audio):
                return _error("InvalidParameter.ErrorContentlength", f"DataLen {params['DataLen']} does not match the {len(audio)} decoded bytes.", request_id)
            key = hashlib.sha256(audio).hexdigest()
            url = None
        elif params["SourceType"] == 0:
            url = params.get("Url")
            if not isinstance(url, str) or not url.startswith(("http://", "https://")):
                return _error("InvalidParameterValue.ErrorInvalidUrl", "Url must be an http(s) URL the service can download.", request_id)
            audio, key = None, hashlib.sha256(url.encode()).hexdigest()
        else:
            return _error("InvalidParameterValue.ErrorInvalidSourcetype", f"SourceType must be 0 (Url) or 1 (Data), found {params['SourceType']!r}.", request_id)

        fault = emulator.fault(PROVIDER, "CreateRecTask", key, CREATE_FAULTS)
        if (audio is not None and len(audio) > MAX_INLINE_BYTES) or fault == "too_large":
            return _error("InvalidParameterValue.ErrorVoicedataTooLong", "The audio data is too long: base64 Data is limited to 5 MB; use a Url.", request_id)
        answer = _common_fault(fault, key, request_id) if fault else None
        if answer:
            return answer
        if fault == "malformed":  # the gateway mangled the answer before any task was made
            return _truncated({"Data": {"TaskId": 0}}, request_id) if _variant(key, fault) else _envelope({}, request_id)
        if fault == "quota":
            return _error("FailedOperation.UserHasNoFreeAmount", "The account has no free quota left and post-paid billing is not enabled.", request_id)
        if fault == "action_retired":
            return _error("ActionOffline", "The action CreateRecTask has been taken offline.", request_id)
        if fault == "no_speech" and audio is not None:
            # Inline audio is checked up front; a Url job finds the silence later (empty result).
            return _error("InvalidParameterValue.NoHumanVoice", "No human voice was detected in the audio.", request_id)

        outcome = {"job_failed": "failed", "no_speech": "no_speech", "stuck": "stuck"}.get(fault, "ok")
        error_msg = "audio decode failed" if outcome == "failed" else ""
        if url is not None:
            try:
                audio = emulator.fetch_url(url)
            except Exception:  # an unreachable URL fails the task, as the real download does
                outcome, error_msg = "failed", "Failed to download audio file!"
        result = emulator.oracle.transcript(audio) if audio is not None else None
        payload = {"engine": params["EngineModelType"], "res_text_format": params["ResTextFormat"], "error_msg": error_msg}
        job = emulator.jobs.create(PROVIDER, key, payload, outcome=outcome, result=result, numeric=True)
        if outcome != "failed":  # failed recognitions are not billed
            emulator.billing.charge(PROVIDER, "CreateRecTask", key)
        if fault == "ambiguous_submit":  # created and billed; the client never hears of it
            return EmuResponse(action="reset")
        return _envelope({"Data": {"TaskId": int(job.id)}}, request_id)

    def describe_task_status(self, params: dict, emulator: Emulator, request_id: str) -> EmuResponse:
        bad = _check_params(params, frozenset({"TaskId"}), ("TaskId",), request_id)
        if bad:
            return bad
        task_id = params["TaskId"]
        if not isinstance(task_id, int) or isinstance(task_id, bool) or task_id < 0:
            return _error("InvalidParameterValue", f"TaskId must be an unsigned integer, found {task_id!r}.", request_id)
        job = emulator.jobs.get(str(task_id))
        key = job.key if job else f"task:{task_id}"
        fault = emulator.fault(PROVIDER, "DescribeTaskStatus", key, DESCRIBE_FAULTS)
        answer = _common_fault(fault, key, request_id) if fault else None
        if answer:
            return answer
        if fault == "unknown_job" and job:
            emulator.jobs.forget(job.id)  # expiry is permanent: later polls see it gone too
            job = None
        if job is None:
            return _error("FailedOperation.NoSuchTask", f"Task {task_id} does not exist or has expired (TaskIds are kept 24 h).", request_id)
        if fault == "malformed":
            return _truncated({"Data": {"TaskId": task_id}}, request_id) if _variant(key, fault) else _envelope({"Data": None}, request_id)
        return _envelope({"Data": _task_status(job, emulator.jobs.state(job))}, request_id)

    # -- TMT ---------------------------------------------------------------------------
    def text_translate(self, params: dict, emulator: Emulator, request_id: str) -> EmuResponse:
        bad = _check_params(params, TEXT_TRANSLATE_PARAMS, ("SourceText", "Source", "Target", "ProjectId"), request_id)
        if bad:
            return bad
        text, source, target = params["SourceText"], params["Source"], params["Target"]
        if not isinstance(text, str) or not text:
            return _error("InvalidParameterValue", "SourceText must be a non-empty string.", request_id)
        if source != "auto" and source not in TMT_LANGUAGES:
            return _error("UnsupportedOperation.UnsupportedSourceLanguage", f"Source language `{source}` is not supported.", request_id)
        if target not in TMT_LANGUAGES:
            return _error("UnsupportedOperation.UnSupportedTargetLanguage", f"Target language `{target}` is not supported.", request_id)
        key = hashlib.sha256(text.encode("utf-8")).hexdigest()
        fault = emulator.fault(PROVIDER, "TextTranslate", key, TRANSLATE_FAULTS)
        if fault == "rate_limit" and _variant(key, fault):
            return _error("LimitExceeded.LimitedAccessFrequency", "The request frequency exceeds the limit of 5 per second.", request_id)
        if fault == "server_error" and not _variant(key, fault):
            return _error("InternalError.BackendTimeout", "The backend timed out; retry later.", request_id)
        answer = _common_fault(fault, key, request_id) if fault else None
        if answer:
            return answer
        if len(text) > MAX_TMT_CHARS or fault == "too_large":
            return _error("UnsupportedOperation.TextTooLong", f"SourceText must be under {MAX_TMT_CHARS} characters, found {len(text)}.", request_id)
        if fault == "quota":
            return _error("FailedOperation.NoFreeAmount", "The free translation quota is used up and post-paid billing is not enabled.", request_id)
        if fault == "action_retired":
            return _error("UnauthorizedOperation.ActionNotFound", "The action TextTranslate is not found or has been retired.", request_id)
        detected = source if source != "auto" else ("zh" if any("\u4e00" <= ch <= "\u9fff" for ch in text) else "en")
        if fault == "malformed":  # mangled on the way out of the gateway; like CreateRecTask's, not billed
            return _truncated({"TargetText": ""}, request_id) if _variant(key, fault) else _envelope({"Source": detected, "Target": target}, request_id)
        emulator.billing.charge(PROVIDER, "TextTranslate", key)
        translation = emulator.oracle.translate(text, target)
        return _envelope({"TargetText": translation, "Source": detected, "Target": target, "UsedAmount": len(text)}, request_id)


def _clock(seconds: float) -> str:
    return f"{int(seconds // 60)}:{seconds % 60:.3f}"


def _words(text: str, start_ms: int, end_ms: int) -> list[dict]:
    tokens = text.split() if " " in text.strip() else [ch for ch in text if ch.strip()]
    span = max(1, end_ms - start_ms)
    step = span / max(1, len(tokens))
    return [{"Word": token, "OffsetStartMs": int(i * step), "OffsetEndMs": int((i + 1) * step)} for i, token in enumerate(tokens)]


def _task_status(job, state: str) -> dict:
    code, label = STATUS[state]
    data = {"TaskId": int(job.id), "Status": code, "StatusStr": label, "AudioDuration": None, "Result": "", "ErrorMsg": "", "ResultDetail": None}
    if state == "failed":
        data["ErrorMsg"] = job.payload.get("error_msg") or "recognition failed"
    if code != 2:
        return data
    sentences = [] if state == "no_speech" else (job.result or {}).get("sentences", [])
    detail, lines = [], []
    for sentence in sentences:
        start_ms, end_ms = int(round(sentence["start"] * 1000)), int(round(sentence["end"] * 1000))
        words = _words(sentence["text"], start_ms, end_ms)
        seconds = max(0.001, (end_ms - start_ms) / 1000)
        detail.append(
            {
                "FinalSentence": sentence["text"],
                "SliceSentence": " ".join(w["Word"] for w in words),
                "WrittenText": "",
                "StartMs": start_ms,
                "EndMs": end_ms,
                "WordsNum": len(words),
                "Words": words,
                "SpeechSpeed": round(len(words) / seconds, 1),
                "SpeakerId": 0,
                "EmotionalEnergy": 0,
                "SilenceTime": 0,
                "EmotionType": [],
                "KeyWordResults": None,
            }
        )
        lines.append(f"[{_clock(sentence['start'])},{_clock(sentence['end'])}]  {sentence['text']}\n")
    data["Result"] = "".join(lines)
    data["AudioDuration"] = round(max((s["end"] for s in sentences), default=0.0), 3)
    # ResTextFormat 0 gives only the flat Result, no per-sentence detail
    data["ResultDetail"] = detail if job.payload.get("res_text_format", 0) > 0 else None
    return data


ROUTES = [TencentApiRoute()]

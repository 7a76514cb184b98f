"""Alibaba Cloud FileTrans on the emulator: ``/?Action=SubmitTask`` and
``/?Action=GetTaskResult`` behind a POP gateway that verifies the RPC v1 signature.

What the gateway checks, as the real one does: the key id, the signature over every
parameter (query and form body) with the secret + "&", the timestamp window (15 minutes)
and that no SignatureNonce is used twice; its errors are non-200
``{RequestId, HostId, Code, Message, Recommend}``. Behind it, FileTrans answers in HTTP
200 with ``StatusText``/``StatusCode``: it downloads ``file_link`` (emulator.fetch_url),
checks the file and its sample rate against a 16 kHz model, and runs the task through
emulator.jobs. Billing follows the real service, which bills recognised audio: a task is
charged once when it completes (seen by the first GetTaskResult after completion), and
at creation when the connection is then reset (nobody may ever ask for it).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import threading
import time
import urllib.error
import uuid
import weakref

import soundfile as sf

from .. import pop_signature
from .core import Emulator, EmuRequest, EmuResponse

API_VERSION = "2018-08-17"
HOST_ID = "filetrans.cn-shanghai.aliyuncs.com"
ACTIONS = ("SubmitTask", "GetTaskResult")
TIMESTAMP_WINDOW = dt.timedelta(minutes=15)
MODEL_SAMPLE_RATE = 16000  # the emulated appkey is bound to a 16 kHz model
MAX_FILE_BYTES = 512 * 1024 * 1024

STATUS_CODES = {
    "SUCCESS": 21050000,
    "RUNNING": 21050001,
    "QUEUEING": 21050002,
    "SUCCESS_WITH_NO_VALID_FRAGMENT": 21050003,
    "USER_BIZDURATION_QUOTA_EXCEED": 41050001,
    "FILE_DOWNLOAD_FAILED": 41050002,
    "FILE_CHECK_FAILED": 41050003,
    "FILE_TOO_LARGE": 41050004,
    "UNSUPPORTED_SAMPLE_RATE": 41050008,
    "FILE_TRANS_TASK_EXPIRED": 41050010,
    "REQUEST_INVALID_FILE_URL_VALUE": 41050011,
    "REQUEST_PARAMETER_INVALID": 41050013,
    "REQUEST_EMPTY_APPKEY_VALUE": 41050014,
    "REQUEST_APPKEY_UNREGISTERED": 41050015,
    "RAM_CHECK_FAILED": 41050021,
    "FILE_404_NOT_FOUND": 41050024,
    "FILE_403_FORBIDDEN": 41050025,
    "FILE_SERVER_ERROR": 41050026,
    "RECOGNIZE_FAILED": 51050002,
}
SUBMIT_FAULTS = ("rate_limit", "server_error", "timeout", "ambiguous_submit", "malformed", "job_failed", "no_speech", "stuck", "auth", "quota", "too_large")
RESULT_FAULTS = ("rate_limit", "server_error", "timeout", "malformed", "unknown_job")
# first bytes of containers FileTrans accepts that libsndfile may not read (mp3, m4a, wma, amr)
CONTAINER_MAGIC = (b"ID3", b"\xff\xfb", b"\xff\xf3", b"\xff\xf2", b"#!AMR", b"0&\xb2u")


class FileTransRoute:
    provider = "aliyun"

    def __init__(self) -> None:
        # SignatureNonces seen, per emulator (route objects are shared between emulators)
        self._nonces: weakref.WeakKeyDictionary[Emulator, set[str]] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def matches(self, request: EmuRequest) -> bool:
        return request.path == "/" and request.query.get("Action") in ACTIONS and "SignatureMethod" in request.query

    def handle(self, request: EmuRequest, emulator: Emulator) -> EmuResponse:
        params = dict(request.query)
        if "application/x-www-form-urlencoded" in request.headers.get("content-type", ""):
            params.update(request.form())  # body parameters are signed like query ones
        rejection = self._verify(request.method, params, emulator)
        if rejection is not None:
            return rejection
        if params["Version"] != API_VERSION:
            return pop_error(400, "InvalidVersion", "Specified parameter Version is not valid.")
        action = params["Action"]
        if not emulator.within_rate(self.provider, action):
            return throttled(action)
        if action == "SubmitTask":
            return self._submit(params, emulator)
        return self._get_result(params, emulator)

    # -- the POP gateway -----------------------------------------------------------------
    def _verify(self, method: str, params: dict[str, str], emulator: Emulator) -> EmuResponse | None:
        for name in ("AccessKeyId", "Signature", "SignatureMethod", "SignatureVersion", "SignatureNonce", "Timestamp", "Version"):
            if not params.get(name):
                return pop_error(400, "MissingParameter", f'The input parameter "{name}" that is mandatory for processing this request is not supplied.')
        if params["AccessKeyId"] != emulator.secret(self.provider, "access_key_id"):
            return pop_error(404, "InvalidAccessKeyId.NotFound", "Specified access key is not found.")
        if params["SignatureMethod"] != pop_signature.SIGNATURE_METHOD or params["SignatureVersion"] != pop_signature.SIGNATURE_VERSION:
            return pop_error(400, "IncompleteSignature", "The request signature does not conform to Aliyun standards.")
        try:
            sent_at = pop_signature.parse_timestamp(params["Timestamp"])
        except ValueError:
            return pop_error(400, "InvalidTimeStamp.Format", "Specified time stamp or date value is not well formatted.")
        if abs(dt.datetime.now(dt.timezone.utc) - sent_at) > TIMESTAMP_WINDOW:
            return pop_error(400, "InvalidTimeStamp.Expired", "Specified time stamp or date value is expired.")
        signed = {k: v for k, v in params.items() if k != "Signature"}
        expected = pop_signature.sign(method, signed, emulator.secret(self.provider, "access_key_secret"))
        if not pop_signature.signatures_match(expected, params["Signature"]):
            server_string = pop_signature.string_to_sign(method, signed)
            return pop_error(400, "SignatureDoesNotMatch", f"Specified signature is not matched with our calculation. server string to sign is:{server_string}")
        with self._lock:
            seen = self._nonces.setdefault(emulator, set())
            if params["SignatureNonce"] in seen:
                return pop_error(400, "SignatureNonceUsed", "Specified signature nonce was used already.")
            seen.add(params["SignatureNonce"])
        return None

    # -- SubmitTask ----------------------------------------------------------------------------
    def _submit(self, params: dict[str, str], emulator: Emulator) -> EmuResponse:
        try:
            task = json.loads(params.get("Task") or "")
        except ValueError:
            task = None
        if not isinstance(task, dict):
            return status_answer("REQUEST_PARAMETER_INVALID")
        if not task.get("appkey"):
            return status_answer("REQUEST_EMPTY_APPKEY_VALUE")
        if task["appkey"] != emulator.secret(self.provider, "appkey"):
            return status_answer("REQUEST_APPKEY_UNREGISTERED")
        file_link = task.get("file_link")
        if not isinstance(file_link, str) or not file_link.startswith(("http://", "https://")) or " " in file_link:
            return status_answer("REQUEST_INVALID_FILE_URL_VALUE")
        audio, failure, duration = download_and_check(emulator, file_link, task)
        key = hashlib.sha256(audio if audio is not None else file_link.encode()).hexdigest()

        fault = emulator.fault(self.provider, "SubmitTask", key, allowed=SUBMIT_FAULTS)
        gateway = gateway_fault(fault, "SubmitTask", key)
        if gateway is not None:
            return gateway
        if fault == "malformed":  # a proxy's page instead of the answer; no task was made
            return EmuResponse(200, b"<html><body><h1>502 Bad Gateway</h1></body></html>", {"Content-Type": "text/html"})
        if fault == "auth":
            return status_answer("RAM_CHECK_FAILED")
        if fault == "quota":
            return status_answer("USER_BIZDURATION_QUOTA_EXCEED")
        if fault == "job_failed":
            failure = failure or ("FILE_DOWNLOAD_FAILED" if int(key[:2], 16) % 2 else "RECOGNIZE_FAILED")
        if fault == "too_large":
            failure = "FILE_TOO_LARGE"
        outcome = "failed" if failure else {"no_speech": "no_speech", "stuck": "stuck"}.get(fault or "", "ok")
        result = emulator.oracle.transcript(audio) if audio is not None and outcome == "ok" else None
        payload = {"failure": failure, "duration_ms": duration, "billed": False, "submitted": time.time()}
        job = emulator.jobs.create(self.provider, key, payload, outcome=outcome, result=result)
        if fault == "ambiguous_submit":
            # the task exists and will run (and be billed) though the client never hears of it
            self._bill(emulator, job)
            return EmuResponse(action="reset")
        return EmuResponse.json({"TaskId": job.id, "RequestId": request_id(), "StatusText": "SUCCESS", "StatusCode": STATUS_CODES["SUCCESS"]})

    # -- GetTaskResult ------------------------------------------------------------------------
    def _get_result(self, params: dict[str, str], emulator: Emulator) -> EmuResponse:
        task_id = params.get("TaskId") or ""
        if not task_id:
            return status_answer("REQUEST_PARAMETER_INVALID")
        job = emulator.jobs.get(task_id)
        if job is None or job.provider != self.provider:
            return status_answer("FILE_TRANS_TASK_EXPIRED", TaskId=task_id)
        state = emulator.jobs.state(job)
        finished = state in ("done", "no_speech")
        if finished:
            self._bill(emulator, job)  # the task completed whether or not this answer arrives

        fault = emulator.fault(self.provider, "GetTaskResult", job.key, allowed=RESULT_FAULTS)
        gateway = gateway_fault(fault, "GetTaskResult", job.key)
        if gateway is not None:
            return gateway
        if fault == "unknown_job" and not finished:  # a task lost before it ran is not billed
            emulator.jobs.forget(job.id)
            return status_answer("FILE_TRANS_TASK_EXPIRED", TaskId=task_id)
        body = result_body(job, state)
        if fault == "malformed":
            text = json.dumps(body, ensure_ascii=False).encode("utf-8")
            return EmuResponse(200, text[: max(1, len(text) // 2)], {"Content-Type": "application/json"})
        return EmuResponse.json(body)

    def _bill(self, emulator: Emulator, job) -> None:
        """Charge a task once, if it is one the service bills (it recognised the audio)."""
        with self._lock:
            if job.payload["billed"] or job.outcome not in ("ok", "no_speech"):
                return
            job.payload["billed"] = True
        emulator.billing.charge(self.provider, "SubmitTask", job.key)


# -- the service behind the gateway ---------------------------------------------------------
def download_and_check(emulator: Emulator, file_link: str, task: dict) -> tuple[bytes | None, str | None, int]:
    """(audio bytes or None, the StatusText the task will fail with or None, duration ms):
    what FileTrans finds when it fetches and inspects the file."""
    try:
        audio = emulator.fetch_url(file_link)
    except urllib.error.HTTPError as error:
        failure = {404: "FILE_404_NOT_FOUND", 403: "FILE_403_FORBIDDEN"}.get(error.code)
        return None, failure or ("FILE_SERVER_ERROR" if error.code >= 500 else "FILE_DOWNLOAD_FAILED"), 0
    except Exception:  # noqa: BLE001 - any failure to fetch is what the service reports
        return None, "FILE_DOWNLOAD_FAILED", 0
    if len(audio) > MAX_FILE_BYTES:
        return audio, "FILE_TOO_LARGE", 0
    try:
        info = sf.info(io.BytesIO(audio))
    except Exception:  # noqa: BLE001 - libsndfile cannot read it: accept known containers only
        return audio, None if audio.startswith(CONTAINER_MAGIC) or audio[4:8] == b"ftyp" else "FILE_CHECK_FAILED", 0
    adaptive = bool(task.get("enable_sample_rate_adaptive"))
    if info.samplerate < MODEL_SAMPLE_RATE or (info.samplerate > MODEL_SAMPLE_RATE and not adaptive):
        return audio, "UNSUPPORTED_SAMPLE_RATE", 0
    return audio, None, int(round(info.duration * 1000))


def result_body(job, state: str) -> dict:
    """GetTaskResult's 4.0 answer for a task in ``state``."""
    base = {"TaskId": job.id, "RequestId": request_id()}
    if state in ("queued", "running"):
        text = "QUEUEING" if state == "queued" else "RUNNING"
        return {**base, "StatusText": text, "StatusCode": STATUS_CODES[text], **({"BizDuration": 0} if text == "RUNNING" else {})}
    solve_time = int((job.payload["submitted"] + 1) * 1000)
    if state == "failed":
        failure = job.payload["failure"]
        return {**base, "StatusText": failure, "StatusCode": STATUS_CODES[failure], "BizDuration": 0, "SolveTime": solve_time}
    if state == "no_speech":
        text = "SUCCESS_WITH_NO_VALID_FRAGMENT"
        return {**base, "StatusText": text, "StatusCode": STATUS_CODES[text], "BizDuration": job.payload["duration_ms"], "SolveTime": solve_time}
    sentences, previous_end = [], 0
    for sentence in (job.result or {}).get("sentences", []):
        begin, end = int(round(sentence["start"] * 1000)), int(round(sentence["end"] * 1000))
        minutes = max(end - begin, 1) / 60000.0
        sentences.append(
            {
                "EndTime": end,
                "SilenceDuration": max(0, (begin - previous_end) // 1000),
                "BeginTime": begin,
                "Text": sentence["text"],
                "ChannelId": 0,
                "SpeechRate": int(len(sentence["text"]) / minutes),
                "EmotionValue": 5.0,
            }
        )
        previous_end = end
    duration = job.payload["duration_ms"] or previous_end
    return {**base, "StatusText": "SUCCESS", "StatusCode": STATUS_CODES["SUCCESS"], "BizDuration": duration, "SolveTime": solve_time, "Result": {"Sentences": sentences}}


# -- envelopes ---------------------------------------------------------------------------------
def gateway_fault(fault: str | None, action: str, key: str) -> EmuResponse | None:
    """The faults the POP gateway itself produces, before the service sees the request."""
    odd = int(key[-2:], 16) % 2 == 1  # vary the status the way the real gateway does
    if fault == "rate_limit":
        return throttled(action, 429 if odd else 400)
    if fault == "server_error":
        if odd:
            return pop_error(503, "ServiceUnavailable", "The request has failed due to a temporary failure of the server.")
        return pop_error(500, "InternalError", "The request processing has failed due to some unknown error, exception or failure.")
    if fault == "timeout":
        return EmuResponse(action="hang")
    return None


def throttled(action: str, status: int = 400) -> EmuResponse:
    return pop_error(status, "Throttling.User", "Request was denied due to user flow control.")


def pop_error(status: int, code: str, message: str) -> EmuResponse:
    return EmuResponse.json(
        {
            "RequestId": request_id(),
            "HostId": HOST_ID,
            "Code": code,
            "Message": message,
            "Recommend": f"https://api.aliyun.com/troubleshoot?q={code}&product=nls-filetrans",
        },
        status,
    )


def status_answer(status_text: str, **extra) -> EmuResponse:
    """FileTrans's business answer: HTTP 200 with the StatusText and its StatusCode."""
    return EmuResponse.json({**extra, "RequestId": request_id(), "StatusText": status_text, "StatusCode": STATUS_CODES[status_text]})


def request_id() -> str:
    return str(uuid.uuid4()).upper()


ROUTES = [FileTransRoute()]

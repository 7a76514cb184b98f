"""OpenAI's ``/v1/audio/transcriptions`` and ``/v1/chat/completions`` on the emulator.

Shapes follow openai-python's types (reference/providers.md §2.5, §3.5): Bearer auth, a
multipart upload answered in ``json``/``text``/``verbose_json``, the error envelope
``{"error": {message, type, param, code}}`` with an ``x-request-id`` header.

Two dialects: a model named like a Hugging Face repo (``openai/whisper-large-v3``, as vLLM
serves them) gets vLLM's verbose_json, with ``duration`` as a string and ``-1.0``
placeholders for ``avg_logprob``/``compression_ratio``; a chat model whose name does not
start with ``gpt-`` wraps its JSON answer in a code fence, as local instruct models do.
Both are valid answers a client must parse.
"""

from __future__ import annotations

import email.message
import hashlib
import io
import json
import re
import time
import uuid

from .core import EmuRequest, EmuResponse, sha256_hex

PROVIDER = "openai"
MAX_UPLOAD_BYTES = 26_214_400
LANGUAGE_NAMES = {"zh": "chinese", "en": "english"}
TRANSCRIPTION_FAULTS = ("rate_limit", "quota", "server_error", "timeout", "ambiguous_submit", "malformed", "no_speech", "auth", "too_large", "action_retired")
CHAT_FAULTS = ("rate_limit", "quota", "server_error", "timeout", "malformed", "partial", "auth", "too_large", "action_retired")
MALFORMED_VARIANTS = ("html_413", "truncated_json")
PROXY_413_PAGE = (
    b"<html>\r\n<head><title>413 Request Entity Too Large</title></head>\r\n<body>\r\n"
    b"<center><h1>413 Request Entity Too Large</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)


def malformed_variant(key: str) -> str:
    """Which malformed answer an item gets: fixed per item so tests can predict it."""
    return MALFORMED_VARIANTS[int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % len(MALFORMED_VARIANTS)]


# -- multipart/form-data ---------------------------------------------------------------


class MultipartForm:
    """The parts of a ``multipart/form-data`` body: ``fields[name] -> [str, ...]`` and
    ``files[name] -> (filename, content type, bytes)``."""

    def __init__(self) -> None:
        self.fields: dict[str, list[str]] = {}
        self.files: dict[str, tuple[str, str, bytes]] = {}

    def value(self, name: str, default: str | None = None) -> str | None:
        return self.fields.get(name, [default])[0]


def parse_multipart(body: bytes, content_type: str) -> MultipartForm:
    """Split on the boundary by hand (a delimiter is CRLF + "--" + boundary, RFC 2046) and
    read each part's headers with the stdlib's parameter parser."""
    header = email.message.Message()
    header["content-type"] = content_type
    boundary = header.get_param("boundary")
    if header.get_content_type() != "multipart/form-data" or not boundary:
        raise ValueError(f"expected multipart/form-data with a boundary, found {content_type!r}")
    delimiter = b"\r\n--" + str(boundary).encode("latin-1")
    form = MultipartForm()
    chunks = (b"\r\n" + body).split(delimiter)
    if len(chunks) < 3 or not chunks[-1].startswith(b"--"):
        raise ValueError("expected a multipart body closed by its boundary, found a truncated one")
    for chunk in chunks[1:-1]:
        head, separator, content = chunk.partition(b"\r\n\r\n")
        if not separator:
            raise ValueError("expected a blank line after a part's headers")
        part = email.message.Message()
        for line in head.decode("utf-8", "replace").split("\r\n"):
            name, colon, value = line.partition(":")
            if colon:
                part[name.strip()] = value.strip()
        field = part.get_param("name", header="content-disposition")
        if not field:
            raise ValueError("expected a form-data part with a name")
        filename = part.get_param("filename", header="content-disposition")
        if filename is not None:
            form.files[str(field)] = (str(filename), part.get_content_type(), content)
        else:
            form.fields.setdefault(str(field), []).append(content.decode("utf-8"))
    return form


# -- envelopes -------------------------------------------------------------------------


def _request_id() -> str:
    return "req_" + uuid.uuid4().hex


def openai_error(status: int, message: str, type_: str, code: str | None = None, param: str | None = None, headers: dict | None = None) -> EmuResponse:
    payload = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return EmuResponse.json(payload, status, {"x-request-id": _request_id(), **(headers or {})})


def rate_limited(model: str) -> EmuResponse:
    return openai_error(
        429,
        f"Rate limit reached for {model} in organization org-mooeremulator on requests per min (RPM): Limit 500, Used 500, Requested 1. Please try again in 120ms.",
        "requests",
        "rate_limit_exceeded",
        headers={
            "retry-after-ms": "120",
            "retry-after": "1",
            "x-ratelimit-limit-requests": "500",
            "x-ratelimit-remaining-requests": "0",
            "x-ratelimit-reset-requests": "120ms",
        },
    )


def quota_exhausted() -> EmuResponse:
    return openai_error(
        429,
        "You exceeded your current quota, please check your plan and billing details.",
        "insufficient_quota",
        "insufficient_quota",
    )


def server_error() -> EmuResponse:
    return openai_error(500, "The server had an error while processing your request. Sorry about that!", "server_error")


def model_not_found(model: str) -> EmuResponse:
    return openai_error(404, f"The model `{model}` does not exist or you do not have access to it.", "invalid_request_error", "model_not_found")


def check_bearer(request: EmuRequest, emulator) -> EmuResponse | None:
    """None when the Bearer key is the emulator's; else OpenAI's 401 (which masks the key)."""
    authorization = request.headers.get("authorization", "")
    if not authorization.startswith("Bearer "):
        return openai_error(
            401,
            "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
            "invalid_request_error",
        )
    key = authorization[len("Bearer ") :].strip()
    if key != emulator.secret(PROVIDER, "api_key"):
        masked = f"{key[:3]}{'*' * 8}{key[-4:]}" if len(key) > 12 else "***"
        return openai_error(401, f"Incorrect API key provided: {masked}. You can find your API key at https://platform.openai.com/account/api-keys.", "invalid_request_error", "invalid_api_key")
    return None


def _forced_auth_failure() -> EmuResponse:
    return openai_error(401, "Incorrect API key provided: sk-***. The key was revoked.", "invalid_request_error", "invalid_api_key")


# -- /v1/audio/transcriptions ----------------------------------------------------------


def _audio_seconds(data: bytes, fallback: float) -> float:
    try:
        import soundfile

        return float(soundfile.info(io.BytesIO(data)).duration)
    except Exception:
        return fallback


def verbose_transcription(answer: dict, data: bytes, requested_language: str | None, model: str, words: bool) -> dict:
    """The oracle's sentences as a verbose_json body (whisper-1's, or vLLM's dialect)."""
    sentences = answer.get("sentences") or []
    code = answer.get("language") or requested_language or "en"
    spaced = code != "zh"  # whisper starts each English segment with a space
    duration = _audio_seconds(data, max([s["end"] for s in sentences], default=0.0))
    vllm = "/" in model
    segments = []
    for index, sentence in enumerate(sentences):
        text = (" " if spaced else "") + sentence["text"]
        digest = hashlib.sha256(f"{index}|{sentence['text']}".encode()).digest()
        segments.append(
            {
                "id": index,
                "seek": int(sentence["start"] * 100),
                "start": float(sentence["start"]),
                "end": float(sentence["end"]),
                "text": text,
                "tokens": [50364 + b for b in text.encode("utf-8")[:32]],
                "temperature": 0.0,
                "avg_logprob": -1.0 if vllm else round(-0.12 - digest[0] / 1000.0, 4),
                "compression_ratio": -1.0 if vllm else round(1.1 + digest[1] / 500.0, 4),
                "no_speech_prob": 0.0 if vllm else round(digest[2] / 5000.0, 4),
            }
        )
    body = {
        "task": "transcribe",
        "language": LANGUAGE_NAMES.get(code, code),
        "duration": f"{duration:.1f}" if vllm else round(duration, 3),
        "text": "".join(s["text"] for s in segments).strip(),
        "segments": segments,
    }
    if words:
        body["words"] = _words(sentences, spaced)
    if not vllm:
        body["usage"] = {"type": "duration", "seconds": int(-(-duration // 1))}
    return body


def _words(sentences: list[dict], spaced: bool) -> list[dict]:
    words = []
    for sentence in sentences:
        pieces = sentence["text"].split() if spaced else [c for c in sentence["text"] if not c.isspace()]
        step = (sentence["end"] - sentence["start"]) / max(1, len(pieces))
        for i, piece in enumerate(pieces):
            words.append({"word": piece, "start": round(sentence["start"] + i * step, 3), "end": round(sentence["start"] + (i + 1) * step, 3)})
    return words


class TranscriptionRoute:
    provider = PROVIDER

    def matches(self, request: EmuRequest) -> bool:
        return request.method == "POST" and request.path == "/v1/audio/transcriptions"

    def handle(self, request: EmuRequest, emulator) -> EmuResponse:
        denied = check_bearer(request, emulator)
        if denied:
            return denied
        try:
            form = parse_multipart(request.body, request.headers.get("content-type", ""))
        except ValueError as error:
            return openai_error(400, f"Could not parse multipart form: {error}", "invalid_request_error")
        model = form.value("model")
        if "file" not in form.files:
            return openai_error(400, "you must provide a file", "invalid_request_error", param="file")
        if not model:
            return openai_error(400, "you must provide a model parameter", "invalid_request_error", param="model")
        response_format = form.value("response_format", "json")
        if response_format not in ("json", "text", "verbose_json"):
            return openai_error(400, f"response_format {response_format!r} is not served by the emulator (json, text, verbose_json are)", "invalid_request_error", param="response_format")
        if not emulator.within_rate(PROVIDER, "transcribe"):
            return rate_limited(model)
        _, _, data = form.files["file"]
        if len(data) > MAX_UPLOAD_BYTES:
            return openai_error(413, f"Maximum content size limit ({MAX_UPLOAD_BYTES}) exceeded ({len(data)} bytes read)", "server_error")
        key = sha256_hex(data)
        fault = emulator.fault(PROVIDER, "transcribe", key, TRANSCRIPTION_FAULTS)
        early = self._early_fault(fault, key, model, len(data))
        if early is not None:
            return early
        emulator.billing.charge(PROVIDER, "transcribe", key)
        if fault == "ambiguous_submit":
            return EmuResponse(action="reset")  # transcribed and billed, then the line drops
        if fault == "no_speech":
            answer = {"language": form.value("language"), "sentences": []}
        else:
            answer = emulator.oracle.transcript(data)
        body = verbose_transcription(answer, data, form.value("language"), model, "word" in form.fields.get("timestamp_granularities[]", []))
        headers = {"x-request-id": _request_id(), "openai-processing-ms": "412"}
        if fault == "malformed":  # truncated_json: the work was done, the answer cut in transit
            encoded = json.dumps(body, ensure_ascii=False).encode("utf-8")
            return EmuResponse(200, encoded[: len(encoded) // 2], {"Content-Type": "application/json", **headers})
        if response_format == "text":
            return EmuResponse(200, (body["text"] + "\n").encode("utf-8"), {"Content-Type": "text/plain; charset=utf-8", **headers})
        if response_format == "json":
            return EmuResponse.json({"text": body["text"], **({"usage": body["usage"]} if "usage" in body else {})}, 200, headers)
        return EmuResponse.json(body, 200, headers)

    @staticmethod
    def _early_fault(fault: str | None, key: str, model: str, size: int) -> EmuResponse | None:
        """Faults that answer before any transcription (so nothing is billed)."""
        if fault == "rate_limit":
            return rate_limited(model)
        if fault == "quota":
            return quota_exhausted()
        if fault == "server_error":
            return server_error()
        if fault == "timeout":
            return EmuResponse(action="hang")
        if fault == "auth":
            return _forced_auth_failure()
        if fault == "too_large":
            return openai_error(413, f"Maximum content size limit ({MAX_UPLOAD_BYTES}) exceeded ({MAX_UPLOAD_BYTES + size} bytes read)", "server_error")
        if fault == "action_retired":
            return model_not_found(model)
        if fault == "malformed" and malformed_variant(key) == "html_413":
            return EmuResponse(413, PROXY_413_PAGE, {"Content-Type": "text/html", "Server": "nginx"})
        return None


# -- /v1/chat/completions --------------------------------------------------------------


def _target_language(messages: list[dict]) -> str:
    """What the client asked for, read from its system prompt ("into English")."""
    system = " ".join(str(m.get("content", "")) for m in messages if m.get("role") == "system")
    match = re.search(r"into (English|Chinese)", system)
    return {"English": "en", "Chinese": "zh"}[match.group(1)] if match else "en"


class ChatCompletionsRoute:
    provider = PROVIDER

    def matches(self, request: EmuRequest) -> bool:
        return request.method == "POST" and request.path == "/v1/chat/completions"

    def handle(self, request: EmuRequest, emulator) -> EmuResponse:
        denied = check_bearer(request, emulator)
        if denied:
            return denied
        try:
            payload = request.json()
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            return openai_error(400, "We could not parse the JSON body of your request.", "invalid_request_error")
        model, messages = payload.get("model"), payload.get("messages")
        if not model or not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
            return openai_error(400, "you must provide a model parameter and a non-empty messages array", "invalid_request_error", param="messages" if model else "model")
        if not emulator.within_rate(PROVIDER, "chat"):
            return rate_limited(model)
        user = next((str(m.get("content", "")) for m in reversed(messages) if m.get("role") == "user"), "")
        key = sha256_hex(user.encode("utf-8"))
        fault = emulator.fault(PROVIDER, "chat", key, CHAT_FAULTS)
        early = {
            "rate_limit": lambda: rate_limited(model),
            "quota": quota_exhausted,
            "server_error": server_error,
            "timeout": lambda: EmuResponse(action="hang"),
            "auth": _forced_auth_failure,
            "action_retired": lambda: model_not_found(model),
            "too_large": lambda: openai_error(400, f"This model's maximum context length is 128000 tokens. However, your messages resulted in {len(user) * 40} tokens.", "invalid_request_error", "context_length_exceeded", "messages"),
        }.get(fault)
        if early is not None:
            return early()
        target = _target_language(messages)
        try:
            inputs = json.loads(user)
        except ValueError:
            inputs = None
        if isinstance(inputs, list) and all(isinstance(t, str) for t in inputs):
            outputs = [emulator.oracle.translate(t, target) for t in inputs]
            if fault == "partial":
                outputs = outputs[:-1]  # the model merged or dropped a line
            content = json.dumps(outputs, ensure_ascii=False)
        else:  # a plain chat message: answer it as one text
            content = emulator.oracle.translate(user, target)
        if not str(model).startswith("gpt-"):
            content = f"```json\n{content}\n```"
        if fault == "malformed":
            content = "Sure! Here are the translations you asked for:\n\n1. " + content[: max(1, len(content) // 2)]
        emulator.billing.charge(PROVIDER, "chat", key)
        body = {
            "id": "chatcmpl-" + uuid.uuid4().hex[:24],
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content, "refusal": None}, "logprobs": None, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": len(json.dumps(messages)) // 3, "completion_tokens": len(content) // 3, "total_tokens": len(json.dumps(messages)) // 3 + len(content) // 3},
            "system_fingerprint": "fp_mooer_emulator",
        }
        return EmuResponse.json(body, 200, {"x-request-id": _request_id()})


ROUTES = [TranscriptionRoute(), ChatCompletionsRoute()]

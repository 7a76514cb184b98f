"""DeepL's ``POST /v2/translate`` on the emulator (reference/providers.md §3.3).

Auth is ``Authorization: DeepL-Auth-Key <key>``; the body is JSON (what the official
client sends) or a form with repeated ``text`` fields. Errors are bare HTTP statuses with
a ``{"message": ...}`` body: 403 auth, 456 quota, 413 too large, 429 (and 529 under high
load) throttling, 5xx server trouble. ``billed_characters`` is only returned when the
request asks for it with ``show_billed_characters``, as the real service does.
"""

from __future__ import annotations

import hashlib
import json
import urllib.parse

from .core import EmuRequest, EmuResponse, sha256_hex

PROVIDER = "deepl"
MAX_TEXTS = 50
MAX_BODY_BYTES = 128 * 1024
FAULTS = ("rate_limit", "server_error", "timeout", "malformed", "auth", "quota", "too_large")
RATE_LIMIT_VARIANTS = ("429", "529")
MALFORMED_VARIANTS = ("html_502", "truncated_json")
GATEWAY_PAGE = b"<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1></body></html>\n"


def _variant(key: str, variants: tuple[str, ...]) -> str:
    return variants[int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % len(variants)]


def rate_limit_variant(key: str) -> str:
    """429, or 529 ("high load"): fixed per request text so tests can predict it."""
    return _variant(key, RATE_LIMIT_VARIANTS)


def malformed_variant(key: str) -> str:
    """A non-JSON 502 from the gateway, or a 200 whose JSON was cut in transit."""
    return _variant(key, MALFORMED_VARIANTS)


def deepl_error(status: int, message: str) -> EmuResponse:
    return EmuResponse.json({"message": message}, status)


def _parse_body(request: EmuRequest) -> dict:
    if request.headers.get("content-type", "").startswith("application/json"):
        return request.json()
    form = urllib.parse.parse_qs(request.body.decode("utf-8"), keep_blank_values=True)
    body = {name: values[0] for name, values in form.items()}
    body["text"] = form.get("text", [])
    return body


class TranslateRoute:
    provider = PROVIDER

    def matches(self, request: EmuRequest) -> bool:
        return request.method == "POST" and request.path == "/v2/translate"

    def handle(self, request: EmuRequest, emulator) -> EmuResponse:
        authorization = request.headers.get("authorization", "")
        if authorization != f"DeepL-Auth-Key {emulator.secret(PROVIDER, 'auth_key')}":
            return deepl_error(403, "Authorization failure, check auth_key")
        if len(request.body) > MAX_BODY_BYTES:
            return deepl_error(413, "Request Entity Too Large")
        try:
            body = _parse_body(request)
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return deepl_error(400, "Invalid request: expected a JSON object or a form body")
        texts = body.get("text")
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            return deepl_error(400, "Value for 'text' not supported.")
        if len(texts) > MAX_TEXTS:
            return deepl_error(400, f"Too many texts in a single request: at most {MAX_TEXTS}.")
        target = str(body.get("target_lang") or "")
        if not target:
            return deepl_error(400, "Value for 'target_lang' not supported.")
        if not emulator.within_rate(PROVIDER, "translate"):
            return deepl_error(429, "Too many requests")
        key = sha256_hex(json.dumps(texts, ensure_ascii=False).encode("utf-8"))
        fault = emulator.fault(PROVIDER, "translate", key, FAULTS)
        if fault == "rate_limit":
            if rate_limit_variant(key) == "529":
                return deepl_error(529, "Too many requests, DeepL servers are currently experiencing high load")
            return deepl_error(429, "Too many requests")
        if fault == "server_error":
            return deepl_error(500, "Internal server error")
        if fault == "timeout":
            return EmuResponse(action="hang")
        if fault == "auth":
            return deepl_error(403, "Authorization failure, check auth_key")
        if fault == "quota":
            return deepl_error(456, "Quota exceeded")
        if fault == "too_large":
            return deepl_error(413, "Request Entity Too Large")
        if fault == "malformed" and malformed_variant(key) == "html_502":
            return EmuResponse(502, GATEWAY_PAGE, {"Content-Type": "text/html"})
        target_code = target.split("-")[0].lower()
        source = str(body.get("source_lang") or "").upper()
        translations = []
        for text in texts:
            item = {"detected_source_language": source or ("ZH" if any("\u4e00" <= c <= "\u9fff" for c in text) else "EN"), "text": emulator.oracle.translate(text, target_code)}
            if str(body.get("show_billed_characters", "")).lower() in ("true", "1"):
                item["billed_characters"] = len(text)
            translations.append(item)
        emulator.billing.charge(PROVIDER, "translate", key)
        encoded = json.dumps({"translations": translations}, ensure_ascii=False).encode("utf-8")
        if fault == "malformed":  # truncated_json: translated and billed, the answer cut in transit
            encoded = encoded[: len(encoded) // 2]
        return EmuResponse(200, encoded, {"Content-Type": "application/json"})


ROUTES = [TranslateRoute()]

"""Baidu general text translation (百度通用文本翻译), ``/api/trans/vip/translate``.

One form POST per batch: the texts travel joined by newlines in ``q`` and Baidu returns
one ``trans_result`` entry per line. ``sign`` is the lowercase hex MD5 of
``appid + q + salt + secret`` over the raw text (encoding ``q`` before signing is the
classic cause of error 54001). Every answer is HTTP 200; failures carry ``error_code``.
Reference: providers.md §1 and §3.2.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets as random_source
import urllib.parse

import httpx

from .base import MtProvider, send
from .errors import (
    AuthError,
    InvalidRequest,
    ItemFatal,
    MalformedResponse,
    ProviderError,
    QuotaExhausted,
    RateLimited,
    ServerError,
    ServiceDisabled,
)
from .secrets import redact
from .types import Capabilities

# error_code -> (error class, seconds to wait before retrying when Baidu implies one)
ERROR_CODES: dict[str, tuple[type[ProviderError], float | None]] = {
    "52001": (ServerError, None),  # request timed out on Baidu's side
    "52002": (ServerError, None),  # system error
    "52003": (AuthError, None),  # unauthorised user: wrong appid or service not enabled
    "54000": (InvalidRequest, None),  # a required parameter is empty: our bug
    "54001": (AuthError, None),  # bad sign: wrong secret (or q encoded before signing)
    "54003": (RateLimited, 1.0),  # over the QPS of the account's tier (1 s windows)
    "54004": (QuotaExhausted, None),  # account balance exhausted
    "54005": (RateLimited, 3.0),  # long queries too frequent: the doc says wait 3 s
    "58000": (AuthError, None),  # client IP not on the account's allow list
    "58001": (InvalidRequest, None),  # unsupported language direction
    "58002": (ServiceDisabled, None),  # the service is closed for this account
    "90107": (AuthError, None),  # certification not yet effective
}

# our language codes -> Baidu's where they differ (zh and en are the same)
LANGUAGE_CODES = {"ja": "jp", "ko": "kor", "fr": "fra", "es": "spa", "ar": "ara", "zh-tw": "cht", "vi": "vie"}
LINE_BREAK = re.compile(r"\r\n|\r|\n")


class BaiduTranslate(MtProvider):
    name = "baidu"
    capabilities = Capabilities(
        kind="mt",
        max_texts=50,  # lines per request; Baidu sets no count, only a size
        max_chars=2000,  # the doc asks for < 6000 bytes, about 2000 Chinese characters
        rate=10.0,  # the advanced (personally certified) tier; standard allows 1/s
        concurrency=4,
        price_per_million_chars=49.0,  # CNY, list price beyond the monthly free quota
    )
    credential_env = {
        "app_id": ("BAIDU_TRANSLATE_APP_ID",),
        "secret_key": ("BAIDU_TRANSLATE_SECRET_KEY",),
    }
    default_endpoint = "https://fanyi-api.baidu.com/api/trans/vip/translate"

    @property
    def url(self) -> str:
        """The translate URL: an endpoint override may be a bare host (the emulator)."""
        endpoint = self.endpoint
        return endpoint if endpoint.endswith("/translate") else f"{endpoint}/api/trans/vip/translate"

    # -- pure request building -----------------------------------------------------------
    def build_form(self, texts: list[str], source: str, target: str, *, salt: str | None = None) -> dict[str, str]:
        blank = [index for index, text in enumerate(texts) if not text.strip()]
        if blank:
            raise ItemFatal(self.name, f"expected non-blank texts (Baidu drops empty lines, which would misalign the results), found blank text at positions {blank}")
        # Baidu splits q on line breaks, so a text's own line breaks would make extra results
        query = "\n".join(LINE_BREAK.sub(" ", text) for text in texts)
        app_id = self.config.credential("app_id", self.credential_env["app_id"]).reveal()
        secret = self.config.credential("secret_key", self.credential_env["secret_key"]).reveal()
        salt = salt or str(random_source.randbelow(10**10))
        return {
            "q": query,
            "from": baidu_language(source),
            "to": baidu_language(target),
            "appid": app_id,
            "salt": salt,
            "sign": make_sign(app_id, query, salt, secret),
        }

    # -- MtProvider ------------------------------------------------------------------------
    async def translate_raw(self, client: httpx.AsyncClient, texts: list[str], source: str, target: str) -> str:
        form = self.build_form(texts, source, target)
        body = urllib.parse.urlencode(form, quote_via=urllib.parse.quote).encode("utf-8")
        headers = {"Content-Type": "application/x-www-form-urlencoded; charset=UTF-8", "Accept": "application/json"}
        # the text reached Baidu once sent, and Baidu bills by characters translated
        response = await send(self.name, "translate", client.post(self.url, content=body, headers=headers), billable=True)
        if response.status_code != 200:
            if response.status_code >= 500:
                raise ServerError(self.name, f"HTTP {response.status_code} from the translate endpoint", status=response.status_code)
            raise MalformedResponse(self.name, f"expected HTTP 200 with a JSON body, found {_snippet(response.text)!r}", status=response.status_code)
        try:
            payload = response.json()
        except ValueError:
            raise MalformedResponse(self.name, f"expected a JSON body, found {_snippet(response.text)!r}", status=200) from None
        error = classify(self.name, payload)
        if error is not None:
            raise error
        return response.text

    def parse(self, raw: str, count: int) -> list[str]:
        try:
            payload = json.loads(raw)
        except ValueError:
            raise MalformedResponse(self.name, f"expected JSON, found {_snippet(raw)!r}") from None
        error = classify(self.name, payload)
        if error is not None:
            raise error
        results = payload["trans_result"]
        if len(results) != count:
            raise MalformedResponse(self.name, f"length mismatch: expected {count} trans_result entries (one per line), found {len(results)}")
        try:
            return [str(entry["dst"]) for entry in results]
        except (KeyError, TypeError):
            raise MalformedResponse(self.name, f"expected trans_result entries with dst, found {_snippet(json.dumps(results, ensure_ascii=False))!r}") from None


def make_sign(app_id: str, query: str, salt: str, secret: str) -> str:
    """Baidu's sign: MD5 of the raw (not URL-encoded) UTF-8 text between appid and salt."""
    return hashlib.md5(f"{app_id}{query}{salt}{secret}".encode("utf-8")).hexdigest()


def baidu_language(code: str) -> str:
    return LANGUAGE_CODES.get(code.lower(), code.lower())


def classify(provider: str, payload) -> ProviderError | None:
    """None for a usable answer; the mapped error for an ``error_code`` or a body that has
    neither ``trans_result`` nor ``error_code``."""
    if not isinstance(payload, dict):
        return MalformedResponse(provider, f"expected a JSON object, found {type(payload).__name__}", status=200)
    code = payload.get("error_code")
    if code is not None and str(code) != "52000":  # 52000 is "success"
        code = str(code)
        error_class, retry_after = ERROR_CODES.get(code, (InvalidRequest, None))
        message = f"error {code}: {_snippet(str(payload.get('error_msg', '')))}"
        if error_class is RateLimited:
            return RateLimited(provider, message, code=code, status=200, retry_after=retry_after)
        return error_class(provider, message, code=code, status=200)
    if not isinstance(payload.get("trans_result"), list):
        return MalformedResponse(provider, f"expected trans_result or error_code, found keys {sorted(payload)}", status=200)
    return None


def _snippet(text: str, limit: int = 200) -> str:
    return redact(text)[:limit]

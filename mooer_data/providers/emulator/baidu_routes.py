"""Baidu general translation on the emulator: ``/api/trans/vip/translate``.

Parameters come by GET query or form POST, as the real endpoint takes both; the sign is
checked as Baidu does, MD5(appid + q + salt + secret) over the decoded text. Every answer
is HTTP 200: ``{"from", "to", "trans_result": [{"src", "dst"}...]}`` with one entry per
line of ``q``, or ``{"error_code", "error_msg"}``. A request is billed when it is
answered in full; the "partial" fault (fewer lines back than sent) is a failed answer the
client must redo, and is not billed, so a storm's billing counts show the runner's own
double payments only.
"""

from __future__ import annotations

import hashlib
import hmac

from .core import Emulator, EmuRequest, EmuResponse

PATH = "/api/trans/vip/translate"
FAULTS = ("rate_limit", "server_error", "timeout", "malformed", "auth", "quota", "action_retired", "partial")
# Baidu's own codes for the languages it takes (a subset: enough for the emulated pairs)
LANGUAGES = {"zh", "en", "yue", "wyw", "jp", "kor", "fra", "spa", "th", "ara", "ru", "pt", "de", "it", "el", "nl", "pl", "cht", "vie"}
MESSAGES = {
    "52001": "TIMEOUT",
    "52002": "SYSTEM ERROR",
    "52003": "UNAUTHORIZED USER",
    "54000": "PARAM_FROM_TO_OR_Q_EMPTY",
    "54001": "Invalid Sign",
    "54003": "Invalid Access Limit",
    "54004": "Insufficient balance",
    "54005": "Long query too frequently",
    "58001": "INVALID_TO_PARAM",
    "58002": "SERVICE_CLOSED",
}


class TranslateRoute:
    provider = "baidu"

    def matches(self, request: EmuRequest) -> bool:
        return request.path == PATH

    def handle(self, request: EmuRequest, emulator: Emulator) -> EmuResponse:
        params = dict(request.query)
        if request.method == "POST":
            params.update(request.form())
        for name in ("q", "from", "to", "appid", "salt", "sign"):
            if not params.get(name):
                return baidu_error("54000")
        if params["appid"] != emulator.secret(self.provider, "app_id"):
            return baidu_error("52003")
        # computed here, not imported from the adapter, so a wrong adapter sign is caught
        signed = params["appid"] + params["q"] + params["salt"] + emulator.secret(self.provider, "secret_key")
        expected = hashlib.md5(signed.encode("utf-8")).hexdigest()
        if not hmac.compare_digest(expected, params["sign"].lower()):
            return baidu_error("54001")
        if params["to"] == "auto" or params["to"] not in LANGUAGES or (params["from"] != "auto" and params["from"] not in LANGUAGES):
            return baidu_error("58001")
        if not emulator.within_rate(self.provider, "translate"):
            return baidu_error("54003")

        key = hashlib.sha256(params["q"].encode("utf-8")).hexdigest()
        odd = int(key[-2:], 16) % 2 == 1  # vary between the codes Baidu uses for a fault
        fault = emulator.fault(self.provider, "translate", key, allowed=FAULTS)
        if fault == "rate_limit":
            return baidu_error("54005" if odd else "54003")
        if fault == "server_error":
            return baidu_error("52001" if odd else "52002")
        if fault == "timeout":
            return EmuResponse(action="hang")
        if fault == "auth":
            return baidu_error("52003")
        if fault == "quota":
            return baidu_error("54004")
        if fault == "action_retired":
            return baidu_error("58002")
        if fault == "malformed":  # neither trans_result nor error_code
            return EmuResponse.json({"from": params["from"], "to": params["to"]})

        lines = params["q"].split("\n")  # Baidu translates each line as its own item
        results = [{"src": line, "dst": emulator.oracle.translate(line, params["to"])} for line in lines]
        if fault == "partial":
            results = results[:-1]
        else:
            emulator.billing.charge(self.provider, "translate", key)
        source = "zh" if params["from"] == "auto" else params["from"]
        return EmuResponse.json({"from": source, "to": params["to"], "trans_result": results})


def baidu_error(code: str) -> EmuResponse:
    return EmuResponse.json({"error_code": code, "error_msg": MESSAGES[code]})


ROUTES = [TranslateRoute()]

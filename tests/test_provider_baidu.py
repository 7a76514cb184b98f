"""Baidu general translation: the sign against the documented example, the adapter end to
end against the emulator, and every emulated fault mapped onto the right error class
(with billing counts). Baidu has no official Python SDK, so the formula is the reference."""

from __future__ import annotations

import asyncio
import hashlib
import json
import urllib.parse

import httpx
import pytest

from mooer_data.providers.base import ProviderConfig
from mooer_data.providers.baidu import BaiduTranslate, make_sign
from mooer_data.providers.emulator import DEFAULT_CREDENTIALS, FaultPlan, Oracle, build_emulator, client_environment
from mooer_data.providers.emulator.core import Billing
from mooer_data.providers.errors import (
    AmbiguousSubmit,
    AuthError,
    ItemFatal,
    MalformedResponse,
    NotConfigured,
    QuotaExhausted,
    RateLimited,
    ServerError,
    ServiceDisabled,
)
from mooer_data.providers.secrets import Secret

CREDENTIALS = DEFAULT_CREDENTIALS["baidu"]
TRANSLATIONS = {"今天天气很好。": "The weather is nice today.", "我们去公园吧 & 喝茶+吃饭": "Let's go to the park & have tea + dinner", "你好": "Hello"}
CLIENT_TIMEOUT = 1.0


@pytest.fixture(scope="module")
def shared_emulator():
    # one server per module keeps the tests fast; each test resets faults and billing
    emu = build_emulator(oracle=Oracle(translations=TRANSLATIONS), providers=["baidu"], hang_seconds=CLIENT_TIMEOUT + 0.3)
    with emu:
        yield emu


@pytest.fixture
def emu(shared_emulator):
    shared_emulator.faults = FaultPlan()
    shared_emulator.billing = Billing()
    yield shared_emulator
    shared_emulator.faults = FaultPlan()


def make_provider(base_url: str | None, **credentials) -> BaiduTranslate:
    secrets = {name: Secret(value) for name, value in {**CREDENTIALS, **credentials}.items()}
    return BaiduTranslate(ProviderConfig(name="baidu", endpoint=base_url, credentials=secrets))


def translate(provider: BaiduTranslate, texts: list[str]) -> list[str]:
    async def run():
        async with httpx.AsyncClient(timeout=CLIENT_TIMEOUT) as client:
            raw = await provider.translate_raw(client, texts, "zh", "en")
        return provider.parse(raw, len(texts))

    return asyncio.run(run())


def billed(emu) -> float:
    return emu.billing.snapshot()["calls"].get("baidu:translate", 0)


def assert_no_secret(error: Exception) -> None:
    for value in CREDENTIALS.values():
        for text in (str(error), repr(error), error.message):
            assert value not in text


# -- the sign ---------------------------------------------------------------------------------
def test_sign_matches_the_documented_example():
    # Baidu's doc: appid 2015063000000001, q "apple", salt 1435660288, key 12345678
    concatenated = "2015063000000001" + "apple" + "1435660288" + "12345678"
    assert make_sign("2015063000000001", "apple", "1435660288", "12345678") == hashlib.md5(concatenated.encode()).hexdigest()
    assert make_sign("2015063000000001", "apple", "1435660288", "12345678") == "f89f9594663708c1605f3d736d01d2d4"


def test_sign_covers_the_raw_text_not_the_encoded_form():
    provider = make_provider("https://fanyi-api.baidu.com/api/trans/vip/translate")
    form = provider.build_form(["我们去公园吧 & 喝茶+吃饭", "你好"], "zh", "en", salt="42")
    raw_text = "我们去公园吧 & 喝茶+吃饭\n你好"
    assert form["q"] == raw_text
    expected = hashlib.md5((CREDENTIALS["app_id"] + raw_text + "42" + CREDENTIALS["secret_key"]).encode("utf-8")).hexdigest()
    assert form["sign"] == expected
    assert form["sign"] != make_sign(CREDENTIALS["app_id"], urllib.parse.quote(raw_text), "42", CREDENTIALS["secret_key"])
    assert (form["from"], form["to"], form["appid"]) == ("zh", "en", CREDENTIALS["app_id"])


# -- end to end -------------------------------------------------------------------------------
def test_translates_a_batch_through_emulator(emu):
    texts = ["今天天气很好。", "我们去公园吧 & 喝茶+吃饭", "你好"]
    assert translate(make_provider(emu.base_url), texts) == [TRANSLATIONS[t] for t in texts]
    assert billed(emu) == 1  # one request for the whole batch


def test_line_breaks_inside_a_text_do_not_split_it(emu):
    texts = ["第一行\n第二行", "你好"]
    result = translate(make_provider(emu.base_url), texts)
    assert len(result) == 2 and result[1] == "Hello"


def test_blank_text_is_refused_before_sending():
    with pytest.raises(ItemFatal, match="blank"):
        make_provider("http://127.0.0.1:9").build_form(["你好", "  "], "zh", "en")


def test_configured_from_environment(emu, monkeypatch):
    for name, value in client_environment(emu.base_url).items():
        monkeypatch.setenv(name, value)
    provider = BaiduTranslate(ProviderConfig(name="baidu"))
    provider.check_configured()
    assert provider.url == f"{emu.base_url}/api/trans/vip/translate"
    assert translate(provider, ["你好"]) == ["Hello"]


def test_default_endpoint_and_missing_credentials(monkeypatch):
    for name in ("BAIDU_TRANSLATE_APP_ID", "BAIDU_TRANSLATE_SECRET_KEY", "MOOER_BAIDU_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    provider = BaiduTranslate(ProviderConfig(name="baidu"))
    assert provider.url == "https://fanyi-api.baidu.com/api/trans/vip/translate"
    with pytest.raises(NotConfigured, match="BAIDU_TRANSLATE_APP_ID"):
        provider.check_configured()


# -- authentication ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "credentials, code",
    [({"secret_key": "wrongBaiduSecretKey"}, "54001"), ({"app_id": "20990101000000099"}, "52003")],
)
def test_wrong_credentials_are_auth_errors_without_secrets(emu, credentials, code):
    with pytest.raises(AuthError) as raised:
        translate(make_provider(emu.base_url, **credentials), ["你好"])
    assert raised.value.code == code and raised.value.status == 200
    assert_no_secret(raised.value)
    for value in credentials.values():
        assert value not in str(raised.value)
    assert billed(emu) == 0


def test_emulator_checks_sign_and_parameters(emu):
    form = make_provider(emu.base_url).build_form(["你好"], "zh", "en", salt="7")
    url = f"{emu.base_url}/api/trans/vip/translate"
    assert httpx.get(url, params=form).json()["trans_result"] == [{"src": "你好", "dst": "Hello"}]  # GET works too
    assert httpx.post(url, data={**form, "salt": "8"}).json()["error_code"] == "54001"
    assert httpx.post(url, data={**form, "q": ""}).json()["error_code"] == "54000"
    assert httpx.post(url, data={**form, "to": "auto"}).json()["error_code"] == "58001"


# -- faults -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "fault, error_class, bills",
    [
        ("rate_limit", RateLimited, 0),
        ("server_error", ServerError, 0),
        ("timeout", AmbiguousSubmit, 0),  # the text was sent and may have been billed
        ("malformed", MalformedResponse, 0),
        ("auth", AuthError, 0),
        ("quota", QuotaExhausted, 0),
        ("action_retired", ServiceDisabled, 0),
        ("partial", MalformedResponse, 0),  # a failed answer: redone, so not billed
    ],
)
def test_faults_map_to_error_classes(emu, fault, error_class, bills):
    emu.faults = FaultPlan.parse(f"{fault}=1")
    with pytest.raises(error_class) as raised:
        translate(make_provider(emu.base_url), ["今天天气很好。", "你好"])
    assert type(raised.value) is error_class
    assert_no_secret(raised.value)
    assert billed(emu) == bills
    if fault == "partial":
        assert "length mismatch" in str(raised.value)
    if fault == "rate_limit":
        assert raised.value.retry_after in (1.0, 3.0) and raised.value.code in ("54003", "54005")


def test_retry_after_fault_succeeds_once_billed(emu):
    emu.faults = FaultPlan.parse("server_error=0.5,seed=3")
    provider = make_provider(emu.base_url)
    for _ in range(20):
        try:
            assert translate(provider, ["你好"]) == ["Hello"]
            break
        except ServerError:
            continue
    else:
        raise AssertionError("never succeeded")
    assert billed(emu) == 1


# -- parse (pure) --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "payload, error_class",
    [
        ({"from": "zh", "to": "en", "trans_result": [{"src": "a", "dst": "A"}]}, MalformedResponse),  # 1 of 2
        ({"from": "zh", "to": "en"}, MalformedResponse),
        ({"error_code": "54003", "error_msg": "Invalid Access Limit"}, RateLimited),
        ({"error_code": 52002, "error_msg": "SYSTEM ERROR"}, ServerError),  # a number, not a string
        ({"error_code": "58002", "error_msg": "SERVICE_CLOSED"}, ServiceDisabled),
    ],
)
def test_parse_maps_recorded_payloads(payload, error_class):
    with pytest.raises(error_class):
        make_provider(None).parse(json.dumps(payload), 2)


def test_parse_keeps_order():
    raw = json.dumps({"from": "zh", "to": "en", "trans_result": [{"src": "一", "dst": "one"}, {"src": "二", "dst": "two"}]})
    assert make_provider(None).parse(raw, 2) == ["one", "two"]
    with pytest.raises(MalformedResponse):
        make_provider(None).parse("<html>", 2)

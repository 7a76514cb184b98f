"""DeepL /v2/translate end to end against the emulator: the adapter through a real httpx
client, the official ``deepl`` client as a client of the emulator, every injected fault
mapped to its error class, and no key in any message."""

from __future__ import annotations

import asyncio
import hashlib
import json
from contextlib import contextmanager

import deepl
import httpx
import pytest

from mooer_data.providers import errors
from mooer_data.providers.base import ProviderConfig
from mooer_data.providers.deepl import DEEPL_FREE_ENDPOINT, DEEPL_PRO_ENDPOINT, DeepLTranslate, deepl_language
from mooer_data.providers.emulator import DEFAULT_CREDENTIALS, FaultPlan, Oracle, build_emulator
from mooer_data.providers.emulator import deepl_routes
from mooer_data.providers.emulator.core import Billing
from mooer_data.providers.registry import provider_class
from mooer_data.providers.secrets import Secret

KEY = DEFAULT_CREDENTIALS["deepl"]["auth_key"]
CLIENT_TIMEOUT = 1.0
TRANSLATIONS = {"你好": "Hello", "谢谢": "Thank you", "今天天气很好": "The weather is nice today"}


@pytest.fixture(scope="module")
def emulator():
    """One emulator per module (stopping one costs its 0.5 s serve_forever poll)."""
    with build_emulator(providers=["deepl"], hang_seconds=CLIENT_TIMEOUT + 0.4) as emu:
        yield emu


@pytest.fixture
def served(emulator):
    @contextmanager
    def serve(faults: str | None = None, auth_key: str = KEY, **options):
        emulator.faults, emulator.oracle, emulator.billing = FaultPlan.parse(faults), Oracle(translations=TRANSLATIONS), Billing()
        config = ProviderConfig(name="deepl", endpoint=emulator.base_url, credentials={"auth_key": Secret(auth_key)}, options=options, timeout=CLIENT_TIMEOUT)
        try:
            yield emulator, DeepLTranslate(config)
        finally:
            emulator.faults = FaultPlan()

    return serve


def translate(mt: DeepLTranslate, texts: list[str]) -> list[str]:
    async def flow():
        async with httpx.AsyncClient() as client:
            return mt.parse(await mt.translate_raw(client, texts, "zh", "en"), len(texts))

    return asyncio.run(flow())


def billed(emu) -> float:
    return emu.billing.snapshot()["calls"].get("deepl:translate", 0)


def request_key(texts: list[str]) -> str:
    return hashlib.sha256(json.dumps(texts, ensure_ascii=False).encode("utf-8")).hexdigest()


def test_registry_and_languages():
    assert provider_class("mt", "deepl") is DeepLTranslate
    assert deepl_language("zh", target=False) == "ZH"
    assert deepl_language("en", target=True) == "EN-US"
    assert deepl_language("zh", target=True) == "ZH-HANS"


def test_translation_end_to_end(served):
    texts = ["你好", "今天天气很好", "谢谢"]
    with served() as (emu, mt):
        assert translate(mt, texts) == ["Hello", "The weather is nice today", "Thank you"]
        assert billed(emu) == 1


def test_endpoint_follows_the_key(monkeypatch):
    monkeypatch.delenv("MOOER_DEEPL_ENDPOINT", raising=False)
    monkeypatch.delenv("DEEPL_AUTH_KEY", raising=False)
    assert DeepLTranslate(ProviderConfig(name="deepl", credentials={"auth_key": Secret("abcd-efgh:fx")})).endpoint == DEEPL_FREE_ENDPOINT
    assert DeepLTranslate(ProviderConfig(name="deepl", credentials={"auth_key": Secret("abcd-efgh-pro")})).endpoint == DEEPL_PRO_ENDPOINT
    assert DeepLTranslate(ProviderConfig(name="deepl")).endpoint == DEEPL_PRO_ENDPOINT  # unconfigured: no crash
    monkeypatch.setenv("MOOER_DEEPL_ENDPOINT", "http://127.0.0.1:7000/")
    assert DeepLTranslate(ProviderConfig(name="deepl", credentials={"auth_key": Secret("k:fx")})).endpoint == "http://127.0.0.1:7000"


def test_request_shape():
    body = DeepLTranslate(ProviderConfig(name="deepl", options={"formality": "prefer_less"})).translate_request(["你好"], "zh", "en")
    assert body == {"text": ["你好"], "source_lang": "ZH", "target_lang": "EN-US", "formality": "prefer_less"}


FAULTS = {
    "server_error": (errors.ServerError, 500),
    "timeout": (errors.AmbiguousSubmit, None),
    "auth": (errors.AuthError, 403),
    "quota": (errors.QuotaExhausted, 456),
    "too_large": (errors.ItemFatal, 413),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_faults_map_to_error_classes(served, fault):
    error_class, status = FAULTS[fault]
    with served(f"{fault}=1") as (emu, mt):
        with pytest.raises(error_class) as caught:
            translate(mt, ["你好", "谢谢"])
        assert billed(emu) == 0
    assert caught.value.provider == "deepl" and caught.value.status == status
    assert KEY not in str(caught.value) and KEY not in repr(caught.value)


def texts_for_each(variant_of, variants: tuple[str, ...]) -> dict[str, list[str]]:
    """One request text per fault variant (the emulator fixes the variant per request)."""
    found: dict[str, list[str]] = {}
    for number in range(100):
        texts = [f"第{number}句"]
        found.setdefault(variant_of(request_key(texts)), texts)
        if len(found) == len(variants):
            return found
    raise AssertionError(f"expected texts for every variant of {variants}, found {sorted(found)}")


def test_rate_limits_429_and_529_are_retryable(served):
    with served("rate_limit=1") as (emu, mt):
        for variant, texts in texts_for_each(deepl_routes.rate_limit_variant, deepl_routes.RATE_LIMIT_VARIANTS).items():
            with pytest.raises(errors.RateLimited) as caught:
                translate(mt, texts)
            assert caught.value.status == int(variant)
        assert billed(emu) == 0


def test_malformed_answers_are_transient(served):
    """A non-JSON 502 from the gateway is a server error; a truncated 200 (translated and
    billed) is a malformed answer. Both are retried."""
    expected = {"html_502": errors.ServerError, "truncated_json": errors.MalformedResponse}
    with served("malformed=1") as (emu, mt):
        for variant, texts in texts_for_each(deepl_routes.malformed_variant, deepl_routes.MALFORMED_VARIANTS).items():
            with pytest.raises(expected[variant]):
                translate(mt, texts)
        assert billed(emu) == 1


def test_wrong_key_is_an_auth_error_without_the_key(served):
    wrong = "11111111-wrong-key-deepl:fx"
    with served(auth_key=wrong) as (emu, mt):
        with pytest.raises(errors.AuthError) as caught:
            translate(mt, ["你好"])
        assert billed(emu) == 0
    for text in (str(caught.value), repr(caught.value), caught.value.message, repr(mt.config)):
        assert wrong not in text and KEY not in text


def test_too_many_texts_fail_before_the_network():
    mt = DeepLTranslate(ProviderConfig(name="deepl", endpoint="http://127.0.0.1:9", credentials={"auth_key": Secret(KEY)}))
    with pytest.raises(errors.InvalidRequest, match="51"):
        translate(mt, ["x"] * 51)


def test_unreachable_endpoint_is_a_network_error():
    mt = DeepLTranslate(ProviderConfig(name="deepl", endpoint="http://127.0.0.1:9", credentials={"auth_key": Secret(KEY)}, timeout=1.0))
    with pytest.raises(errors.NetworkError):
        translate(mt, ["你好"])


@pytest.mark.parametrize(
    "raw",
    ['{"translations": [{"text": "a"}]}', '{"translations": [{"text": "a"}, {"nope": 1}]}', '{"message": "x"}', "<html>", '{"translations": [{"text": "a"}, {"te'],
)
def test_parse_rejects(raw):
    with pytest.raises(errors.MalformedResponse):
        DeepLTranslate(ProviderConfig(name="deepl")).parse(raw, 2)


# -- the official client as a client of the emulator -----------------------------------


def test_deepl_sdk_translates_against_the_emulator(served):
    with served() as (emu, _):
        translator = deepl.Translator(KEY, server_url=emu.base_url)
        results = translator.translate_text(["你好", "谢谢"], source_lang="ZH", target_lang="EN-US")
        assert [r.text for r in results] == ["Hello", "Thank you"]
        assert [r.billed_characters for r in results] == [2, 2] and results[0].detected_source_lang == "ZH"
        assert billed(emu) == 1
        with pytest.raises(deepl.AuthorizationException):
            deepl.Translator("00000000-wrong:fx", server_url=emu.base_url).translate_text("你好", target_lang="EN-US")


def test_deepl_sdk_reads_the_quota_status(served):
    with served("quota=1") as (emu, _):
        with pytest.raises(deepl.QuotaExceededException):
            deepl.Translator(KEY, server_url=emu.base_url).translate_text("你好", target_lang="EN-US")


class Recorder:
    provider = "deepl"

    def __init__(self, routes):
        self.routes, self.requests = routes, []

    def matches(self, request):
        return any(route.matches(request) for route in self.routes)

    def handle(self, request, emulator):
        self.requests.append(request)
        return next(route for route in self.routes if route.matches(request)).handle(request, emulator)


def test_our_request_matches_the_sdk_request(emulator):
    """Same path, same auth header, same translation fields as deepl-python sends."""
    recorder = Recorder(deepl_routes.ROUTES)
    saved, emulator.routes = emulator.routes, [recorder]
    try:
        deepl.Translator(KEY, server_url=emulator.base_url).translate_text(["你好", "谢谢"], source_lang="ZH", target_lang="EN-US")
        translate(DeepLTranslate(ProviderConfig(name="deepl", endpoint=emulator.base_url, credentials={"auth_key": Secret(KEY)})), ["你好", "谢谢"])
    finally:
        emulator.routes = saved
    sdk, ours = recorder.requests
    assert sdk.path == ours.path == "/v2/translate"
    assert sdk.headers["authorization"] == ours.headers["authorization"] == f"DeepL-Auth-Key {KEY}"
    assert sdk.headers["content-type"].startswith("application/json") and ours.headers["content-type"].startswith("application/json")
    sdk_body, our_body = json.loads(sdk.body), json.loads(ours.body)
    for field in ("text", "source_lang", "target_lang"):
        assert sdk_body[field] == our_body[field]


def test_a_storm_ends_with_every_batch_translated(served):
    def retried(call):
        for _ in range(20):
            try:
                return call()
            except (errors.TransientError, errors.AmbiguousSubmit):
                continue
        raise AssertionError("expected the storm to pass within 20 attempts")

    with served("storm=0.5,seed=3") as (emu, mt):
        before = emu.requests["/v2/translate"]
        results = [retried(lambda n=n: translate(mt, [f"第{n}句", "你好"])) for n in range(8)]
        assert emu.requests["/v2/translate"] - before > 8  # the storm did strike
    assert [r[1] for r in results] == ["Hello"] * 8

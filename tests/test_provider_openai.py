"""OpenAI-compatible transcription and chat translation, end to end against the emulator:
the adapters through a real httpx client, the official ``openai`` SDK as a client of the
emulator, every injected fault mapped to its error class, and no key in any message."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import math
from contextlib import contextmanager

import httpx
import numpy as np
import openai
import pytest
import soundfile as sf

from mooer_data.providers import errors
from mooer_data.providers.base import ProviderConfig
from mooer_data.providers.emulator import DEFAULT_CREDENTIALS, FaultPlan, Oracle, build_emulator
from mooer_data.providers.emulator import openai_routes
from mooer_data.providers.emulator.core import Billing
from mooer_data.providers.emulator.openai_routes import malformed_variant, parse_multipart
from mooer_data.providers.openai_compat import OpenAiChatTranslation, OpenAiTranscription, retry_after_seconds
from mooer_data.providers.registry import provider_class
from mooer_data.providers.secrets import Secret
from mooer_data.providers.stager import InlineStager
from mooer_data.providers.types import AudioItem, JobStatus

KEY = DEFAULT_CREDENTIALS["openai"]["api_key"]
CLIENT_TIMEOUT = 1.0
HANG_SECONDS = CLIENT_TIMEOUT + 0.4
ZH_SENTENCES = [{"start": 0.0, "end": 0.6, "text": "今天天气很好"}, {"start": 0.6, "end": 1.2, "text": "我们去公园"}]


def wav_bytes(frequency: float = 440.0, seconds: float = 1.2) -> bytes:
    t = np.arange(int(16000 * seconds)) / 16000
    buffer = io.BytesIO()
    sf.write(buffer, (np.sin(2 * np.pi * frequency * t) * 3000).astype("int16"), 16000, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def audio_item(tmp_path, data: bytes, key: str = "utt-1", language: str = "zh") -> AudioItem:
    path = tmp_path / f"{key}.wav"
    path.write_bytes(data)
    return AudioItem(key=key, path=path, duration=len(data) / 32000, language=language)


@pytest.fixture(scope="module")
def emulator():
    """One emulator per module (stopping one costs its 0.5 s serve_forever poll);
    ``served`` resets its faults, oracle and billing for each test."""
    with build_emulator(providers=["openai"], hang_seconds=HANG_SECONDS, job_seconds=0.05) as emu:
        yield emu


@pytest.fixture
def served(emulator):
    @contextmanager
    def serve(faults: str | None = None, oracle: Oracle | None = None, api_key: str = KEY, **options):
        """The shared emulator with this fault plan and oracle, and both adapters pointed at it."""
        emulator.faults, emulator.oracle, emulator.billing = FaultPlan.parse(faults), oracle or Oracle(), Billing()
        config = ProviderConfig(name="openai", endpoint=emulator.base_url, credentials={"api_key": Secret(api_key)}, options=options, timeout=CLIENT_TIMEOUT)
        try:
            yield emulator, OpenAiTranscription(config), OpenAiChatTranslation(config)
        finally:
            emulator.faults = FaultPlan()

    return serve


def transcribe(asr: OpenAiTranscription, item: AudioItem):
    async def flow():
        async with httpx.AsyncClient() as client:
            handle = await asr.submit(client, item, InlineStager().stage(item))
            assert await asr.poll(client, handle) == JobStatus.SUCCEEDED
            raw = await asr.fetch(client, handle)
            return handle, asr.parse(raw, item)

    return asyncio.run(flow())


def translate(mt: OpenAiChatTranslation, texts: list[str]) -> list[str]:
    async def flow():
        async with httpx.AsyncClient() as client:
            return mt.parse(await mt.translate_raw(client, texts, "zh", "en"), len(texts))

    return asyncio.run(flow())


def billed(emu, operation: str) -> float:
    return emu.billing.snapshot()["calls"].get(f"openai:{operation}", 0)


# -- transcription ---------------------------------------------------------------------


def test_registry_names_both_adapters():
    assert provider_class("asr", "openai") is OpenAiTranscription
    assert provider_class("mt", "openai") is OpenAiChatTranslation


def test_transcription_end_to_end(tmp_path, served):
    data = wav_bytes()
    item = audio_item(tmp_path, data)
    oracle = Oracle(audio={hashlib.sha256(data).hexdigest(): {"language": "zh", "sentences": ZH_SENTENCES}})
    with served(oracle=oracle) as (emu, asr, _):
        handle, transcript = transcribe(asr, item)
        assert billed(emu, "transcribe") == 1
    assert handle.job_id.startswith("req_") and handle.key == "utt-1"
    assert json.loads(json.dumps(handle.extra))["raw"] == handle.extra["raw"]  # the ledger stores it as JSON
    assert [s.text for s in transcript.sentences] == ["今天天气很好", "我们去公园"]
    assert [(s.start, s.end) for s in transcript.sentences] == [(0.0, 0.6), (0.6, 1.2)]
    assert transcript.language == "zh" and transcript.text == "今天天气很好我们去公园"
    assert transcript.confidence_kind == "avg_logprob" and 0.5 < transcript.confidence < 1.0
    logprobs = [seg["avg_logprob"] for seg in json.loads(handle.extra["raw"])["segments"]]
    assert transcript.confidence == pytest.approx(math.exp(sum(logprobs) / len(logprobs)))
    assert all(s.confidence is not None for s in transcript.sentences)


def test_vllm_dialect_is_valid_and_parses(tmp_path, served):
    """A model named like a HF repo gets vLLM's verbose_json: duration as a string,
    -1.0 placeholders. Those are "unknown", not a confidence of exp(-1)."""
    data = wav_bytes(330)
    item = audio_item(tmp_path, data, language="en")
    oracle = Oracle(audio={hashlib.sha256(data).hexdigest(): {"language": "en", "sentences": [{"start": 0.0, "end": 1.2, "text": "good morning"}]}})
    with served(oracle=oracle, transcription_model="openai/whisper-large-v3") as (_, asr, _):
        handle, transcript = transcribe(asr, item)
    raw = json.loads(handle.extra["raw"])
    assert isinstance(raw["duration"], str) and raw["segments"][0]["avg_logprob"] == -1.0
    assert transcript.text == "good morning" and transcript.language == "en"
    assert transcript.confidence is None and transcript.confidence_kind == "none"
    assert transcript.sentences[0].confidence is None


@pytest.mark.parametrize(
    "payload, expected",
    [
        ({"text": "hello there", "duration": "2.5"}, [(0.0, 2.5, "hello there")]),  # json-only server, no segments
        ({"text": "hello there"}, [(0.0, 1.0, "hello there")]),  # no duration either: the item's
        ({"text": "hi", "segments": [], "language": "english"}, [(0.0, 1.0, "hi")]),
        ({"text": "", "segments": [], "language": "english", "duration": 1.0}, []),  # no speech
        ({"text": " a b", "segments": [{"start": "0.0", "end": "0.5", "text": " a b", "avg_logprob": None}]}, [(0.0, 0.5, "a b")]),
    ],
)
def test_parse_is_lenient(tmp_path, payload, expected):
    item = audio_item(tmp_path, wav_bytes(), language="en")
    item = AudioItem(item.key, item.path, 1.0, "en")
    asr = OpenAiTranscription(ProviderConfig(name="openai"))
    transcript = asr.parse(json.dumps(payload), item)
    assert [(s.start, s.end, s.text) for s in transcript.sentences] == expected
    assert transcript.confidence_kind == "none" and transcript.empty == (not expected)


@pytest.mark.parametrize(
    "raw",
    ['{"text": "cut', "<html>413</html>", "[]", '{"segments": [{"start": 0}]}', '{"segments": "x"}', '{"text": 5}'],
)
def test_parse_rejects_malformed(tmp_path, raw):
    item = audio_item(tmp_path, wav_bytes())
    with pytest.raises(errors.MalformedResponse):
        OpenAiTranscription(ProviderConfig(name="openai")).parse(raw, item)


SIMPLE_FAULTS = {
    "rate_limit": (errors.RateLimited, 0),
    "quota": (errors.QuotaExhausted, 0),
    "server_error": (errors.ServerError, 0),
    "timeout": (errors.AmbiguousSubmit, 0),  # the emulator hangs before transcribing
    "ambiguous_submit": (errors.AmbiguousSubmit, 1),  # transcribed and billed, then reset
    "auth": (errors.AuthError, 0),
    "too_large": (errors.ItemFatal, 0),
    "action_retired": (errors.ServiceDisabled, 0),
}


@pytest.mark.parametrize("fault", sorted(SIMPLE_FAULTS))
def test_transcription_faults_map_to_error_classes(tmp_path, fault, served):
    error_class, expected_billing = SIMPLE_FAULTS[fault]
    item = audio_item(tmp_path, wav_bytes())
    with served(f"{fault}=1") as (emu, asr, _):
        with pytest.raises(error_class) as caught:
            transcribe(asr, item)
        assert billed(emu, "transcribe") == expected_billing
    assert caught.value.provider == "openai"
    assert KEY not in str(caught.value) and KEY not in repr(caught.value)
    if fault == "rate_limit":
        assert caught.value.retry_after == pytest.approx(0.12) and caught.value.code == "rate_limit_exceeded"
    if fault == "quota":
        assert caught.value.status == 429 and caught.value.code == "insufficient_quota"
    if fault == "too_large":
        assert caught.value.status == 413
    if fault in ("rate_limit", "server_error", "auth"):
        assert caught.value.request_id and caught.value.request_id.startswith("req_")


def test_transcription_no_speech_is_an_empty_billed_transcript(tmp_path, served):
    item = audio_item(tmp_path, wav_bytes())
    with served("no_speech=1") as (emu, asr, _):
        handle, transcript = transcribe(asr, item)
        assert billed(emu, "transcribe") == 1
    assert transcript.empty and transcript.sentences == ()
    assert json.loads(handle.extra["raw"])["segments"] == []


def test_transcription_malformed_answers_are_retryable(tmp_path, served):
    """Both malformed variants (a proxy's HTML 413 page, a truncated JSON 200) are
    MalformedResponse, never ItemFatal: the item is not at fault."""
    items, seen = [], set()
    for frequency in range(200, 400, 10):
        data = wav_bytes(frequency)
        variant = malformed_variant(hashlib.sha256(data).hexdigest())
        if variant not in seen:
            seen.add(variant)
            items.append((variant, audio_item(tmp_path, data, key=f"utt-{frequency}")))
    assert seen == {"html_413", "truncated_json"}
    with served("malformed=1") as (emu, asr, _):
        for variant, item in items:
            with pytest.raises(errors.MalformedResponse) as caught:
                transcribe(asr, item)
            assert caught.value.status == (413 if variant == "html_413" else None)
        assert billed(emu, "transcribe") == 1  # only the truncated answer was transcribed


def test_wrong_key_is_an_auth_error_without_the_key(tmp_path, served):
    wrong = "sk-wrong-key-0123456789abcdef"
    item = audio_item(tmp_path, wav_bytes())
    with served(api_key=wrong) as (emu, asr, mt):
        with pytest.raises(errors.AuthError) as asr_error:
            transcribe(asr, item)
        with pytest.raises(errors.AuthError) as mt_error:
            translate(mt, ["你好"])
        assert emu.billing.snapshot()["calls"] == {}
    for caught in (asr_error, mt_error):
        assert caught.value.status == 401
        for text in (str(caught.value), repr(caught.value), caught.value.message):
            assert wrong not in text and KEY not in text
    assert wrong not in repr(asr.config) and KEY not in repr(asr.config)


def test_oversized_upload_fails_before_the_network(tmp_path):
    item = audio_item(tmp_path, wav_bytes())
    asr = OpenAiTranscription(ProviderConfig(name="openai", endpoint="http://127.0.0.1:9", credentials={"api_key": Secret(KEY)}))
    from mooer_data.providers.types import StagedAudio

    async def flow():
        async with httpx.AsyncClient() as client:
            await asr.submit(client, item, StagedAudio(data=b"\0" * (26_214_400 + 1)))

    with pytest.raises(errors.ItemFatal, match="26214401"):
        asyncio.run(flow())


def test_unreachable_endpoint_is_a_network_error(tmp_path):
    item = audio_item(tmp_path, wav_bytes())
    asr = OpenAiTranscription(ProviderConfig(name="openai", endpoint="http://127.0.0.1:9", credentials={"api_key": Secret(KEY)}, timeout=1.0))
    with pytest.raises(errors.NetworkError):
        transcribe(asr, item)


def test_endpoint_and_model_sources(monkeypatch):
    monkeypatch.delenv("MOOER_OPENAI_ENDPOINT", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    plain = OpenAiTranscription(ProviderConfig(name="openai"))
    assert plain.endpoint == "https://api.openai.com"
    monkeypatch.setenv("OPENAI_BASE_URL", "http://localhost:8000/v1/")  # the SDK's variable, /v1 included
    assert plain.endpoint == "http://localhost:8000"
    monkeypatch.setenv("MOOER_OPENAI_ENDPOINT", "http://127.0.0.1:5000")
    assert plain.endpoint == "http://127.0.0.1:5000"
    assert OpenAiTranscription(ProviderConfig(name="openai", endpoint="http://proxy/")).endpoint == "http://proxy"
    item = AudioItem("k", "x.wav", 1.0, "zh")
    assert plain.transcription_form(item)["model"] == "whisper-1"
    assert OpenAiChatTranslation(ProviderConfig(name="openai")).chat_request(["a"], "zh", "en")["model"] == "gpt-4o-mini"
    shared = ProviderConfig(name="openai", options={"transcription_model": "whisper-large-v3", "chat_model": "qwen2.5-7b"})
    assert OpenAiTranscription(shared).transcription_form(item)["model"] == "whisper-large-v3"
    assert OpenAiChatTranslation(shared).chat_request(["a"], "zh", "en")["model"] == "qwen2.5-7b"


def test_retry_after_hints():
    assert retry_after_seconds(httpx.Headers({"retry-after-ms": "250", "retry-after": "3"})) == 0.25
    assert retry_after_seconds(httpx.Headers({"retry-after": "3"})) == 3.0
    assert retry_after_seconds(httpx.Headers({"x-ratelimit-reset-requests": "1m30s"})) == 90.0
    assert retry_after_seconds(httpx.Headers({"x-ratelimit-reset-requests": "20ms"})) == pytest.approx(0.02)
    assert retry_after_seconds(httpx.Headers({})) is None


# -- chat translation ------------------------------------------------------------------


def test_chat_translation_end_to_end(served):
    texts = ["你好", "今天天气很好", "谢谢"]
    oracle = Oracle(translations={"你好": "Hello", "今天天气很好": "The weather is nice today", "谢谢": "Thank you"})
    with served(oracle=oracle) as (emu, _, mt):
        assert translate(mt, texts) == ["Hello", "The weather is nice today", "Thank you"]
        assert billed(emu, "chat") == 1


def test_chat_translation_from_a_local_model_in_code_fences(served):
    with served(oracle=Oracle(translations={"你好": "Hello"}), chat_model="qwen2.5-7b-instruct") as (_, _, mt):
        assert translate(mt, ["你好", "谢谢"]) == ["Hello", Oracle().translate("谢谢", "en")]


CHAT_FAULTS = {
    "rate_limit": errors.RateLimited,
    "quota": errors.QuotaExhausted,
    "server_error": errors.ServerError,
    "timeout": errors.AmbiguousSubmit,
    "malformed": errors.MalformedResponse,
    "partial": errors.MalformedResponse,
    "auth": errors.AuthError,
    "too_large": errors.ItemFatal,
    "action_retired": errors.ServiceDisabled,
}


@pytest.mark.parametrize("fault", sorted(CHAT_FAULTS))
def test_chat_faults_map_to_error_classes(fault, served):
    with served(f"{fault}=1") as (emu, _, mt):
        with pytest.raises(CHAT_FAULTS[fault]) as caught:
            translate(mt, ["你好", "谢谢", "再见"])
        # answered (and billed) by the model, then rejected by our parser
        assert billed(emu, "chat") == (1 if fault in ("malformed", "partial") else 0)
    assert KEY not in str(caught.value)
    if fault == "partial":
        assert "length mismatch" in str(caught.value) and "expected 3" in str(caught.value)
    if fault == "rate_limit":
        assert caught.value.retry_after == pytest.approx(0.12)


@pytest.mark.parametrize(
    "content, expected",
    [
        ('["a", "b"]', ["a", "b"]),
        ('```json\n["a", "b"]\n```', ["a", "b"]),
        ('```\n["a", "b"]```', ["a", "b"]),
        ('{"translations": ["a", "b"]}', ["a", "b"]),
        ('Here you go: ["a", "b"]', ["a", "b"]),
    ],
)
def test_chat_parse_accepts_common_wrappings(content, expected):
    raw = json.dumps({"choices": [{"message": {"content": content}, "finish_reason": "stop"}]})
    assert OpenAiChatTranslation(ProviderConfig(name="openai")).parse(raw, 2) == expected


@pytest.mark.parametrize(
    "choice, error",
    [
        ({"message": {"content": '["a"]'}, "finish_reason": "stop"}, errors.MalformedResponse),  # N-1
        ({"message": {"content": '["a", 2]'}, "finish_reason": "stop"}, errors.MalformedResponse),
        ({"message": {"content": "a\nb"}, "finish_reason": "stop"}, errors.MalformedResponse),
        ({"message": {"content": '["a", "b'}, "finish_reason": "length"}, errors.ItemFatal),
        ({"message": {"content": None, "refusal": "I can't"}, "finish_reason": "stop"}, errors.ItemFatal),
        ({"nothing": True}, errors.MalformedResponse),
    ],
)
def test_chat_parse_rejects(choice, error):
    raw = json.dumps({"choices": [choice]})
    with pytest.raises(error):
        OpenAiChatTranslation(ProviderConfig(name="openai")).parse(raw, 2)


# -- the official SDK as a client of the emulator --------------------------------------


def test_openai_sdk_transcribes_and_chats_against_the_emulator(served):
    data = wav_bytes()
    oracle = Oracle(audio={hashlib.sha256(data).hexdigest(): {"language": "zh", "sentences": ZH_SENTENCES}}, translations={"你好": "Hello"})
    with served(oracle=oracle) as (emu, _, _):
        client = openai.OpenAI(base_url=emu.base_url + "/v1", api_key=KEY, max_retries=0)
        verbose = client.audio.transcriptions.create(
            file=("utt.wav", data, "audio/wav"), model="whisper-1", response_format="verbose_json", timestamp_granularities=["segment", "word"], language="zh"
        )
        assert verbose.language == "chinese" and verbose.text == "今天天气很好我们去公园"
        assert [(s.start, s.end, s.text) for s in verbose.segments] == [(0.0, 0.6, "今天天气很好"), (0.6, 1.2, "我们去公园")]
        assert isinstance(verbose.duration, float) and verbose.words and verbose.usage.type == "duration"
        plain = client.audio.transcriptions.create(file=("utt.wav", data, "audio/wav"), model="whisper-1")
        assert plain.text == verbose.text
        chat = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": json.dumps(["你好"], ensure_ascii=False)}])
        assert json.loads(chat.choices[0].message.content) == ["Hello"] and chat.choices[0].finish_reason == "stop"
        assert billed(emu, "transcribe") == 2 and billed(emu, "chat") == 1

        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=emu.base_url + "/v1", api_key="sk-wrong-0000000000", max_retries=0).chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])


@pytest.mark.parametrize(
    "fault, sdk_error, code",
    [
        ("rate_limit", openai.RateLimitError, "rate_limit_exceeded"),
        ("quota", openai.RateLimitError, "insufficient_quota"),  # same class: only the code tells them apart
        ("too_large", openai.APIStatusError, None),  # 413 typed server_error, yet not a 5xx
        ("action_retired", openai.NotFoundError, "model_not_found"),
        ("auth", openai.AuthenticationError, "invalid_api_key"),
    ],
)
def test_openai_sdk_reads_the_fault_envelopes(fault, sdk_error, code, served):
    with served(f"{fault}=1") as (emu, _, _):
        client = openai.OpenAI(base_url=emu.base_url + "/v1", api_key=KEY, max_retries=0)
        with pytest.raises(sdk_error) as caught:
            client.audio.transcriptions.create(file=("utt.wav", wav_bytes(), "audio/wav"), model="whisper-1", response_format="verbose_json")
    assert caught.value.code == code
    if fault == "too_large":
        assert caught.value.status_code == 413 and caught.value.type == "server_error"
    if fault == "rate_limit":
        assert caught.value.response.headers["retry-after-ms"] == "120"


class Recorder:
    """Wraps the emulator's routes and keeps every request they answer."""

    provider = "openai"

    def __init__(self, routes):
        self.routes, self.requests = routes, []

    def matches(self, request):
        return any(route.matches(request) for route in self.routes)

    def handle(self, request, emulator):
        self.requests.append(request)
        return next(route for route in self.routes if route.matches(request)).handle(request, emulator)


def test_our_upload_matches_the_sdk_request(tmp_path, emulator):
    """Same path, same Bearer header, same multipart fields as openai-python sends."""
    data = wav_bytes()
    item = audio_item(tmp_path, data)
    recorder = Recorder(openai_routes.ROUTES)
    saved, emulator.routes = emulator.routes, [recorder]
    try:
        client = openai.OpenAI(base_url=emulator.base_url + "/v1", api_key=KEY, max_retries=0)
        client.audio.transcriptions.create(file=(item.path.name, data, "audio/wav"), model="whisper-1", response_format="verbose_json", timestamp_granularities=["segment"], language="zh")
        transcribe(OpenAiTranscription(ProviderConfig(name="openai", endpoint=emulator.base_url, credentials={"api_key": Secret(KEY)})), item)
    finally:
        emulator.routes = saved
    sdk, ours = recorder.requests
    assert sdk.path == ours.path == "/v1/audio/transcriptions"
    assert sdk.headers["authorization"] == ours.headers["authorization"] == f"Bearer {KEY}"
    sdk_form = parse_multipart(sdk.body, sdk.headers["content-type"])
    our_form = parse_multipart(ours.body, ours.headers["content-type"])
    assert our_form.fields == sdk_form.fields
    assert our_form.fields["timestamp_granularities[]"] == ["segment"]
    assert our_form.files["file"] == sdk_form.files["file"] == (item.path.name, "audio/wav", data)


def test_multipart_parser_rejects_broken_bodies():
    with pytest.raises(ValueError, match="boundary"):
        parse_multipart(b"x", "application/json")
    body = b'--b\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper-1\r\n--b--\r\n'
    assert parse_multipart(body, "multipart/form-data; boundary=b").fields == {"model": ["whisper-1"]}
    with pytest.raises(ValueError, match="truncated"):
        parse_multipart(body[:30], "multipart/form-data; boundary=b")


def test_a_storm_ends_with_every_item_transcribed_and_translated(tmp_path, served):
    """Transient and ambiguous faults only ever need a retry: nothing becomes fatal."""
    items = [audio_item(tmp_path, wav_bytes(200 + 37 * n), key=f"utt-{n}") for n in range(6)]

    def retried(call):
        for _ in range(20):
            try:
                return call()
            except (errors.TransientError, errors.AmbiguousSubmit):
                continue
        raise AssertionError("expected the storm to pass within 20 attempts")

    with served("storm=0.5,seed=3") as (emu, asr, mt):
        before = sum(emu.requests.values())
        transcripts = [retried(lambda item=item: transcribe(asr, item)[1]) for item in items]
        translations = [retried(lambda n=n: translate(mt, [f"第{n}句", "你好"])) for n in range(6)]
        assert sum(emu.requests.values()) - before > len(items) * 2  # the storm did strike
    assert all(not t.empty for t in transcripts) and all(len(t) == 2 for t in translations)

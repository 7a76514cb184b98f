"""Alibaba FileTrans: the adapter end to end against the emulator, the official SDK
(aliyunsdkcore) as a client of the emulator, our POP signature against the SDK's, and
every emulated fault mapped onto the right error class (with billing counts)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import urllib.parse
import uuid

import httpx
import numpy as np
import pytest
import soundfile as sf

from mooer_data.providers import pop_signature
from mooer_data.providers.aliyun import API_VERSION, AliyunFileTrans
from mooer_data.providers.base import ProviderConfig
from mooer_data.providers.emulator import DEFAULT_CREDENTIALS, FaultPlan, Oracle, build_emulator, client_environment
from mooer_data.providers.emulator.core import Billing
from mooer_data.providers.errors import (
    AmbiguousSubmit,
    AuthError,
    InvalidRequest,
    ItemFatal,
    JobExpired,
    JobFailed,
    MalformedResponse,
    NetworkError,
    NotConfigured,
    QuotaExhausted,
    RateLimited,
    ServerError,
)
from mooer_data.providers.secrets import Secret
from mooer_data.providers.stager import UrlPrefixStager
from mooer_data.providers.types import AudioItem, JobStatus, StagedAudio

CREDENTIALS = DEFAULT_CREDENTIALS["aliyun"]
SENTENCES = [{"start": 0.12, "end": 0.61, "text": "北京的天气。"}, {"start": 0.7, "end": 0.95, "text": "很好。"}]
CLIENT_TIMEOUT = 1.0  # the emulator's "timeout" fault hangs a little longer than this


# -- fixtures and helpers ------------------------------------------------------------------
@pytest.fixture(scope="module")
def audio_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("aliyun-audio")
    rng = np.random.default_rng(0)
    sf.write(root / "clip.wav", (rng.standard_normal(16000) * 3000).astype(np.int16), 16000, subtype="PCM_16")
    sf.write(root / "narrow.wav", (rng.standard_normal(8000) * 3000).astype(np.int16), 8000, subtype="PCM_16")
    return root


@pytest.fixture(scope="module")
def shared_emulator(audio_dir):
    # one server per module keeps the tests fast; each test resets faults and billing
    digest = hashlib.sha256((audio_dir / "clip.wav").read_bytes()).hexdigest()
    oracle = Oracle(audio={digest: {"language": "zh", "sentences": SENTENCES}})
    emu = build_emulator(oracle=oracle, providers=["aliyun"], job_seconds=0.05, hang_seconds=CLIENT_TIMEOUT + 0.3, audio_root=audio_dir)
    with emu:
        yield emu


@pytest.fixture
def emu(shared_emulator):
    """The shared emulator with no faults and a fresh billing counter."""
    shared_emulator.faults = FaultPlan()
    shared_emulator.billing = Billing()
    yield shared_emulator
    shared_emulator.faults = FaultPlan()


def set_faults(emu, spec: str) -> None:
    emu.faults = FaultPlan.parse(spec)


def audio_item(audio_dir, name="clip.wav", rate=16000) -> AudioItem:
    return AudioItem(key=name.split(".")[0], path=audio_dir / name, duration=1.0, language="zh", sample_rate=rate)


def make_provider(base_url: str | None, **credentials) -> AliyunFileTrans:
    secrets = {name: Secret(value) for name, value in {**CREDENTIALS, **credentials}.items()}
    return AliyunFileTrans(ProviderConfig(name="aliyun", endpoint=base_url, credentials=secrets))


def staged_for(emu, audio_dir, audio: AudioItem) -> StagedAudio:
    return UrlPrefixStager(f"{emu.base_url}/audio", audio_dir).stage(audio)


async def wait_done(provider, client, handle, polls: int = 100) -> None:
    for _ in range(polls):
        if await provider.poll(client, handle) is JobStatus.SUCCEEDED:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"job {handle.job_id} never finished")


def transcribe(provider, audio, staged):
    async def run():
        async with httpx.AsyncClient(timeout=CLIENT_TIMEOUT) as client:
            handle = await provider.submit(client, audio, staged)
            await wait_done(provider, client, handle)
            raw = await provider.fetch(client, handle)
        return provider.parse(raw, audio), raw

    return asyncio.run(run())


def submit_only(provider, audio, staged):
    async def run():
        async with httpx.AsyncClient(timeout=CLIENT_TIMEOUT) as client:
            return await provider.submit(client, audio, staged)

    return asyncio.run(run())


def billed(emu) -> float:
    return emu.billing.snapshot()["calls"].get("aliyun:SubmitTask", 0)


def assert_no_secret(error: Exception) -> None:
    for value in CREDENTIALS.values():
        for text in (str(error), repr(error), error.message):
            assert value not in text


# -- end to end -------------------------------------------------------------------------------
def test_transcribes_through_emulator(emu, audio_dir):
    audio = audio_item(audio_dir)
    transcript, raw = transcribe(make_provider(emu.base_url), audio, staged_for(emu, audio_dir, audio))
    assert [(s.start, s.end, s.text) for s in transcript.sentences] == [(0.12, 0.61, "北京的天气。"), (0.7, 0.95, "很好。")]
    assert transcript.text == "北京的天气。很好。" and transcript.confidence is None and transcript.confidence_kind == "none"
    assert json.loads(raw)["StatusCode"] == 21050000
    assert billed(emu) == 1


def test_configured_from_environment(emu, audio_dir, monkeypatch):
    for name, value in client_environment(emu.base_url).items():
        monkeypatch.setenv(name, value)
    provider = AliyunFileTrans(ProviderConfig(name="aliyun"))
    provider.check_configured()
    assert provider.endpoint == emu.base_url
    audio = audio_item(audio_dir)
    transcript, _ = transcribe(provider, audio, staged_for(emu, audio_dir, audio))
    assert len(transcript.sentences) == 2


def test_missing_credentials_say_which_variable(monkeypatch):
    for name in ("ALIBABA_CLOUD_ACCESS_KEY_ID", "ALIBABA_CLOUD_ACCESS_KEY_SECRET", "ALIYUN_NLS_APPKEY"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(NotConfigured, match="ALIBABA_CLOUD_ACCESS_KEY_ID"):
        AliyunFileTrans(ProviderConfig(name="aliyun")).check_configured()


def test_inline_audio_is_refused_with_a_hint(audio_dir):
    audio = audio_item(audio_dir)
    with pytest.raises(InvalidRequest, match="--stager-url-prefix"):
        submit_only(make_provider("http://127.0.0.1:9"), audio, StagedAudio(data=b"RIFF...."))


def test_region_option_picks_host_and_region_id(monkeypatch):
    monkeypatch.delenv("MOOER_ALIYUN_ENDPOINT", raising=False)
    provider = AliyunFileTrans(ProviderConfig(name="aliyun", credentials={k: Secret(v) for k, v in CREDENTIALS.items()}, options={"region": "cn-beijing"}))
    url, _ = provider.signed_request("GetTaskResult", "GET", {"TaskId": "x"})
    assert url.startswith("https://filetrans.cn-beijing.aliyuncs.com/?")
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))
    assert query["RegionId"] == "cn-beijing" and query["Version"] == API_VERSION and query["Action"] == "GetTaskResult"


def test_task_json_follows_the_documented_shape(audio_dir):
    task = make_provider(None).build_task(audio_item(audio_dir), "https://example.com/a.wav")
    assert task == {
        "appkey": CREDENTIALS["appkey"],
        "file_link": "https://example.com/a.wav",
        "version": "4.0",
        "enable_words": False,
        "enable_sample_rate_adaptive": True,
    }


# -- the official SDK as a client of the emulator ---------------------------------------------
def sdk_client(emu, secret=CREDENTIALS["access_key_secret"]):
    from aliyunsdkcore.client import AcsClient

    port = int(emu.base_url.rsplit(":", 1)[1])
    return AcsClient(CREDENTIALS["access_key_id"], secret, "cn-shanghai", port=port, auto_retry=False)


def sdk_request(action: str, method: str):
    from aliyunsdkcore.request import CommonRequest

    request = CommonRequest(domain="127.0.0.1", version=API_VERSION, action_name=action, product="nls-filetrans")
    request.set_method(method)
    request.set_protocol_type("http")
    return request


def test_official_sdk_submits_and_polls_against_emulator(emu, audio_dir):
    client = sdk_client(emu)
    submit = sdk_request("SubmitTask", "POST")
    task = {"appkey": CREDENTIALS["appkey"], "file_link": f"{emu.base_url}/audio/clip.wav", "version": "4.0", "enable_words": False}
    submit.add_body_params("Task", json.dumps(task))
    answer = json.loads(client.do_action_with_exception(submit))
    assert answer["StatusText"] == "SUCCESS" and answer["StatusCode"] == 21050000
    query = sdk_request("GetTaskResult", "GET")
    query.add_query_param("TaskId", answer["TaskId"])
    for _ in range(100):
        result = json.loads(client.do_action_with_exception(query))
        if result["StatusText"] not in ("QUEUEING", "RUNNING"):
            break
    assert result["StatusText"] == "SUCCESS"
    assert [s["Text"] for s in result["Result"]["Sentences"]] == ["北京的天气。", "很好。"]


def test_gateway_string_to_sign_equals_the_sdks_own(emu, audio_dir):
    from aliyunsdkcore.acs_exception.exceptions import ServerException

    query = sdk_request("GetTaskResult", "GET")
    query.add_query_param("TaskId", "0" * 32)
    with pytest.raises(ServerException) as raised:
        sdk_client(emu, secret="not-the-secret").do_action_with_exception(query)
    assert raised.value.get_error_code() == "SignatureDoesNotMatch"
    assert raised.value.get_http_status() == 400
    # the gateway echoes its string to sign, as Alibaba's does: it equals the SDK's own,
    # so the emulator canonicalised the SDK's request exactly (only the key differed)
    server_string = raised.value.get_error_msg().split("server string to sign is:")[1]
    assert server_string == query.request.string_to_sign


def test_signature_equals_the_sdk_for_the_same_nonce_and_timestamp(monkeypatch):
    from aliyunsdkcore.auth.composer import rpc_signature_composer as composer
    from aliyunsdkcore.utils import parameter_helper

    nonce, timestamp = "3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf", "2026-05-04T03:02:01Z"
    monkeypatch.setattr(parameter_helper, "get_uuid", lambda: nonce)
    monkeypatch.setattr(parameter_helper, "get_iso_8061_date", lambda: timestamp)
    body = {"Task": json.dumps({"appkey": "k", "file_link": "https://a.example/x y*~/ü.wav", "version": "4.0"})}
    query = {"Action": "SubmitTask", "Version": API_VERSION, "RegionId": "cn-shanghai"}
    url, sdk_string = composer.get_signed_url(dict(query), "LTAIid", "se cret*~", "JSON", "POST", body)
    sdk_params = dict(urllib.parse.parse_qsl(url[2:], keep_blank_values=True))
    sdk_signature = sdk_params.pop("Signature")
    assert pop_signature.string_to_sign("POST", {**sdk_params, **body}) == sdk_string
    assert pop_signature.sign("POST", {**sdk_params, **body}, "se cret*~") == sdk_signature

    # and the adapter's own request: the SDK signs our parameters to the same value
    provider = make_provider("https://filetrans.cn-shanghai.aliyuncs.com")
    ours, form = provider.signed_request("SubmitTask", "POST", {}, body, nonce=nonce, timestamp=timestamp)
    our_params = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(ours).query))
    our_signature = our_params.pop("Signature")
    signed = {**our_params, **dict(urllib.parse.parse_qsl(form.decode()))}
    sdk_compose = getattr(composer, "__compose_string_to_sign")
    sdk_sign = getattr(composer, "__get_signature")
    assert our_signature == sdk_sign(sdk_compose("POST", signed), CREDENTIALS["access_key_secret"])
    assert our_params["SignatureNonce"] == nonce and our_params["Timestamp"] == timestamp


def test_signature_matches_the_documented_example():
    params = {
        "AccessKeyId": "testid",
        "Action": "DescribeRegions",
        "Format": "XML",
        "SignatureMethod": "HMAC-SHA1",
        "SignatureNonce": "3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf",
        "SignatureVersion": "1.0",
        "Timestamp": "2016-02-23T12:46:24Z",
        "Version": "2014-05-26",
    }
    assert pop_signature.string_to_sign("GET", params).startswith("GET&%2F&AccessKeyId%3Dtestid%26Action%3DDescribeRegions")
    assert "Timestamp%3D2016-02-23T12%253A46%253A24Z" in pop_signature.string_to_sign("GET", params)
    assert pop_signature.sign("GET", params, "testsecret") == "OLeaidS1JvxuMvnyHOwuJ+uX5qY="


# -- authentication ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "credentials, code",
    [
        ({"access_key_secret": "wrong-secret-value"}, "SignatureDoesNotMatch"),
        ({"access_key_id": "LTAIwrongKeyId0000"}, "InvalidAccessKeyId.NotFound"),
        ({"appkey": "wrongAppKeyValue"}, "REQUEST_APPKEY_UNREGISTERED"),
    ],
)
def test_wrong_credentials_are_auth_errors_without_secrets(emu, audio_dir, credentials, code):
    audio = audio_item(audio_dir)
    with pytest.raises(AuthError) as raised:
        submit_only(make_provider(emu.base_url, **credentials), audio, staged_for(emu, audio_dir, audio))
    assert raised.value.code == code
    assert_no_secret(raised.value)
    for value in credentials.values():
        assert value not in str(raised.value)
    assert billed(emu) == 0


def test_reused_nonce_and_stale_timestamp_are_rejected(emu, audio_dir):
    from mooer_data.providers.aliyun import gateway_error

    provider = make_provider(emu.base_url)
    nonce = str(uuid.uuid4())
    url, _ = provider.signed_request("GetTaskResult", "GET", {"TaskId": "f" * 32}, nonce=nonce)
    first, second = httpx.get(url), httpx.get(url)
    assert first.status_code == 200 and first.json()["StatusText"] == "FILE_TRANS_TASK_EXPIRED"
    assert second.status_code == 400 and second.json()["Code"] == "SignatureNonceUsed"
    assert isinstance(gateway_error("aliyun", "GetTaskResult", second), AuthError)

    stale, _ = provider.signed_request("GetTaskResult", "GET", {"TaskId": "f" * 32}, timestamp="2016-02-23T12:46:24Z")
    error = gateway_error("aliyun", "GetTaskResult", httpx.get(stale))
    assert isinstance(error, AuthError) and error.code == "InvalidTimeStamp.Expired" and "clock" in str(error)

    tampered = url.replace(nonce, nonce + "-2")
    assert httpx.get(tampered).json()["Code"] == "SignatureDoesNotMatch"


# -- the service's own checks on the file ---------------------------------------------------
def test_narrowband_audio_fails_item_with_sample_rate(emu, audio_dir):
    audio = audio_item(audio_dir, "narrow.wav", 8000)
    with pytest.raises(ItemFatal) as raised:
        transcribe(make_provider(emu.base_url), audio, staged_for(emu, audio_dir, audio))
    assert raised.value.code == "UNSUPPORTED_SAMPLE_RATE"
    assert billed(emu) == 0


def test_missing_file_fails_the_item(emu, audio_dir):
    audio = audio_item(audio_dir)
    with pytest.raises(ItemFatal):
        transcribe(make_provider(emu.base_url), audio, StagedAudio(url=f"{emu.base_url}/audio/absent.wav"))


# -- faults: submit side ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "fault, error_class, bills",
    [
        ("rate_limit", RateLimited, 0),
        ("server_error", ServerError, 0),
        ("timeout", AmbiguousSubmit, 0),
        ("ambiguous_submit", AmbiguousSubmit, 1),
        ("malformed", MalformedResponse, 0),
        ("auth", AuthError, 0),
        ("quota", QuotaExhausted, 0),
    ],
)
def test_submit_faults_map_to_error_classes(emu, audio_dir, fault, error_class, bills):
    set_faults(emu, f"{fault}=1")
    audio = audio_item(audio_dir)
    with pytest.raises(error_class) as raised:
        submit_only(make_provider(emu.base_url), audio, staged_for(emu, audio_dir, audio))
    assert type(raised.value) is error_class
    assert_no_secret(raised.value)
    assert billed(emu) == bills
    if fault == "ambiguous_submit":  # the task was created although the client never heard
        assert len(emu.billing.snapshot()["by_key"]) == 1


@pytest.mark.parametrize(
    "fault, error_class, retryable, code",
    [
        ("job_failed", JobFailed, True, None),
        ("too_large", ItemFatal, False, "FILE_TOO_LARGE"),
    ],
)
def test_task_failures_map_to_error_classes(emu, audio_dir, fault, error_class, retryable, code):
    set_faults(emu, f"{fault}=1")
    audio = audio_item(audio_dir)
    with pytest.raises(error_class) as raised:
        transcribe(make_provider(emu.base_url), audio, staged_for(emu, audio_dir, audio))
    assert type(raised.value) is error_class
    assert getattr(raised.value, "retryable", False) is retryable
    assert code is None or raised.value.code == code
    assert billed(emu) == 0  # FileTrans bills recognised audio, not failed tasks


def test_no_speech_is_an_empty_transcript(emu, audio_dir):
    set_faults(emu, "no_speech=1")
    audio = audio_item(audio_dir)
    transcript, raw = transcribe(make_provider(emu.base_url), audio, staged_for(emu, audio_dir, audio))
    assert transcript.empty and json.loads(raw)["StatusText"] == "SUCCESS_WITH_NO_VALID_FRAGMENT"
    assert billed(emu) == 1


def test_stuck_job_stays_queued(emu, audio_dir):
    set_faults(emu, "stuck=1")
    audio = audio_item(audio_dir)
    provider = make_provider(emu.base_url)

    async def run():
        async with httpx.AsyncClient(timeout=CLIENT_TIMEOUT) as client:
            handle = await provider.submit(client, audio, staged_for(emu, audio_dir, audio))
            await asyncio.sleep(0.15)  # three times job_seconds
            return [await provider.poll(client, handle) for _ in range(3)]

    assert asyncio.run(run()) == [JobStatus.QUEUED] * 3
    assert billed(emu) == 0


# -- faults: poll side --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "fault, error_class",
    [
        ("rate_limit", RateLimited),
        ("server_error", ServerError),
        ("timeout", NetworkError),  # a query is safe to resend
        ("malformed", MalformedResponse),
        ("unknown_job", JobExpired),
    ],
)
def test_poll_faults_map_to_error_classes(emu, audio_dir, fault, error_class, monkeypatch):
    audio = audio_item(audio_dir)
    provider = make_provider(emu.base_url)
    # unknown_job only strikes a task that has not finished: keep it running whatever the
    # machine's speed between submit and poll
    monkeypatch.setattr(emu.jobs, "job_seconds", 60.0)

    async def run():
        async with httpx.AsyncClient(timeout=CLIENT_TIMEOUT) as client:
            handle = await provider.submit(client, audio, staged_for(emu, audio_dir, audio))
            emu.faults = FaultPlan.parse(f"{fault}=1")
            await provider.poll(client, handle)

    with pytest.raises(error_class) as raised:
        asyncio.run(run())
    assert type(raised.value) is error_class
    assert_no_secret(raised.value)
    if fault == "unknown_job":
        assert raised.value.retryable and billed(emu) == 0  # lost before it ran: not billed


def test_poll_fault_clears_and_job_finishes_billed_once(emu, audio_dir):
    audio = audio_item(audio_dir)
    provider = make_provider(emu.base_url)

    async def run():
        async with httpx.AsyncClient(timeout=CLIENT_TIMEOUT) as client:
            handle = await provider.submit(client, audio, staged_for(emu, audio_dir, audio))
            emu.faults = FaultPlan.parse("rate_limit=1")
            await asyncio.sleep(0.1)
            with pytest.raises(RateLimited):
                await provider.poll(client, handle)
            emu.faults = FaultPlan()
            await wait_done(provider, client, handle)
            await wait_done(provider, client, handle)  # polling again bills nothing more
            return provider.parse(await provider.fetch(client, handle), audio)

    assert len(asyncio.run(run()).sentences) == 2
    assert billed(emu) == 1


# -- parse (pure) --------------------------------------------------------------------------------
DOC_RESULT = {
    "TaskId": "d429dd7dd75711e89305ab6170fe****",
    "RequestId": "9240D669-6485-4DCC-896A-F8B31F94****",
    "StatusText": "SUCCESS",
    "BizDuration": 2956,
    "SolveTime": 1540363288472,
    "StatusCode": 21050000,
    "Result": {
        "Sentences": [
            {"EndTime": 2365, "SilenceDuration": 0, "BeginTime": 340, "Text": "北京的天气。", "ChannelId": 1, "SpeechRate": 177, "EmotionValue": 5.0},
            {"EndTime": 900, "SilenceDuration": 0, "BeginTime": 100, "Text": "喂", "ChannelId": 0, "SpeechRate": 100, "EmotionValue": 5.0},
        ]
    },
}


def test_parse_recorded_payload_orders_channels_in_time(audio_dir):
    transcript = make_provider(None).parse(json.dumps(DOC_RESULT, ensure_ascii=False), audio_item(audio_dir))
    assert [(s.start, s.end, s.text) for s in transcript.sentences] == [(0.1, 0.9, "喂"), (0.34, 2.365, "北京的天气。")]
    assert transcript.language == "zh" and all(s.confidence is None for s in transcript.sentences)


@pytest.mark.parametrize(
    "raw",
    [
        "{\"TaskId\": \"x\", \"StatusText\": \"SUCC",
        json.dumps({"StatusText": "SUCCESS", "StatusCode": 21050000}),
        json.dumps({"StatusText": "SUCCESS", "Result": {"Sentences": [{"Text": "x"}]}}),
        json.dumps({"StatusText": "RUNNING", "StatusCode": 21050001}),
    ],
)
def test_parse_rejects_malformed_payloads(audio_dir, raw):
    with pytest.raises(MalformedResponse):
        make_provider(None).parse(raw, audio_item(audio_dir))


@pytest.mark.parametrize(
    "status_text, code, submitting, error_class, retryable",
    [
        ("FILE_DOWNLOAD_FAILED", 41050002, False, JobFailed, True),
        ("RECOGNIZE_FAILED", 51050002, False, JobFailed, True),
        ("UNSUPPORTED_SAMPLE_RATE", 41050008, False, ItemFatal, False),
        ("FILE_TRANS_TASK_EXPIRED", 41050010, False, JobExpired, True),
        ("USER_BIZDURATION_QUOTA_EXCEED", 41050001, True, QuotaExhausted, False),
        ("REQUEST_APPKEY_UNREGISTERED", 41050015, True, AuthError, False),
        ("RAM_CHECK_FAILED", 41050021, True, AuthError, False),
        ("INTERNAL_ERROR", 51050000, True, ServerError, False),  # no task was made: a plain 5xx
        ("SOMETHING_NEW", 51059999, False, JobFailed, True),  # 5xxxxxxx: the server's side
        ("SOMETHING_ELSE", 41059999, False, JobFailed, False),
    ],
)
def test_status_table(status_text, code, submitting, error_class, retryable):
    from mooer_data.providers.aliyun import status_error

    error = status_error("aliyun", {"StatusText": status_text, "StatusCode": code, "RequestId": "R"}, submitting=submitting)
    assert type(error) is error_class and getattr(error, "retryable", False) is retryable
    assert error.code == status_text and error.request_id == "R" and str(code) in str(error)


@pytest.mark.parametrize(
    "status, body, error_class",
    [
        (400, {"Code": "Throttling.User", "Message": "Request was denied due to user flow control."}, RateLimited),
        (429, {"Code": "Throttling.User", "Message": "Request was denied due to user flow control."}, RateLimited),
        (503, "<html>Service Unavailable</html>", ServerError),
        (500, {"Code": "InternalError", "Message": "x"}, ServerError),
        (400, {"Code": "MissingParameter", "Message": "x"}, InvalidRequest),
        (403, {"Code": "Forbidden.RAM", "Message": "User not authorized to operate on the specified resource."}, AuthError),
        (400, {"Code": "SignatureDoesNotMatch", "Message": "Specified signature is not matched with our calculation. server string to sign is:GET&%2F&AccessKeyId%3DLTAImooerEmulator000000"}, AuthError),
    ],
)
def test_gateway_table(status, body, error_class):
    from mooer_data.providers.aliyun import gateway_error

    content = json.dumps(body).encode() if isinstance(body, dict) else body.encode()
    response = httpx.Response(status, content=content, headers={"Retry-After": "2"})
    error = gateway_error("aliyun", "SubmitTask", response)
    assert type(error) is error_class and error.status == status
    assert "string to sign" not in str(error) and CREDENTIALS["access_key_id"] not in str(error)
    if error_class is RateLimited:
        assert error.retry_after == 2.0

"""Tencent Cloud ASR + TMT: the adapters end to end against the emulator, the official SDK
as a client of the same emulator (protocol fidelity), our TC3 signature equal to the
SDK's, every injected fault mapped to its error class (with billing counts), and no
secret in any error."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import time
import types
from contextlib import contextmanager

import httpx
import numpy as np
import pytest
import soundfile as sf

from mooer_data.providers import tc3
from mooer_data.providers.base import ProviderConfig
from mooer_data.providers.emulator import DEFAULT_CREDENTIALS, FaultPlan, Oracle, build_emulator, client_environment
from mooer_data.providers.errors import (
    AmbiguousSubmit,
    AuthError,
    InvalidRequest,
    ItemFatal,
    JobExpired,
    JobFailed,
    MalformedResponse,
    NetworkError,
    ProviderError,
    QuotaExhausted,
    RateLimited,
    ServerError,
    ServiceDisabled,
)
from mooer_data.providers.secrets import Secret
from mooer_data.providers.tencent import TencentAsr, TencentTmt, classify_error
from mooer_data.providers.types import AudioItem, JobStatus, StagedAudio

CREDS = DEFAULT_CREDENTIALS["tencent"]
SECRETS = (CREDS["secret_id"], CREDS["secret_key"])
CLIENT_TIMEOUT = 1.0
HANG_SECONDS = CLIENT_TIMEOUT + 0.4
SENTENCES = [
    {"start": 0.0, "end": 0.42, "text": "Hello there."},
    {"start": 0.42, "end": 0.9, "text": "Second sentence here."},
]


def wav_bytes(seed: int = 0, seconds: float = 0.9) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    sf.write(buffer, (rng.standard_normal(int(16000 * seconds)) * 0.1).astype("float32"), 16000, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


@pytest.fixture
def audio(tmp_path) -> tuple[AudioItem, bytes]:
    data = wav_bytes()
    path = tmp_path / "utt1.wav"
    path.write_bytes(data)
    return AudioItem(key="utt1", path=path, duration=0.9, language="en"), data


def oracle_for(*payloads: bytes) -> Oracle:
    return Oracle(
        audio={hashlib.sha256(p).hexdigest(): {"language": "en", "sentences": SENTENCES} for p in payloads},
        translations={"你好，世界": "Hello, world"},
    )


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One emulator for the module (stopping one costs the server's 0.5 s poll interval);
    tests set its fault plan with :func:`faults` and count billing as differences."""
    root = tmp_path_factory.mktemp("served-audio")
    emu = build_emulator(oracle=Oracle(), providers=["tencent"], hang_seconds=HANG_SECONDS, job_seconds=0.05, audio_root=root)
    emu.audio_dir = root
    with emu:
        yield emu


@contextmanager
def faults(emu, spec: str | None = None, oracle_payloads: tuple[bytes, ...] = ()):
    """The emulator with this fault plan, these payloads known to the oracle, and a
    billing meter that counts only what happens inside the block."""
    emu.faults = FaultPlan.parse(spec)
    emu.oracle.audio.update(oracle_for(*oracle_payloads).audio)
    emu.oracle.translations.update(oracle_for().translations)
    emu.meter = Meter(emu)
    try:
        yield emu
    finally:
        emu.faults = FaultPlan()


class Meter:
    def __init__(self, emu):
        self.emu = emu
        self.start = emu.billing.snapshot()

    def calls(self, operation: str) -> float:
        now = self.emu.billing.snapshot()["calls"]
        key = f"tencent:{operation}"
        return now.get(key, 0) - self.start["calls"].get(key, 0)

    def new_keys(self) -> set[str]:
        return set(self.emu.billing.snapshot()["by_key"]) - set(self.start["by_key"])


def config(emu, *, secret_key: str | None = None, secret_id: str | None = None, **options) -> ProviderConfig:
    return ProviderConfig(
        name="tencent",
        endpoint=emu.base_url,
        credentials={"secret_id": Secret(secret_id or CREDS["secret_id"]), "secret_key": Secret(secret_key or CREDS["secret_key"])},
        options=options,
        timeout=CLIENT_TIMEOUT,
    )


async def transcribe(provider: TencentAsr, item: AudioItem, staged: StagedAudio, max_polls: int = 200):
    async with httpx.AsyncClient() as client:
        handle = await provider.submit(client, item, staged)
        for _ in range(max_polls):
            if await provider.poll(client, handle) is JobStatus.SUCCEEDED:
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError(f"job {handle.job_id} never finished")
        raw = await provider.fetch(client, handle)
        return handle, provider.parse(raw, item)


async def translate(provider: TencentTmt, text: str, source: str = "zh", target: str = "en") -> list[str]:
    async with httpx.AsyncClient() as client:
        raw = await provider.translate_raw(client, [text], source, target)
    return provider.parse(raw, 1)


def billed(emu, operation: str) -> float:
    return emu.meter.calls(operation)


def assert_no_secret(error: BaseException) -> None:
    for value in SECRETS:
        assert value not in str(error) and value not in repr(error) and value not in getattr(error, "message", "")


# -- signing: ours equals the SDK's ---------------------------------------------------------
FIXED_TS = 1_767_225_600  # 2026-01-01T00:00:00Z


def test_tc3_headers_equal_the_sdk_for_the_same_request(monkeypatch):
    import tencentcloud.common.abstract_client as abstract_client
    from tencentcloud.asr.v20190614.asr_client import AsrClient
    from tencentcloud.common.credential import Credential
    from tencentcloud.common.http.request import RequestInternal

    monkeypatch.setattr(abstract_client, "time", types.SimpleNamespace(time=lambda: FIXED_TS))
    sdk = AsrClient(Credential(*SECRETS), "ap-shanghai")
    params = {"EngineModelType": "16k_zh", "ChannelNum": 1, "ResTextFormat": 2, "SourceType": 0, "Url": "https://example.com/a b.wav"}
    request = RequestInternal("asr.tencentcloudapi.com", "POST", "/")
    sdk._build_req_with_tc3_signature("CreateRecTask", params, request)

    ours = tc3.sign_headers(
        secret_id=SECRETS[0], secret_key=SECRETS[1], service="asr", action="CreateRecTask", version="2019-06-14",
        host=request.header["Host"], body=request.data.encode("utf-8"), timestamp=FIXED_TS, region="ap-shanghai", language="zh-CN",
    )  # fmt: skip
    assert ours["Authorization"] == request.header["Authorization"]
    for name in ("Host", "Content-Type", "X-TC-Action", "X-TC-Version", "X-TC-Timestamp", "X-TC-Region", "X-TC-Language"):
        assert ours[name] == request.header[name]
    lower = {k.lower(): v for k, v in ours.items()}
    verdict = tc3.verify(method="POST", uri="/", query="", headers=lower, body=request.data.encode(), service="asr", secrets={SECRETS[0]: SECRETS[1]}, now=FIXED_TS + 10)
    assert verdict is None


def test_adapter_request_is_signed_like_the_sdk_signs_it():
    from tencentcloud.common.http.request import RequestInternal
    from tencentcloud.tmt.v20180321.tmt_client import TmtClient
    from tencentcloud.common.credential import Credential

    captured: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        captured.append(request)
        return httpx.Response(200, json={"Response": {"TargetText": "hi", "Source": "zh", "Target": "en", "UsedAmount": 2, "RequestId": "r"}})

    provider = TencentTmt(ProviderConfig("tencent", endpoint="https://tmt.tencentcloudapi.com", credentials={"secret_id": Secret(SECRETS[0]), "secret_key": Secret(SECRETS[1])}))
    provider.clock = lambda: FIXED_TS

    async def run():
        async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as client:
            return await provider.translate_raw(client, ["你好"], "zh", "en")

    assert provider.parse(asyncio.run(run()), 1) == ["hi"]
    sent = captured[0]
    assert sent.headers["host"] == "tmt.tencentcloudapi.com" and sent.headers["x-tc-region"] == "ap-guangzhou"
    # the SDK's own signing routine over the very bytes we sent
    sdk = TmtClient(Credential(*SECRETS), "ap-guangzhou")
    internal = RequestInternal("tmt.tencentcloudapi.com", "POST", "/", header={"Content-Type": sent.headers["content-type"], "Host": sent.headers["host"], "X-TC-Timestamp": str(FIXED_TS)}, data=sent.content)
    expected = sdk._get_tc3_signature({}, internal, tc3.utc_date(FIXED_TS), "tmt", SECRETS[1])
    assert sent.headers["authorization"].endswith(f"Signature={expected}")
    assert f"Credential={SECRETS[0]}/2026-01-01/tmt/tc3_request, SignedHeaders=content-type;host," in sent.headers["authorization"]


# -- adapters end to end ---------------------------------------------------------------------
def test_asr_end_to_end_inline_with_environment_credentials(audio, monkeypatch, shared):
    item, data = audio
    with faults(shared, oracle_payloads=(data,)) as emu:
        for name, value in client_environment(emu.base_url).items():
            monkeypatch.setenv(name, value)
        provider = TencentAsr(ProviderConfig("tencent", timeout=CLIENT_TIMEOUT))
        assert provider.endpoint == emu.base_url
        handle, transcript = asyncio.run(transcribe(provider, item, StagedAudio(data=data)))
        assert handle.job_id.isdigit() and int(handle.job_id) >= 10_000_000_000
        assert [(s.start, s.end, s.text) for s in transcript.sentences] == [(0.0, 0.42, "Hello there."), (0.42, 0.9, "Second sentence here.")]
        assert transcript.language == "en" and transcript.confidence is None and transcript.confidence_kind == "none"
        assert all(s.confidence is None for s in transcript.sentences)
        assert billed(emu, "CreateRecTask") == 1
        job = emu.jobs.get(handle.job_id)
        assert job.payload["engine"] == "16k_en" and job.payload["res_text_format"] == 2


def test_asr_end_to_end_by_url_and_flat_result_fallback(shared):
    data = wav_bytes(seed=3)
    (shared.audio_dir / "clip.wav").write_bytes(data)
    item = AudioItem(key="clip", path=shared.audio_dir / "clip.wav", duration=0.9, language="zh")
    with faults(shared, oracle_payloads=(data,)) as emu:
        staged = StagedAudio(url=f"{emu.base_url}/audio/clip.wav")
        provider = TencentAsr(config(emu, engine={"zh": "16k_zh_en"}, res_text_format=0))
        handle, transcript = asyncio.run(transcribe(provider, item, staged))
        # ResTextFormat 0 returns no ResultDetail: the sentences come from the flat Result
        assert [(s.start, s.end, s.text) for s in transcript.sentences] == [(0.0, 0.42, "Hello there."), (0.42, 0.9, "Second sentence here.")]
        assert emu.jobs.get(handle.job_id).payload["engine"] == "16k_zh_en"
        assert billed(emu, "CreateRecTask") == 1


def test_asr_unreachable_url_fails_the_task_unbilled(audio, shared):
    item, _ = audio
    with faults(shared) as emu:
        provider = TencentAsr(config(emu))
        with pytest.raises(JobFailed) as caught:
            asyncio.run(transcribe(provider, item, StagedAudio(url=f"{emu.base_url}/no-such/file.wav")))
        assert caught.value.retryable and "download" in str(caught.value)
        assert billed(emu, "CreateRecTask") == 0


def test_tmt_end_to_end(shared):
    with faults(shared) as emu:
        provider = TencentTmt(config(emu))
        assert asyncio.run(translate(provider, "你好，世界")) == ["Hello, world"]
        assert asyncio.run(translate(provider, "unknown text", "en", "zh"))[0].startswith("[emulated zh]")
        assert billed(emu, "TextTranslate") == 2


def test_tmt_without_region_is_refused_by_the_service(shared):
    with faults(shared) as emu:
        provider = TencentTmt(config(emu, region=""))
        with pytest.raises(InvalidRequest) as caught:
            asyncio.run(translate(provider, "你好"))
        assert caught.value.code == "MissingParameter"


def test_tmt_takes_one_text_a_request():
    provider = TencentTmt(ProviderConfig("tencent"))
    with pytest.raises(InvalidRequest):
        provider.translate_params(["a", "b"], "zh", "en")


# -- the official SDK as a client of the emulator ---------------------------------------------
def sdk_profile(emu):
    from tencentcloud.common.profile.client_profile import ClientProfile
    from tencentcloud.common.profile.http_profile import HttpProfile

    http = HttpProfile(endpoint=emu.base_url.removeprefix("http://"), protocol="http", reqTimeout=5)
    return ClientProfile(httpProfile=http)


def test_sdk_asr_client_against_the_emulator(audio, shared):
    from tencentcloud.asr.v20190614 import models
    from tencentcloud.asr.v20190614.asr_client import AsrClient
    from tencentcloud.common.credential import Credential
    from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException

    _, data = audio
    with faults(shared, oracle_payloads=(data,)) as emu:
        client = AsrClient(Credential(*SECRETS), "", sdk_profile(emu))
        request = models.CreateRecTaskRequest()
        request.from_json_string(json.dumps({"EngineModelType": "16k_en", "ChannelNum": 1, "ResTextFormat": 2, "SourceType": 1, "Data": base64.b64encode(data).decode(), "DataLen": len(data)}))
        task_id = client.CreateRecTask(request).Data.TaskId
        assert isinstance(task_id, int)
        describe = models.DescribeTaskStatusRequest()
        describe.TaskId = task_id
        for _ in range(200):
            status = client.DescribeTaskStatus(describe).Data
            if status.Status == 2:
                break
            time.sleep(0.01)
        assert status.StatusStr == "success" and [d.FinalSentence for d in status.ResultDetail] == ["Hello there.", "Second sentence here."]
        assert status.ResultDetail[1].StartMs == 420 and status.ResultDetail[1].Words[0].OffsetStartMs == 0
        assert status.Result.startswith("[0:0.000,0:0.420]  Hello there.")

        wrong = AsrClient(Credential(SECRETS[0], "not-the-key"), "", sdk_profile(emu))
        with pytest.raises(TencentCloudSDKException) as caught:
            wrong.DescribeTaskStatus(describe)
        assert caught.value.code == "AuthFailure.SignatureFailure"
        unknown = models.DescribeTaskStatusRequest()
        unknown.TaskId = 123
        with pytest.raises(TencentCloudSDKException) as caught:
            client.DescribeTaskStatus(unknown)
        assert caught.value.code == "FailedOperation.NoSuchTask"


def test_sdk_common_client_text_translate_against_the_emulator(shared):
    from tencentcloud.common.common_client import CommonClient
    from tencentcloud.common.credential import Credential
    from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException

    with faults(shared) as emu:
        client = CommonClient("tmt", "2018-03-21", Credential(*SECRETS), "ap-guangzhou", profile=sdk_profile(emu))
        reply = client.call_json("TextTranslate", {"SourceText": "你好，世界", "Source": "auto", "Target": "en", "ProjectId": 0})
        assert reply["Response"]["TargetText"] == "Hello, world" and reply["Response"]["Source"] == "zh"
        with pytest.raises(TencentCloudSDKException) as caught:
            client.call_json("TextTranslateBatch", {"SourceTextList": ["a"], "Source": "en", "Target": "zh", "ProjectId": 0})
        assert caught.value.code == "InvalidAction"
        with pytest.raises(TencentCloudSDKException) as caught:
            client.call_json("TextTranslate", {"SourceText": "x", "Source": "en", "Target": "zh", "ProjectId": 0, "Bogus": 1})
        assert caught.value.code == "UnknownParameter"
        assert billed(emu, "TextTranslate") == 1


# -- faults ------------------------------------------------------------------------------------
SUBMIT_FAULTS = [
    ("rate_limit", RateLimited, 0),
    ("server_error", ServerError, 0),
    ("timeout", AmbiguousSubmit, 0),
    ("ambiguous_submit", AmbiguousSubmit, 1),
    ("malformed", MalformedResponse, 0),
    ("auth", AuthError, 0),
    ("quota", QuotaExhausted, 0),
    ("too_large", ItemFatal, 0),
    ("action_retired", ServiceDisabled, 0),
    ("job_failed", JobFailed, 0),
]


TWO_SHAPED = {"server_error", "malformed", "rate_limit"}  # two real answers each; see tencent_routes._variant


def shape(error: ProviderError) -> tuple:
    return (error.status, error.code, error.message[:40])


@pytest.mark.parametrize("fault,error,bills", SUBMIT_FAULTS, ids=[f[0] for f in SUBMIT_FAULTS])
def test_create_rec_task_faults_map_to_error_classes(fault, error, bills, audio, shared):
    item, data = audio
    with faults(shared, f"{fault}=1", oracle_payloads=(data,)) as emu:
        provider = TencentAsr(config(emu))
        shapes, sent = set(), 0
        # for a two-shaped fault (200 envelope / 502, truncated JSON / no Data) go on until both are seen
        while sent < 12 and len(shapes) < (2 if fault in TWO_SHAPED - {"rate_limit"} else 1):
            payload = wav_bytes(seed=100 + sent, seconds=0.2)
            with pytest.raises(error) as caught:
                asyncio.run(transcribe(provider, item, StagedAudio(data=payload)))
            assert_no_secret(caught.value)
            shapes.add(shape(caught.value))
            sent += 1
        assert len(shapes) == (2 if fault in TWO_SHAPED - {"rate_limit"} else 1)
        assert billed(emu, "CreateRecTask") == bills * sent
        if fault == "job_failed":
            assert caught.value.retryable
        if fault == "ambiguous_submit":  # the job exists although the client never heard of it
            assert len(emu.meter.new_keys()) == sent


def test_no_speech_inline_is_an_empty_transcript_unbilled(audio, shared):
    item, data = audio
    with faults(shared, "no_speech=1") as emu:
        handle, transcript = asyncio.run(transcribe(TencentAsr(config(emu)), item, StagedAudio(data=data)))
        assert transcript.empty and transcript.sentences == () and handle.extra["raw"]
        assert billed(emu, "CreateRecTask") == 0


def test_no_speech_by_url_is_a_finished_empty_task(shared):
    data = wav_bytes(seed=5)
    (shared.audio_dir / "quiet.wav").write_bytes(data)
    item = AudioItem(key="quiet", path=shared.audio_dir / "quiet.wav", duration=0.9, language="zh")
    with faults(shared, "no_speech=1") as emu:
        _, transcript = asyncio.run(transcribe(TencentAsr(config(emu)), item, StagedAudio(url=f"{emu.base_url}/audio/quiet.wav")))
        assert transcript.empty
        assert billed(emu, "CreateRecTask") == 1


def test_stuck_job_stays_queued(audio, shared):
    item, data = audio
    with faults(shared, "stuck=1") as emu:
        provider = TencentAsr(config(emu))

        async def run():
            async with httpx.AsyncClient() as client:
                handle = await provider.submit(client, item, StagedAudio(data=data))
                states = []
                for _ in range(5):
                    states.append(await provider.poll(client, handle))
                    await asyncio.sleep(0.03)
                return states

        assert set(asyncio.run(run())) == {JobStatus.QUEUED}
        assert billed(emu, "CreateRecTask") == 1


DESCRIBE_FAULTS = [
    ("rate_limit", RateLimited),
    ("server_error", ServerError),
    ("timeout", NetworkError),
    ("malformed", MalformedResponse),
    ("unknown_job", JobExpired),
]


@pytest.mark.parametrize("fault,error", DESCRIBE_FAULTS, ids=[f[0] for f in DESCRIBE_FAULTS])
def test_describe_task_status_faults_map_to_error_classes(fault, error, audio, shared):
    item, _ = audio
    wanted = 2 if fault in TWO_SHAPED - {"rate_limit"} else 1
    with faults(shared) as emu:
        provider = TencentAsr(config(emu))

        async def run():
            async with httpx.AsyncClient() as client:
                handles = [await provider.submit(client, item, StagedAudio(data=wav_bytes(seed=200 + i, seconds=0.2))) for i in range(8 if wanted == 2 else 1)]
                emu.faults = FaultPlan.parse(f"{fault}=1")  # only the polls meet the fault
                shapes = set()
                for handle in handles:
                    with pytest.raises(error) as caught:
                        await provider.poll(client, handle)
                    assert_no_secret(caught.value)
                    shapes.add(shape(caught.value))
                emu.faults = FaultPlan()
                return handles, shapes

        handles, shapes = asyncio.run(run())
        assert len(shapes) == wanted
        if fault == "unknown_job":  # expiry is permanent: the runner must resubmit
            with pytest.raises(JobExpired):
                asyncio.run(_poll_once(provider, handles[0]))
        assert billed(emu, "CreateRecTask") == len(handles)


async def _poll_once(provider, handle):
    async with httpx.AsyncClient() as client:
        return await provider.poll(client, handle)


TRANSLATE_FAULTS = [
    ("rate_limit", RateLimited),
    ("server_error", ServerError),
    ("timeout", AmbiguousSubmit),
    ("malformed", MalformedResponse),
    ("auth", AuthError),
    ("quota", QuotaExhausted),
    ("too_large", ItemFatal),
    ("action_retired", ServiceDisabled),
]


@pytest.mark.parametrize("fault,error", TRANSLATE_FAULTS, ids=[f[0] for f in TRANSLATE_FAULTS])
def test_text_translate_faults_map_to_error_classes(fault, error, shared):
    wanted = 2 if fault in TWO_SHAPED else 1
    with faults(shared, f"{fault}=1") as emu:
        provider = TencentTmt(config(emu))
        shapes, sent = set(), 0
        while sent < 12 and len(shapes) < wanted:
            with pytest.raises(error) as caught:
                asyncio.run(translate(provider, f"第{sent}句"))
            assert_no_secret(caught.value)
            shapes.add(shape(caught.value))
            sent += 1
        assert len(shapes) == wanted
        assert billed(emu, "TextTranslate") == 0


def test_server_rate_limit_answers_request_limit_exceeded():
    emu = build_emulator(providers=["tencent"], rate=1.0)
    with emu:
        provider = TencentTmt(config(emu))

        async def run():
            async with httpx.AsyncClient() as client:
                await provider.translate_raw(client, ["一"], "zh", "en")
                await provider.translate_raw(client, ["二"], "zh", "en")

        with pytest.raises(RateLimited) as caught:
            asyncio.run(run())
        assert caught.value.code == "RequestLimitExceeded"


# -- credentials -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "overrides,code",
    [({"secret_key": "wrongWrongWrongSecretKey0000"}, "AuthFailure.SignatureFailure"), ({"secret_id": "AKIDwrongWrongWrong000000"}, "AuthFailure.SecretIdNotFound")],
    ids=["wrong-key", "wrong-id"],
)
def test_wrong_credentials_raise_auth_error_without_secrets(overrides, code, audio, shared):
    item, data = audio
    with faults(shared) as emu:
        for provider, call in ((TencentAsr(config(emu, **overrides)), lambda p: transcribe(p, item, StagedAudio(data=data))), (TencentTmt(config(emu, **overrides)), lambda p: translate(p, "你好"))):
            with pytest.raises(AuthError) as caught:
                asyncio.run(call(provider))
            assert caught.value.code == code
            assert_no_secret(caught.value)
            for value in overrides.values():
                assert value not in str(caught.value) and value not in repr(provider.config)
        assert billed(emu, "CreateRecTask") == 0 and billed(emu, "TextTranslate") == 0


def test_clock_skew_over_five_minutes_is_signature_expire(shared):
    with faults(shared) as emu:
        provider = TencentTmt(config(emu))
        provider.clock = lambda: time.time() - 301
        with pytest.raises(AuthError) as caught:
            asyncio.run(translate(provider, "你好"))
        assert caught.value.code == "AuthFailure.SignatureExpire"
        provider.clock = lambda: time.time() - 200  # within the window: accepted
        assert asyncio.run(translate(provider, "你好"))


def test_missing_credentials_name_the_env_vars(monkeypatch):
    monkeypatch.delenv("TENCENTCLOUD_SECRET_ID", raising=False)
    monkeypatch.delenv("TENCENTCLOUD_SECRET_KEY", raising=False)
    provider = TencentAsr(ProviderConfig("tencent"))
    with pytest.raises(ProviderError, match="TENCENTCLOUD_SECRET_ID"):
        provider.check_configured()


# -- pure parts --------------------------------------------------------------------------------
def test_inline_audio_over_5_mb_is_item_fatal_before_any_request(audio):
    item, _ = audio
    provider = TencentAsr(ProviderConfig("tencent"))
    with pytest.raises(ItemFatal, match="URL stager"):
        provider.create_params(item, StagedAudio(data=b"\0" * (5 * 1024 * 1024 + 1)))
    params = provider.create_params(item, StagedAudio(data=b"RIFF"))
    assert params == {"EngineModelType": "16k_en", "ChannelNum": 1, "ResTextFormat": 2, "SourceType": 1, "Data": "UklGRg==", "DataLen": 4}
    params = provider.create_params(AudioItem("k", item.path, 1.0, "zh", sample_rate=8000), StagedAudio(url="https://b/x.wav"))
    assert params["EngineModelType"] == "8k_zh" and params["SourceType"] == 0 and params["Url"] == "https://b/x.wav"


@pytest.mark.parametrize(
    "code,error",
    [
        ("RequestLimitExceeded", RateLimited),
        ("RequestLimitExceeded.UinLimitExceeded", RateLimited),
        ("RequestLimitExceeded.GlobalRegionUinLimitExceeded", RateLimited),
        ("LimitExceeded.LimitedAccessFrequency", RateLimited),
        ("InternalError", ServerError),
        ("InternalError.ErrorDownFile", ServerError),
        ("InternalError.BackendTimeout", ServerError),
        ("FailedOperation.RequestAiLabErr", ServerError),
        ("AuthFailure.SignatureExpire", AuthError),
        ("AuthFailure.SecretIdNotFound", AuthError),
        ("FailedOperation.UserHasNoAmount", QuotaExhausted),
        ("FailedOperation.UserHasNoFreeAmount", QuotaExhausted),
        ("FailedOperation.ServiceIsolate", QuotaExhausted),
        ("FailedOperation.NoFreeAmount", QuotaExhausted),
        ("FailedOperation.NoSuchTask", JobExpired),
        ("ActionOffline", ServiceDisabled),
        ("UnauthorizedOperation.ActionNotFound", ServiceDisabled),
        ("FailedOperation.ErrorDownFile", JobFailed),
        ("FailedOperation.ErrorRecognize", JobFailed),
        ("InvalidParameterValue.ErrorVoicedataTooLong", ItemFatal),
        ("InvalidParameterValue.ErrorInvalidVoiceFormat", ItemFatal),
        ("UnsupportedOperation.TextTooLong", ItemFatal),
        ("UnsupportedOperation.UnsupportedSourceLanguage", InvalidRequest),
        ("MissingParameter", InvalidRequest),
        ("SomethingNew.NeverSeen", ServerError),
    ],
)
def test_error_code_table(code, error):
    mapped = classify_error(code, "message", request_id="req-1")
    assert type(mapped) is error and mapped.code == code and mapped.request_id == "req-1" and mapped.provider == "tencent"
    if isinstance(mapped, JobFailed):
        assert mapped.retryable


def test_parse_recorded_payloads(audio):
    item, _ = audio
    provider = TencentAsr(ProviderConfig("tencent"))
    detail = [
        {"FinalSentence": " 第一句。", "SliceSentence": None, "StartMs": 1020, "EndMs": 3460, "Words": None, "SpeakerId": None},
        {"FinalSentence": None, "StartMs": 3460, "EndMs": 3900},
    ]
    raw = json.dumps({"Response": {"Data": {"TaskId": 18446744073709551615, "Status": 2, "StatusStr": "success", "Result": "x", "ResultDetail": detail, "AudioDuration": None}, "RequestId": "r"}})
    transcript = provider.parse(raw, item)
    assert [(s.start, s.end, s.text) for s in transcript.sentences] == [(1.02, 3.46, "第一句。"), (3.46, 3.9, "")]
    no_voice = json.dumps({"Response": {"Error": {"Code": "InvalidParameterValue.NoHumanVoice", "Message": "no voice"}, "RequestId": "r"}})
    assert provider.parse(no_voice, item).empty
    flat = json.dumps({"Response": {"Data": {"TaskId": 1, "Status": 2, "Result": "[0:1.020,0:3.460]  first\n[1:02:03.5,1:02:04.000]  late\n", "ResultDetail": None}, "RequestId": "r"}})
    assert [(s.start, s.end, s.text) for s in provider.parse(flat, item).sentences] == [(1.02, 3.46, "first"), (3723.5, 3724.0, "late")]
    for broken in (
        "{not json",
        json.dumps({"Response": {"RequestId": "r"}}),
        json.dumps({"Response": {"Data": {"Status": 2, "ResultDetail": [{"FinalSentence": "a", "StartMs": "1", "EndMs": 2}]}}}),
        json.dumps({"Response": {"Data": {"Status": 1}}}),
        json.dumps(["Response"]),
    ):
        with pytest.raises(MalformedResponse):
            provider.parse(broken, item)
    with pytest.raises(JobFailed):
        provider.parse(json.dumps({"Response": {"Data": {"TaskId": 1, "Status": 3, "ErrorMsg": "audio decode failed"}}}), item)


def test_tmt_parse_checks_shape():
    provider = TencentTmt(ProviderConfig("tencent"))
    assert provider.parse(json.dumps({"Response": {"TargetText": "ok", "RequestId": "r"}}), 1) == ["ok"]
    with pytest.raises(MalformedResponse):
        provider.parse(json.dumps({"Response": {"Source": "zh", "RequestId": "r"}}), 1)
    with pytest.raises(QuotaExhausted):
        provider.parse(json.dumps({"Response": {"Error": {"Code": "FailedOperation.NoFreeAmount", "Message": "m"}, "RequestId": "r"}}), 1)


def test_non_200_gateway_answer_is_server_error():
    def answer(request):
        return httpx.Response(503, text="<html>busy</html>", headers={"Retry-After": "2"})

    provider = TencentTmt(ProviderConfig("tencent", credentials={"secret_id": Secret(SECRETS[0]), "secret_key": Secret(SECRETS[1])}))

    async def run():
        async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as client:
            await provider.translate_raw(client, ["你好"], "zh", "en")

    with pytest.raises(ServerError) as caught:
        asyncio.run(run())
    assert caught.value.status == 503 and caught.value.retry_after == 2.0


def test_endpoint_options_separate_asr_and_tmt():
    cfg = ProviderConfig("tencent", endpoint="https://proxy.example/", options={"tmt_endpoint": "https://tmt.example/"})
    assert TencentAsr(cfg).endpoint == "https://proxy.example"
    assert TencentTmt(cfg).endpoint == "https://tmt.example"

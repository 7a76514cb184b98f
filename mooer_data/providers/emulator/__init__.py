"""`mooer-data emulate`: every cloud provider's protocol on loopback, for tests and the demo.

Routes live one module per provider beside ``core.py``; :func:`build_emulator` assembles
them with an oracle, a fault plan and the credentials the emulator verifies signatures
with (by default :data:`DEFAULT_CREDENTIALS`, which clients use via the environment
variables :func:`client_environment` returns).
"""

from __future__ import annotations

import importlib
from pathlib import Path

from .core import FAULTS, Emulator, EmuRequest, EmuResponse, FaultPlan, Oracle

# Fixed, public, obviously-fake credentials: the emulator checks real signatures with them.
DEFAULT_CREDENTIALS: dict[str, dict[str, str]] = {
    "tencent": {"secret_id": "AKIDmooerEmulator000000000000000", "secret_key": "mooerEmulatorTencentSecretKey000"},
    "aliyun": {"access_key_id": "LTAImooerEmulator000000", "access_key_secret": "mooerEmulatorAliyunSecret000000", "appkey": "mooerEmulatorAppKey"},
    "openai": {"api_key": "sk-mooer-emulator-000000000000000000"},
    "deepl": {"auth_key": "00000000-mooer-emulator-deepl-key:fx"},
    "baidu": {"app_id": "20240808000000001", "secret_key": "mooerEmulatorBaiduKey"},
}

# provider name -> module (beside this file) exposing ROUTES: a list of route objects
ROUTE_MODULES = {
    "tencent": "tencent_routes",
    "aliyun": "aliyun_routes",
    "baidu": "baidu_routes",
    "openai": "openai_routes",
    "deepl": "deepl_routes",
}

# env var -> (provider, credential) for clients talking to the emulator
CLIENT_ENV = {
    "TENCENTCLOUD_SECRET_ID": ("tencent", "secret_id"),
    "TENCENTCLOUD_SECRET_KEY": ("tencent", "secret_key"),
    "ALIBABA_CLOUD_ACCESS_KEY_ID": ("aliyun", "access_key_id"),
    "ALIBABA_CLOUD_ACCESS_KEY_SECRET": ("aliyun", "access_key_secret"),
    "ALIYUN_NLS_APPKEY": ("aliyun", "appkey"),
    "OPENAI_API_KEY": ("openai", "api_key"),
    "DEEPL_AUTH_KEY": ("deepl", "auth_key"),
    "BAIDU_TRANSLATE_APP_ID": ("baidu", "app_id"),
    "BAIDU_TRANSLATE_SECRET_KEY": ("baidu", "secret_key"),
}


def load_routes(providers: list[str] | None = None) -> list:
    routes = []
    for provider in list(ROUTE_MODULES) if providers is None else providers:
        module = importlib.import_module(f"{__name__}.{ROUTE_MODULES[provider]}")
        routes.extend(module.ROUTES)
    return routes


def local_engine_answer(language: str = "en", engine: str = "pocketsphinx", options: dict | None = None):
    """An oracle fallback: transcribe unknown audio with the local ASR provider, so the
    emulator can serve any corpus (its answers are still labelled as emulated by the route)."""
    import tempfile

    from ..base import ProviderConfig
    from ..local_asr import LocalAsr
    from ..types import AudioItem

    provider = LocalAsr(ProviderConfig("local", options={"engine": engine, **(options or {})}))

    def answer(audio_bytes: bytes) -> dict:
        with tempfile.NamedTemporaryFile(suffix=".audio") as handle:
            handle.write(audio_bytes)
            handle.flush()
            import soundfile as sf

            duration = sf.info(handle.name).duration
            result = provider.transcribe(AudioItem(key="emulated", path=Path(handle.name), duration=duration, language=language))
        return {"language": result["language"], "sentences": [{k: s[k] for k in ("start", "end", "text")} for s in result["sentences"]]}

    return answer


def build_emulator(
    oracle: Oracle | Path | None = None,
    faults: FaultPlan | str | None = None,
    credentials: dict[str, dict[str, str]] | None = None,
    providers: list[str] | None = None,
    **options,
) -> Emulator:
    if not isinstance(oracle, Oracle):
        oracle = Oracle.load(oracle)
    if not isinstance(faults, FaultPlan):
        faults = FaultPlan.parse(faults)
    return Emulator(load_routes(providers), oracle, faults, credentials or DEFAULT_CREDENTIALS, **options)


def client_environment(base_url: str, credentials: dict[str, dict[str, str]] | None = None) -> dict[str, str]:
    """Environment variables pointing every provider adapter at an emulator."""
    credentials = credentials or DEFAULT_CREDENTIALS
    env = {name: credentials[p][c] for name, (p, c) in CLIENT_ENV.items() if p in credentials}
    for provider in ROUTE_MODULES:
        env[f"MOOER_{provider.upper()}_ENDPOINT"] = base_url
    return env


__all__ = [
    "DEFAULT_CREDENTIALS",
    "FAULTS",
    "Emulator",
    "EmuRequest",
    "EmuResponse",
    "FaultPlan",
    "Oracle",
    "build_emulator",
    "client_environment",
    "load_routes",
]

"""Providers by (kind, name): a lazy table of the built-ins, plus third-party plug-ins
from the ``mooer_data.providers`` entry point group (value ``module:Class``; the class
declares its ``kind`` and ``name``)."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from importlib.metadata import entry_points

ENTRY_POINT_GROUP = "mooer_data.providers"


@dataclass(frozen=True)
class ProviderSpec:
    kind: str
    name: str
    target: str  # "module:Class"
    install_hint: str = ""


BUILTIN: tuple[ProviderSpec, ...] = (
    ProviderSpec("asr", "tencent", "mooer_data.providers.tencent:TencentAsr"),
    ProviderSpec("asr", "aliyun", "mooer_data.providers.aliyun:AliyunFileTrans"),
    ProviderSpec("asr", "openai", "mooer_data.providers.openai_compat:OpenAiTranscription"),
    ProviderSpec("asr", "local", "mooer_data.providers.local_asr:LocalAsr", "pocketsphinx (bundled), funasr[knf] or a MooER checkpoint"),
    ProviderSpec("mt", "tencent", "mooer_data.providers.tencent:TencentTmt"),
    ProviderSpec("mt", "baidu", "mooer_data.providers.baidu:BaiduTranslate"),
    ProviderSpec("mt", "deepl", "mooer_data.providers.deepl:DeepLTranslate"),
    ProviderSpec("mt", "openai", "mooer_data.providers.openai_compat:OpenAiChatTranslation"),
    ProviderSpec("mt", "local", "mooer_data.providers.local_mt:LocalTranslation", "transformers + a local Marian or instruct model directory"),
)

_EXTRA: dict[tuple[str, str], ProviderSpec] = {}


def register_provider(spec: ProviderSpec) -> None:
    key = (spec.kind, spec.name)
    if key in _EXTRA or any((s.kind, s.name) == key for s in BUILTIN):
        raise ValueError(f"a {spec.kind} provider named {spec.name!r} is already registered")
    _EXTRA[key] = spec


def _entry_point_specs() -> list[ProviderSpec]:
    specs = []
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        cls = entry.load()
        specs.append(ProviderSpec(cls.kind, cls.name, entry.value))
    return specs


def all_specs() -> list[ProviderSpec]:
    specs = {(s.kind, s.name): s for s in BUILTIN}
    specs.update(_EXTRA)
    for spec in _entry_point_specs():
        specs.setdefault((spec.kind, spec.name), spec)
    return sorted(specs.values(), key=lambda s: (s.kind, s.name))


def provider_class(kind: str, name: str):
    for spec in all_specs():
        if (spec.kind, spec.name) == (kind, name):
            module_name, _, attribute = spec.target.partition(":")
            try:
                module = importlib.import_module(module_name)
            except ImportError as error:
                hint = f" (install {spec.install_hint})" if spec.install_hint else ""
                raise ValueError(f"{kind} provider {name!r} cannot be imported: {error}{hint}") from None
            return getattr(module, attribute)
    names = sorted(s.name for s in all_specs() if s.kind == kind)
    raise ValueError(f"unknown {kind} provider {name!r}: expected one of {', '.join(names)}")

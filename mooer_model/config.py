"""Typed configuration of the MooER model (reference/mooer-model.md §1).

The defaults are the released model's sizes: the Paraformer-large encoder (50 SAN-M
blocks of 512), the 2-frame adapter into Qwen2-7B-Instruct's 3584 dimensions, LoRA r=64
α=16 on every projection. Tests and the demo shrink them through the same fields
(``llm.tiny`` builds a Qwen2 from config instead of reading a directory).

Every dataclass checks itself in ``__post_init__`` and raises :class:`ConfigError`
saying what was expected and what was found; :func:`from_dict` refuses unknown keys, so a
typo in a YAML file is an error, not a silently ignored setting.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional, get_type_hints


class ConfigError(ValueError):
    """A configuration value is missing, unknown or out of range."""


def _need(condition: bool, where: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"{where}: {message}")


@dataclass
class EncoderConfig:
    """funasr's SANMEncoder (Paraformer-large), frozen by default as in MooER."""

    input_size: int = field(default=560, metadata={"help": "80 mel bins x LFR m=7"})
    output_size: int = field(default=512, metadata={"help": "encoder width"})
    attention_heads: int = 4
    linear_units: int = 2048
    num_blocks: int = field(default=50, metadata={"help": "1 encoders0 block (560->512) + num_blocks-1 encoders blocks"})
    kernel_size: int = field(default=11, metadata={"help": "FSMN memory kernel"})
    sanm_shfit: int = field(default=0, metadata={"help": "funasr's spelling"})
    dropout_rate: float = 0.1
    positional_dropout_rate: float = 0.1
    attention_dropout_rate: float = 0.1
    checkpoint: Optional[str] = field(default=None, metadata={"help": "paraformer-encoder.pth (a plain state dict); None = random init"})
    freeze: bool = field(default=True, metadata={"help": "MooER trains adapter + LoRA only"})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "recompute encoder blocks in backward (only matters when not frozen)"})

    def __post_init__(self) -> None:
        for name in ("input_size", "output_size", "attention_heads", "linear_units", "num_blocks", "kernel_size"):
            value = getattr(self, name)
            _need(isinstance(value, int) and value > 0, f"model.encoder.{name}", f"expected a positive integer, found {value!r}")
        _need(self.output_size % self.attention_heads == 0, "model.encoder",
              f"expected output_size divisible by attention_heads, found {self.output_size} and {self.attention_heads}")


@dataclass
class AdapterConfig:
    """MooER's LinearAdapter: stack ``downsample_rate`` frames, Linear-ReLU-Linear."""

    downsample_rate: int = field(default=2, metadata={"help": "encoder frames stacked per LLM position (120 ms)"})
    hidden_size: int = field(default=2048, metadata={"help": "fixed at 2048 in MooER's adapter"})

    def __post_init__(self) -> None:
        _need(isinstance(self.downsample_rate, int) and self.downsample_rate >= 1, "model.adapter.downsample_rate",
              f"expected an integer >= 1, found {self.downsample_rate!r}")
        _need(isinstance(self.hidden_size, int) and self.hidden_size > 0, "model.adapter.hidden_size",
              f"expected a positive integer, found {self.hidden_size!r}")


@dataclass
class LlmConfig:
    """The decoder: a local Qwen2(-Instruct) directory, or a tiny one built from config."""

    path: Optional[str] = field(default=None, metadata={"help": "local Hugging Face directory, e.g. pretrained_models/Qwen2-7B-Instruct"})
    tiny: Optional[dict] = field(default=None, metadata={"help": "Qwen2Config keyword arguments: build a random model (tests, demo)"})
    tokenizer: Optional[str] = field(default=None, metadata={"help": "tokenizer directory (default: path)"})
    dtype: str = field(default="bfloat16", metadata={"help": "bfloat16 (MooER; fp16 overflowed) or float32"})
    freeze: bool = True
    gradient_checkpointing: bool = False

    def __post_init__(self) -> None:
        _need((self.path is None) != (self.tiny is None), "model.llm",
              f"expected exactly one of path (a local model directory) or tiny (Qwen2Config arguments), found path={self.path!r} tiny={self.tiny!r}")
        _need(self.tiny is None or isinstance(self.tiny, dict), "model.llm.tiny", f"expected a mapping, found {type(self.tiny).__name__}")
        _need(self.path is not None or self.tokenizer is not None, "model.llm.tokenizer",
              "a tiny LLM has no directory to read a tokenizer from: expected tokenizer (a directory), found None")
        _need(self.dtype in ("bfloat16", "float32"), "model.llm.dtype", f"expected bfloat16 or float32, found {self.dtype!r}")

    @property
    def tokenizer_dir(self) -> str:
        return self.tokenizer or self.path  # type: ignore[return-value]


LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "gate_proj", "down_proj")


@dataclass
class LoraSettings:
    """peft LoRA on the LLM, MooER's values (asr_config_training.py)."""

    enabled: bool = True
    r: int = 64
    alpha: int = 16
    dropout: float = 0.05
    target_modules: list = field(default_factory=lambda: list(LORA_TARGETS))

    def __post_init__(self) -> None:
        _need(isinstance(self.r, int) and self.r > 0, "model.lora.r", f"expected a positive integer, found {self.r!r}")
        _need(0.0 <= self.dropout < 1.0, "model.lora.dropout", f"expected 0 <= dropout < 1, found {self.dropout!r}")
        _need(bool(self.target_modules), "model.lora.target_modules", "expected at least one module name, found none")


@dataclass
class ModelConfig:
    """The whole model. ``cmvn_file`` is the encoder's ``am.mvn``; ``init_from`` a MooER
    release directory (``paraformer_encoder/``, ``<task>/adapter_project.pt``,
    ``<task>/lora_weights/``) or one exported by ``mooer-train export``."""

    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    llm: LlmConfig = field(default_factory=lambda: LlmConfig(path="pretrained_models/Qwen2-7B-Instruct"))
    lora: LoraSettings = field(default_factory=LoraSettings)
    cmvn_file: Optional[str] = field(default=None, metadata={"help": "am.mvn (Kaldi nnet <AddShift>/<Rescale>); required"})
    init_from: Optional[str] = field(default=None, metadata={"help": "a MooER-layout checkpoint directory to start from"})
    init_task: str = field(default="asr", metadata={"help": "which task directory of init_from: asr, ast, asr_ast_mtl (MooER's) or any other"})
    prompt_template: str = "qwen"

    def __post_init__(self) -> None:
        # MooER ships asr/, ast/ and asr_ast_mtl/; its training writes <name>_merged/: any
        # plain directory name is accepted.
        _need(isinstance(self.init_task, str) and bool(self.init_task) and "/" not in self.init_task
              and "\\" not in self.init_task and self.init_task not in (".", ".."), "model.init_task",
              f"expected a task directory name such as asr, ast or asr_ast_mtl, found {self.init_task!r}")


# --------------------------------------------------------------------------------------
# dict <-> dataclass (shared by every config of the project)
# --------------------------------------------------------------------------------------
def from_dict(cls, data: dict | None, where: str = ""):
    """Build dataclass ``cls`` from a plain mapping, recursing into nested dataclasses;
    unknown keys are a :class:`ConfigError` naming the accepted ones."""
    data = dict(data or {})
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    _need(not unknown, where or cls.__name__, f"unknown key(s) {unknown}; expected among {sorted(names)}")
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        value, kind = data[f.name], hints[f.name]
        if dataclasses.is_dataclass(kind):
            _need(isinstance(value, dict), f"{where}.{f.name}".strip("."), f"expected a mapping, found {value!r}")
            value = from_dict(kind, value, f"{where}.{f.name}".strip("."))
        kwargs[f.name] = value
    return cls(**kwargs)


def to_dict(config) -> dict:
    """The plain-data form (YAML/JSON-safe) of any config dataclass."""
    return dataclasses.asdict(config)


def with_overrides(config, overrides: dict | None):
    """A copy of config dataclass ``config`` with dotted-key overrides applied, e.g.
    ``{"llm.dtype": "bfloat16", "encoder.num_blocks": 4, "cmvn_file": "am.mvn"}``; the result
    is validated like any config (an unknown key is a :class:`ConfigError`)."""
    data = to_dict(config)
    for dotted, value in (overrides or {}).items():
        node, parts = data, str(dotted).split(".")
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part) if isinstance(node, dict) else None
            if not isinstance(child, dict):
                raise ConfigError(f"override {dotted!r}: expected {'.'.join(parts[:depth + 1])} to be a section, found {child!r}")
            node = child
        node[parts[-1]] = value
    return from_dict(type(config), data)

"""The decoder: Qwen2(-Instruct) with a peft LoRA on every projection (reference §1.3, §1.5).

A real model comes from a local Hugging Face directory (``cfg.path``, e.g.
``pretrained_models/Qwen2-7B-Instruct``; nothing is downloaded); tests and the demo build a
tiny random Qwen2 from ``cfg.tiny`` (Qwen2Config arguments). The base is frozen and LoRA
(MooER: r=64, α=16, dropout 0.05 on q/k/v/o/up/gate/down) is the only trainable part.
"""

from __future__ import annotations

import torch
from torch import nn

from mooer_model.config import ConfigError, LlmConfig, LoraSettings

__all__ = ["load_tokenizer", "build_llm", "lora_state_dict", "torch_dtype", "unwrap_llm"]

_DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}


def torch_dtype(name: str) -> torch.dtype:
    if name not in _DTYPES:
        raise ConfigError(f"model.llm.dtype: expected one of {sorted(_DTYPES)}, found {name!r}")
    return _DTYPES[name]


def load_tokenizer(cfg: LlmConfig):
    """The LLM's tokenizer from ``cfg.tokenizer_dir``, right-padded as in MooER.

    Raises :class:`ConfigError` unless it has a pad and an eos token (Qwen2-Instruct:
    ``<|endoftext|>`` and ``<|im_end|>``): batches are padded with the one and every target
    ends with the other.
    """
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(cfg.tokenizer_dir, padding_side="right")
    if tokenizer.pad_token_id is None or tokenizer.eos_token_id is None:
        raise ConfigError(f"{cfg.tokenizer_dir}: expected a tokenizer with pad and eos tokens (Qwen2: <|endoftext|>, "
                          f"<|im_end|>), found pad={tokenizer.pad_token!r} eos={tokenizer.eos_token!r}")
    return tokenizer


def build_llm(cfg: LlmConfig, lora: LoraSettings, vocab_size: int | None = None) -> nn.Module:
    """The causal LM in ``cfg.dtype``, base frozen when ``cfg.freeze``, LoRA-wrapped when
    ``lora.enabled``. ``vocab_size`` (the tokenizer's size) fills a tiny config that lacks one."""
    dtype = torch_dtype(cfg.dtype)
    if cfg.tiny is not None:
        from transformers import Qwen2Config, Qwen2ForCausalLM

        arguments = dict(cfg.tiny)
        if "vocab_size" not in arguments:
            if vocab_size is None:
                raise ConfigError("model.llm.tiny: expected vocab_size (or a tokenizer to take it from), found neither")
            arguments["vocab_size"] = int(vocab_size)
        model = Qwen2ForCausalLM(Qwen2Config(**arguments)).to(dtype)
    else:
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(cfg.path, dtype=dtype)
    if vocab_size is not None and model.get_input_embeddings().num_embeddings < vocab_size:
        raise ConfigError(f"model.llm: expected an embedding table of at least {vocab_size} rows (the tokenizer's size), "
                          f"found {model.get_input_embeddings().num_embeddings}")
    model.requires_grad_(not cfg.freeze)
    if lora.enabled:
        from peft import LoraConfig, get_peft_model

        peft_config = LoraConfig(
            r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
            target_modules=list(lora.target_modules), bias="none", task_type="CAUSAL_LM",
        )
        model = get_peft_model(model, peft_config)
        if not cfg.freeze:  # peft froze the base; the config asks to train it too
            for name, parameter in model.named_parameters():
                if "lora_" not in name:
                    parameter.requires_grad_(True)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        # The audio embeddings carry grad, but text-only prefixes would not: keep the
        # checkpointed blocks' inputs on the graph either way.
        model.enable_input_require_grads()
    return model


def unwrap_llm(llm: nn.Module) -> nn.Module:
    """The plain causal LM under a PeftModel (itself when there is no LoRA)."""
    from peft import PeftModel

    return llm.get_base_model() if isinstance(llm, PeftModel) else llm


def lora_state_dict(llm: nn.Module) -> dict:
    """The LoRA weights in peft's saved naming (``base_model.model.….lora_A.weight``);
    empty when the LLM has no LoRA."""
    from peft import PeftModel, get_peft_model_state_dict

    if not isinstance(llm, PeftModel):
        return {}
    # save_embedding_layers=False: "auto" may look the base model up on the Hub, and MooER's
    # LoRA never touches the embeddings.
    return get_peft_model_state_dict(llm, save_embedding_layers=False)

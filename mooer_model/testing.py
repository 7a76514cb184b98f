"""Tiny MooER assets for tests and the demo, generated offline in about a second.

* :func:`write_tiny_assets` + :func:`tiny_model_config`: a tokenizer and an ``am.mvn``, and
  a :class:`ModelConfig` of the real architecture shrunk (2 SAN-M blocks of 64, a 2-layer
  Qwen2 of 64, LoRA r=8 on all seven projections).
* :func:`make_tiny_mooer_release`: a checkpoint laid out exactly like MooER's 2024
  release (``paraformer_encoder/``, ``asr/adapter_project.pt``, ``asr/lora_weights/`` with
  ``adapter_model.bin``) next to a tiny Qwen2 directory. It is written with torch, funasr and
  peft directly, not with :func:`mooer_model.release.export_release`, so the loader is
  tested against an independent writer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from mooer_model.config import AdapterConfig, EncoderConfig, LlmConfig, LoraSettings, ModelConfig, with_overrides
from mooer_model.testing_cmvn import write_am_mvn
from mooer_model.tokenizer_testing import TRAINING_TEXT, build_test_tokenizer, save_test_tokenizer

__all__ = ["TinyAssets", "write_tiny_assets", "tiny_model_config", "make_tiny_mooer_release",
           "TINY_ENCODER", "TINY_QWEN2", "TINY_ADAPTER_HIDDEN", "TINY_LORA_R"]

TINY_ENCODER = dict(output_size=64, attention_heads=4, linear_units=128, num_blocks=2)
TINY_QWEN2 = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=2048)
TINY_ADAPTER_HIDDEN = 128
TINY_LORA_R = 8

# Extra tokenizer text: what the espeak-ng demo corpora say, so demo targets tokenise into
# a few merges rather than bytes.
DEMO_TEXT = (
    "THE LANTERN SWUNG SLOWLY", "I DON'T THINK SO", "SHE OPENED THE DOOR", "IT WAS A COLD MORNING",
    "WHERE ARE YOU GOING", "THEY'LL BE HERE SOON", "今天天气很好", "我们去公园散步吧",
)


@dataclass
class TinyAssets:
    tokenizer_dir: Path
    cmvn_file: Path


def write_tiny_assets(directory) -> TinyAssets:
    """``<directory>/tokenizer/`` (a Qwen-shaped byte-level BPE) and ``<directory>/am.mvn``
    (seeded, realistic magnitudes, not identity, so a CMVN mix-up shows in results)."""
    directory = Path(directory)
    tokenizer_dir = save_test_tokenizer(directory / "tokenizer", texts=(*TRAINING_TEXT, *DEMO_TEXT))
    cmvn_file = directory / "am.mvn"
    write_am_mvn(cmvn_file, seed=0)
    return TinyAssets(tokenizer_dir=tokenizer_dir, cmvn_file=cmvn_file)


def tiny_model_config(assets: TinyAssets, **overrides) -> ModelConfig:
    """The MooER architecture shrunk (float32 by default); ``overrides`` are dotted keys,
    e.g. ``tiny_model_config(assets, **{"llm.dtype": "bfloat16"})`` or ``init_task="ast"``.
    The LLM's vocabulary is the tokenizer's size (filled in by ``build_llm``)."""
    config = ModelConfig(
        encoder=EncoderConfig(**TINY_ENCODER),
        adapter=AdapterConfig(downsample_rate=2, hidden_size=TINY_ADAPTER_HIDDEN),
        llm=LlmConfig(tiny=dict(TINY_QWEN2), tokenizer=str(assets.tokenizer_dir), dtype="float32"),
        lora=LoraSettings(r=TINY_LORA_R, alpha=16, dropout=0.05),
        cmvn_file=str(assets.cmvn_file),
    )
    return with_overrides(config, overrides)


def make_tiny_mooer_release(directory, seed: int = 0) -> tuple[Path, Path]:
    """``(release_dir, llm_dir)``: a miniature of MooER's released checkpoint (no
    ``mooer-model.json``, as in a real release) and the Qwen2 directory it goes with.

    Layout::

        release/paraformer_encoder/{am.mvn, paraformer-encoder.pth}
        release/asr/adapter_project.pt                 torch.save of encoder_projector.* tensors
        release/asr/lora_weights/{adapter_config.json, adapter_model.bin, README.md}
        qwen2/{config.json, model.safetensors, tokenizer.json, ...}

    Every part is random but seeded; the LoRA ``B`` matrices are non-zero so a LoRA that
    fails to load changes the model's output.
    """
    from funasr.models.sanm.encoder import SANMEncoder
    from funasr.models.transformer.embedding import SinusoidalPositionEncoder
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict
    from transformers import Qwen2Config, Qwen2ForCausalLM

    directory = Path(directory)
    release, llm_dir = directory / "release", directory / "qwen2"
    encoder_dir, task_dir = release / "paraformer_encoder", release / "asr"
    lora_dir = task_dir / "lora_weights"
    for folder in (encoder_dir, lora_dir, llm_dir):
        folder.mkdir(parents=True, exist_ok=True)
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        tokenizer = build_test_tokenizer((*TRAINING_TEXT, *DEMO_TEXT))
        tokenizer.save_pretrained(llm_dir)
        qwen = Qwen2ForCausalLM(Qwen2Config(
            vocab_size=len(tokenizer), eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
            bos_token_id=None, **TINY_QWEN2))
        qwen.save_pretrained(llm_dir)

        write_am_mvn(encoder_dir / "am.mvn", seed=seed)
        encoder = SANMEncoder(input_size=560, input_layer="pe", pos_enc_class=SinusoidalPositionEncoder,
                              normalize_before=True, kernel_size=11, sanm_shfit=0,
                              selfattention_layer_type="sanm", **TINY_ENCODER)
        torch.save(encoder.state_dict(), encoder_dir / "paraformer-encoder.pth")

        k, hidden = 2, TINY_ADAPTER_HIDDEN
        enc_dim, llm_dim = TINY_ENCODER["output_size"], TINY_QWEN2["hidden_size"]
        torch.save({
            "encoder_projector.linear1.weight": torch.randn(hidden, enc_dim * k) / (enc_dim * k) ** 0.5,
            "encoder_projector.linear1.bias": torch.randn(hidden) * 0.01,
            "encoder_projector.linear2.weight": torch.randn(llm_dim, hidden) / hidden ** 0.5,
            "encoder_projector.linear2.bias": torch.randn(llm_dim) * 0.01,
        }, task_dir / "adapter_project.pt")

        lora_config = LoraConfig(
            r=TINY_LORA_R, lora_alpha=16, lora_dropout=0.05, bias="none", task_type="CAUSAL_LM",
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "gate_proj", "down_proj"],
            init_lora_weights=False,  # random B as well as A: the LoRA visibly changes outputs
        )
        wrapped = get_peft_model(qwen, lora_config)
        # The 2024 release predates peft's safetensors default: a torch.save'd .bin.
        # (save_embedding_layers=False: "auto" would look the base model up on the Hub.)
        state = get_peft_model_state_dict(wrapped, save_embedding_layers=False)
        torch.save({key: value.detach().clone().contiguous() for key, value in state.items()}, lora_dir / "adapter_model.bin")
        lora_config.base_model_name_or_path = "pretrained_models/Qwen2-7B-Instruct"
        lora_config.inference_mode = True
        lora_config.save_pretrained(lora_dir)
        (lora_dir / "README.md").write_text("---\nlibrary_name: peft\n---\n\nA tiny stand-in for MooER's LoRA weights.\n",
                                            encoding="utf-8")
    finally:
        torch.random.set_rng_state(generator_state)
    return release, llm_dir

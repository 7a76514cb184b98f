"""The MooER model: frontend → SANM encoder → adapter → Qwen2 (+LoRA) (reference §1).

Every row the LLM sees is ``[audio embeddings][chat prompt][target][eos]``: the audio comes
before ``<|im_start|>system``, outside the chat turn, exactly as MooER trains and decodes.
In a batch from :mod:`mooer_model.data` the audio positions hold the placeholder id ``-1``
and are marked by ``modality_mask``; the adapter output is written into those positions and
the text embeddings fill the rest (MooER's ``audio_pad + text_embeds * ~mask``).

Precision follows MooER: the encoder and adapter keep float32 weights, the LLM runs in
``cfg.llm.dtype`` (bf16 for real models), and the audio embeddings are cast to the LLM's
embedding dtype where they are spliced in. The loss is computed in float32 on the target
positions only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mooer_model import prompts
from mooer_model.adapter import LinearAdapter
from mooer_model.config import ConfigError, ModelConfig
from mooer_model.data import AUDIO_PLACEHOLDER, IGNORE_INDEX
from mooer_model.encoder import build_encoder, run_encoder
from mooer_model.frontend import Frontend
from mooer_model.llm import build_llm, load_tokenizer

__all__ = ["GenerationSettings", "MooerOutput", "MooerModel", "build_model", "generation_config",
           "AUDIO_PLACEHOLDER", "IGNORE_INDEX"]


@dataclass
class GenerationSettings:
    """MooER's decoding settings (``MooerModel.generate``, commit 568124b)."""

    max_new_tokens: int = 200
    num_beams: int = 4
    length_penalty: float = 0.8
    eos_bias: float = -0.2
    do_sample: bool = False
    min_length: int = 1
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    temperature: float = 1.0

    def __post_init__(self) -> None:
        for name in ("max_new_tokens", "num_beams"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"generation {name}: expected a positive integer, found {value!r}")
        if not isinstance(self.min_length, int) or self.min_length < 0:
            raise ValueError(f"generation min_length: expected an integer >= 0, found {self.min_length!r}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"generation top_p: expected 0 < top_p <= 1, found {self.top_p!r}")
        if self.temperature <= 0.0 or self.repetition_penalty <= 0.0:
            raise ValueError(f"generation temperature / repetition_penalty: expected positive values, "
                             f"found {self.temperature!r} / {self.repetition_penalty!r}")


@dataclass
class MooerOutput:
    loss: Tensor     # mean cross-entropy over target + eos tokens (labels != -100), float32
    correct: Tensor  # how many of those tokens the argmax predicts (token accuracy = correct / tokens)
    tokens: Tensor   # how many target tokens there are


def generation_config(settings: GenerationSettings, tokenizer):
    """A fresh ``GenerationConfig`` from ``settings`` (the model directory's own generation
    defaults, e.g. Qwen2-Instruct's sampling settings, do not leak in). MooER's eos bias is
    transformers' ``sequence_bias`` ``{(eos_id,): eos_bias}``."""
    from transformers import GenerationConfig

    values = dict(
        max_new_tokens=settings.max_new_tokens,
        num_beams=settings.num_beams,
        do_sample=settings.do_sample,
        min_length=settings.min_length,
        repetition_penalty=settings.repetition_penalty,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )
    # Set only where they act, so transformers does not warn about unused settings.
    if settings.num_beams > 1:
        values["length_penalty"] = settings.length_penalty
    if settings.do_sample:
        values.update(top_p=settings.top_p, temperature=settings.temperature)
    if settings.eos_bias:
        values["sequence_bias"] = {(int(tokenizer.eos_token_id),): float(settings.eos_bias)}
    return GenerationConfig(**values)


class MooerModel(nn.Module):
    """Frontend, encoder, ``encoder_projector`` (the adapter, MooER's name) and ``llm``."""

    def __init__(self, config: ModelConfig, tokenizer, frontend: Frontend, encoder: nn.Module,
                 encoder_projector: LinearAdapter, llm: nn.Module):
        super().__init__()
        self.config = config
        self.tokenizer = tokenizer
        self.frontend = frontend
        self.encoder = encoder
        self.encoder_projector = encoder_projector
        self.llm = llm
        self._prompt_ids: dict[str, list[int]] = {}

    # ------------------------------------------------------------------ helpers
    @property
    def device(self) -> torch.device:
        return self.encoder_projector.linear1.weight.device

    def train(self, mode: bool = True) -> "MooerModel":
        super().train(mode)
        # A frozen encoder is a fixed feature extractor: its dropout stays off in training.
        if self.config.encoder.freeze:
            self.encoder.eval()
        return self

    def prompt_ids(self, task: str) -> list[int]:
        if task not in self._prompt_ids:
            text = prompts.prompt_text(task, self.config.prompt_template)
            self._prompt_ids[task] = list(self.tokenizer.encode(text, add_special_tokens=False))
        return self._prompt_ids[task]

    def _embed_tokens(self, input_ids: Tensor) -> Tensor:
        # Placeholders (-1) become id 0 for the lookup; their rows are replaced by audio.
        return self.llm.get_input_embeddings()(input_ids.clamp_min(0))

    # ------------------------------------------------------------------ audio
    def audio_embeddings(self, features: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Features ``[B, T, 560]`` (after CMVN) → ``([B, T // k, llm_dim], lengths // k)``."""
        if features.dim() != 3:
            raise ValueError(f"expected audio features [B, T, {self.config.encoder.input_size}], found shape {tuple(features.shape)}")
        lengths = torch.as_tensor(lengths, device=self.device).long()
        encoded, encoded_lengths = run_encoder(self.encoder, features.to(self.device), lengths)
        encoded = encoded.to(self.encoder_projector.linear1.weight.dtype)
        return self.encoder_projector(encoded, encoded_lengths)

    def _batch_audio(self, batch: dict) -> tuple[Tensor, Tensor]:
        if "audio_features" in batch:
            return self.audio_embeddings(batch["audio_features"], batch["audio_lengths"])
        if "waveforms" in batch:
            waves = batch["waveforms"].to(self.device)
            feats, lengths = self.frontend(waves, batch["waveform_lengths"].to(self.device))
            return self.audio_embeddings(feats, lengths)
        raise ValueError(f"expected a batch with audio_features + audio_lengths or waveforms + waveform_lengths, "
                         f"found keys {sorted(batch)}")

    def splice(self, input_ids: Tensor, modality_mask: Tensor, audio: Tensor, audio_lengths: Tensor) -> Tensor:
        """Text embeddings with each row's ``audio_lengths[b]`` audio vectors written, in
        order, into its ``modality_mask`` positions."""
        placeholders = modality_mask.sum(dim=1)
        audio_lengths = audio_lengths.to(placeholders.device)
        if not torch.equal(placeholders, audio_lengths):
            raise ValueError(f"expected as many audio placeholders per row as adapter outputs {audio_lengths.tolist()}, "
                             f"found {placeholders.tolist()} (features and input_ids from different batches, or a "
                             f"different adapter downsample rate than the loader's)")
        text = self._embed_tokens(input_ids)
        valid = torch.arange(audio.shape[1], device=audio.device)[None, :] < audio_lengths[:, None].to(audio.device)
        return text.masked_scatter(modality_mask[..., None], audio[valid].to(text.dtype))

    # ------------------------------------------------------------------ training
    def compute_logits(self, batch: dict) -> Tensor:
        """The LLM's logits ``[B, L, vocab]`` for a loader batch (no loss)."""
        input_ids = batch["input_ids"].to(self.device)
        modality_mask = batch.get("modality_mask")
        modality_mask = (input_ids == AUDIO_PLACEHOLDER) if modality_mask is None else modality_mask.to(self.device).bool()
        audio, audio_lengths = self._batch_audio(batch)
        inputs_embeds = self.splice(input_ids, modality_mask, audio, audio_lengths)
        # No position_ids, as in MooER: positions count from the row's first (padded) slot.
        return self.llm(inputs_embeds=inputs_embeds, attention_mask=batch["attention_mask"].to(self.device)).logits

    def forward(self, batch: dict) -> MooerOutput:
        labels = batch["labels"].to(self.device)
        logits = self.compute_logits(batch)
        targets = labels[:, 1:]
        selected = targets != IGNORE_INDEX
        tokens = selected.sum()
        if int(tokens) == 0:
            raise ValueError("expected at least one target token (labels != -100) in the batch, found none")
        # Only the target rows are upcast: float32 logits of the whole batch would cost
        # vocab × positions × 4 bytes for nothing.
        scores = logits[:, :-1][selected].float()
        gold = targets[selected]
        loss = F.cross_entropy(scores, gold)
        correct = (scores.detach().argmax(dim=-1) == gold).sum()
        return MooerOutput(loss=loss, correct=correct, tokens=tokens)

    def trainable_state_dict(self) -> dict[str, Tensor]:
        """Parameters that train (adapter + LoRA by default), by full name, detached."""
        return {name: parameter.detach() for name, parameter in self.named_parameters() if parameter.requires_grad}

    # ------------------------------------------------------------------ decoding
    @torch.no_grad()
    def generate(self, features: Tensor, lengths: Tensor, task: str = "asr",
                 settings: GenerationSettings | None = None) -> list[str]:
        """Decode a feature batch: one string per row (``task="mtl"``: the raw two-line
        text; split it with :func:`mooer_model.prompts.split_mtl_output`).

        Rows are ``[pad…][audio][prompt]``, left-padded, as MooER decodes. The model is put
        in eval mode for the call (LoRA dropout off) and restored after.
        """
        settings = settings or GenerationSettings()
        was_training = self.training
        self.eval()
        try:
            audio, audio_lengths = self.audio_embeddings(features, lengths)
            inputs_embeds, attention_mask = self._generation_inputs(audio, audio_lengths, task)
            output = self.llm.generate(inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                                       generation_config=generation_config(settings, self.tokenizer))
        finally:
            self.train(was_training)
        sequences = output if isinstance(output, Tensor) else output.sequences
        return self.tokenizer.batch_decode(sequences, skip_special_tokens=True)

    def _generation_inputs(self, audio: Tensor, audio_lengths: Tensor, task: str) -> tuple[Tensor, Tensor]:
        prompt = torch.tensor(self.prompt_ids(task), dtype=torch.long, device=self.device)
        prompt_embeds = self._embed_tokens(prompt)
        pad_embed = self._embed_tokens(torch.tensor([self.tokenizer.pad_token_id], device=self.device))[0]
        lengths = audio_lengths.tolist()
        if min(lengths) < 1:
            raise ValueError(f"expected at least {self.config.adapter.downsample_rate} encoder frames per row "
                             f"(one audio embedding), found audio embedding counts {lengths}")
        width = max(lengths) + len(prompt)
        rows, masks = [], []
        for row, count in enumerate(lengths):
            pad = width - count - len(prompt)
            rows.append(torch.cat([pad_embed.expand(pad, -1), audio[row, :count].to(prompt_embeds.dtype), prompt_embeds]))
            masks.append(torch.cat([torch.zeros(pad, dtype=torch.long), torch.ones(count + len(prompt), dtype=torch.long)]))
        return torch.stack(rows), torch.stack(masks).to(self.device)

    @torch.no_grad()
    def generate_from_waveforms(self, waves: Tensor, lengths: Tensor, task: str = "asr",
                                settings: GenerationSettings | None = None) -> list[str]:
        """Decode 16 kHz float waveforms ``[B, N]`` in [-1, 1] (``lengths`` valid samples)."""
        feats, feat_lengths = self.frontend(waves.to(self.device), torch.as_tensor(lengths).to(self.device))
        return self.generate(feats, feat_lengths, task, settings)


def build_model(cfg: ModelConfig, device: torch.device | str = "cpu") -> MooerModel:
    """Tokenizer, frontend, encoder (float32), LLM (``cfg.llm.dtype``) + LoRA, adapter
    (float32, initialised from torch's RNG); then ``cfg.init_from`` (a MooER-layout
    checkpoint) when set; then moved to ``device``."""
    if cfg.cmvn_file is None:
        raise ConfigError("model.cmvn_file: expected the encoder's am.mvn (Kaldi nnet <AddShift>/<Rescale>), found None")
    tokenizer = load_tokenizer(cfg.llm)
    frontend = Frontend(cfg.cmvn_file)
    encoder = build_encoder(cfg.encoder)
    llm = build_llm(cfg.llm, cfg.lora, vocab_size=len(tokenizer))
    llm_dim = llm.get_input_embeddings().embedding_dim
    adapter = LinearAdapter(cfg.encoder.output_size, llm_dim, cfg.adapter.downsample_rate, cfg.adapter.hidden_size)
    model = MooerModel(cfg, tokenizer, frontend, encoder, adapter, llm)
    if cfg.init_from:
        from mooer_model.release import load_release

        load_release(model, cfg.init_from, cfg.init_task)
    return model.to(device)

"""mooer_model: encoder parity with funasr, adapter, LoRA, forward/loss, generation, devices.

Everything is tiny (2 SAN-M blocks of 64, a 2-layer Qwen2 of 64) and built once per module.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mooer_model import device as devices
from mooer_model import encoder as encoder_module
from mooer_model.adapter import LinearAdapter
from mooer_model.config import EncoderConfig, LORA_TARGETS
from mooer_model.data import Collator, Item, audio_tokens
from mooer_model.encoder import build_encoder, run_encoder
from mooer_model.errors import CheckpointError
from mooer_model.frontend import Frontend
from mooer_model.model import GenerationSettings, build_model, generation_config
from mooer_model.testing import TINY_LORA_R, tiny_model_config, write_tiny_assets

SPEECH = "THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG"
FEATURE_TOLERANCE = 5e-4   # our batched fbank vs funasr's kaldi-native-fbank path (seen: 4e-5)
ENCODER_TOLERANCE = 1e-4   # the same encoder fed both feature sets (seen: 5e-6)


# --------------------------------------------------------------------------- #
# Fixtures
# --------------------------------------------------------------------------- #
@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    return write_tiny_assets(tmp_path_factory.mktemp("assets"))


@pytest.fixture(scope="module")
def model(assets):
    torch.manual_seed(0)
    built = build_model(tiny_model_config(assets))
    with torch.no_grad():  # LoRA B starts at zero; make the LoRA path matter
        for name, parameter in built.llm.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.05)
    return built.eval()


def make_batch(model, frames=(23, 16, 9), targets=("我想喝一杯热茶", "HOT TEA", "好"), seed=0):
    """A loader-shaped batch: mooer_model.data's collation plus random (post-CMVN) features."""
    tokenizer = model.tokenizer
    prompt = model.prompt_ids("asr")
    items = []
    for row, (count, text) in enumerate(zip(frames, targets)):
        ids = tokenizer.encode(text, add_special_tokens=False) + [tokenizer.eos_token_id]
        items.append(Item(ref=(0, row), key=f"utt{row}", payload=b"", audio_format="flac", num_samples=0,
                          frames=count, left=audio_tokens(count) + len(prompt), target=ids))
    batch = Collator("compute", None, prompt, tokenizer.pad_token_id).collate_text(items)
    generator = torch.Generator().manual_seed(seed)
    features = torch.zeros(len(frames), max(frames), 560)
    for row, count in enumerate(frames):
        features[row, :count] = torch.randn(count, 560, generator=generator)
    batch["audio_features"] = features
    batch["audio_lengths"] = torch.tensor(frames)
    return batch


# --------------------------------------------------------------------------- #
# Encoder: parity with funasr
# --------------------------------------------------------------------------- #
def test_encoder_loaded_from_a_funasr_paraformer_equals_funasr_own_encoder(tmp_path):
    from funasr import AutoModel

    from mooer_data.testing.tiny_models import make_tiny_funasr_paraformer, paraformer_config

    directory = make_tiny_funasr_paraformer(tmp_path / "paraformer", seed=3)
    conf = paraformer_config(1)["encoder_conf"]
    ours = build_encoder(EncoderConfig(
        output_size=conf["output_size"], attention_heads=conf["attention_heads"], linear_units=conf["linear_units"],
        num_blocks=conf["num_blocks"], checkpoint=str(directory / "model.pt")))  # keys "encoder.*": prefix stripped
    reference = AutoModel(model=str(directory), disable_update=True, device="cpu", disable_pbar=True,
                          log_level="ERROR", ncpu=torch.get_num_threads()).model.encoder.eval()
    feats, lengths = torch.randn(2, 31, 560), torch.tensor([31, 20])
    with torch.no_grad():
        expected, expected_lengths, _ = reference(feats, lengths)
        got, got_lengths = run_encoder(ours, feats, lengths)
    assert torch.equal(got, expected) and torch.equal(got_lengths, expected_lengths)


def test_padded_batch_equals_each_utterance_alone_on_valid_frames():
    torch.manual_seed(1)
    encoder = build_encoder(EncoderConfig(output_size=64, linear_units=128, num_blocks=2))
    lengths = [40, 27, 5]
    feats = torch.zeros(3, 40, 560)
    for row, count in enumerate(lengths):
        feats[row, :count] = torch.randn(count, 560)
    feats[1, 27:] = 9.0  # garbage in the padding must not leak into valid frames
    with torch.no_grad():
        batched, out_lengths = run_encoder(encoder, feats, torch.tensor(lengths))
        for row, count in enumerate(lengths):
            alone, _ = run_encoder(encoder, feats[row:row + 1, :count], torch.tensor([count]))
            torch.testing.assert_close(batched[row, :count], alone[0], atol=1e-5, rtol=1e-5)
    assert out_lengths.tolist() == lengths


def test_frontend_and_encoder_match_funasr_wavfrontend_on_speech(synth, assets, model):
    from funasr.frontends.wav_frontend import WavFrontend

    wave = torch.from_numpy(synth.speech(SPEECH, "en").astype(np.float32) / 32768)[None]
    lengths = torch.tensor([wave.shape[1]])
    reference = WavFrontend(cmvn_file=str(assets.cmvn_file), fs=16000, window="hamming", n_mels=80, frame_length=25,
                            frame_shift=10, lfr_m=7, lfr_n=6, dither=0.0)
    with torch.no_grad():
        expected_feats, expected_frames = reference(wave, lengths)
        feats, frames = model.frontend(wave, lengths)
        expected, _ = run_encoder(model.encoder, expected_feats.float(), expected_frames)
        got, _ = run_encoder(model.encoder, feats, frames)
    assert frames.tolist() == expected_frames.tolist() and frames.item() > 40
    assert (feats - expected_feats).abs().max().item() <= FEATURE_TOLERANCE
    assert (got - expected).abs().max().item() <= ENCODER_TOLERANCE


def test_encoder_checkpoint_with_a_missing_or_misshapen_key_is_refused_by_name(tmp_path):
    torch.manual_seed(0)
    config = EncoderConfig(output_size=64, linear_units=128, num_blocks=2)
    state = build_encoder(config).state_dict()
    path = tmp_path / "paraformer-encoder.pth"
    torch.save({k: v for k, v in state.items() if k != "encoders.0.self_attn.fsmn_block.weight"}, path)
    with pytest.raises(CheckpointError, match="encoders.0.self_attn.fsmn_block.weight"):
        build_encoder(EncoderConfig(output_size=64, linear_units=128, num_blocks=2, checkpoint=str(path)))
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"encoders0.0.self_attn.linear_out.weight: expected shape \(32, 32\).*found \(64, 64\)"):
        build_encoder(EncoderConfig(output_size=32, attention_heads=4, linear_units=128, num_blocks=2, checkpoint=str(path)))


def test_encoder_is_frozen_and_stays_in_eval_mode_when_the_model_trains(model):
    assert not any(p.requires_grad for p in model.encoder.parameters())
    model.train()
    try:
        assert model.training and model.encoder_projector.training
        assert not model.encoder.training
    finally:
        model.eval()


def test_encoder_gradient_checkpointing_recomputes_blocks_and_keeps_gradients(monkeypatch):
    calls = []
    real = encoder_module.checkpoint

    def counting(function, *args, **kwargs):
        calls.append(1)
        return real(function, *args, **kwargs)

    monkeypatch.setattr(encoder_module, "checkpoint", counting)
    sizes = dict(output_size=64, linear_units=128, num_blocks=3, dropout_rate=0.0, positional_dropout_rate=0.0,
                 attention_dropout_rate=0.0, freeze=False)
    torch.manual_seed(2)
    plain = build_encoder(EncoderConfig(**sizes)).train()
    checkpointed = build_encoder(EncoderConfig(**sizes, gradient_checkpointing=True)).train()
    checkpointed.load_state_dict(plain.state_dict())
    assert list(checkpointed.state_dict()) == list(plain.state_dict())  # funasr names kept
    feats, lengths = torch.randn(2, 12, 560), torch.tensor([12, 7])
    for encoder in (plain, checkpointed):
        out, _ = run_encoder(encoder, feats, lengths)
        out[0, :12].sum().add(out[1, :7].sum()).backward()
    assert len(calls) == 3  # one per block, only for the checkpointed encoder
    for (name, a), (_, b) in zip(plain.named_parameters(), checkpointed.named_parameters()):
        torch.testing.assert_close(a.grad, b.grad, msg=name)
    with torch.no_grad():
        run_encoder(checkpointed, feats, lengths)
    assert len(calls) == 3  # nothing to recompute without gradients
    clone = copy.deepcopy(checkpointed)
    with torch.no_grad():
        clone.encoders[0].feed_forward.w_2.bias.add_(1.0)
    assert not torch.equal(run_encoder(clone, feats, lengths)[0], run_encoder(checkpointed, feats, lengths)[0])
    assert len(calls) == 3 + 2 * 3  # the copy runs its own (changed) blocks, checkpointed too


# --------------------------------------------------------------------------- #
# Adapter and LoRA
# --------------------------------------------------------------------------- #
def test_adapter_stacks_pairs_drops_the_odd_frame_and_keeps_mooer_names():
    torch.manual_seed(0)
    adapter = LinearAdapter(encoder_dim=8, llm_dim=6, downsample_rate=2, hidden_size=16)
    assert [name for name, _ in adapter.named_parameters()] == ["linear1.weight", "linear1.bias", "linear2.weight", "linear2.bias"]
    x = torch.randn(2, 7, 8)
    out, lengths = adapter(x, torch.tensor([7, 4]))
    assert out.shape == (2, 3, 6) and lengths.tolist() == [3, 2]
    manual = adapter.linear2(torch.relu(adapter.linear1(torch.cat([x[0, 2], x[0, 3]]))))
    torch.testing.assert_close(out[0, 1], manual)
    x2 = x.clone()
    x2[:, 6] = 100.0  # the trailing odd frame is dropped, not used
    assert torch.equal(adapter(x2, torch.tensor([7, 4]))[0], out)


def test_lora_wraps_all_seven_projections_and_only_adapter_and_lora_train(model):
    from peft.tuners.lora import LoraLayer

    wrapped = {name.rsplit(".", 1)[-1]: module for name, module in model.llm.named_modules() if isinstance(module, LoraLayer)}
    assert set(wrapped) == set(LORA_TARGETS)
    layers = [module for module in model.llm.modules() if isinstance(module, LoraLayer)]
    assert len(layers) == 7 * 2  # 7 projections x 2 decoder layers
    expected_lora = 0
    for layer in layers:
        assert layer.r["default"] == TINY_LORA_R and layer.scaling["default"] == 16 / TINY_LORA_R
        assert layer.lora_dropout["default"].p == 0.05
        expected_lora += TINY_LORA_R * (layer.in_features + layer.out_features)
    adapter = sum(p.numel() for p in model.encoder_projector.parameters())
    trainable = model.trainable_state_dict()
    assert sum(t.numel() for t in trainable.values()) == adapter + expected_lora
    assert all(name.startswith("encoder_projector.") or ".lora_" in name for name in trainable)
    base = [p for n, p in model.llm.named_parameters() if "lora_" not in n]
    assert base and not any(p.requires_grad for p in base)


def test_default_sizes_give_mooer_parameter_counts():
    """The released model's sizes (reference §1.1, §1.2, §1.5), built on the meta device."""
    from mooer_model.config import LlmConfig, LoraSettings
    from mooer_model.llm import build_llm

    qwen2_7b = dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                    num_attention_heads=28, num_key_value_heads=4)
    with torch.device("meta"):
        encoder = build_encoder(EncoderConfig())
        adapter = LinearAdapter(512, 3584)
        llm = build_llm(LlmConfig(tiny=qwen2_7b, tokenizer="unused"), LoraSettings())
    assert round(sum(p.numel() for p in encoder.parameters()) / 1e6) == 158
    assert round(sum(p.numel() for p in adapter.parameters()) / 1e4) == 944
    lora = sum(p.numel() for p in llm.parameters() if p.requires_grad)
    assert round(lora / 1e5) == 1615 and round(100 * lora / sum(p.numel() for p in llm.parameters()), 1) == 2.1


# --------------------------------------------------------------------------- #
# forward
# --------------------------------------------------------------------------- #
def test_loss_equals_cross_entropy_over_mooer_spliced_inputs(model):
    batch = make_batch(model)
    output = model(batch)
    with torch.no_grad():
        # MooER's splice written out independently: inputs = audio_pad + text_embeds * ~mask.
        audio, counts = model.audio_embeddings(batch["audio_features"], batch["audio_lengths"])
        ids, mask = batch["input_ids"], batch["modality_mask"]
        text = model.llm.get_input_embeddings()(torch.where(ids == -1, 0, ids))
        audio_pad = torch.zeros_like(text)
        for row in range(ids.shape[0]):
            audio_pad[row, mask[row]] = audio[row, :counts[row]]
        logits = model.llm(inputs_embeds=audio_pad + text * (~mask)[..., None],
                           attention_mask=batch["attention_mask"]).logits
        shifted, labels = logits[:, :-1].float(), batch["labels"][:, 1:]
        expected = F.cross_entropy(shifted.reshape(-1, shifted.shape[-1]), labels.reshape(-1), ignore_index=-100)
        valid = labels != -100
        correct = (shifted.argmax(-1)[valid] == labels[valid]).sum()
    torch.testing.assert_close(output.loss, expected)
    assert output.tokens.item() == valid.sum().item() == sum(
        len(model.tokenizer.encode(t, add_special_tokens=False)) + 1 for t in ("我想喝一杯热茶", "HOT TEA", "好"))
    assert output.correct.item() == correct.item()


def test_waveform_batches_run_the_frontend(model):
    torch.manual_seed(5)
    waves = torch.randn(2, 16000) * 0.1
    lengths = torch.tensor([16000, 9000])
    feats, frames = Frontend(model.config.cmvn_file)(waves, lengths)
    batch = make_batch(model, frames=tuple(frames.tolist()), targets=("好", "TEA"))
    batch["audio_features"] = feats
    by_features = model(batch).loss
    del batch["audio_features"], batch["audio_lengths"]
    batch["waveforms"], batch["waveform_lengths"] = waves, lengths
    batch["features_by_frontend"] = feats  # extra keys are ignored
    torch.testing.assert_close(model(batch).loss, by_features)


def test_gradients_reach_adapter_and_lora_but_not_encoder_or_base(model):
    model.zero_grad(set_to_none=True)
    model(make_batch(model)).loss.backward()
    try:
        for name, parameter in model.named_parameters():
            if parameter.requires_grad:
                assert parameter.grad is not None, name
            else:
                assert parameter.grad is None, name
        assert all(p.grad.abs().sum() > 0 for p in model.encoder_projector.parameters())
        lora_b = [p for n, p in model.llm.named_parameters() if "lora_B" in n]
        lora_a = [p for n, p in model.llm.named_parameters() if "lora_A" in n]
        assert len(lora_b) == 14 and all(p.grad.abs().sum() > 0 for p in lora_b + lora_a)
    finally:
        model.zero_grad(set_to_none=True)


def test_llm_gradient_checkpointing_keeps_loss_and_gradients(assets):
    models = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        built = build_model(tiny_model_config(assets, **{"llm.gradient_checkpointing": checkpointing, "lora.dropout": 0.0}))
        with torch.no_grad():
            for name, parameter in built.llm.named_parameters():
                if "lora_B" in name:
                    parameter.fill_(0.01)
        built.train()
        built(make_batch(built)).loss.backward()
        models.append(built)
    plain, checkpointed = models
    assert checkpointed.llm.base_model.model.model.gradient_checkpointing and not plain.llm.base_model.model.model.gradient_checkpointing
    for (name, a), (_, b) in zip(plain.named_parameters(), checkpointed.named_parameters()):
        if a.requires_grad:
            torch.testing.assert_close(a.grad, b.grad, msg=name)


def test_placeholder_count_must_equal_adapter_output(model):
    batch = make_batch(model)
    batch["audio_lengths"] = batch["audio_lengths"] - torch.tensor([0, 2, 0])  # row 1: one audio embedding short
    with pytest.raises(ValueError, match=r"placeholders.*found \[11, 8, 4\]"):
        model(batch)


def test_bf16_llm_with_fp32_encoder_and_adapter(assets):
    torch.manual_seed(0)
    mixed = build_model(tiny_model_config(assets, **{"llm.dtype": "bfloat16"}))
    assert next(mixed.encoder.parameters()).dtype == torch.float32
    assert mixed.encoder_projector.linear1.weight.dtype == torch.float32
    assert mixed.llm.get_input_embeddings().weight.dtype == torch.bfloat16
    output = mixed(make_batch(mixed))
    output.loss.backward()
    assert output.loss.dtype == torch.float32 and torch.isfinite(output.loss)
    assert mixed.encoder_projector.linear1.weight.grad.abs().sum() > 0


def test_a_module_cast_whole_to_bf16_still_runs_on_fp32_features(model):
    cast = copy.deepcopy(model).to(torch.bfloat16)  # what DeepSpeed bf16 does to the engine's module
    assert next(cast.encoder.parameters()).dtype == torch.bfloat16
    assert cast.frontend.mel.dtype == torch.float32  # features are still computed in fp32
    batch = make_batch(model)
    loss = cast(batch).loss
    assert torch.isfinite(loss)
    assert abs(loss.item() - model(batch).loss.item()) < 0.1


# --------------------------------------------------------------------------- #
# generate
# --------------------------------------------------------------------------- #
@pytest.fixture(scope="module")
def decode_inputs():
    generator = torch.Generator().manual_seed(11)
    lengths = torch.tensor([26, 13])
    feats = torch.zeros(2, 26, 560)
    for row, count in enumerate(lengths.tolist()):
        feats[row, :count] = torch.randn(count, 560, generator=generator)
    return feats, lengths


def test_batched_greedy_and_beam_equal_decoding_each_row_alone(model, decode_inputs):
    feats, lengths = decode_inputs
    for beams in (1, 4):
        settings = GenerationSettings(max_new_tokens=8, num_beams=beams)
        batched = model.generate(feats, lengths, settings=settings)
        alone = [model.generate(feats[i:i + 1, :lengths[i]], lengths[i:i + 1], settings=settings)[0] for i in range(2)]
        assert batched == alone and all(batched), beams


def test_generation_inputs_are_left_padded_audio_then_prompt(model, decode_inputs):
    feats, lengths = decode_inputs
    audio, counts = model.audio_embeddings(feats, lengths)
    embeds, mask = model._generation_inputs(audio, counts, "asr")
    prompt = len(model.prompt_ids("asr"))
    assert counts.tolist() == [13, 6]
    assert mask.tolist() == [[1] * (13 + prompt), [0] * 7 + [1] * (6 + prompt)]
    torch.testing.assert_close(embeds[1, 7:13], audio[1, :6])
    torch.testing.assert_close(embeds[1, 13:], embeds[0, 13:])  # the same prompt, right-aligned


def test_eos_bias_is_a_sequence_bias_on_eos(model):
    from transformers.generation.logits_process import SequenceBiasLogitsProcessor

    eos = model.tokenizer.eos_token_id
    config = generation_config(GenerationSettings(), model.tokenizer)
    assert config.sequence_bias == {(eos,): -0.2}
    assert config.num_beams == 4 and config.length_penalty == 0.8 and config.max_new_tokens == 200
    scores = torch.randn(3, len(model.tokenizer))
    biased = SequenceBiasLogitsProcessor(config.sequence_bias)(torch.zeros(3, 2, dtype=torch.long), scores.clone())
    delta = biased - scores
    torch.testing.assert_close(delta[:, eos], torch.full((3,), -0.2))
    assert delta[:, [i for i in range(scores.shape[1]) if i != eos]].abs().max() == 0
    assert generation_config(GenerationSettings(eos_bias=0.0), model.tokenizer).sequence_bias is None


def test_eos_bias_reaches_generate(model, decode_inputs, monkeypatch):
    feats, lengths = decode_inputs
    produced = []
    real = model.llm.generate

    def spy(*args, **kwargs):
        produced.append(real(*args, **kwargs))
        return produced[-1]

    monkeypatch.setattr(model.llm, "generate", spy)
    eos = model.tokenizer.eos_token_id
    model.generate(feats, lengths, settings=GenerationSettings(max_new_tokens=6, num_beams=1, eos_bias=100.0))
    model.generate(feats, lengths, settings=GenerationSettings(max_new_tokens=6, num_beams=1, eos_bias=-100.0))
    forced_stop, never_stop = produced
    # transformers counts the prompt embeddings towards min_length, so MooER's min_length=1
    # does not hold eos back: it wins at once.
    assert forced_stop.tolist() == [[eos], [eos]]
    assert never_stop.shape[1] == 6 and (never_stop != eos).all()


def test_mtl_decodes_with_the_ast_prompt_and_waveforms_match_features(model):
    assert model.prompt_ids("mtl") == model.prompt_ids("ast") != model.prompt_ids("asr")
    torch.manual_seed(3)
    waves, lengths = torch.randn(2, 12000) * 0.1, torch.tensor([12000, 8000])
    settings = GenerationSettings(max_new_tokens=5, num_beams=1)
    feats, frames = model.frontend(waves, lengths)
    assert model.generate_from_waveforms(waves, lengths, "mtl", settings) == model.generate(feats, frames, "mtl", settings)


def test_generate_runs_in_eval_mode_and_restores_training(model, decode_inputs):
    feats, lengths = decode_inputs
    settings = GenerationSettings(max_new_tokens=6, num_beams=1)
    expected = model.generate(feats, lengths, settings=settings)
    model.train()
    try:
        assert model.generate(feats, lengths, settings=settings) == expected  # LoRA dropout was off
        assert model.training and model.encoder_projector.training
    finally:
        model.eval()


# --------------------------------------------------------------------------- #
# device
# --------------------------------------------------------------------------- #
def test_auto_device_on_this_machine():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert devices.resolve_device("auto").type == expected
    assert devices.resolve_device("cpu") == torch.device("cpu")


def test_device_names_are_checked():
    with pytest.raises(ValueError, match="expected a device name among auto, cpu, cuda"):
        devices.resolve_device("tpu:0")
    try:
        import torch_musa  # noqa: F401
    except ImportError:
        with pytest.raises(ValueError, match="torch_musa.*not installed"):
            devices.resolve_device("musa")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="expected a CUDA device"):
            devices.resolve_device("cuda:1")


def test_autocast_on_cpu_bf16_and_backends():
    a, b = torch.randn(4, 4), torch.randn(4, 4)
    with devices.autocast(torch.device("cpu"), torch.bfloat16):
        assert (a @ b).dtype == torch.bfloat16
    with devices.autocast(torch.device("cpu"), None):
        assert (a @ b).dtype == torch.float32
    assert [devices.distributed_backend(d) for d in (torch.device("cpu"), "cuda:0", "musa")] == ["gloo", "nccl", "mccl"]
    with pytest.raises(ValueError, match="expected a cpu, cuda or musa device"):
        devices.distributed_backend("xla")


def test_config_overrides_are_dotted_and_checked(assets):
    from mooer_model.config import ConfigError

    config = tiny_model_config(assets, **{"encoder.num_blocks": 3, "llm.tiny.num_hidden_layers": 1, "init_task": "step_9_merged"})
    assert (config.encoder.num_blocks, config.llm.tiny["num_hidden_layers"], config.init_task) == (3, 1, "step_9_merged")
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['nope'\]"):
        tiny_model_config(assets, **{"llm.nope": 1})
    with pytest.raises(ConfigError, match="expected a task directory name"):
        tiny_model_config(assets, init_task="../asr")

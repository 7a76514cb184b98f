"""mooer_model.release: MooER's released layout, exported and loaded (and a miniature of the
2024 release written independently with torch / funasr / peft)."""

from __future__ import annotations

import json
import os
import re
import shutil

import pytest
import torch

from mooer_model import release as release_module
from mooer_model.llm import lora_state_dict
from mooer_model.model import GenerationSettings, build_model
from mooer_model.release import CheckpointError, export_release, load_release, model_config_for_release
from mooer_model.testing import make_tiny_mooer_release, tiny_model_config, write_tiny_assets

SETTINGS = (GenerationSettings(max_new_tokens=6, num_beams=1), GenerationSettings(max_new_tokens=6, num_beams=4))


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    return write_tiny_assets(tmp_path_factory.mktemp("assets"))


@pytest.fixture(scope="module")
def trained(assets):
    """A model whose every part differs from a fresh one (as after training)."""
    torch.manual_seed(0)
    model = build_model(tiny_model_config(assets))
    with torch.no_grad():
        for name, parameter in model.llm.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.05)
    return model.eval()


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    return export_release(trained, tmp_path_factory.mktemp("export") / "mooer-tiny")


@pytest.fixture(scope="module")
def tiny_release(tmp_path_factory):
    return make_tiny_mooer_release(tmp_path_factory.mktemp("mooer-2024"), seed=0)


@pytest.fixture(scope="module")
def features():
    generator = torch.Generator().manual_seed(7)
    lengths = torch.tensor([24, 15])
    feats = torch.zeros(2, 24, 560)
    for row, count in enumerate(lengths.tolist()):
        feats[row, :count] = torch.randn(count, 560, generator=generator)
    return feats, lengths


def files_under(root) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def loader_batch(model, feats, lengths):
    """[placeholders][prompt][target][eos] rows, right-aligned prompts (what the loader makes)."""
    from mooer_model.data import Collator, Item, audio_tokens

    prompt = model.prompt_ids("asr")
    target = model.tokenizer.encode("HOT TEA", add_special_tokens=False) + [model.tokenizer.eos_token_id]
    items = [Item((0, i), f"k{i}", b"", "flac", 0, int(n), audio_tokens(int(n)) + len(prompt), target)
             for i, n in enumerate(lengths)]
    batch = Collator("compute", None, prompt, model.tokenizer.pad_token_id).collate_text(items)
    batch.update(audio_features=feats, audio_lengths=lengths)
    return batch


# --------------------------------------------------------------------------- #
# Export -> load
# --------------------------------------------------------------------------- #
def test_export_writes_mooer_layout(trained, exported):
    assert {"paraformer_encoder/am.mvn", "paraformer_encoder/paraformer-encoder.pth", "asr/adapter_project.pt",
            "asr/lora_weights/adapter_config.json", "asr/lora_weights/adapter_model.safetensors",
            "mooer-model.json", "llm/config.json", "llm/model.safetensors", "llm/tokenizer.json"} <= files_under(exported)
    adapter = torch.load(exported / "asr/adapter_project.pt", weights_only=True)
    assert sorted(adapter) == ["encoder_projector.linear1.bias", "encoder_projector.linear1.weight",
                               "encoder_projector.linear2.bias", "encoder_projector.linear2.weight"]
    assert all(t.dtype == torch.float32 for t in adapter.values())
    torch.testing.assert_close(adapter["encoder_projector.linear2.weight"], trained.encoder_projector.linear2.weight)
    encoder = torch.load(exported / "paraformer_encoder/paraformer-encoder.pth", weights_only=True)
    assert list(encoder) == list(trained.encoder.state_dict())  # funasr names: encoders0.0..., after_norm...
    assert (exported / "paraformer_encoder/am.mvn").read_bytes() == open(trained.config.cmvn_file, "rb").read()
    lora = json.loads((exported / "asr/lora_weights/adapter_config.json").read_text())
    assert lora["r"] == 8 and lora["lora_alpha"] == 16 and set(lora["target_modules"]) == set(trained.config.lora.target_modules)
    assert not list(exported.parent.glob(".mooer-tiny.*"))  # no staging left behind


def test_export_loads_into_a_fresh_model_with_identical_logits_and_decoding(trained, exported, features):
    config = model_config_for_release(exported, None)
    assert config.init_from == str(exported) and config.cmvn_file == str(exported / "paraformer_encoder/am.mvn")
    torch.manual_seed(123)  # a different random start: everything must come from the export
    fresh = build_model(config).eval()
    feats, lengths = features
    batch = loader_batch(trained, feats, lengths)
    with torch.no_grad():
        assert torch.equal(fresh.compute_logits(batch), trained.compute_logits(batch))
    for settings in SETTINGS:
        assert fresh.generate(feats, lengths, settings=settings) == trained.generate(feats, lengths, settings=settings)


def test_an_export_names_the_llm_directory_absolutely(tiny_release, tmp_path, monkeypatch):
    # a run config says `llm.path: pretrained_models/...` relative to where training ran; the
    # export is read from anywhere later, so it must not keep a path that only resolves there
    release, llm_dir = tiny_release
    monkeypatch.chdir(llm_dir.parent)
    config = model_config_for_release(release, llm_dir.name, **{"llm.dtype": "float32"})
    assert config.llm.path == llm_dir.name
    model = build_model(config)
    out = export_release(model, tmp_path / "export", "asr")
    saved = json.loads((out / "mooer-model.json").read_text())
    assert saved["llm"]["path"] == str(llm_dir.resolve())


def test_load_release_into_a_model_built_from_config(trained, exported, assets, features):
    torch.manual_seed(99)
    other = build_model(tiny_model_config(assets)).eval()
    feats, lengths = features
    batch = loader_batch(trained, feats, lengths)
    with torch.no_grad():
        assert not torch.equal(other.compute_logits(batch), trained.compute_logits(batch))
    load_release(other, exported, "asr")
    for name, tensor in trained.trainable_state_dict().items():
        assert torch.equal(dict(other.named_parameters())[name], tensor), name
    assert all(torch.equal(a, b) for a, b in zip(other.encoder.state_dict().values(), trained.encoder.state_dict().values()))


def test_export_failure_leaves_nothing(trained, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(release_module, "_save_base_llm", broken)
    with pytest.raises(OSError, match="disk full"):
        export_release(trained, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_exporting_a_second_task_keeps_the_first(trained, tmp_path):
    export_release(trained, tmp_path / "rel", "asr")
    export_release(trained, tmp_path / "rel", "ast")
    names = files_under(tmp_path / "rel")
    assert {"asr/adapter_project.pt", "ast/adapter_project.pt", "ast/lora_weights/adapter_model.safetensors"} <= names
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rel"]


@pytest.mark.parametrize("task_dir", ["", "..", ".", "asr/extra", "..\\asr"])
def test_a_task_dir_that_is_not_one_plain_name_is_refused_before_writing(trained, tmp_path, task_dir):
    with pytest.raises(CheckpointError, match=f"task_dir: expected a plain directory name .*found {re.escape(repr(task_dir))}"):
        export_release(trained, tmp_path / "deep" / "rel", task_dir)
    assert list(tmp_path.iterdir()) == []


def test_a_task_directory_is_accepted_as_the_release(exported, trained, features):
    config = model_config_for_release(exported / "asr", None)
    model = build_model(config).eval()
    feats, lengths = features
    assert model.generate(feats, lengths, settings=SETTINGS[0]) == trained.generate(feats, lengths, settings=SETTINGS[0])


# --------------------------------------------------------------------------- #
# The 2024 release layout, written independently
# --------------------------------------------------------------------------- #
def test_mooer_2024_release_loads_and_decodes(tiny_release, features):
    release, llm_dir = tiny_release
    assert files_under(release) == {"paraformer_encoder/am.mvn", "paraformer_encoder/paraformer-encoder.pth",
                                    "asr/adapter_project.pt", "asr/lora_weights/adapter_config.json",
                                    "asr/lora_weights/adapter_model.bin", "asr/lora_weights/README.md"}
    config = model_config_for_release(release, str(llm_dir), **{"llm.dtype": "float32"})
    # sizes read off the tensors, LoRA off adapter_config.json
    assert (config.encoder.output_size, config.encoder.num_blocks, config.encoder.linear_units) == (64, 2, 128)
    assert (config.adapter.hidden_size, config.adapter.downsample_rate) == (128, 2)
    assert (config.lora.r, config.lora.alpha) == (8, 16) and config.llm.path == str(llm_dir)
    model = build_model(config).eval()
    encoder = torch.load(release / "paraformer_encoder/paraformer-encoder.pth", weights_only=True)
    assert all(torch.equal(encoder[k], v) for k, v in model.encoder.state_dict().items())
    adapter = torch.load(release / "asr/adapter_project.pt", weights_only=True)
    assert all(torch.equal(adapter["encoder_projector." + k], v) for k, v in model.encoder_projector.state_dict().items())
    lora = torch.load(release / "asr/lora_weights/adapter_model.bin", weights_only=True)
    loaded = lora_state_dict(model.llm)
    assert set(loaded) == set(lora) and all(torch.equal(loaded[k], lora[k]) for k in lora)
    feats, lengths = features
    texts = model.generate(feats, lengths, settings=SETTINGS[1])
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)


def test_a_real_release_needs_the_llm_directory(tiny_release):
    with pytest.raises(CheckpointError, match="expected llm_dir"):
        model_config_for_release(tiny_release[0], None)


@pytest.fixture
def release_copy(tiny_release, tmp_path):
    release, llm_dir = tiny_release
    copy = tmp_path / "release"
    shutil.copytree(release, copy)
    return copy, llm_dir


def fresh_for(release_dir, llm_dir):
    """A model of the release's shape, built before the files are damaged."""
    return build_model(model_config_for_release(release_dir, str(llm_dir), **{"llm.dtype": "float32", "init_from": None}))


@pytest.mark.parametrize("missing", [
    "paraformer_encoder/paraformer-encoder.pth", "paraformer_encoder/am.mvn", "asr/adapter_project.pt",
    "asr/lora_weights/adapter_config.json", "asr/lora_weights/adapter_model.bin",
])
def test_a_missing_file_is_named(release_copy, missing):
    release, llm_dir = release_copy
    model = fresh_for(release, llm_dir)
    (release / missing).unlink()
    with pytest.raises(CheckpointError, match=os.path.basename(missing).replace(".", r"\.")):
        load_release(model, release)


def test_a_missing_encoder_directory_is_named(release_copy):
    release, llm_dir = release_copy
    model = fresh_for(release, llm_dir)
    shutil.rmtree(release / "paraformer_encoder")
    with pytest.raises(CheckpointError, match="expected paraformer_encoder/ at one of"):
        load_release(model, release)


@pytest.mark.parametrize("file, key", [
    ("asr/adapter_project.pt", "encoder_projector.linear2.bias"),
    ("paraformer_encoder/paraformer-encoder.pth", "encoders.0.feed_forward.w_2.weight"),
    ("asr/lora_weights/adapter_model.bin", "base_model.model.model.layers.1.mlp.down_proj.lora_B.weight"),
])
def test_a_missing_key_is_named_and_the_model_is_left_untouched(release_copy, file, key):
    release, llm_dir = release_copy
    model = fresh_for(release, llm_dir)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    state = torch.load(release / file, weights_only=True)
    assert key in state
    del state[key]
    torch.save(state, release / file)
    with pytest.raises(CheckpointError, match=key.replace(".", r"\.")):
        load_release(model, release)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_that_runs_code_is_refused(release_copy, tmp_path):
    release, llm_dir = release_copy
    model = fresh_for(release, llm_dir)
    marker = tmp_path / "owned"
    torch.save({"encoder_projector.linear1.weight": _Payload(marker)}, release / "asr/adapter_project.pt")
    with pytest.raises(CheckpointError, match="weights_only"):
        load_release(model, release)
    assert not marker.exists()


def test_lora_settings_that_differ_from_the_model_are_refused(release_copy):
    release, llm_dir = release_copy
    model = fresh_for(release, llm_dir)
    config_path = release / "asr/lora_weights/adapter_config.json"
    settings = json.loads(config_path.read_text())
    settings["lora_alpha"] = 32  # same shapes, different scaling: would load silently wrong
    config_path.write_text(json.dumps(settings))
    with pytest.raises(CheckpointError, match="lora_alpha: expected the model's 16, found 32"):
        load_release(model, release)


def test_a_release_with_another_cmvn_is_refused(assets, tmp_path):
    release, _ = make_tiny_mooer_release(tmp_path / "seed1", seed=1)  # its am.mvn differs from the assets'
    model = build_model(tiny_model_config(assets))
    with pytest.raises(CheckpointError, match="CMVN"):
        load_release(model, release)


def test_the_2024_release_loads_into_a_config_built_model_of_the_same_shape(assets, tiny_release):
    release, _ = tiny_release  # same tokenizer text, sizes and CMVN seed as the tiny assets
    model = build_model(tiny_model_config(assets, init_from=str(release)))
    adapter = torch.load(release / "asr/adapter_project.pt", weights_only=True)
    assert torch.equal(model.encoder_projector.linear1.weight, adapter["encoder_projector.linear1.weight"])

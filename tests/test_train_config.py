"""The run config (mooer_model/train_config.py): YAML + --set → typed dataclasses → DeepSpeed dict.

No training here: these are the fast checks (each well under a second).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from mooer_model.cli import app
from mooer_model.config import ConfigError
from mooer_model.train_config import (
    RunConfig, check_paths, load_run_config, resolve_input_paths, run_config_from_dict, run_config_to_dict,
    to_deepspeed_dict,
)

TRAIN_CONFIGS = Path(__file__).resolve().parents[1] / "pipelines" / "train"
runner = CliRunner()


def write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


# --------------------------------------------------------------------------------------
# Shipped configs
# --------------------------------------------------------------------------------------
SHIPPED = sorted(TRAIN_CONFIGS.rglob("*.yaml"))  # recursive: configs in sub-folders are checked too


def test_train_configs_are_shipped():
    assert {p.name for p in SHIPPED} >= {"mt5k.yaml", "tiny.yaml"}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(TRAIN_CONFIGS)))
def test_every_shipped_train_config_validates(path):
    run = load_run_config(path)
    assert isinstance(run, RunConfig)
    # The DeepSpeed config generates for one and for many ranks.
    for world_size in (1, 8):
        ds = to_deepspeed_dict(run, world_size)
        assert ds["train_batch_size"] == run.train.micro_batch * run.train.grad_accum * world_size


def test_mt5k_config_is_mooers_recipe():
    run = load_run_config(TRAIN_CONFIGS / "mt5k.yaml")
    assert (run.optim.lr, run.optim.warmup_steps, run.optim.total_steps) == (1e-4, 1000, 1_000_000)
    assert (run.train.grad_accum, run.train.micro_batch, run.train.save_every, run.train.eval_every) == (2, 8, 20000, 2000)
    assert (run.train.zero_stage, run.train.bf16, run.optim.grad_clip) == (2, True, None)
    assert run.model.llm.path.endswith("Qwen2-7B-Instruct") and run.model.llm.dtype == "bfloat16"
    assert run.model.encoder.checkpoint.endswith("paraformer-encoder.pth")
    assert (run.model.encoder.num_blocks, run.model.encoder.output_size) == (50, 512)  # Paraformer-large
    assert (run.model.lora.r, run.model.lora.alpha) == (64, 16)


# --------------------------------------------------------------------------------------
# Loading, overrides, errors
# --------------------------------------------------------------------------------------
def test_unknown_keys_are_errors_naming_them(tmp_path):
    bad = write_yaml(tmp_path / "bad.yaml", {"train": {"max_stepz": 3}})
    with pytest.raises(ConfigError, match=r"train: unknown key\(s\) \['max_stepz'\].*max_steps"):
        load_run_config(bad)
    with pytest.raises(ConfigError, match=r"model\.llm: unknown key\(s\) \['dtyp'\]"):
        load_run_config(None, ["model.llm.dtyp=float32"])
    with pytest.raises(ConfigError, match=r"unknown section\(s\) \['trainer'\]"):
        load_run_config(None, ["trainer.max_steps=3"])


def test_every_problem_is_reported_at_once():
    with pytest.raises(ConfigError) as caught:
        load_run_config(None, ["train.max_steps=ten", "optim.lr=fast", "data.features=mel", "train.bogus=1"])
    message = str(caught.value)
    assert "train.max_steps: expected an integer, found 'ten'" in message
    assert "optim.lr: expected a number, found 'fast'" in message
    assert "data.features: expected one of compute, precomputed, waveform, found 'mel'" in message
    assert "['bogus']" in message


def test_set_values_are_yaml_scalars_coerced_to_the_field_type(tmp_path):
    # YAML 1.1 reads 1e-4 as a string; a float field takes it as the number it means.
    config = write_yaml(tmp_path / "c.yaml", {"optim": {"lr": "1e-4"}, "train": {"max_steps": 10}})
    run = load_run_config(config, ["train.max_steps=7", "optim.grad_clip=1", "train.tensorboard=false",
                                   "data.valid_split=dev", "train.eval_batches=null", "optim.betas=[0.8, 0.95]",
                                   "model.llm.tiny={hidden_size: 32}", "model.llm.path=null", "model.llm.tokenizer=tok"],
                          shards="shards/dir")
    assert run.optim.lr == 1e-4 and isinstance(run.optim.lr, float)
    assert run.train.max_steps == 7  # --set wins over the file
    assert run.optim.grad_clip == 1.0 and isinstance(run.optim.grad_clip, float)
    assert run.train.tensorboard is False and run.train.eval_batches is None
    assert run.optim.betas == [0.8, 0.95]
    assert run.model.llm.tiny == {"hidden_size": 32} and run.model.llm.path is None
    assert run.data.shards == "shards/dir" and run.data.valid_split == "dev"


def test_set_syntax_errors_say_what_was_expected():
    with pytest.raises(ConfigError, match="expected key=value"):
        load_run_config(None, ["train.max_steps"])
    with pytest.raises(ConfigError, match="train.max_steps is a value"):
        load_run_config(None, ["train.max_steps=3", "train.max_steps.deeper=1"])
    with pytest.raises(ConfigError, match="train.tensorboard: expected true or false, found 'maybe'"):
        load_run_config(None, ["train.tensorboard=maybe"])


def test_range_checks_name_the_field():
    with pytest.raises(ConfigError, match="optim: expected 0 <= warmup_steps < total_steps, found 10 and 5"):
        load_run_config(None, ["optim.warmup_steps=10", "optim.total_steps=5"])
    with pytest.raises(ConfigError, match="train.device: expected one of auto, cuda, musa, cpu, found 'tpu'"):
        load_run_config(None, ["train.device=tpu"])
    with pytest.raises(ConfigError, match="data: expected valid_shards or valid_split, found both"):
        load_run_config(None, ["data.valid_split=dev", "data.valid_shards=x"])


def test_resolved_config_round_trips_through_plain_data():
    run = load_run_config(TRAIN_CONFIGS / "tiny.yaml", ["optim.lr=0.02", "data.valid_split=dev"], shards="s")
    again = run_config_from_dict(yaml.safe_load(yaml.safe_dump(run_config_to_dict(run))))
    assert again == run


def test_paths_are_checked_at_train_time_all_at_once(tmp_path):
    run = load_run_config(TRAIN_CONFIGS / "mt5k.yaml", shards=tmp_path / "absent-shards")  # loads: no file checks
    with pytest.raises(ConfigError) as caught:
        check_paths(run)
    message = str(caught.value)
    for name in ("data.shards", "model.cmvn_file", "model.llm.path", "model.encoder.checkpoint"):
        assert f"{name}: expected a file or directory, found nothing at" in message
    no_shards = load_run_config(TRAIN_CONFIGS / "mt5k.yaml")
    with pytest.raises(ConfigError, match=r"data.shards: expected a shard directory or data.list \(`--shards`\), found None"):
        check_paths(no_shards)


def test_existing_relative_input_paths_become_absolute(tmp_path, monkeypatch):
    for name in ("shards", "dev", "qwen", "tok", "init", "ckpt"):
        (tmp_path / name).mkdir()
    (tmp_path / "am.mvn").write_text("placeholder", encoding="utf-8")
    (tmp_path / "encoder.pth").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    run = load_run_config(TRAIN_CONFIGS / "mt5k.yaml", [
        "data.valid_split=null", "data.valid_shards=dev", "model.llm.path=qwen", "model.llm.tokenizer=./tok", "model.cmvn_file=am.mvn",
        "model.encoder.checkpoint=encoder.pth", "model.init_from=init", "train.resume=ckpt", "train.output_dir=out"],
        shards="shards")
    resolved = resolve_input_paths(run)
    saved = run_config_to_dict(resolved)
    assert (saved["data"]["shards"], saved["data"]["valid_shards"]) == (str(tmp_path / "shards"), str(tmp_path / "dev"))
    assert (saved["model"]["llm"]["path"], saved["model"]["llm"]["tokenizer"]) == (str(tmp_path / "qwen"), str(tmp_path / "tok"))
    assert (saved["model"]["cmvn_file"], saved["model"]["encoder"]["checkpoint"]) == (str(tmp_path / "am.mvn"), str(tmp_path / "encoder.pth"))
    assert (saved["model"]["init_from"], saved["train"]["resume"]) == (str(tmp_path / "init"), str(tmp_path / "ckpt"))
    assert saved["train"]["output_dir"] == "out"  # an output, not an input: written where the run says
    assert run.model.cmvn_file == "am.mvn", "the caller's config was changed in place"
    # a missing path stays as given, for check_paths to name
    assert resolve_input_paths(load_run_config(None, shards="absent")).data.shards == "absent"


def test_loader_settings_for_training_and_validation(tmp_path):
    cmvn = tmp_path / "am.mvn"
    cmvn.write_text("placeholder", encoding="utf-8")  # LoaderConfig checks only that it exists
    run = load_run_config(None, ["data.valid_split=dev", "data.shuffle_buffer=64", "data.resampled=true",
                                 "data.max_frames=1200", "data.persistent_workers=true"], shards=tmp_path)
    train = run.data.loader_config(str(cmvn), "qwen")
    valid = run.data.loader_config(str(cmvn), "qwen", valid=True)
    assert (train.split, train.shuffle_buffer, train.resampled, train.max_frames, train.persistent_workers) == \
        ("train", 64, True, 1200, True)
    # Validation reads every held-out sample once, in the same order each time.
    assert (valid.split, valid.shuffle_buffer, valid.resampled, valid.max_frames, valid.persistent_workers) == \
        ("dev", 0, False, 1200, False)
    elsewhere = load_run_config(None, [f"data.valid_shards={tmp_path / 'held-out'}"], shards=tmp_path)
    assert elsewhere.data.loader_config(str(cmvn), "qwen", valid=True).shards == str(tmp_path / "held-out")
    with pytest.raises(ConfigError, match="expected valid_shards or valid_split for validation, found neither"):
        load_run_config(None, shards=tmp_path).data.loader_config(str(cmvn), "qwen", valid=True)


# --------------------------------------------------------------------------------------
# The generated DeepSpeed config
# --------------------------------------------------------------------------------------
def test_deepspeed_config_is_generated_from_the_dataclasses():
    run = load_run_config(None, ["optim.lr=2e-4", "optim.warmup_steps=500", "optim.total_steps=90000",
                                 "train.grad_accum=4", "train.micro_batch=6", "optim.weight_decay=0.01"])
    ds = to_deepspeed_dict(run, world_size=8)
    assert ds["train_micro_batch_size_per_gpu"] == 6 and ds["gradient_accumulation_steps"] == 4
    assert ds["train_batch_size"] == 6 * 4 * 8
    assert ds["bf16"] == {"enabled": True} and ds["fp16"] == {"enabled": False}
    zero = ds["zero_optimization"]
    assert zero["stage"] == 2 and zero["overlap_comm"] is True
    assert zero["allgather_bucket_size"] == zero["reduce_bucket_size"] == 200_000_000
    assert ds["optimizer"]["type"] == "Adam"
    params = ds["optimizer"]["params"]
    assert {k: params[k] for k in ("lr", "betas", "eps", "weight_decay")} == \
        {"lr": 2e-4, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.01}
    assert ds["scheduler"] == {"type": "WarmupDecayLR", "params": {
        "warmup_min_lr": 0.0, "warmup_max_lr": 2e-4, "warmup_num_steps": 500, "total_num_steps": 90000, "warmup_type": "log"}}
    assert "gradient_clipping" not in ds  # MooER trains without clipping
    clipped = to_deepspeed_dict(load_run_config(None, ["optim.grad_clip=1.0", "train.zero_stage=1", "train.bf16=false"]), 1)
    assert clipped["gradient_clipping"] == 1.0
    assert clipped["zero_optimization"]["stage"] == 1 and clipped["bf16"] == {"enabled": False}


def test_torch_adam_on_cpu_fused_adam_elsewhere():
    run = load_run_config(None)
    assert to_deepspeed_dict(run, 1, device_type="cpu")["optimizer"]["params"]["torch_adam"] is True
    assert to_deepspeed_dict(run, 1, device_type="cuda")["optimizer"]["params"]["torch_adam"] is False
    forced = load_run_config(None, ["optim.torch_adam=true"])
    assert to_deepspeed_dict(forced, 1, device_type="cuda")["optimizer"]["params"]["torch_adam"] is True


def test_deepspeed_accepts_the_generated_config():
    from deepspeed.runtime.config import DeepSpeedConfig

    run = load_run_config(TRAIN_CONFIGS / "mt5k.yaml", ["optim.grad_clip=1.0"])
    parsed = DeepSpeedConfig(to_deepspeed_dict(run, world_size=1, device_type="cpu"))
    assert parsed.zero_optimization_stage == 2 and parsed.bfloat16_config.enabled
    assert parsed.gradient_accumulation_steps == 2 and parsed.gradient_clipping == 1.0
    assert parsed.scheduler_name == "WarmupDecayLR" and parsed.scheduler_params["total_num_steps"] == 1_000_000


# --------------------------------------------------------------------------------------
# CLI errors
# --------------------------------------------------------------------------------------
def test_cli_config_errors_exit_2_with_one_message_and_no_traceback(tmp_path):
    result = runner.invoke(app, ["--shards", str(tmp_path), "--set", "train.max_stepz=3"])
    assert result.exit_code == 2
    assert "error: invalid run config" in result.output and "max_stepz" in result.output
    assert "Traceback" not in result.output
    missing = runner.invoke(app, ["--shards", str(tmp_path / "nowhere"), "--config", str(TRAIN_CONFIGS / "mt5k.yaml")])
    assert missing.exit_code == 2 and "cannot start training" in missing.output and "Traceback" not in missing.output


def test_cli_os_errors_while_training_exit_2_with_the_message(tmp_path):
    # Inputs exist (check_paths passes), but the output directory cannot be made: a file is in the way.
    (tmp_path / "tokenizer").mkdir()
    (tmp_path / "am.mvn").write_text("placeholder", encoding="utf-8")
    (tmp_path / "blocker").write_text("a file, not a directory", encoding="utf-8")
    result = runner.invoke(app, ["--shards", str(tmp_path), "--config", str(TRAIN_CONFIGS / "tiny.yaml"),
                                 "--set", f"model.llm.tokenizer={tmp_path / 'tokenizer'}",
                                 "--set", f"model.cmvn_file={tmp_path / 'am.mvn'}",
                                 "--set", f"train.output_dir={tmp_path / 'blocker' / 'run'}"])
    assert result.exit_code == 2, result.output
    assert "error: " in result.output and "blocker" in result.output and "Traceback" not in result.output


def test_cli_export_of_a_missing_checkpoint_exits_2(tmp_path):
    result = runner.invoke(app, ["export", str(tmp_path / "no-run"), str(tmp_path / "out")])
    assert result.exit_code == 2 and "expected a checkpoint directory" in result.output

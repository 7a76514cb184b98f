"""The trainer end to end on CPU (DeepSpeed ZeRO-2, bf16, gloo), with real espeak-ng speech.

* a handful of utterances overfit to near-zero loss, and greedy decoding from the exported
  MooER-layout checkpoint reproduces every transcript (the whole path learns);
* a run killed with SIGKILL and resumed writes the same per-step losses, batches and final
  weights as an uninterrupted run;
* two ranks (torchrun, gloo) stay in sync;
* export to MooER's layout gives the same outputs, and training continues from it;
* the GPU benchmark's ``--tiny`` mode runs, so the script cannot rot.

Expensive runs are module-scoped fixtures; subprocess runs of A and B overlap in time.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from mooer_data.shards import TarWriter, encode, sample_meta
from mooer_model.checkpoint import MODEL_STATES, model_from_checkpoint, read_trainables
from mooer_model.cli import app
from mooer_model.data import LoaderConfig, make_loader
from mooer_model.errors import CheckpointError
from mooer_model.llm import load_tokenizer
from mooer_model.model import GenerationSettings, build_model
from mooer_model.release import model_config_for_release
from mooer_model.testing import write_tiny_assets
from mooer_model.train import train
from mooer_model.train_config import RunConfig, load_run_config, run_config_from_dict

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "pipelines" / "train" / "tiny.yaml"
TRAIN_TEXT = ["HELLO WORLD", "GOOD MORNING", "PLEASE OPEN THE WINDOW", "WHERE ARE YOU GOING", "I WOULD LIKE A CUP OF HOT TEA"]
HELD_OUT_TEXT = ["SHE OPENED THE DOOR", "IT WAS A COLD MORNING"]


# --------------------------------------------------------------------------------------
# Fixtures: espeak shards + tiny assets
# --------------------------------------------------------------------------------------
def write_shard(path: Path, samples: list[dict]) -> None:
    """A shard in the project's format, written by its own TarWriter (sorted members, fixed mtime)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = TarWriter(path)
    for sample in sorted(samples, key=lambda s: s["id"]):
        meta = sample_meta({"id": sample["id"], "language": "en", "text": sample["text"]}, len(sample["audio"]))
        writer.add_many(sorted([(f"{sample['id']}.flac", encode(sample["audio"], "flac")),
                                (f"{sample['id']}.json", json.dumps(meta, sort_keys=True).encode()),
                                (f"{sample['id']}.txt", sample["text"].encode())]))
    writer.close()


@dataclass
class Corpus:
    shards: Path
    uneven: Path  # two shards of 4 and 2 utterances (each 1-1.7 s)
    tokenizer: Path
    cmvn: Path
    transcripts: dict[str, str]  # id -> the text the model should write


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, synth) -> Corpus:
    root = tmp_path_factory.mktemp("trainer")
    train_samples = [{"id": f"utt-{n:02d}", "audio": synth.speech(text.lower(), "en"), "text": text.replace(" ", "▁")}
                     for n, text in enumerate(TRAIN_TEXT)]
    held_out = [{"id": f"dev-{n:02d}", "audio": synth.speech(text.lower(), "en"), "text": text.replace(" ", "▁")}
                for n, text in enumerate(HELD_OUT_TEXT)]
    # Two train shards, so two ranks (or two loader workers) each get one.
    write_shard(root / "shards" / "train" / "shard-000000.tar", train_samples[:3])
    write_shard(root / "shards" / "train" / "shard-000001.tar", train_samples[3:])
    write_shard(root / "shards" / "dev" / "shard-000000.tar", held_out)
    # Uneven: 4 utterances in one shard, 2 in the other (MooER's risk: ranks run out at different times).
    short = [s for s in train_samples if len(s["audio"]) < 1.7 * 16000]
    assert len(short) == 4, [len(s["audio"]) / 16000 for s in train_samples]
    write_shard(root / "uneven" / "train" / "shard-000000.tar", [dict(s, id=f"u0-{n}") for n, s in enumerate(short)])
    write_shard(root / "uneven" / "train" / "shard-000001.tar", [dict(s, id=f"u1-{n}") for n, s in enumerate(short[:2])])
    assets = write_tiny_assets(root / "assets")
    return Corpus(root / "shards", root / "uneven", assets.tokenizer_dir, assets.cmvn_file,
                  dict(zip([s["id"] for s in train_samples], TRAIN_TEXT)))


def overrides(corpus: Corpus, output_dir: Path, *extra: str) -> list[str]:
    return [f"model.llm.tokenizer={corpus.tokenizer}", f"model.cmvn_file={corpus.cmvn}", f"train.output_dir={output_dir}",
            "train.progress_bar=false", "train.tensorboard=false", *extra]


def cli_command(corpus: Corpus, output_dir: Path, *extra: str) -> list[str]:
    command = [sys.executable, "-m", "mooer_model.cli", "--shards", str(corpus.shards), "--config", str(TINY)]
    for item in overrides(corpus, output_dir, *extra):
        command += ["--set", item]
    return command


def subprocess_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def records(output_dir: Path, name: str = "metrics.jsonl") -> list[dict]:
    return [json.loads(line) for line in (output_dir / name).read_text().splitlines()]


def train_records(output_dir: Path, name: str = "metrics.jsonl") -> list[dict]:
    return [r for r in records(output_dir, name) if "loss" in r and "lr" in r]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --------------------------------------------------------------------------------------
# Overfit: the whole path learns
# --------------------------------------------------------------------------------------
OVERFIT = ("model.llm.freeze=false",  # the tiny LLM's random, frozen head caps how sure it can be; train it too
           "optim.lr=5.0e-3", "optim.warmup_steps=5", "optim.warmup_type=linear", "train.max_steps=90",
           "train.log_every=10", "train.save_every=40", "train.keep_checkpoints=2", "train.tensorboard=true",
           "data.valid_split=dev", "train.eval_every=45")


@pytest.fixture(scope="module")
def overfit(corpus, tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("overfit")
    run = load_run_config(TINY, overrides(corpus, output_dir, *OVERFIT), shards=corpus.shards)
    return run, train(run)


def test_overfits_to_near_zero_loss(overfit):
    run, result = overfit
    losses = [r["loss"] for r in train_records(result.output_dir)]
    assert result.step == 90 and len(losses) == 9
    assert losses[0] > 3.0, "a fresh model should not already know the transcripts"
    assert losses[-1] < 0.05 and result.last_log["acc"] == 1.0


def test_greedy_decoding_from_the_exported_release_reproduces_every_transcript(overfit, corpus, tmp_path):
    _, result = overfit
    export = CliRunner().invoke(app, ["export", str(result.output_dir), str(tmp_path / "release")])
    assert export.exit_code == 0, export.output
    for part in ("paraformer_encoder/am.mvn", "paraformer_encoder/paraformer-encoder.pth", "asr/adapter_project.pt",
                 "asr/lora_weights/adapter_config.json"):
        assert (tmp_path / "release" / part).is_file(), part
    model = build_model(model_config_for_release(tmp_path / "release", None), "cpu")
    loader = make_loader(LoaderConfig(shards=corpus.shards, cmvn_file=corpus.cmvn, max_frames=2000, num_workers=0,
                                      shuffle_buffer=0), model.tokenizer)
    decoded = {}
    for batch in loader:
        texts = model.generate(batch["audio_features"], batch["audio_lengths"], "asr",
                               GenerationSettings(num_beams=1, max_new_tokens=20))
        decoded.update(zip(batch["keys"], texts))
    assert decoded == corpus.transcripts


def test_validation_covers_the_held_out_shards_every_eval_every_steps(overfit, corpus):
    _, result = overfit
    valid = [r for r in records(result.output_dir) if "loss" in r and "lr" not in r]
    assert [r["step"] for r in valid] == [45, 90]
    assert all(r.get("split") == "valid" for r in valid)  # told apart from training records in the one file
    tokenizer = load_tokenizer(load_run_config(TINY, overrides(corpus, Path("unused"))).model.llm)
    expected = sum(len(tokenizer.encode(t, add_special_tokens=False)) + 1 for t in HELD_OUT_TEXT)  # + eos each
    assert all(r["tokens"] == expected for r in valid)
    assert result.last_eval == valid[-1]
    assert list((result.output_dir / "tensorboard").glob("events.out.tfevents.*"))


def test_checkpoints_hold_the_resolved_config_and_only_the_trainables(overfit):
    run, result = overfit
    root = result.output_dir / "checkpoints"
    assert (root / "latest").read_text().strip() == "step-90" and result.checkpoint == root / "step-90"
    assert sorted(p.name for p in root.glob("step-*")) == ["step-80", "step-90"]  # keep_checkpoints=2 of 40, 80, 90
    saved = yaml.safe_load((result.checkpoint / "config.yaml").read_text())
    assert run_config_from_dict(saved) == run and saved["optim"]["lr"] == 5e-3
    state = json.loads((result.checkpoint / "trainer_state.rank0.json").read_text())
    assert state["step"] == 90 and state["loader"]["world_size"] == 1 and set(state["rng"]) >= {"python", "numpy", "torch"}
    model = build_model(run.model, "cpu")
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert set(read_trainables(result.checkpoint)) == trainable
    frozen_encoder = [name for name in read_trainables(result.checkpoint) if name.startswith("encoder.")]
    assert not frozen_encoder  # exclude_frozen_parameters: the frozen encoder is not copied into every checkpoint


def test_training_continues_from_an_exported_release(overfit, corpus, tmp_path):
    _, result = overfit
    assert CliRunner().invoke(app, ["export", str(result.checkpoint), str(tmp_path / "release")]).exit_code == 0
    base = load_run_config(TINY, overrides(corpus, tmp_path / "continued", "train.max_steps=2", "train.log_every=1",
                                           "optim.lr=1.0e-4", "train.save_every=0"), shards=corpus.shards)
    run = RunConfig(model=model_config_for_release(tmp_path / "release", None), data=base.data, train=base.train, optim=base.optim)
    continued = train(run)
    first = train_records(continued.output_dir)[0]
    assert first["loss"] < 0.1, "the exported weights were not loaded: the loss is that of a fresh model"


def test_resuming_with_batches_made_differently_is_refused(overfit, corpus, tmp_path):
    _, result = overfit
    changed = load_run_config(TINY, overrides(corpus, tmp_path / "changed", *OVERFIT, "data.max_frames=700",
                                              f"train.resume={result.checkpoint}"), shards=corpus.shards)
    with pytest.raises(CheckpointError, match=r"cannot continue its data position.*'max_frames': 800.*'max_frames': 700"):
        train(changed)


def test_relative_input_paths_are_saved_absolute_and_export_works_from_elsewhere(corpus, tmp_path, monkeypatch):
    # The run starts where its inputs are, by relative paths; the export runs from another directory.
    root = corpus.shards.parent
    monkeypatch.chdir(root)
    relative = [f"model.llm.tokenizer={corpus.tokenizer.relative_to(root)}", f"model.cmvn_file={corpus.cmvn.relative_to(root)}",
                f"train.output_dir={tmp_path / 'run'}", "train.progress_bar=false", "train.tensorboard=false",
                "train.max_steps=1", "train.save_every=0"]
    result = train(load_run_config(TINY, relative, shards="shards"))
    saved = yaml.safe_load((result.output_dir / "config.yaml").read_text())
    assert saved["data"]["shards"] == str(corpus.shards)
    assert (saved["model"]["llm"]["tokenizer"], saved["model"]["cmvn_file"]) == (str(corpus.tokenizer), str(corpus.cmvn))
    assert yaml.safe_load((result.checkpoint / "config.yaml").read_text()) == saved
    monkeypatch.chdir(tmp_path)
    assert CliRunner().invoke(app, ["export", str(result.checkpoint), str(tmp_path / "release")]).exit_code == 0


# --------------------------------------------------------------------------------------
# Export: same outputs from the checkpoint and from MooER's layout
# --------------------------------------------------------------------------------------
def test_export_gives_the_same_outputs_as_the_checkpoint(resumed_runs, corpus, tmp_path):
    a_dir, _ = resumed_runs
    result = CliRunner().invoke(app, ["export", str(a_dir), str(tmp_path / "release"), "--task-dir", "asr"])
    assert result.exit_code == 0, result.output
    from_checkpoint = model_from_checkpoint(a_dir)
    from_release = build_model(model_config_for_release(tmp_path / "release", None), "cpu").eval()  # no LoRA dropout
    loader = make_loader(LoaderConfig(shards=corpus.shards, cmvn_file=corpus.cmvn, max_frames=2000, num_workers=0),
                         from_checkpoint.tokenizer)
    batch = next(iter(loader))
    with torch.no_grad():
        expected, found = from_checkpoint.compute_logits(batch), from_release.compute_logits(batch)
    assert torch.equal(expected, found)


# --------------------------------------------------------------------------------------
# Kill -9 and resume == uninterrupted
# --------------------------------------------------------------------------------------
# model.llm.dtype=float32: the weights are stored in float32 and DeepSpeed trains them in bf16;
# the export test below then compares a rebuilt float32 model with the release's.
RESUMABLE = ("train.max_steps=40", "train.save_every=4", "train.log_every=1", "data.num_workers=2",
             "data.persistent_workers=true", "optim.lr=1.0e-2", "optim.warmup_steps=2", "optim.warmup_type=linear",
             "model.llm.dtype=float32")


@pytest.fixture(scope="module")
def resumed_runs(corpus, tmp_path_factory):
    """(A: uninterrupted, B: killed with SIGKILL after a checkpoint, then resumed). A and the
    first part of B are subprocesses that run at the same time; B resumes in this process
    (through train(), as the CLI does), at the same torch thread count."""
    root = tmp_path_factory.mktemp("resume")
    a_dir, b_dir = root / "a", root / "b"
    env = subprocess_env()
    env["OMP_NUM_THREADS"] = str(torch.get_num_threads())  # the same CPU kernels' partitioning everywhere
    run_a = subprocess.Popen(cli_command(corpus, a_dir, *RESUMABLE), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    run_b = subprocess.Popen(cli_command(corpus, b_dir, *RESUMABLE), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    marker = b_dir / "checkpoints" / "latest"
    deadline = time.monotonic() + 240
    while not marker.exists() and run_b.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    run_b.send_signal(signal.SIGKILL)
    b_log = run_b.communicate()[0].decode(errors="replace")
    assert run_b.returncode == -signal.SIGKILL, f"B was meant to be killed mid-run; it ended with {run_b.returncode}:\n{b_log[-3000:]}"
    killed_at = [r["step"] for r in train_records(b_dir)]
    resume_from = (b_dir / "checkpoints" / "latest").read_text().strip()
    resumed = train(load_run_config(TINY, overrides(corpus, b_dir, *RESUMABLE), shards=corpus.shards))
    a_log = run_a.communicate(timeout=300)[0].decode(errors="replace")
    assert run_a.returncode == 0, a_log[-3000:]
    return a_dir, {"b_dir": b_dir, "steps_before_kill": killed_at, "resumed_from": resume_from, "result": resumed}


def test_kill_and_resume_equals_an_uninterrupted_run(resumed_runs):
    a_dir, b = resumed_runs
    b_dir = b["b_dir"]
    assert max(b["steps_before_kill"], default=0) < 40, "B finished before it was killed"
    resumed_step = int(b["resumed_from"].removeprefix("step-"))
    assert 0 < resumed_step < 40 and b["result"].step == 40
    a, b_records = train_records(a_dir), train_records(b_dir)
    assert [r["step"] for r in a] == [r["step"] for r in b_records] == list(range(1, 41))
    # Exactly equal: same data in the same batches (keys), same RNG (LoRA dropout), same
    # optimizer and schedule state; CPU bf16 kernels are deterministic at a fixed thread count.
    for field in ("loss", "acc", "lr", "keys_digest", "epoch"):
        assert [r[field] for r in a] == [r[field] for r in b_records], field
    assert records(a_dir)[-1]["trainables_digest"] == records(b_dir)[-1]["trainables_digest"]
    assert a[0]["loss"] > a[-1]["loss"]  # it trained


# --------------------------------------------------------------------------------------
# Two ranks
# --------------------------------------------------------------------------------------
def test_two_ranks_stay_in_sync_and_end_each_epoch_together(corpus, tmp_path):
    output_dir = tmp_path / "ddp"
    # One utterance a batch (30 frames < two utterances), gradient accumulation 2: rank 0 holds
    # two steps' worth of batches an epoch, rank 1 one, so every epoch ends after one step on
    # both (unchecked, rank 0 would wait forever in its next collective).
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
               *cli_command(corpus, output_dir, "train.max_steps=4", "train.grad_accum=2", "train.log_every=1",
                            "train.save_every=2", "optim.lr=1.0e-2", "optim.warmup_steps=2", "optim.warmup_type=linear",
                            "data.max_frames=30", "data.max_duration=1.7", "model.llm.gradient_checkpointing=true",
                            # one held-out shard for two ranks: rank 1 evaluates nothing, and that is fine
                            f"data.valid_shards={corpus.shards / 'dev' / 'shard-000000.tar'}", "train.eval_every=2")[1:]]
    command[command.index("--shards") + 1] = str(corpus.uneven)
    done = subprocess.run(command, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rank0, rank1 = records(output_dir), records(output_dir, "metrics.rank1.jsonl")
    steps0, steps1 = [r for r in rank0 if "lr" in r], [r for r in rank1 if "lr" in r]  # training records, not validation
    assert [r["step"] for r in steps0] == [r["step"] for r in steps1] == [1, 2, 3, 4]
    assert [r["epoch"] for r in steps0] == [r["epoch"] for r in steps1] == [0, 1, 2, 3]  # one step an epoch
    assert [r["loss"] for r in steps0] == [r["loss"] for r in steps1]  # the all-reduced, global loss
    valid = [r for r in rank0 if r.get("split") == "valid"]
    assert [r["step"] for r in valid] == [2, 4] and all(r["tokens"] > 0 for r in valid)
    assert all(x["keys_digest"] != y["keys_digest"] for x, y in zip(steps0, steps1))  # each rank its own data
    # ZeRO-2 keeps a full parameter copy per rank: identical at the start and after training.
    start0, end0 = [r for r in rank0 if "event" in r]
    start1, end1 = [r for r in rank1 if "event" in r]
    assert start0["trainables_digest"] == start1["trainables_digest"]
    assert end0["trainables_digest"] == end1["trainables_digest"] != start0["trainables_digest"]
    checkpoint = output_dir / "checkpoints" / "step-4"
    assert {p.name for p in checkpoint.iterdir()} >= {
        MODEL_STATES, "bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt", "bf16_zero_pp_rank_1_mp_rank_00_optim_states.pt",
        "trainer_state.rank0.json", "trainer_state.rank1.json", "config.yaml"}


# --------------------------------------------------------------------------------------
# The GPU benchmark's CPU smoke mode
# --------------------------------------------------------------------------------------
def test_gpu_benchmark_tiny_mode_runs_on_cpu(corpus, tmp_path):
    spec = importlib.util.spec_from_file_location("bench_train_gpu", REPO / "benchmarks" / "bench_train_gpu.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "bench.json"
    report = bench.main(["--tiny", "--shards", str(corpus.shards), "--steps", "2", "--warmup", "1", "--max-frames", "400",
                         "--grad-accum", "1", "--out", str(out)])
    assert json.loads(out.read_text()) == report
    assert report["steps"] == 2 and report["device"] == "cpu" and report["shapes"] == "tiny"
    for key in ("tokens_per_s", "samples_per_s", "audio_s_per_s", "step_time_s", "model_tflops_per_step"):
        assert report[key] > 0, key
    assert 0 <= report["data_wait"] < 1
    assert report["params"]["llm"] > report["params"]["trainable"] > 0

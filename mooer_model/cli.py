"""The `mooer-train` command line: train, or export a checkpoint to MooER's layout.

    mooer-train --shards manifests/mt5k --config pipelines/train/mt5k.yaml [--set optim.lr=5e-5 ...]
    torchrun --nproc_per_node 8 -m mooer_model.cli --shards manifests/mt5k --config pipelines/train/mt5k.yaml
    deepspeed --num_gpus 8 --module mooer_model.cli --shards manifests/mt5k --config pipelines/train/mt5k.yaml
    mooer-train export exp/mt5k OUT_DIR [--task-dir asr]

Each command converts its arguments and calls one library function; configuration and
checkpoint errors print one line and exit with status 2 (no traceback).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import List, Optional

import typer

app = typer.Typer(
    help="Train a MooER-style model on mooer shards (DeepSpeed; one process, torchrun or the deepspeed launcher).",
    add_completion=False,
    pretty_exceptions_enable=False,
    invoke_without_command=True,
)


def _fail(error: Exception) -> None:
    typer.echo(f"error: {error}", err=True)
    raise typer.Exit(code=2)


def _setup_logging() -> None:
    # Our own handler on the package logger: libraries loaded later (DeepSpeed's engine among
    # them) reconfigure the root handlers' levels, which would silence our INFO lines.
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    package = logging.getLogger("mooer_model")
    package.handlers = [handler]
    package.setLevel(logging.INFO)
    package.propagate = False
    try:  # DeepSpeed logs every engine detail at INFO; the trainer says what matters
        from deepspeed.utils import logger as ds_logger

        ds_logger.setLevel(logging.WARNING)
    except ImportError:
        pass


@app.callback()
def train(
    ctx: typer.Context,
    shards: Optional[Path] = typer.Option(None, "--shards", help="a shard directory made by `mooer-data shard` (or a data.list)"),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="a train config YAML, e.g. pipelines/train/mt5k.yaml"),
    overrides: Optional[List[str]] = typer.Option(None, "--set", help="override a config field: section.key=value (repeatable)"),
    resume: Optional[Path] = typer.Option(None, "--resume", help="continue from this checkpoint (default: the newest in train.output_dir)"),
    local_rank: Optional[int] = typer.Option(None, "--local_rank", "--local-rank", hidden=True,
                                             help="passed by the deepspeed launcher; LOCAL_RANK in the environment is used"),
) -> None:
    """Train on SHARDS with a config (YAML and/or --set); resumes from output_dir when it holds a checkpoint."""
    if ctx.invoked_subcommand is not None:
        return
    from mooer_model.config import ConfigError
    from mooer_model.errors import CheckpointError
    from mooer_model.train_config import load_run_config

    try:
        run = load_run_config(config, list(overrides or []), shards=shards)
    except ConfigError as error:
        _fail(error)
    if resume is not None:
        run.train.resume = str(resume)  # a path, not a YAML value
    if run.data.shards is None:
        _fail(ValueError("expected --shards (or data.shards in the config), found neither"))
    _setup_logging()
    from mooer_model.train import train as run_training

    try:
        result = run_training(run)
    except (ConfigError, CheckpointError, ValueError, OSError) as error:  # e.g. no shards of the split, too few shards
        _fail(error)
    typer.echo(f"trained to step {result.step}; checkpoint {result.checkpoint}; "
               f"data wait {100 * result.data_wait:.2f}% of step time")


@app.command("export")
def export(
    checkpoint: Path = typer.Argument(..., help="a checkpoint (…/checkpoints/step-N) or a run's output_dir (its newest)"),
    out_dir: Path = typer.Argument(..., help="where to write paraformer_encoder/, <task-dir>/adapter_project.pt, <task-dir>/lora_weights/"),
    task_dir: str = typer.Option("asr", "--task-dir", help="asr, ast or asr_ast_mtl (MooER's release names)"),
) -> None:
    """Export a training checkpoint to MooER's released layout (loadable by mooer-infer and model.init_from)."""
    from mooer_model.config import ConfigError
    from mooer_model.errors import CheckpointError
    from mooer_model.checkpoint import export_checkpoint

    try:
        path = export_checkpoint(checkpoint, out_dir, task_dir)
    except (ConfigError, CheckpointError) as error:
        _fail(error)
    typer.echo(f"exported to {path}")


if __name__ == "__main__":  # `python -m mooer_model.cli` (torchrun -m, deepspeed --module)
    app()

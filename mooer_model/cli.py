"""The `mooer-train` command line (the trainer arrives with the model issue)."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(help="Train a MooER-style model on mooer shards.", add_completion=False)


@app.command()
def train(shards: Path = typer.Option(..., "--shards", help="a shard directory made by `mooer-data shard`")) -> None:
    """Not available yet: exits with an explanation instead of pretending to train."""
    typer.echo(
        f"error: mooer-train is not implemented in this release; {shards} was not read. "
        "Training arrives with the model/trainer milestone.",
        err=True,
    )
    raise typer.Exit(code=2)

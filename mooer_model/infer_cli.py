"""The `mooer-infer` command line: decode and score with a MooER model (one library call).

    mooer-infer data/test_sets --model-dir pretrained_models/MooER-MTL-5K \\
        --llm-dir pretrained_models/Qwen2-7B-Instruct --task asr --out exp/decode
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(
    help="Decode wav lists, manifests, shards or MooER test sets with a MooER model; write results and CER/WER/BLEU.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

LANGUAGES = ("auto", "zh", "en")


def _fail(error: Exception) -> None:
    typer.echo(f"error: {error}", err=True)
    raise typer.Exit(code=2)


def _log(message: str) -> None:
    typer.echo(message, err=message.startswith("warning:"))


@app.command()
def decode(
    source: Path = typer.Argument(..., help="wav.scp / path list, one audio file, manifest dir, shard dir / data.list / .tar, or <dir>/<set>/{data.list,text}"),
    model_dir: Path = typer.Option(..., "--model-dir", help="a MooER release (root or task directory) or a `mooer-train export` output"),
    out: Path = typer.Option(..., "--out", "-o", help="results per test set, scores.json and scores.md go here"),
    llm_dir: Optional[Path] = typer.Option(None, "--llm-dir", help="Qwen2-7B-Instruct directory (not needed when the export carries its LLM)"),
    task: str = typer.Option("asr", "--task", help="asr, ast or mtl (the ASR+AST model, prompted as ast)"),
    task_dir: Optional[str] = typer.Option(None, "--task-dir", help="the release's task directory (default: asr / ast / asr_ast_mtl)"),
    input_type: str = typer.Option("auto", "--input-type", help="auto, wav-scp, manifest, shards, test-sets or audio"),
    split: Optional[str] = typer.Option(None, "--split", help="only this split of a manifest or shard directory"),
    batch_size: int = typer.Option(10, "--batch-size", min=1, help="utterances per batch (MooER: 10)"),
    max_batch_seconds: float = typer.Option(300.0, "--max-batch-seconds", help="padded audio per batch (longest x count)"),
    max_duration: float = typer.Option(30.0, "--max-duration", help="longer utterances are rejected (MooER: < 30 s)"),
    beams: int = typer.Option(4, "--beams", min=1, help="beam size (MooER: 4)"),
    length_penalty: float = typer.Option(0.8, "--length-penalty", help="beam length penalty (MooER: 0.8)"),
    eos_bias: float = typer.Option(-0.2, "--eos-bias", help="bias added to the end-of-turn token's score (MooER: -0.2)"),
    max_new_tokens: int = typer.Option(200, "--max-new-tokens", min=1, help="generation limit (MooER: 200)"),
    score: bool = typer.Option(True, "--score/--no-score", help="score against the references the input carries or --ref"),
    ref: Optional[Path] = typer.Option(None, "--ref", help="'uttid text' references of the task's output (transcript; translation for ast)"),
    ref_translation: Optional[Path] = typer.Option(None, "--ref-translation", help="'uttid text' translations (the ast half of mtl)"),
    language: str = typer.Option("auto", "--language", help="CER (zh) or WER (en) for every utterance; auto: its tag, else its script"),
    device: str = typer.Option("auto", "--device", help="auto (musa > cuda > cpu), cpu, cuda[:N], musa[:N]"),
    llm_dtype: str = typer.Option("auto", "--llm-dtype", help="auto (bfloat16 on a GPU, float32 on the CPU), bfloat16 or float32"),
    overwrite: bool = typer.Option(False, "--overwrite", help="decode sets again even when a run with the same settings finished them"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bars"),
) -> None:
    """Decode every test set of SOURCE into OUT/<set>/ and print one score row per set."""
    from mooer_model.infer import (DecodeConfig, check_model_dir, file_stamps, load_model, model_files, run_inference,
                                     with_references)
    from mooer_model.infer_inputs import open_input, read_label_file, reference_field
    from mooer_model.model import GenerationSettings

    try:
        if language not in LANGUAGES:
            raise ValueError(f"--language: expected one of {', '.join(LANGUAGES)}, found {language!r}")
        if ref_translation is not None and task != "mtl":
            raise ValueError(f"--ref-translation: expected --task mtl (for {task}, give the references with --ref), found --task {task}")
        config = DecodeConfig(task=task, batch_size=batch_size, max_batch_seconds=max_batch_seconds, max_duration=max_duration,
                              show_progress=not quiet and sys.stderr.isatty())
        settings = GenerationSettings(max_new_tokens=max_new_tokens, num_beams=beams, length_penalty=length_penalty, eos_bias=eos_bias)
        check_model_dir(model_dir, llm_dir, task, task_dir)  # before any audio is read
        sets = open_input(source, input_type, task, split)
        for labels_file, field_name in ((ref, reference_field(task)), (ref_translation, "translation")):
            if labels_file is not None:
                labels = read_label_file(labels_file)
                sets = [with_references(s, labels, field_name) for s in sets]
        fingerprint = {
            "source": str(source.resolve()), "input_type": input_type, "split": split,
            "model_dir": str(model_dir.resolve()), "llm_dtype": llm_dtype, "llm_dir": str(llm_dir.resolve()) if llm_dir else None, "task_dir": task_dir,
            "ref": str(ref.resolve()) if ref else None, "ref_translation": str(ref_translation.resolve()) if ref_translation else None,
            # paths alone would reuse stale results after a re-export into the same directory or a rewritten --ref
            "model_files": file_stamps(model_files(model_dir, llm_dir, task, task_dir)),
            "label_files": file_stamps([f for f in (ref, ref_translation) if f is not None]),
        }
        run_inference(
            sets, lambda: load_model(model_dir, llm_dir, task, task_dir, device, llm_dtype), out, config, settings,
            fingerprint=fingerprint, score=score, language=None if language == "auto" else language,
            overwrite=overwrite, log=_log,
        )
    except (ValueError, OSError) as error:
        _fail(error)


if __name__ == "__main__":
    app()

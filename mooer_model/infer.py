"""Decoding with a MooER model: batched, with MooER's generation settings, to files.

The flow for each test set (see :mod:`mooer_model.infer_inputs` for where sets come from):

1. utterances stream in; those over ``max_duration`` (30 s, MooER's README limit) or
   unreadable are rejected with a reason, never dropped silently;
2. a window of ``sort_window`` utterances is sorted by duration, longest first (an out of
   memory shows on the first batch, not the last), and cut into batches of at most
   ``batch_size`` utterances (MooER's ``--batch_size``, 10) whose padded audio stays under
   ``max_batch_seconds`` (the frame budget);
3. each batch's audio is read, padded and decoded by ``generate_from_waveforms`` under
   bf16 autocast on a GPU (MooER: fp32 encoder and adapter under autocast, bf16 LLM);
4. per set, ``results.jsonl`` (one row per utterance, in input order), a Kaldi-style
   ``hyp.txt`` (``hyp_ast.txt`` too for mtl) and ``rejects.jsonl`` are written to
   temporary names and renamed, then ``run.json``, which records what produced them: a
   rerun with the same settings reuses a finished set instead of decoding it again;
5. with scoring on, :func:`mooer_model.score.score_results` gives one CER / WER / BLEU row
   per set, printed like MooER's tables and written to ``scores.json`` / ``scores.md``.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from mooer_model import prompts
from mooer_model.data import audio_tokens, lfr_frames
from mooer_model.infer_inputs import SAMPLE_RATE, Rejected, TestSet, Utterance
from mooer_model.score import ScoreRow, averages, format_table, score_results

# The task directory of a MooER release each task decodes with by default.
TASK_DIRS = {"asr": "asr", "ast": "ast", "mtl": "asr_ast_mtl"}
RESULTS_FILE = "results.jsonl"
HYP_FILE = "hyp.txt"
HYP_AST_FILE = "hyp_ast.txt"
REJECTS_FILE = "rejects.jsonl"
RUN_FILE = "run.json"
SCORES_JSON = "scores.json"
SCORES_MD = "scores.md"
# The shortest audio the model can take: one adapter output needs two LFR frames.
MIN_SAMPLES = next(n for n in range(0, SAMPLE_RATE) if audio_tokens(lfr_frames(n)) >= 1)


@dataclass(frozen=True)
class DecodeConfig:
    """How utterances are batched and which are refused (generation has its own settings)."""

    task: str = "asr"
    batch_size: int = field(default=10, metadata={"help": "utterances per batch (MooER's --batch_size)"})
    max_batch_seconds: float = field(default=300.0, metadata={"help": "padded audio per batch: longest x count"})
    max_duration: float = field(default=30.0, metadata={"help": "longer utterances are rejected (MooER: < 30 s)"})
    sort_window: int = field(default=1000, metadata={"help": "utterances sorted by duration together (bounds memory)"})
    show_progress: bool = True

    def __post_init__(self) -> None:
        if self.task not in prompts.TASKS:
            raise ValueError(f"expected a task among {', '.join(prompts.TASKS)}, found {self.task!r}")
        for name in ("batch_size", "sort_window"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected a positive integer, found {value!r}")
        for name in ("max_batch_seconds", "max_duration"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}: expected a positive number of seconds, found {getattr(self, name)!r}")


# --------------------------------------------------------------------------------------
# the model
# --------------------------------------------------------------------------------------
LLM_DTYPES = ("auto", "bfloat16", "float32")


def check_model_dir(model_dir: str | os.PathLike, llm_dir: str | os.PathLike | None = None, task: str = "asr",
                    task_dir: str | None = None) -> None:
    """Raise :class:`~mooer_model.errors.CheckpointError` naming what is missing for
    :func:`load_model` (the layout and the LLM directory only; reads no weights)."""
    from mooer_model.errors import CheckpointError
    from mooer_model.release import ENCODER_DIR, locate_release

    if task not in TASK_DIRS:
        raise ValueError(f"expected a task among {', '.join(TASK_DIRS)}, found {task!r}")
    layout = locate_release(model_dir, task_dir or TASK_DIRS[task])
    if layout.encoder_dir is None:
        raise CheckpointError(f"expected {ENCODER_DIR}/ at one of {[str(p) for p in layout.searched_encoder_dirs]}, found none")
    if llm_dir is not None and not Path(llm_dir).is_dir():
        raise CheckpointError(f"expected the LLM directory (Qwen2-7B-Instruct) at {llm_dir}, found no directory")
    if llm_dir is None and layout.config_file is None:
        raise CheckpointError(f"{model_dir} is a MooER release without its LLM: expected llm_dir (a local "
                              "Qwen2-7B-Instruct directory), found none")


def load_model(model_dir: str | os.PathLike, llm_dir: str | os.PathLike | None = None, task: str = "asr",
               task_dir: str | None = None, device: str = "auto", llm_dtype: str = "auto"):
    """A MooER model from a release (root or task directory) or a ``mooer-train export``
    output, with Qwen2 from ``llm_dir``; on ``device`` (auto: musa > cuda > cpu).

    ``llm_dtype`` ``auto`` keeps the LLM in bfloat16 on an accelerator (as MooER decodes)
    and uses float32 on the CPU, where bfloat16 matmuls are slow and batch-shape dependent.
    """
    from mooer_model.device import resolve_device
    from mooer_model.model import build_model
    from mooer_model.release import model_config_for_release

    if llm_dtype not in LLM_DTYPES:
        raise ValueError(f"expected an LLM dtype among {', '.join(LLM_DTYPES)}, found {llm_dtype!r}")
    check_model_dir(model_dir, llm_dir, task, task_dir)
    target = resolve_device(device)
    if llm_dtype == "auto":
        llm_dtype = "float32" if target.type == "cpu" else "bfloat16"
    cfg = model_config_for_release(model_dir, str(llm_dir) if llm_dir is not None else None,
                                   task_dir=task_dir or TASK_DIRS[task], **{"llm.dtype": llm_dtype})
    return build_model(cfg, target)


def _precision(model) -> Any:
    """bf16 autocast off the CPU, as MooER decodes; nothing on the CPU."""
    import torch

    from mooer_model.device import autocast

    device = model.device
    return autocast(device, None if device.type == "cpu" else torch.bfloat16)


def transcribe_waveforms(model, waves: Sequence[np.ndarray], task: str = "asr", settings=None) -> list[str]:
    """Decode 16 kHz mono float waveforms as one batch: one raw output per waveform (mtl:
    the two-line text; :func:`mooer_model.prompts.split_mtl_output` splits it)."""
    import torch

    if not waves:
        return []
    lengths = [len(w) for w in waves]
    short = [n for n in lengths if n < MIN_SAMPLES]
    if short:
        raise ValueError(f"expected waveforms of at least {MIN_SAMPLES} samples ({MIN_SAMPLES / SAMPLE_RATE:.3f} s), found {short}")
    batch = torch.zeros(len(waves), max(lengths), dtype=torch.float32)
    for row, wave in enumerate(waves):
        batch[row, : len(wave)] = torch.from_numpy(np.asarray(wave, dtype=np.float32))
    with torch.inference_mode(), _precision(model):
        return list(model.generate_from_waveforms(batch, torch.tensor(lengths), task, settings))


# --------------------------------------------------------------------------------------
# batching
# --------------------------------------------------------------------------------------
def plan_batches(durations: Sequence[float], batch_size: int, max_batch_seconds: float) -> list[list[int]]:
    """Indices into ``durations``, longest first, cut so that a batch has at most
    ``batch_size`` items and ``len(batch) * longest <= max_batch_seconds`` (one item at
    least, whatever its length)."""
    order = sorted(range(len(durations)), key=lambda i: (-durations[i], i))
    batches: list[list[int]] = []
    for index in order:
        current = batches[-1] if batches else None
        if current and len(current) < batch_size and (len(current) + 1) * durations[current[0]] <= max_batch_seconds:
            current.append(index)
        else:
            batches.append([index])
    return batches


def _windows(items: Iterator, size: int) -> Iterator[list]:
    window: list = []
    for item in items:
        window.append(item)
        if len(window) >= size:
            yield window
            window = []
    if window:
        yield window


# --------------------------------------------------------------------------------------
# one test set
# --------------------------------------------------------------------------------------
@dataclass
class SetOutput:
    name: str
    rows: list[dict]  # results, input order
    rejects: list[dict]
    reused: bool = False


def result_row(utterance: Utterance, task: str, hypothesis: str) -> dict:
    """A ``results.jsonl`` row: the hypothesis, for mtl its two halves, the references."""
    row: dict[str, Any] = {"key": utterance.key, "task": task, "hyp": hypothesis}
    if task == "mtl":
        row["asr"], row["ast"] = prompts.split_mtl_output(hypothesis)
    row.update(ref=utterance.text, ref_translation=utterance.translation, language=utterance.language,
               duration=round(float(utterance.duration), 3))
    return row


def decode_set(model, test_set: TestSet, config: DecodeConfig, settings=None,
               log: Callable[[str], None] = print) -> SetOutput:
    """Decode every utterance of a set; rejects carry their reason (and are logged)."""
    from tqdm import tqdm

    order: list[str] = []
    rows: dict[str, dict] = {}
    rejects: list[dict] = []

    def reject(key: str, reason: str) -> None:
        log(f"warning: {test_set.name}: skipping {key}: {reason}")
        rejects.append({"key": key, "reason": reason})

    def accepted(items: Iterator) -> Iterator[Utterance]:
        seen: set[str] = set()
        for item in items:
            if isinstance(item, Rejected):
                reject(item.key, item.reason)
            elif item.key in seen:
                reject(item.key, "duplicate key: an utterance of this set already has it; the first one is kept")
            elif item.duration > config.max_duration:
                reject(item.key, f"too long: {item.duration:.2f} s, expected at most {config.max_duration:g} s "
                                 "(MooER decodes under 30 s: cut it first)")
            else:
                seen.add(item.key)
                order.append(item.key)
                yield item

    bar = tqdm(desc=f"decode {test_set.name}", unit="utt", disable=not config.show_progress, leave=False, file=sys.stderr)
    try:
        for window in _windows(accepted(test_set.items()), config.sort_window):
            for batch in plan_batches([u.duration for u in window], config.batch_size, config.max_batch_seconds):
                utterances, waves = [], []
                for utterance in (window[i] for i in batch):
                    problem, wave = _audio_of(utterance, config.max_duration)
                    if problem:
                        reject(utterance.key, problem)
                    else:
                        utterances.append(utterance)
                        waves.append(wave)
                for utterance, text in zip(utterances, transcribe_waveforms(model, waves, config.task, settings)):
                    rows[utterance.key] = result_row(utterance, config.task, text)
                bar.update(len(batch))
    finally:
        bar.close()
    return SetOutput(test_set.name, [rows[key] for key in order if key in rows], rejects)


def _audio_of(utterance: Utterance, max_duration: float) -> tuple[str | None, np.ndarray | None]:
    """(reason, None) when the audio cannot be decoded as it is, else (None, samples)."""
    try:
        wave = utterance.read()
    except Exception as error:  # decoders raise many types; each means this file is unusable
        return f"audio unreadable: {type(error).__name__}: {error}", None
    seconds = len(wave) / SAMPLE_RATE
    if seconds > max_duration:  # the header (or manifest) said otherwise
        return f"too long: {seconds:.2f} s of audio, expected at most {max_duration:g} s", None
    if len(wave) < MIN_SAMPLES:
        return f"too short: {seconds:.3f} s, expected at least {MIN_SAMPLES / SAMPLE_RATE:.3f} s (one audio embedding)", None
    return None, wave


# --------------------------------------------------------------------------------------
# files
# --------------------------------------------------------------------------------------
def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _jsonl(rows: Sequence[Mapping]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n" for row in rows)


def _one_line(text: str | None) -> str:
    return " ".join((text or "").split())


def write_set(directory: Path, output: SetOutput, task: str, fingerprint: Mapping) -> None:
    """The set's files, each renamed into place; ``run.json`` last (it marks the set done)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / RUN_FILE).unlink(missing_ok=True)  # until the new files are all in place
    _write_atomic(directory / RESULTS_FILE, _jsonl(output.rows))
    asr_field = "asr" if task == "mtl" else "hyp"
    _write_atomic(directory / HYP_FILE, "".join(f"{row['key']} {_one_line(row[asr_field])}\n" for row in output.rows))
    if task == "mtl":
        _write_atomic(directory / HYP_AST_FILE, "".join(f"{row['key']} {_one_line(row['ast'])}\n" for row in output.rows))
    _write_atomic(directory / REJECTS_FILE, _jsonl(output.rejects))
    _write_atomic(directory / RUN_FILE, json.dumps(dict(fingerprint), ensure_ascii=False, sort_keys=True, indent=1) + "\n")


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def finished_set(directory: Path, fingerprint: Mapping) -> SetOutput | None:
    """A set a previous run finished with the same fingerprint, else None."""
    run = directory / RUN_FILE
    if not run.is_file() or not (directory / RESULTS_FILE).is_file():
        return None
    try:
        if json.loads(run.read_text(encoding="utf-8")) != json.loads(json.dumps(dict(fingerprint))):
            return None
        rows = read_jsonl(directory / RESULTS_FILE)
        rejects = read_jsonl(directory / REJECTS_FILE) if (directory / REJECTS_FILE).is_file() else []
    except (ValueError, OSError):
        return None
    return SetOutput(directory.name, rows, rejects, reused=True)


def set_directory(out_dir: Path, name: str) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name).strip(".") or "set"
    return out_dir / safe


# --------------------------------------------------------------------------------------
# a whole run
# --------------------------------------------------------------------------------------
@dataclass
class InferResult:
    sets: list[SetOutput]
    scores: list[ScoreRow] = field(default_factory=list)

    @property
    def results(self) -> dict[str, list[dict]]:
        return {s.name: s.rows for s in self.sets}


def file_stamps(paths: Sequence[str | os.PathLike]) -> dict[str, list[int] | None]:
    """``{absolute path: [size, mtime_ns]}`` of ``paths`` (None for a missing file).

    A rerun compares these: a file rewritten in place (a re-export into the same model
    directory, a regenerated shard) differs in size or modification time, so stale results
    are not reused. Only ``stat`` is called: cheap even for thousands of files.
    """
    stamps: dict[str, list[int] | None] = {}
    for path in paths:
        path = Path(path).resolve()
        try:
            info = path.stat()
        except OSError:
            stamps[str(path)] = None
            continue
        stamps[str(path)] = [info.st_size, info.st_mtime_ns]
    return stamps


def model_files(model_dir: str | os.PathLike, llm_dir: str | os.PathLike | None = None, task: str = "asr",
                task_dir: str | None = None) -> list[Path]:
    """The files :func:`load_model` reads weights and settings from: the encoder and its
    am.mvn, the task's adapter and LoRA, ``mooer-model.json`` and the LLM directory's files
    (``llm_dir``, else an export's own ``llm/``)."""
    from mooer_model.release import (ADAPTER_FILE, CMVN_FILE, ENCODER_FILE, LLM_DIR, LORA_CONFIG, LORA_WEIGHTS,
                                     locate_release)

    layout = locate_release(model_dir, task_dir or TASK_DIRS.get(task, task))
    files = [layout.task_dir / ADAPTER_FILE]
    if layout.encoder_dir is not None:
        files += [layout.encoder_dir / ENCODER_FILE, layout.encoder_dir / CMVN_FILE]
    if layout.lora_dir is not None:
        files += [layout.lora_dir / name for name in (LORA_CONFIG, *LORA_WEIGHTS) if (layout.lora_dir / name).is_file()]
    if layout.config_file is not None:
        files.append(layout.config_file)
    llm = Path(llm_dir) if llm_dir is not None else (layout.config_file.parent / LLM_DIR if layout.config_file else None)
    if llm is not None and llm.is_dir():
        files += sorted(p for p in llm.iterdir() if p.is_file())  # weights, config, tokenizer
    return files


def with_references(test_set: TestSet, labels: Mapping[str, str], field_name: str) -> TestSet:
    """The set with ``labels`` (an ``uttid text`` file) as references in ``field_name``."""

    def items() -> Iterator:
        for item in test_set.items():
            if isinstance(item, Utterance) and item.key in labels:
                setattr(item, field_name, labels[item.key])
            yield item

    return TestSet(test_set.name, items, test_set.files)


def run_inference(sets: Sequence[TestSet], get_model: Callable[[], Any], out_dir: str | os.PathLike, config: DecodeConfig,
                  settings=None, fingerprint: Mapping | None = None, score: bool = True, language: str | None = None,
                  overwrite: bool = False, log: Callable[[str], None] = print) -> InferResult:
    """Decode every set into ``out_dir/<set>/`` and score them.

    ``get_model`` is called once, when the first set needs decoding (a rerun whose sets are
    all finished loads no model). ``fingerprint`` describes the run (model, task, settings,
    input; :func:`file_stamps` of the model files among them); a set whose ``run.json``
    holds the same, and whose input files (``TestSet.files``) have the same size and
    modification time, is reused unless ``overwrite``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = [s.name for s in sets]
    if len(set(names)) != len(names):
        raise ValueError(f"expected distinct test set names, found {names}")
    stamp = {**(fingerprint or {}), "task": config.task, "max_duration": config.max_duration,
             "settings": asdict(settings) if settings is not None else None}
    model = None
    outputs = []
    for test_set in sets:
        directory = set_directory(out_dir, test_set.name)
        set_stamp = {**stamp, "set": test_set.name, "input_files": file_stamps(test_set.files)}
        done = None if overwrite else finished_set(directory, set_stamp)
        if done is not None:
            done.name = test_set.name
            log(f"{test_set.name}: reusing {len(done.rows)} results from {directory} (same model, task and settings)")
            outputs.append(done)
            continue
        if model is None:
            model = get_model()
        output = decode_set(model, test_set, config, settings, log)
        write_set(directory, output, config.task, set_stamp)
        log(f"{test_set.name}: {len(output.rows)} decoded, {len(output.rejects)} rejected -> {directory}")
        outputs.append(output)
    result = InferResult(outputs)
    if score:
        result.scores = score_results({o.name: o.rows for o in outputs}, language)
        write_scores(out_dir, result.scores, config.task)
        if result.scores:
            for row in [*result.scores, *averages(result.scores)]:
                log(row.line())
        else:
            log("no references found: nothing to score (give --ref FILE, or inputs that carry labels)")
    return result


def write_scores(out_dir: Path, scores: Sequence[ScoreRow], task: str) -> None:
    document = {"task": task, "scores": [s.to_dict() for s in scores], "averages": [s.to_dict() for s in averages(scores)]}
    _write_atomic(out_dir / SCORES_JSON, json.dumps(document, ensure_ascii=False, indent=1) + "\n")
    _write_atomic(out_dir / SCORES_MD, format_table(scores))


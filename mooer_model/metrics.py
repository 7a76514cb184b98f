"""Training metrics: what a log window accumulates, and where records go.

:class:`Window` sums, over the steps of one log window, what each micro-batch did (loss ×
target tokens, correct tokens, LLM positions, utterances, audio seconds) and how the time
went (waiting for the next batch vs the whole step). :meth:`Window.summary` reduces the
sums over ranks with one collective, so every rank reports the same global loss.

:class:`MetricsLog` appends one JSON line per record to ``metrics.jsonl`` (rank 0) or
``metrics.rank<R>.jsonl`` (the others: each rank's data wait is its own), and mirrors
rank 0's numbers to TensorBoard. On resume it first drops the records past the resumed
step, so the curve a killed and resumed run leaves is the one an uninterrupted run writes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Callable

import torch

from mooer_model.data import IGNORE_INDEX, SECONDS_PER_LFR_FRAME

log = logging.getLogger(__name__)

# The order of the sums in the reduced vector.
_FIELDS = ("loss_x_tokens", "correct", "tokens", "positions", "samples", "audio_s", "wait_s", "step_s", "elapsed_s")


def batch_stats(batch: dict) -> dict[str, float]:
    """Sizes of a loader batch: target tokens, LLM positions (not padding), utterances, audio seconds."""
    return {
        "tokens": float((batch["labels"] != IGNORE_INDEX).sum()),
        "positions": float(batch["attention_mask"].sum()),
        "samples": float(len(batch["keys"])),
        "audio_s": float(batch["audio_lengths"].sum()) * SECONDS_PER_LFR_FRAME,
    }


class Window:
    """Sums over one log window of steps (see the module docstring)."""

    def __init__(self) -> None:
        self.sums = dict.fromkeys(_FIELDS, 0.0)
        self.steps = 0
        self.keys = hashlib.sha256()
        self.started = time.perf_counter()
        # Loss and correct counts stay tensors (on the device) until the window is summed:
        # reading each one back would stall a GPU once per micro-batch.
        self._pending: list[tuple[torch.Tensor, torch.Tensor, float]] = []

    def add_micro_batch(self, batch: dict, loss: torch.Tensor, correct: torch.Tensor) -> None:
        stats = batch_stats(batch)
        sums = self.sums
        self._pending.append((loss.detach(), correct.detach(), stats["tokens"]))
        for name in ("tokens", "positions", "samples", "audio_s"):
            sums[name] += stats[name]
        for key in batch["keys"]:
            self.keys.update(key.encode("utf-8") + b"\n")

    def settle(self) -> dict[str, float]:
        """Read the pending device values into ``sums`` (one sync) and return ``sums``."""
        for loss, correct, tokens in self._pending:
            self.sums["loss_x_tokens"] += float(loss) * tokens
            self.sums["correct"] += float(correct)
        self._pending.clear()
        return self.sums

    def add_step(self, wait_s: float, step_s: float) -> None:
        self.sums["wait_s"] += wait_s
        self.sums["step_s"] += step_s
        self.steps += 1

    def absorb(self, other: "Window") -> None:
        """Add another window's sums (a run's totals are the sum of its windows)."""
        for name, value in other.settle().items():
            self.sums[name] += value
        self.steps += other.steps

    def summary(self, all_reduce_sum: Callable[[torch.Tensor], torch.Tensor], world_size: int) -> dict:
        """Global numbers of the window: sums over ranks (one collective; every rank calls it)."""
        local = dict(self.settle(), elapsed_s=time.perf_counter() - self.started)
        total = all_reduce_sum(torch.tensor([local[name] for name in _FIELDS], dtype=torch.float64)).tolist()
        glob = dict(zip(_FIELDS, total))
        elapsed = max(glob["elapsed_s"] / world_size, 1e-9)  # the ranks' mean wall time of the window
        tokens = max(glob["tokens"], 1.0)
        return {
            "loss": glob["loss_x_tokens"] / tokens,  # token-weighted over micro-batches and ranks
            "acc": glob["correct"] / tokens,
            "tokens_per_s": glob["positions"] / elapsed,
            "samples_per_s": glob["samples"] / elapsed,
            "audio_s_per_s": glob["audio_s"] / elapsed,
            "data_wait": glob["wait_s"] / max(glob["step_s"], 1e-9),  # share of step time, all ranks
            "data_wait_local": local["wait_s"] / max(local["step_s"], 1e-9),
            "step_time_s": glob["step_s"] / world_size / max(self.steps, 1),
            "keys_digest": self.keys.hexdigest()[:16],  # this rank's utterances, in order
            "window_steps": self.steps,
        }


class MetricsLog:
    """JSONL (every rank, its own file) + TensorBoard (rank 0)."""

    def __init__(self, output_dir: str | Path, rank: int, tensorboard: bool, resume_step: int | None = None):
        output_dir = Path(output_dir)
        self.path = output_dir / ("metrics.jsonl" if rank == 0 else f"metrics.rank{rank}.jsonl")
        self.rank = rank
        if resume_step is not None:
            self._truncate_after(resume_step)
        elif self.path.exists():
            self.path.unlink()  # a fresh run in a reused directory starts a fresh curve
        self._handle = open(self.path, "a", encoding="utf-8")
        self._writer = None
        if tensorboard and rank == 0:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step hides events past the resumed step that a killed run had written.
            self._writer = SummaryWriter(str(output_dir / "tensorboard"), purge_step=(resume_step + 1) if resume_step else None)

    def _truncate_after(self, step: int) -> None:
        if not self.path.exists():
            return
        kept = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # the torn last line of a killed run
                continue
            if record.get("step", 0) <= step:
                kept.append(line)
        self.path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")

    def write(self, record: dict, prefix: str = "train") -> None:
        # validation records share the file with training ones: mark them so readers can tell
        line = record if prefix == "train" else {**record, "split": prefix}
        self._handle.write(json.dumps(line, sort_keys=True) + "\n")
        self._handle.flush()
        if self._writer is not None:
            for name, value in record.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and name != "step":
                    self._writer.add_scalar(f"{prefix}/{name}", value, record["step"])

    def close(self) -> None:
        self._handle.close()
        if self._writer is not None:
            self._writer.close()

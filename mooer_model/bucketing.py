"""Dynamic bucketing by duration under a frame (and/or token) budget, and the padding ratio.

Fixed batches of 8 pad about a third of all frames on a realistic duration mix; grouping
samples of similar length and filling each batch to a budget keeps padding to a few
percent while every batch carries about the same amount of audio.
"""

from __future__ import annotations

import bisect
from typing import Any, Callable, Iterable, Sequence

import numpy as np


# --------------------------------------------------------------------------------------
def _item_size(item: Any) -> tuple[int, int, int]:
    """(frames, left tokens, right tokens) of a loader item, a ``(key, frames)`` pair or a frame count."""
    if hasattr(item, "frames"):  # a loader item
        return item.frames, item.left, item.right
    if isinstance(item, (int, np.integer)):
        return int(item), 0, 0
    return int(item[1]), 0, 0


class DynamicBucketer:
    """Batches under a frame (and/or token) budget, from a stream of samples of any lengths.

    A sample goes to the bucket of its length (edges given, or the quantiles of the first
    ``bins_estimate`` samples). When a bucket holds ``pool`` batches' worth, it is sorted by
    length and cut greedily into batches (a batch closes when the next sample would break a
    budget: ``n × longest > max_frames`` or ``n × (longest prompt side + longest target
    side) > max_tokens``); full batches are queued in random order, the remainder waits for
    more samples. :meth:`finish` cuts what is left (the last batch of each bucket is dropped
    with ``drop_last``). Works on loader items or on plain ``(key, frames)`` pairs.
    """

    def __init__(self, max_frames: int | None = None, max_tokens: int | None = None, num_buckets: int = 30,
                 pool: float = 2.0, edges: Sequence[int] | None = None, bins_estimate: int = 500,
                 drop_last: bool = False, rng: np.random.Generator | None = None,
                 size: Callable[[Any], tuple[int, int, int]] = _item_size):
        if max_frames is None and max_tokens is None:
            raise ValueError("DynamicBucketer: expected max_frames and/or max_tokens, found neither")
        self.max_frames, self.max_tokens = max_frames, max_tokens
        self.num_buckets, self.pool, self.bins_estimate, self.drop_last = num_buckets, pool, bins_estimate, drop_last
        self.rng = rng if rng is not None else np.random.default_rng(0)
        self.size = size
        self.edges: list[int] | None = None
        self.staging: list = []
        self.buckets: list[list] = []
        self.pending: list[list] = []
        self.totals: list[list[int]] = []
        if edges is not None:
            self._set_edges(edges)

    # -- state ----------------------------------------------------------------------------
    def _set_edges(self, edges: Sequence[int]) -> None:
        self.edges = [int(e) for e in edges]
        self.buckets = [[] for _ in range(len(self.edges) + 1)]
        self.totals = [[0, 0] for _ in self.buckets]  # frames, tokens held per bucket

    def restore(self, edges: Sequence[int] | None, staging: list, buckets: list[list], pending: list[list]) -> None:
        self.edges = None if edges is None else [int(e) for e in edges]
        self.staging, self.buckets, self.pending = list(staging), [list(b) for b in buckets], [list(b) for b in pending]
        self.totals = [self._total(bucket) for bucket in self.buckets]

    def _total(self, bucket: list) -> list[int]:
        sizes = [self.size(item) for item in bucket]
        return [sum(f for f, _, _ in sizes), sum(l + r for _, l, r in sizes)]

    # -- flow -----------------------------------------------------------------------------
    def push(self, item: Any) -> None:
        if self.edges is None:
            self.staging.append(item)
            if len(self.staging) >= self.bins_estimate:
                self._estimate()
            return
        self._route(item)

    def finish(self) -> None:
        """End of input: every held sample goes into a queued batch."""
        if self.edges is None:
            self._estimate()
        for index in range(len(self.buckets)):
            if self.buckets[index]:
                self._cut(index, final=True)

    def _estimate(self) -> None:
        lengths = sorted(self.size(item)[0] for item in self.staging)
        edges: list[int] = []
        for k in range(1, self.num_buckets):
            edge = lengths[len(lengths) * k // self.num_buckets] if lengths else 0
            if edge > (edges[-1] if edges else 0):
                edges.append(edge)
        self._set_edges(edges)
        staged, self.staging = self.staging, []
        for item in staged:
            self._route(item)

    def _route(self, item: Any) -> None:
        frames, left, right = self.size(item)
        index = bisect.bisect_right(self.edges, frames)
        self.buckets[index].append(item)
        totals = self.totals[index]
        totals[0] += frames
        totals[1] += left + right
        if ((self.max_frames is not None and totals[0] >= self.pool * self.max_frames)
                or (self.max_tokens is not None and totals[1] >= self.pool * self.max_tokens)):
            self._cut(index, final=False)

    def _fits(self, count: int, longest: int, left: int, right: int) -> bool:
        if self.max_frames is not None and count * longest > self.max_frames:
            return False
        return self.max_tokens is None or count * (left + right) <= self.max_tokens

    def _cut(self, index: int, final: bool) -> None:
        ordered = sorted(self.buckets[index], key=lambda item: -self.size(item)[0])  # stable: ties keep arrival order
        batches, current = [], []
        longest = left = right = 0
        for item in ordered:
            f, l, r = self.size(item)
            if current and not self._fits(len(current) + 1, longest, max(left, l), max(right, r)):
                batches.append(current)
                current, left, right = [], 0, 0
            if not current:
                longest = f
            current.append(item)
            left, right = max(left, l), max(right, r)
        if final:
            current, kept = [], current
            if kept and not self.drop_last:
                batches.append(kept)
        self.buckets[index] = current
        self.totals[index] = self._total(current)
        if len(batches) > 1:
            batches = [batches[i] for i in self.rng.permutation(len(batches))]
        self.pending.extend(batches)


def bucket_batches(items: Iterable[Any], max_frames: int | None = None, max_tokens: int | None = None,
                   num_buckets: int = 30, pool: float = 2.0, bins_estimate: int = 500, seed: int = 0,
                   drop_last: bool = False) -> list[list]:
    """The batches :class:`DynamicBucketer` makes of ``items`` (e.g. ``(key, frames)`` pairs), in order."""
    bucketer = DynamicBucketer(max_frames, max_tokens, num_buckets, pool, None, bins_estimate, drop_last, np.random.default_rng(seed))
    batches = []
    for item in items:
        bucketer.push(item)
        batches.extend(bucketer.pending)
        bucketer.pending.clear()
    bucketer.finish()
    return batches + bucketer.pending


def padding_ratio(batches: Iterable[Any]) -> float:
    """Padded frames / total frames over ``batches``: loader batches (``audio_lengths``) or
    lists of frame counts, ``(key, frames)`` pairs or loader items."""
    padded = total = 0
    for batch in batches:
        if isinstance(batch, dict):
            lengths = [int(n) for n in batch["audio_lengths"]]
        else:
            lengths = [_item_size(item)[0] for item in batch]
        if lengths:
            width = max(lengths)
            total += width * len(lengths)
            padded += width * len(lengths) - sum(lengths)
    return padded / total if total else 0.0



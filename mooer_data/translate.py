"""`mooer-data translate`: fill ``translation`` (zh -> en) for segments with Mandarin text.

Texts are packed into requests to each provider's limits (texts and characters per
request); every segment is its own unit in the ledger, and the raw answer is stored for
each segment of a request (with its position) before the answer is parsed, so a resumed
run re-parses instead of paying again. A provider that answers with a different number of
translations than it was sent fails the whole request (MalformedResponse) and the
request is retried — translations are never matched up by position guesswork.
"""

from __future__ import annotations

import asyncio
import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from .labeling import Outcome, RetryPolicy, Runner, classify_failure, run_items
from .ledger import LEDGER_FILE, Ledger
from .manifest import INFO_FILE, TableSink, open_manifest_dirs
from .providers.base import MtProvider
from .providers.errors import AmbiguousSubmit, MalformedResponse, ProviderError, ProviderFatal
from .pseudolabel import build_provider

TASK = "mt"
RESULT_FILE = "translate.json"


@dataclass(frozen=True)
class TranslateConfig:
    provider: str
    fallbacks: tuple[str, ...] = ()
    source: str = "zh"
    target: str = "en"
    concurrency: int | None = None
    rate: float | None = None
    dry_run: bool = False
    provider_options: dict[str, dict] = field(default_factory=dict)
    timeout: float = 30.0
    policy: RetryPolicy = RetryPolicy()
    show_progress: bool = True


@dataclass
class TranslateResult:
    segments: int = 0
    translated: int = 0
    failed: int = 0
    requests: int = 0
    characters: int = 0
    cost: float = 0.0
    estimated_cost: dict[str, float] = field(default_factory=dict)
    by_provider: dict[str, int] = field(default_factory=dict)
    open_breakers: dict[str, str] = field(default_factory=dict)


def pack(items: list[tuple[str, str]], max_texts: int, max_chars: int) -> list[list[tuple[str, str]]]:
    """Consecutive (id, text) groups within the provider's per-request limits."""
    batches: list[list[tuple[str, str]]] = []
    current: list[tuple[str, str]] = []
    chars = 0
    for item in items:
        size = len(item[1])
        if current and (len(current) >= max_texts or chars + size > max_chars):
            batches.append(current)
            current, chars = [], 0
        current.append(item)
        chars += size
    if current:
        batches.append(current)
    return batches


class MtDriver:
    def __init__(self, runner: Runner, chain: list[MtProvider], config: TranslateConfig):
        self.runner = runner
        self.chain = chain
        self.config = config

    async def translate(self, batch: list[tuple[str, str]]) -> Outcome[dict[str, tuple[str, str]]]:
        """Translations for a batch: {segment id: (provider, text)}; failures by id."""
        done: dict[str, tuple[str, str]] = {}
        pending = list(batch)
        last_error = "no provider available"
        for provider in self.chain:
            if not pending:
                break
            if self.runner.breaker.is_open(provider.name):
                continue
            resumed = self._resume(provider, pending)
            done.update({k: (provider.name, v) for k, v in resumed.items()})
            pending = [p for p in pending if p[0] not in resumed]
            try:
                for group in pack(pending, provider.capabilities.max_texts, provider.capabilities.max_chars):
                    texts = await self._request(provider, group)
                    done.update({item_id: (provider.name, text) for (item_id, _), text in zip(group, texts)})
                pending = []
            except ProviderFatal as error:
                self.runner.breaker.trip(provider.name, classify_failure(error))
                last_error = classify_failure(error)
            except (ProviderError, OSError, ValueError) as error:
                last_error = classify_failure(error)
            pending = [p for p in pending if p[0] not in done]
            for item_id, _ in pending:
                self.runner.ledger.record(item_id, provider.name, TASK, "failed", error=last_error)
        self.runner.stats.done += len(done)
        self.runner.stats.failed += len(pending)
        self.runner.report()
        return Outcome(batch[0][0], None, done, last_error if pending else None)

    def _resume(self, provider: MtProvider, items: list[tuple[str, str]]) -> dict[str, str]:
        found = {}
        for item_id, _ in items:
            state = self.runner.previous.get((item_id, provider.name))
            if state is None:
                continue
            if state.state == "done" and state.result is not None:
                found[item_id] = json.loads(state.result)
            elif state.state == "raw" and state.raw is not None and state.job:
                batch = state.job["batch"]
                try:
                    found[item_id] = provider.parse(state.raw, len(batch))[state.job["index"]]
                except MalformedResponse:
                    continue  # the stored answer was unusable: translate again
        return found

    async def _request(self, provider: MtProvider, group: list[tuple[str, str]]) -> list[str]:
        runner, ledger, name = self.runner, self.runner.ledger, provider.name
        ids = [item_id for item_id, _ in group]
        texts = [text for _, text in group]
        limiter = runner.limiter(name, self.config.rate or provider.capabilities.rate)
        for attempt in range(1, self.config.policy.attempts + 1):
            async with runner.semaphore(name, self.config.concurrency or provider.capabilities.concurrency):
                for item_id in ids[:-1]:
                    ledger.record(item_id, name, TASK, "intent")
                await ledger.durable(ids[-1], name, TASK, "intent")
                try:
                    raw = await runner.call(lambda: provider.translate_raw(runner.client, texts, self.config.source, self.config.target), limiter)
                except AmbiguousSubmit as error:
                    # the request may have been billed; MT has no job to look up, so send again
                    runner.stats.ambiguous += 1
                    for item_id in ids:
                        ledger.record(item_id, name, TASK, "ambiguous", error=classify_failure(error))
                    if attempt == self.config.policy.attempts:
                        raise
                    continue
            cost = provider.estimate_cost(texts)
            runner.stats.cost += cost
            for index, item_id in enumerate(ids[:-1]):
                ledger.record(item_id, name, TASK, "raw", raw=raw, job={"batch": ids, "index": index}, cost=cost if index == 0 else 0.0)
            await ledger.durable(ids[-1], name, TASK, "raw", raw=raw, job={"batch": ids, "index": len(ids) - 1}, cost=0.0 if len(ids) > 1 else cost)
            try:
                translations = provider.parse(raw, len(texts))
            except MalformedResponse as error:
                runner.stats.retries += 1
                for item_id in ids:
                    ledger.record(item_id, name, TASK, "retry", error=classify_failure(error))
                if attempt == self.config.policy.attempts:
                    raise
                continue
            for item_id, translation in zip(ids, translations):
                ledger.record(item_id, name, TASK, "done", result=json.dumps(translation, ensure_ascii=False))
            return translations
        raise AssertionError("unreachable")


def translate_manifest(manifest_dir: Path | str, out_dir: Path | str, config: TranslateConfig, log: Callable[[str], None] = print) -> TranslateResult:
    manifest_dir, out_dir = Path(manifest_dir), Path(out_dir)
    directory = open_manifest_dirs([manifest_dir])[0]
    segments = directory.read("segments").to_pylist()
    todo = [
        (s["id"], s["text_raw"] or s["text"])
        for s in sorted(segments, key=lambda s: s["id"])
        if s["language"] == config.source and (s["text"] or "").strip() and not s["translation"]
    ]
    chain = [build_provider("mt", n, config.provider_options.get(n)) for n in (config.provider, *config.fallbacks)]
    chain[0].check_configured()
    result = TranslateResult(segments=len(todo), characters=sum(len(t) for _, t in todo))
    for provider in chain:
        result.estimated_cost[provider.name] = round(provider.estimate_cost([t for _, t in todo]), 4)
    if config.dry_run:
        log(f"dry run: {len(todo)} segments, {result.characters} characters would be sent to {config.provider!r} ({config.source}->{config.target})")
        for item_id, text in todo[:10]:
            log(f"  {item_id}  {text}")
        for name, cost in result.estimated_cost.items():
            log(f"  estimated cost if {name} translates everything: {cost:.4f}")
        return result

    out_dir.mkdir(parents=True, exist_ok=True)
    ledger = Ledger(out_dir / LEDGER_FILE)
    primary = chain[0]
    batches = pack(todo, primary.capabilities.max_texts, primary.capabilities.max_chars)

    async def run() -> list[Outcome]:
        progress = None  # replaced by a tqdm-backed callback on a terminal
        if config.show_progress and sys.stderr.isatty():
            from tqdm import tqdm

            bar = tqdm(total=len(todo), desc="translate", unit="seg", mininterval=0.5)

            def progress(stats):
                bar.n = stats.done + stats.failed
                bar.set_postfix(failed=stats.failed, retries=stats.retries, cost=f"{stats.cost:.3f}", refresh=False)
                bar.refresh()

        runner = Runner(ledger, TASK, config.policy, progress, config.timeout)
        try:
            outcomes = await run_items(batches, MtDriver(runner, chain, config).translate, config.concurrency or primary.capabilities.concurrency)
            result.open_breakers = dict(runner.breaker.open)
            return outcomes
        finally:
            await runner.close()

    try:
        outcomes = asyncio.run(run())
        summary = ledger.summary(TASK)
    finally:
        ledger.close()
    translations: dict[str, tuple[str, str]] = {}
    errors: dict[str, str] = {}
    for batch, outcome in zip(batches, outcomes):
        translations.update(outcome.result or {})
        for item_id, _ in batch:
            if item_id not in (outcome.result or {}):
                errors[item_id] = outcome.error or "failed: unknown"
    roots = directory.roots()
    rows = []
    for segment in sorted(segments, key=lambda s: s["id"]):
        if segment["id"] in translations:
            provider, text = translations[segment["id"]]
            segment = dict(segment, translation=text)
            result.by_provider[provider] = result.by_provider.get(provider, 0) + 1
        rows.append(segment)
    with TableSink(out_dir / "segments.parquet", "segments", roots) as sink:
        sink.add_many(rows)
    with TableSink(out_dir / "recordings.parquet", "recordings", roots) as sink:
        sink.add_table(directory.read("recordings"))
    sources = {s["id"]: s["source"] for s in segments}
    with TableSink(out_dir / "rejects.parquet", "rejects", roots) as sink:
        sink.add_table(directory.read("rejects"))
        sink.add_many({"source": sources[i], "item": i, "reason": f"translation {e}"} for i, e in sorted(errors.items()))
    result.translated, result.failed = len(translations), len(errors)
    result.requests, result.cost = summary["requests"], round(summary["cost"], 6)
    info = directory.info()
    info.update({"translated_from": str(directory.path)})
    (out_dir / INFO_FILE).write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n")
    (out_dir / RESULT_FILE).write_text(json.dumps(asdict(result), indent=2, sort_keys=True) + "\n")
    log(f"translate: {result.translated}/{result.segments} segments translated, {result.failed} failed, {result.requests} requests -> {out_dir}")
    return result

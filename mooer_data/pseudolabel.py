"""`mooer-data pseudolabel`: ASR labels for every recording or segment without text.

Items are the segments of MANIFEST_DIR whose text is empty (cut from their recording)
and the recordings that have no segment at all (in-house audio, sent whole: cloud
services return sentence timestamps, the local engine cuts by VAD). Each sentence of the
answer becomes a segment ``<recording id>-S0001``... with ``label_origin =
pseudo:<provider>`` and the provider's confidence. OUT_DIR gets the full manifest (the
already-labelled segments untouched plus the new ones), rejects for every item no
provider could label, ``quality.parquet`` with the flags of every new label, the ledger,
and ``pseudolabel.json`` (counts, requests, possible double charges, cost).
"""

from __future__ import annotations

import asyncio
import json
import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import pyarrow as pa
import pyarrow.parquet as pq

from .labeling import Outcome, RetryPolicy, Runner, Stats, classify_failure, dumps, run_items
from .ledger import LEDGER_FILE, Ledger
from .manifest import INFO_FILE, SCHEMA_VERSION, TableSink, open_manifest_dirs, resolve_audio_path
from .providers.base import AsrProvider
from .providers.config import load_provider_config
from .providers.errors import (
    AmbiguousSubmit,
    JobExpired,
    JobFailed,
    ProviderError,
    ProviderFatal,
)
from .providers.registry import provider_class
from .providers.stager import InlineStager, NoStager, Stager, UrlPrefixStager
from .providers.types import AudioItem, JobHandle, JobStatus, Sentence, Transcript
from .quality import assess
from .text import normalize_transcript

TASK = "asr"
RESULT_FILE = "pseudolabel.json"
QUALITY_FILE = "quality.parquet"
QUALITY_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("flags", pa.list_(pa.string())),
        ("rate", pa.float64()),
        ("confidence", pa.float64()),
        ("agreement_error", pa.float64()),
        ("verify_text", pa.string()),
    ]
)


@dataclass(frozen=True)
class PseudolabelConfig:
    provider: str
    fallbacks: tuple[str, ...] = ()
    concurrency: int | None = None
    rate: float | None = None
    dry_run: bool = False
    verify_with: str | None = None
    language: str = "zh"  # the hint for items whose language is unknown
    stager_url_prefix: str | None = None
    provider_options: dict[str, dict] = field(default_factory=dict)
    timeout: float = 30.0
    policy: RetryPolicy = RetryPolicy()
    show_progress: bool = True


@dataclass
class PseudolabelResult:
    items: int = 0
    labelled: int = 0
    failed: int = 0
    segments_written: int = 0
    requests: int = 0
    ambiguous_submits: int = 0  # possible double charges, reconciled by resubmitting
    cost: float = 0.0
    by_provider: dict[str, int] = field(default_factory=dict)
    estimated_cost: dict[str, float] = field(default_factory=dict)
    flagged: dict[str, int] = field(default_factory=dict)
    open_breakers: dict[str, str] = field(default_factory=dict)


def select_items(manifest_dir: Path, default_language: str) -> tuple[list[AudioItem], dict[str, dict]]:
    """Audio items without labels, and the recordings table by id."""
    directory = open_manifest_dirs([manifest_dir])[0]
    roots = directory.roots()
    recordings = {r["id"]: r for r in directory.read("recordings").to_pylist()}
    segments = directory.read("segments").to_pylist()
    covered = {s["recording_id"] for s in segments}
    items = []
    for segment in segments:
        if segment["text"]:
            continue
        recording = recordings.get(segment["recording_id"])
        if recording is None:
            raise ValueError(f"segment {segment['id']} points at recording {segment['recording_id']}, which is not in recordings.parquet")
        items.append(
            AudioItem(
                key=segment["id"],
                path=resolve_audio_path(roots.get(recording["source"]), recording["path"], recording["source"]),
                duration=segment["duration"],
                language=segment["language"] or default_language,
                sample_rate=recording["sample_rate"] or 16000,
                channels=recording["channels"] or 1,
                format=recording["format"] or "wav",
                start=segment["start"] or 0.0,
                whole=not segment["start"] and abs(segment["duration"] - (recording["duration"] or 0.0)) < 1e-3,
            )
        )
    for recording_id in sorted(set(recordings) - covered):
        recording = recordings[recording_id]
        items.append(
            AudioItem(
                key=recording_id,
                path=resolve_audio_path(roots.get(recording["source"]), recording["path"], recording["source"]),
                duration=recording["duration"],
                language=default_language,
                sample_rate=recording["sample_rate"] or 16000,
                channels=recording["channels"] or 1,
                format=recording["format"] or "wav",
            )
        )
    return items, recordings


def build_provider(kind: str, name: str, options: dict | None = None):
    config = load_provider_config(name)
    config.options.update(options or {})
    return provider_class(kind, name)(config)


def _stager_for(provider: AsrProvider, config: PseudolabelConfig, root: Path | None) -> Stager:
    delivery = provider.capabilities.delivery
    if "local" in delivery:
        return NoStager()
    if "url" in delivery and not set(delivery) & {"base64", "multipart", "local"}:
        if not config.stager_url_prefix:
            raise ValueError(
                f"provider {provider.name!r} fetches audio by URL: give --stager-url-prefix URL "
                "(a bucket or web server serving the corpus root)"
            )
        return UrlPrefixStager(config.stager_url_prefix, root or Path("/"))
    return InlineStager()


class AsrDriver:
    """Labels one item through the provider chain (see labeling.py for the policy)."""

    def __init__(self, runner: Runner, chain: list[AsrProvider], stagers: dict[str, Stager], config: PseudolabelConfig):
        self.runner = runner
        self.chain = chain
        self.stagers = stagers
        self.config = config

    async def label(self, item: AudioItem) -> Outcome[tuple[str, Transcript]]:
        last_error = "no provider available"
        for provider in self.chain:
            if self.runner.breaker.is_open(provider.name):
                last_error = f"provider-unavailable: {provider.name} is stopped ({self.runner.breaker.open[provider.name]})"
                continue
            try:
                transcript = await self._with_provider(provider, item)
                self.runner.stats.done += 1
                self.runner.report()
                return Outcome(item.key, provider.name, (provider.name, transcript), None)
            except ProviderFatal as error:
                self.runner.breaker.trip(provider.name, classify_failure(error))
                last_error = classify_failure(error)
                self.runner.ledger.record(item.key, provider.name, TASK, "failed", error=last_error)
            except (ProviderError, OSError, ValueError) as error:
                last_error = classify_failure(error)
                self.runner.ledger.record(item.key, provider.name, TASK, "failed", error=last_error)
            self.runner.stats.fallbacks += 1
        self.runner.stats.failed += 1
        self.runner.report()
        return Outcome(item.key, None, None, last_error)

    async def _with_provider(self, provider: AsrProvider, item: AudioItem) -> Transcript:
        runner, ledger, name = self.runner, self.runner.ledger, provider.name
        previous = runner.previous.get((item.key, name))
        if previous and previous.state == "done" and previous.result:
            return _transcript_from_json(previous.result)
        if previous and previous.state == "raw" and previous.raw is not None:
            return self._parse(provider, item, previous.raw)
        handle = JobHandle(**previous.job) if previous and previous.state == "submitted" and previous.job else None
        if previous and previous.state in ("intent", "ambiguous"):
            # Killed (or timed out) after the intent and before a job id came back: the job
            # may exist and be billed. No provider here can be asked by a client token, so
            # it is resubmitted and counted as a possible double charge.
            ledger.record(item.key, name, TASK, "ambiguous", error="resubmitted after an interrupted submit")
            runner.stats.ambiguous += 1
        limiter = runner.limiter(name, self.config.rate or provider.capabilities.rate)
        concurrency = self.config.concurrency or provider.capabilities.concurrency
        resubmits = 0
        while True:
            async with runner.semaphore(name, concurrency):
                try:
                    if handle is None:
                        staged = self.stagers[name].stage(item)
                        await ledger.durable(item.key, name, TASK, "intent")
                        try:
                            handle = await runner.call(lambda: provider.submit(runner.client, item, staged), limiter)
                        except AmbiguousSubmit as error:
                            ledger.record(item.key, name, TASK, "ambiguous", error=classify_failure(error))
                            runner.stats.ambiguous += 1
                            raise JobExpired(name, "submit outcome unknown; resubmitting") from error
                        cost = provider.estimate_cost(item)
                        runner.stats.cost += cost
                        ledger.record(item.key, name, TASK, "submitted", job=_handle_json(handle), cost=cost)
                    await self._wait_for(provider, handle)
                    raw = await runner.call(lambda: provider.fetch(runner.client, handle))
                    await ledger.durable(item.key, name, TASK, "raw", raw=raw)
                    return self._parse(provider, item, raw)
                except JobFailed as error:
                    resubmits += 1
                    if not error.retryable or resubmits > self.config.policy.resubmits:
                        raise
                    ledger.record(item.key, name, TASK, "retry", error=classify_failure(error))
                    handle = None

    async def _wait_for(self, provider: AsrProvider, handle: JobHandle) -> None:
        interval = provider.capabilities.poll_interval
        for poll in range(self.config.policy.max_polls):
            status = await self.runner.call(lambda: provider.poll(self.runner.client, handle))
            if status == JobStatus.SUCCEEDED:
                return
            await asyncio.sleep(min(interval * (1.5 ** min(poll, 6)), 30.0) if poll else interval)
        raise JobFailed(provider.name, f"job {handle.job_id} still not finished after {self.config.policy.max_polls} polls", retryable=True)

    def _parse(self, provider: AsrProvider, item: AudioItem, raw: str) -> Transcript:
        transcript = provider.parse(raw, item)
        self.runner.ledger.record(item.key, provider.name, TASK, "done", result=_transcript_json(transcript))
        return transcript


def _handle_json(handle: JobHandle) -> dict:
    return {"provider": handle.provider, "job_id": handle.job_id, "key": handle.key, "extra": handle.extra}


def _transcript_json(transcript: Transcript) -> str:
    return dumps(
        {
            "language": transcript.language,
            "confidence": transcript.confidence,
            "confidence_kind": transcript.confidence_kind,
            "sentences": [[s.start, s.end, s.text, s.confidence] for s in transcript.sentences],
        }
    )


def _transcript_from_json(payload: str) -> Transcript:
    data = json.loads(payload)
    return Transcript(
        tuple(Sentence(*s) for s in data["sentences"]), data.get("language"), data.get("confidence"), data.get("confidence_kind", "none")
    )


def _segments_for(item: AudioItem, recording: dict | None, existing: dict | None, provider: str, transcript: Transcript) -> list[dict]:
    language = transcript.language or item.language
    base = {
        "source": (recording or existing or {}).get("source"),
        "subset": (existing or {}).get("subset"),
        "split": (existing or {}).get("split") or "train",
        "language": language,
        "speaker": (existing or {}).get("speaker"),
        "translation": None,
        "label_origin": f"pseudo:{provider}",
    }
    if existing is not None:  # a segment that only lacked its text keeps its id and span
        text_raw = transcript.text
        return [
            dict(base, id=existing["id"], recording_id=existing["recording_id"], start=existing["start"], duration=existing["duration"],
                 text_raw=text_raw, text=normalize_transcript(text_raw), confidence=transcript.confidence)
        ]
    rows = []
    for index, sentence in enumerate(s for s in transcript.sentences if s.text.strip()):
        start = item.start + max(0.0, sentence.start)
        end = min(item.start + sentence.end, item.start + item.duration)
        rows.append(
            dict(base, id=f"{item.key}-S{index + 1:04d}", recording_id=item.key, start=round(start, 3),
                 duration=round(max(0.0, end - start), 3), text_raw=sentence.text, text=normalize_transcript(sentence.text),
                 confidence=sentence.confidence if sentence.confidence is not None else transcript.confidence)
        )
    return rows


def _progress_printer(enabled: bool, total: int) -> Callable[[Stats], None] | None:
    if not enabled:
        return None
    from tqdm import tqdm

    bar = tqdm(total=total, desc="pseudolabel", unit="item", mininterval=0.5, dynamic_ncols=True)

    def update(stats: Stats) -> None:
        bar.n = stats.done + stats.failed
        bar.set_postfix(failed=stats.failed, retries=stats.retries, ambiguous=stats.ambiguous, cost=f"{stats.cost:.2f}", refresh=False)
        bar.refresh()

    return update


def pseudolabel(manifest_dir: Path | str, out_dir: Path | str, config: PseudolabelConfig, log: Callable[[str], None] = print) -> PseudolabelResult:
    manifest_dir, out_dir = Path(manifest_dir), Path(out_dir)
    directory = open_manifest_dirs([manifest_dir])[0]
    items, recordings = select_items(manifest_dir, config.language)
    names = [config.provider, *config.fallbacks]
    chain: list[AsrProvider] = [build_provider("asr", n, config.provider_options.get(n)) for n in names]
    chain[0].check_configured()  # the primary must be usable; fallbacks are checked when reached
    result = PseudolabelResult(items=len(items))
    hours = sum(i.duration for i in items) / 3600.0
    for provider in chain:
        result.estimated_cost[provider.name] = round(sum(provider.estimate_cost(i) for i in items), 4)
    if config.dry_run:
        log(f"dry run: {len(items)} items, {hours:.3f} h would be sent to {names[0]!r} (fallbacks: {list(config.fallbacks) or 'none'})")
        for item in items[:10]:
            log(f"  {item.key}  {item.duration:8.2f} s  {item.language}  {item.path}")
        if len(items) > 10:
            log(f"  ... and {len(items) - 10} more")
        for name, cost in result.estimated_cost.items():
            log(f"  estimated cost if {name} labels everything: {cost:.2f}")
        return result

    roots = directory.roots()
    root = Path(next(iter(roots.values()))) if len(roots) == 1 else None
    stagers = {p.name: _stager_for(p, config, root) for p in chain}
    out_dir.mkdir(parents=True, exist_ok=True)
    ledger = Ledger(out_dir / LEDGER_FILE)
    verify = build_provider("asr", config.verify_with, config.provider_options.get(config.verify_with)) if config.verify_with else None

    async def run() -> tuple[list[Outcome], list[Outcome]]:
        runner = Runner(ledger, TASK, config.policy, _progress_printer(config.show_progress and sys.stderr.isatty(), len(items)), config.timeout)
        try:
            driver = AsrDriver(runner, chain, stagers, config)
            concurrency = max(config.concurrency or p.capabilities.concurrency for p in chain)
            outcomes = await run_items(items, driver.label, concurrency)
            checks: list[Outcome] = []
            if verify is not None:
                verify_runner = Runner(ledger, "asr-verify", config.policy, None, config.timeout)
                try:
                    verifier = AsrDriver(verify_runner, [verify], {verify.name: _stager_for(verify, config, root)}, config)
                    labelled = [i for i, o in zip(items, outcomes) if o.result is not None]
                    checks = await run_items(labelled, verifier.label, config.concurrency or verify.capabilities.concurrency)
                finally:
                    await verify_runner.close()
            result.open_breakers = dict(runner.breaker.open)
            return outcomes, checks
        finally:
            await runner.close()

    try:
        outcomes, checks = asyncio.run(run())
        summary = ledger.summary(TASK)
    finally:
        ledger.close()
    verify_text = {o.item: o.result[1].text for o in checks if o.result is not None}
    _write_outputs(directory, out_dir, items, recordings, outcomes, verify_text, result)
    result.requests, result.ambiguous_submits, result.cost = summary["requests"], summary["ambiguous_submits"], round(summary["cost"], 4)
    (out_dir / RESULT_FILE).write_text(json.dumps(asdict(result), indent=2, sort_keys=True) + "\n")
    log(
        f"pseudolabel: {result.labelled}/{result.items} items labelled ({result.segments_written} segments), {result.failed} failed, "
        f"{result.requests} requests, {result.ambiguous_submits} possible double charges, cost {result.cost:.2f} -> {out_dir}"
    )
    return result


def _write_outputs(directory, out_dir: Path, items: list[AudioItem], recordings: dict, outcomes: list[Outcome],
                   verify_text: dict[str, str], result: PseudolabelResult) -> None:
    roots = directory.roots()
    existing_segments = directory.read("segments").to_pylist()
    by_id = {s["id"]: s for s in existing_segments}
    new_rows: list[dict] = []
    rejects: list[dict] = []
    quality = []
    for item, outcome in zip(items, outcomes):
        source = (recordings.get(item.key) or by_id.get(item.key) or {}).get("source") or "unknown"
        if outcome.result is None:
            result.failed += 1
            rejects.append({"source": source, "item": item.key, "reason": outcome.error or "failed: unknown"})
            continue
        provider, transcript = outcome.result
        rows = _segments_for(item, recordings.get(item.key), by_id.get(item.key), provider, transcript)
        rows = [r for r in rows if r["text"]]
        if not rows:
            result.failed += 1
            rejects.append(
                {"source": source, "item": item.key, "reason": f"empty-result: {provider} returned no text for {item.duration:.1f} s of audio"}
            )
            continue
        result.labelled += 1
        result.by_provider[provider] = result.by_provider.get(provider, 0) + 1
        # Agreement is judged per item (the two providers cut sentences differently) and
        # carried to each of its segments.
        verify = verify_text.get(item.key)
        overall = None
        if verify is not None:
            joined = ("" if rows[0]["language"] == "zh" else " ").join(r["text"] for r in rows)
            overall = assess(item.key, joined, sum(r["duration"] for r in rows), rows[0]["language"], None, normalize_transcript(verify))
        for row in rows:
            q = assess(row["id"], row["text"], row["duration"], row["language"], row["confidence"])
            if overall is not None:
                flags = q.flags + tuple(f for f in overall.flags if f == "disagrees")
                q = replace(q, flags=flags, agreement_error=overall.agreement_error, verify_text=verify)
            quality.append(q)
            for flag in q.flags:
                result.flagged[flag] = result.flagged.get(flag, 0) + 1
        new_rows.extend(rows)

    relabelled = {row["id"] for row in new_rows}
    keep = [s for s in existing_segments if s["id"] not in relabelled and s["text"]]
    all_rows = sorted(keep + new_rows, key=lambda r: r["id"])
    result.segments_written = len(new_rows)
    with TableSink(out_dir / "segments.parquet", "segments", roots) as sink:
        sink.add_many(all_rows)
    with TableSink(out_dir / "recordings.parquet", "recordings", roots) as sink:
        sink.add_table(directory.read("recordings").sort_by("id"))
    with TableSink(out_dir / "rejects.parquet", "rejects", roots) as sink:
        sink.add_table(directory.read("rejects"))
        sink.add_many(sorted(rejects, key=lambda r: r["item"]))
    table = pa.Table.from_pylist(
        [
            {"id": q.id, "flags": list(q.flags), "rate": q.rate, "confidence": q.confidence, "agreement_error": q.agreement_error,
             "verify_text": q.verify_text}
            for q in sorted(quality, key=lambda q: q.id)
        ],
        schema=QUALITY_SCHEMA,
    )
    tmp = out_dir / (QUALITY_FILE + ".tmp")
    pq.write_table(table, tmp)
    tmp.replace(out_dir / QUALITY_FILE)
    info = directory.info()
    info.update({"pseudolabelled_from": str(directory.path), "schema_version": SCHEMA_VERSION})
    (out_dir / INFO_FILE).write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n")

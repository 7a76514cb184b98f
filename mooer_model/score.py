"""Scoring the way MooER's tables do: CER for Mandarin, WER for English, BLEU for zh→en.

Hypotheses and references are normalised as MooER trains (``mooer_data.text``:
full-width folded, punctuation removed, Latin upper-cased, spaces kept only between Latin
words) before an edit distance over characters (Mandarin; Latin words inside Mandarin
count as one token each) or words (English). BLEU uses sacrebleu on the raw translations
(detokenised, its default ``13a`` tokeniser), as AST papers report it.

:func:`score_results` scores decoded utterances (the rows ``mooer-infer`` writes to
``results.jsonl``, or any dicts with the same keys) per test set: one CER or WER row per
language of the set, one BLEU row for translations, and :func:`format_table` lays them
out like MooER's tables, with the plain mean of the sets as ``zh avg`` / ``en avg``.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Iterable, Mapping, Sequence

from mooer_data.quality import edit_distance
from mooer_data.text import normalize_transcript

_LATIN_WORD = re.compile(r"[A-Z0-9']+")


def mandarin_tokens(text: str) -> list[str]:
    """Characters, with each Latin/digit run kept whole (CER on code-switched text)."""
    tokens: list[str] = []
    for piece in normalize_transcript(text).split(" "):
        position = 0
        for match in _LATIN_WORD.finditer(piece):
            tokens.extend(piece[position : match.start()])
            tokens.append(match.group())
            position = match.end()
        tokens.extend(piece[position:])
    return tokens


def english_tokens(text: str) -> list[str]:
    return normalize_transcript(text).split()


@dataclass(frozen=True)
class ErrorRate:
    errors: int
    reference_tokens: int
    utterances: int

    @property
    def rate(self) -> float:
        """Errors per reference token, in percent (as MooER's tables)."""
        return 100.0 * self.errors / self.reference_tokens if self.reference_tokens else 0.0


def error_rate(references: Sequence[str], hypotheses: Sequence[str], language: str) -> ErrorRate:
    """Corpus CER (``zh``) or WER (any other language) over aligned utterance pairs."""
    if len(references) != len(hypotheses):
        raise ValueError(f"expected as many hypotheses as references, found {len(hypotheses)} for {len(references)}")
    tokenize = mandarin_tokens if language == "zh" else english_tokens
    errors = total = 0
    for reference, hypothesis in zip(references, hypotheses):
        ref, hyp = tokenize(reference), tokenize(hypothesis)
        errors += edit_distance(ref, hyp)
        total += len(ref)
    return ErrorRate(errors, total, len(references))


def bleu(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Corpus BLEU (sacrebleu, one reference per utterance)."""
    if len(references) != len(hypotheses):
        raise ValueError(f"expected as many hypotheses as references, found {len(hypotheses)} for {len(references)}")
    try:
        import sacrebleu
    except ImportError:
        raise ImportError("BLEU needs sacrebleu: pip install sacrebleu (it is in mooer's [train] extra)") from None
    return float(sacrebleu.corpus_bleu(list(hypotheses), [list(references)]).score)


def format_row(test_set: str, metric: str, value: float, utterances: int) -> str:
    """One row of a paper-style table: ``aishell2_ios  CER  3.17  (5000 utts)``."""
    return f"{test_set:24s} {metric:4s} {value:6.2f}  ({utterances} utts)"


# Han ideographs (basic, extension A, compatibility, extensions B+): any one of them makes
# a text Mandarin for scoring; everything else is scored as English words.
_HAN = re.compile("[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f]")


def detect_language(text: str) -> str:
    """``zh`` when the text holds a Han character, else ``en`` (MooER's two languages)."""
    return "zh" if _HAN.search(text or "") else "en"


def scoring_language(language: str | None, reference: str) -> str:
    """The language an utterance is scored in: a ``zh*``/``cmn`` tag is Mandarin, another
    tag English; without a tag, the reference's script decides."""
    if language:
        return "zh" if language.lower().startswith(("zh", "cmn")) else "en"
    return detect_language(reference)


@dataclass(frozen=True)
class ScoreRow:
    """One row of a paper-style table: a test set's CER, WER or BLEU."""

    test_set: str
    metric: str  # CER | WER | BLEU
    value: float
    utterances: int  # utterances scored (those with a reference)
    language: str  # zh | en for error rates; the target language (en) for BLEU
    errors: int | None = None
    reference_tokens: int | None = None
    unscored: int = 0  # utterances of the set without a reference for this metric

    def line(self) -> str:
        return format_row(self.test_set, self.metric, self.value, self.utterances)

    def to_dict(self) -> dict:
        return asdict(self)


def _text(value) -> str | None:
    """A reference or hypothesis field: None when absent or blank."""
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _asr_pairs(rows: Sequence[Mapping], language: str | None) -> tuple[dict[str, tuple[list[str], list[str]]], int]:
    """(references, hypotheses) by scoring language, and how many rows had no reference."""
    by_language: dict[str, tuple[list[str], list[str]]] = {}
    unscored = 0
    for row in rows:
        reference = _text(row.get("ref"))
        if reference is None:
            unscored += 1
            continue
        # an MTL row carries its transcript half in "asr"; an ASR row's hypothesis is "hyp"
        hypothesis = row.get("asr") if row.get("task") == "mtl" else row.get("hyp")
        lang = scoring_language(language or row.get("language"), reference)
        references, hypotheses = by_language.setdefault(lang, ([], []))
        references.append(reference)
        hypotheses.append(hypothesis or "")
    return by_language, unscored


def _ast_pairs(rows: Sequence[Mapping]) -> tuple[list[str], list[str], int]:
    references, hypotheses, unscored = [], [], 0
    for row in rows:
        reference = _text(row.get("ref_translation"))
        if reference is None:
            unscored += 1
            continue
        # MooER treats an MTL output that is not two lines as ASR only: no translation
        hypothesis = row.get("ast") if row.get("task") == "mtl" else row.get("hyp")
        references.append(reference)
        hypotheses.append(hypothesis or "")
    return references, hypotheses, unscored


def score_results(results: Mapping[str, Sequence[Mapping]], language: str | None = None) -> list[ScoreRow]:
    """Score decoded utterances, test set by test set.

    ``results`` maps a test set name to its rows: dicts with ``task`` (asr, ast or mtl),
    ``hyp``, for mtl the split ``asr`` / ``ast`` halves, and the references ``ref`` (the
    transcript) and ``ref_translation``, plus an optional ``language``. ASR and MTL rows
    give a CER (Mandarin) or WER (English) row per language present; AST and MTL rows a
    BLEU row. ``language`` forces the ASR scoring language for every row. Rows without the
    reference a metric needs are counted in ``unscored``, never silently dropped; a set
    with no reference at all gives no row.
    """
    scored: list[ScoreRow] = []
    for test_set, rows in results.items():
        tasks = {row.get("task") for row in rows}
        unknown = tasks - {"asr", "ast", "mtl"}
        if unknown:
            raise ValueError(f"test set {test_set!r}: expected tasks asr, ast or mtl, found {sorted(map(str, unknown))}")
        asr_rows = [row for row in rows if row.get("task") in ("asr", "mtl")]
        ast_rows = [row for row in rows if row.get("task") in ("ast", "mtl")]
        if asr_rows:
            by_language, unscored = _asr_pairs(asr_rows, language)
            for lang in sorted(by_language, key=lambda name: (name != "zh", name)):  # Mandarin first, as MooER's tables
                references, hypotheses = by_language[lang]
                rate = error_rate(references, hypotheses, lang)
                scored.append(ScoreRow(test_set, "CER" if lang == "zh" else "WER", rate.rate, rate.utterances, lang,
                                       rate.errors, rate.reference_tokens, unscored))
        if ast_rows:
            references, hypotheses, unscored = _ast_pairs(ast_rows)
            if references:
                scored.append(ScoreRow(test_set, "BLEU", bleu(references, hypotheses), len(references), "en", unscored=unscored))
    return scored


def averages(rows: Iterable[ScoreRow]) -> list[ScoreRow]:
    """``zh avg`` / ``en avg`` / ``BLEU avg``: the plain mean over test sets, as MooER's
    tables average, for each metric measured on two or more sets."""
    groups: dict[tuple[str, str], list[ScoreRow]] = {}
    for row in rows:
        groups.setdefault((row.metric, row.language), []).append(row)
    means = []
    for (metric, lang), members in sorted(groups.items()):
        if len(members) < 2:
            continue
        name = "BLEU avg" if metric == "BLEU" else f"{lang} avg"
        means.append(ScoreRow(name, metric, sum(r.value for r in members) / len(members),
                              sum(r.utterances for r in members), lang))
    return means


def format_table(rows: Sequence[ScoreRow]) -> str:
    """A Markdown table, one row per test set and metric, then the averages."""
    lines = ["| test set | metric | value | utterances | unscored |", "|---|---|---:|---:|---:|"]
    for row in [*rows, *averages(rows)]:
        lines.append(f"| {row.test_set} | {row.metric} | {row.value:.2f} | {row.utterances} | {row.unscored} |")
    return "\n".join(lines) + "\n"

"""Scoring the way MooER's tables do: CER for Mandarin, WER for English, BLEU for zh→en.

Hypotheses and references are normalised as MooER trains (``mooer_data.text``:
full-width folded, punctuation removed, Latin upper-cased, spaces kept only between Latin
words) before an edit distance over characters (Mandarin; Latin words inside Mandarin
count as one token each) or words (English). BLEU uses sacrebleu on the raw translations
(detokenised, its default ``13a`` tokeniser), as AST papers report it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

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

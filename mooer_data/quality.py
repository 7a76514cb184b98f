"""Quality flags for machine labels: never a silent deletion, always a flag with a value.

* ``low-confidence``   the provider's confidence is under a threshold (when it gives one)
* ``repetition``       the same token run repeats (a classic ASR/LLM hallucination)
* ``cps-out-of-range`` characters (zh) or words (en) per second outside what speech allows
* ``disagrees``        a second provider (``--verify-with``) differs by more than a
                       threshold in CER (Mandarin) or WER (English)
"""

from __future__ import annotations

from dataclasses import dataclass

LOW_CONFIDENCE = 0.5
# Read speech runs ~3-6 Mandarin characters or ~2-3 English words a second; far outside
# these the label and the audio cannot both be right.
RATE_RANGE = {"zh": (0.7, 12.0), "en": (0.3, 6.0)}
DISAGREEMENT = 0.3


def edit_distance(reference: list[str], hypothesis: list[str]) -> int:
    previous = list(range(len(hypothesis) + 1))
    for i, ref in enumerate(reference, start=1):
        current = [i] + [0] * len(hypothesis)
        for j, hyp in enumerate(hypothesis, start=1):
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ref != hyp))
        previous = current
    return previous[-1]


def tokens(text: str, language: str | None) -> list[str]:
    """Characters for Mandarin (CER), words otherwise (WER)."""
    if language == "zh":
        return [c for c in text if not c.isspace()]
    return text.split()


def error_rate(reference: str, hypothesis: str, language: str | None) -> float:
    ref, hyp = tokens(reference, language), tokens(hypothesis, language)
    if not ref:
        return 0.0 if not hyp else 1.0
    return edit_distance(ref, hyp) / len(ref)


def has_repetition(text: str, language: str | None, min_repeats: int = 4) -> bool:
    """A unit of 1-4 tokens repeated ``min_repeats`` times in a row."""
    units = tokens(text, language)
    for size in range(1, 5):
        for start in range(0, max(0, len(units) - size * min_repeats + 1)):
            chunk = units[start : start + size]
            if all(units[start + k * size : start + (k + 1) * size] == chunk for k in range(1, min_repeats)):
                return True
    return False


@dataclass(frozen=True)
class QualityRow:
    id: str
    flags: tuple[str, ...]
    rate: float | None  # tokens per second
    confidence: float | None
    agreement_error: float | None  # CER/WER against the verifying provider
    verify_text: str | None


def assess(segment_id: str, text: str, duration: float, language: str | None, confidence: float | None,
           verify_text: str | None = None) -> QualityRow:
    flags = []
    if confidence is not None and confidence < LOW_CONFIDENCE:
        flags.append("low-confidence")
    if has_repetition(text, language):
        flags.append("repetition")
    rate = len(tokens(text, language)) / duration if duration > 0 else None
    low, high = RATE_RANGE.get(language or "", RATE_RANGE["en"])
    if rate is not None and duration >= 1.0 and not low <= rate <= high:
        flags.append("cps-out-of-range")
    agreement = None
    if verify_text is not None:
        agreement = error_rate(text, verify_text, language)
        if agreement > DISAGREEMENT:
            flags.append("disagrees")
    return QualityRow(segment_id, tuple(flags), rate, confidence, agreement, verify_text)

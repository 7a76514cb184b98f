"""Transcript normalisation, as MooER trains on it (reference/mooer-model.md §1.4).

MooER's ``data_package.sh`` upper-cases Latin text, keeps a space only between Latin
words (as ``▁``, turned back into a space at load time) and removes every other space.
We store the load-time form. Before that, the corpus quirks the Kaldi, WeNet and Lhotse
recipes clean up are applied once, for every corpus:

=============================  ===============================  =========================
quirk                          example in                        becomes
=============================  ===============================  =========================
full-width Latin / spaces      ``Ａ`` ``ｋ`` ``　`` NBSP            ``A`` ``K`` and a space
BOM inside a line              ``\\ufeff帮我``                    ``帮我``
rare CJK (AISHELL-2)           ``𫖯``, ``𫚉``                      ``頫``, deleted
filler tags (MagicData)        ``[FIL]`` ``[SPK]``               deleted
GigaSpeech-style tags          ``<SIL>``                         deleted
THCHS-30 artefact              ``今天 l = 天气``                   ``今天天气``
punctuation, CJK or ASCII      ``你好，世界！``                    ``你好世界``
apostrophe after CJK           ``要及时'关停并转'``               ``要及时关停并转``
apostrophe inside a word       ``Let's``                         ``LET'S``
word-segmented Mandarin        ``明天 早上 叫 我``                 ``明天早上叫我``
code-switching                 ``播放一首Let it go``              ``播放一首LET IT GO``
=============================  ===============================  =========================
"""

from __future__ import annotations

import re
import unicodedata

_CHARACTER_MAP = str.maketrans({"\ufeff": None, "\U0002b5af": "頫", "\U0002b689": None, "\u200b": None})
_TAG = re.compile(r"\[(?:FIL|SPK|NOISE|NPS|SIL)\]|<[A-Z_]+>", re.IGNORECASE)
_THCHS_ARTEFACT = re.compile(r"\sl\s=(?=\s|$)")


def _is_latin_or_digit(char: str) -> bool:
    return ("A" <= char <= "Z") or ("a" <= char <= "z") or ("0" <= char <= "9")


def _is_punctuation_or_symbol(char: str) -> bool:
    return unicodedata.category(char)[0] in "PS"


_ASCII_NOT_KEPT = re.compile(r"[^A-Z0-9' ]")
_ASCII_STRAY_APOSTROPHE = re.compile(r"(?<![A-Z0-9])'")


def _normalize_ascii(raw: str) -> str:
    """The same rules for all-ASCII text (LibriSpeech, most English), without the
    per-character Unicode lookups: every token is Latin, so tokens join with one space."""
    text = _THCHS_ARTEFACT.sub(" ", " " + raw)
    if "[" in text or "<" in text:
        text = _TAG.sub(" ", text)
    text = _ASCII_NOT_KEPT.sub(" ", text.upper())
    if "'" in text:
        text = _ASCII_STRAY_APOSTROPHE.sub(" ", text)
    return " ".join(text.split())


def normalize_transcript(raw: str) -> str:
    """The ``text`` column from a corpus transcript (``text_raw``)."""
    return _normalize_ascii(raw) if raw.isascii() else _normalize_general(raw)


def _normalize_general(raw: str) -> str:
    text = unicodedata.normalize("NFKC", raw.translate(_CHARACTER_MAP))
    text = _THCHS_ARTEFACT.sub(" ", " " + text)
    text = _TAG.sub(" ", text).upper()
    kept: list[str] = []
    for index, char in enumerate(text):
        if char == "'":
            previous = text[index - 1] if index else ""
            kept.append("'" if previous and _is_latin_or_digit(previous) else " ")
        elif char.isspace() or _is_punctuation_or_symbol(char):
            kept.append(" ")
        else:
            kept.append(char)
    tokens = "".join(kept).split()
    if not tokens:
        return ""
    # A space survives only between two Latin/digit tokens; everything else is glued.
    pieces = [tokens[0]]
    for token in tokens[1:]:
        if _is_latin_or_digit(pieces[-1][-1].rstrip("'") or "x") and _is_latin_or_digit(token[0]):
            pieces.append(" ")
        pieces.append(token)
    return "".join(pieces)

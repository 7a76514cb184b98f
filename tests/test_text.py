"""Golden normalisation pairs: the corpus quirks of reference/corpora.md and MooER's rule."""

import pytest

from mooer_data.text import normalize_transcript

GOLDEN = [
    ("播放一首Let it go", "播放一首LET IT GO"),  # code-switching keeps Latin spaces, upper-cased
    ("明天 早上 叫 我 起床", "明天早上叫我起床"),  # word-segmented Mandarin is glued
    ("你好，世界！", "你好世界"),  # full-width punctuation
    ("帮我放一首歌Let's go", "帮我放一首歌LET'S GO"),  # apostrophe inside an English word stays
    ("要及时'关停并转'", "要及时关停并转"),  # apostrophes after CJK go (the AISHELL-2 quirk)
    ("Ａ股 ｋ线", "A股K线"),  # full-width capitals and lower-case letters
    ("今天 l = 天气 很 好", "今天天气很好"),  # THCHS-30 artefact
    ("[FIL] 好的 [SPK]", "好的"),  # MagicData filler tags
    ("[FIL]", ""),
    ("我们 明天\u3000去\u00a0公园", "我们明天去公园"),  # full-width space and NBSP (WenetSpeech)
    ("\ufeff帮我打开空调", "帮我打开空调"),  # BOM at the start of a line
    ("𫖯好𫚉", "頫好"),  # AISHELL-2 rare characters
    ("THE LANTERN SWUNG", "THE LANTERN SWUNG"),  # LibriSpeech is already normal
    ("WELL-KNOWN fact", "WELL KNOWN FACT"),  # hyphen splits words
    ("19 点 30 分", "19点30分"),
    ("《三体》：第一部…", "三体第一部"),
    ("<SIL> 嗯 <NOISE>", "嗯"),
]


@pytest.mark.parametrize("raw, expected", GOLDEN)
def test_golden_pairs(raw, expected):
    assert normalize_transcript(raw) == expected


def test_idempotent_on_its_own_output():
    for raw, _ in GOLDEN:
        once = normalize_transcript(raw)
        assert normalize_transcript(once) == once


@pytest.mark.parametrize(
    "raw",
    [
        "THE LANTERN SWUNG",
        "rock 'n' roll",
        "dogs' bone, DON'T stop!",
        "well-known [FIL] <SIL> fact",
        "x l = y",
        "  tabs\tand   spaces ",
        "'quoted' words",
        "19 points, 30%",
    ],
)
def test_ascii_fast_path_equals_the_general_rules(raw):
    from mooer_data.text import _normalize_ascii, _normalize_general

    assert _normalize_ascii(raw) == _normalize_general(raw)
    assert _normalize_ascii(raw)  # none of these normalises to nothing

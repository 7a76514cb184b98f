import pytest

from mooer_model.score import ErrorRate, bleu, english_tokens, error_rate, format_row, mandarin_tokens


def test_mandarin_tokens_keep_latin_words_whole():
    assert mandarin_tokens("播放一首Let it go，好吗？") == ["播", "放", "一", "首", "LET", "IT", "GO", "好", "吗"]
    assert mandarin_tokens("今天 l = 天气") == ["今", "天", "天", "气"]


def test_cer_and_wer_after_normalisation():
    # punctuation, width and case do not count as errors
    cer = error_rate(["今天天气很好。", "播放一首Let it go"], ["今天天气不好", "播放一首let it go！"], "zh")
    assert (cer.errors, cer.reference_tokens, cer.utterances) == (1, 6 + 7, 2)
    assert cer.rate == pytest.approx(100 / 13)
    wer = error_rate(["The cat sat on the mat."], ["the cat sat on mat"], "en")
    assert (wer.errors, wer.reference_tokens) == (1, 6) and wer.rate == pytest.approx(100 / 6)
    assert english_tokens("Don't stop!") == ["DON'T", "STOP"]


def test_mismatched_lengths_are_refused():
    with pytest.raises(ValueError, match="as many hypotheses"):
        error_rate(["a"], [], "en")
    with pytest.raises(ValueError, match="as many hypotheses"):
        bleu(["a"], ["a", "b"])


def test_bleu_matches_sacrebleu_definition():
    assert bleu(["the cat sat on the mat"], ["the cat sat on the mat"]) == pytest.approx(100.0)
    partial = bleu(["the cat sat on the mat today"], ["the cat sat on a mat today"])
    assert 0.0 < partial < 100.0
    assert ErrorRate(0, 0, 0).rate == 0.0
    assert format_row("aishell2_ios", "CER", 3.17, 5000) == "aishell2_ios             CER    3.17  (5000 utts)"

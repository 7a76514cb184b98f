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


# --------------------------------------------------------------------------------------
# score_results: per test set, per metric, like MooER's tables
# --------------------------------------------------------------------------------------
from mooer_model.score import ScoreRow, averages, detect_language, format_table, score_results, scoring_language  # noqa: E402


def test_language_detection_by_script_and_tag():
    assert detect_language("播放一首Let it go") == "zh"
    assert detect_language("The cat sat.") == "en"
    assert detect_language("") == "en"
    assert scoring_language("zh-CN", "english words") == "zh"
    assert scoring_language("cmn", "english words") == "zh"
    assert scoring_language("en", "今天") == "en"
    assert scoring_language(None, "今天") == "zh"


def test_bleu_of_score_results_equals_sacrebleu_corpus_bleu():
    import sacrebleu

    references = ["The weather is nice today.", "I would like a cup of hot tea.", "Please open the window."]
    hypotheses = ["The weather is good today.", "I want a cup of hot tea.", "Open the window please."]
    rows = [{"task": "ast", "hyp": h, "ref_translation": r} for h, r in zip(hypotheses, references)]
    [row] = score_results({"covost2": rows})
    expected = sacrebleu.corpus_bleu(hypotheses, [references]).score
    assert row.metric == "BLEU" and row.value == pytest.approx(expected) and 0 < row.value < 100
    assert (row.utterances, row.unscored) == (3, 0)


def test_score_results_splits_languages_and_counts_unscored():
    rows = [
        {"task": "asr", "hyp": "今天天气不好", "ref": "今天天气很好。"},  # 1 error / 6
        {"task": "asr", "hyp": "the cat sat on mat", "ref": "The cat sat on the mat."},  # 1 / 6
        {"task": "asr", "hyp": "no reference here", "ref": None},
        {"task": "asr", "hyp": "THE DOG", "ref": "今天", "language": "en"},  # tagged English: WER
    ]
    scored = score_results({"mixed": rows})
    assert [(r.metric, r.language, r.utterances, r.unscored) for r in scored] == [("CER", "zh", 1, 1), ("WER", "en", 2, 1)]
    cer, wer = scored
    assert (wer.errors, wer.reference_tokens) == (1 + 2, 6 + 1)
    assert cer.value == pytest.approx(100 / 6)
    # --language forces every row
    [forced] = score_results({"mixed": rows[:2]}, language="zh")
    assert forced.metric == "CER" and forced.utterances == 2
    assert score_results({"nothing": [{"task": "asr", "hyp": "x"}]}) == []
    with pytest.raises(ValueError, match="expected tasks asr, ast or mtl, found \\['s2s'\\]"):
        score_results({"bad": [{"task": "s2s", "hyp": "x"}]})


def test_mtl_rows_score_both_halves():
    rows = [
        {"task": "mtl", "hyp": "今天天气很好\nThe weather is nice today.", "asr": "今天天气很好", "ast": "The weather is nice today.",
         "ref": "今天天气很好", "ref_translation": "The weather is nice today."},
        # not two lines: ASR only, so its translation counts as empty (MooER's rule)
        {"task": "mtl", "hyp": "我想喝茶", "asr": "我想喝茶", "ast": None, "ref": "我想喝一杯茶", "ref_translation": "I want tea."},
    ]
    cer, bleu_row = score_results({"covost": rows})
    assert (cer.metric, cer.errors, cer.reference_tokens) == ("CER", 2, 6 + 6)
    import sacrebleu

    expected = sacrebleu.corpus_bleu(["The weather is nice today.", ""], [["The weather is nice today.", "I want tea."]]).score
    assert bleu_row.metric == "BLEU" and bleu_row.value == pytest.approx(expected) and bleu_row.utterances == 2


def test_table_rows_and_averages_like_the_paper():
    rows = [
        ScoreRow("aishell1", "CER", 1.93, 7176, "zh"),
        ScoreRow("test_thchs", "CER", 4.11, 2495, "zh"),
        ScoreRow("librispeech_clean", "WER", 7.78, 2620, "en"),
        ScoreRow("covost2", "BLEU", 25.2, 4898, "en", unscored=3),
    ]
    [zh_avg] = averages(rows)  # one English set and one BLEU set: no average for them
    assert (zh_avg.test_set, zh_avg.metric, zh_avg.utterances) == ("zh avg", "CER", 7176 + 2495)
    assert zh_avg.value == pytest.approx((1.93 + 4.11) / 2)
    table = format_table(rows).splitlines()
    assert table[0] == "| test set | metric | value | utterances | unscored |"
    assert table[2] == "| aishell1 | CER | 1.93 | 7176 | 0 |"
    assert table[5] == "| covost2 | BLEU | 25.20 | 4898 | 3 |"
    assert table[-1] == "| zh avg | CER | 3.02 | 9671 | 0 |"
    assert rows[0].line() == format_row("aishell1", "CER", 1.93, 7176)
    assert rows[3].to_dict()["unscored"] == 3

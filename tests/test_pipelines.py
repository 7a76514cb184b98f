"""The shipped recipe files load, the MT5K budgets are the paper's, and a bad recipe is
refused before anything runs with every problem named at once."""

from pathlib import Path

import pytest

from mooer_data.recipe import RecipeError, check_roots, load_recipe

PIPELINES = Path(__file__).resolve().parents[1] / "pipelines"


# data recipes sit at the top of pipelines/ (training configs live in pipelines/train/)
@pytest.mark.parametrize("path", sorted(PIPELINES.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_recipe_loads(path):
    recipe = load_recipe(path)
    assert recipe.budgets_hours and set(recipe.budgets_hours) == {spec.source for spec in recipe.corpora.values()}
    assert recipe.asr.primary is not None and recipe.mt.primary is not None


def test_mt5k_budgets_providers_and_output():
    recipe = load_recipe(PIPELINES / "mt5k.yaml")
    assert recipe.budgets_hours == {"aishell2": 137, "librispeech": 131, "multi_cn": 100, "wenetspeech": 1361, "inhouse": 3274}
    assert sum(recipe.budgets_hours.values()) == 5003
    assert recipe.output == Path("manifests/mt5k")
    assert recipe.corpus_roots["aishell2"] == Path("/data/AISHELL-2")
    assert recipe.asr.primary == "tencent" and recipe.asr.fallbacks == ("aliyun", "local")
    assert recipe.mt.names == ("tencent", "baidu")
    assert recipe.shards.size == "1GB" and recipe.shards.audio_format == "flac"


def test_demo_budgets_are_given_in_minutes():
    recipe = load_recipe(PIPELINES / "mt5k-demo.yaml")
    assert recipe.budgets_hours["aishell2"] == pytest.approx(0.12 / 60)
    assert recipe.shards.max_count == 16 and recipe.asr.fallbacks == ("local",)


def write(tmp_path, text: str) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return path


def problems_of(path, **kwargs) -> list[str]:
    with pytest.raises(RecipeError) as caught:
        load_recipe(path, **kwargs)
    return caught.value.problems


def test_every_problem_is_reported_at_once(tmp_path):
    path = write(tmp_path, """
seed: 1
colour: blue
corpora: {aishell2: {root: /x, rot: /y}, timit: {}}
budgets_hours: {aishell2: -3, librispeech: 5}
providers:
  asr: [tencent, whisperx]
  mt: [deepl, deepl]
  settings: {mt: {baidu: {}}}
shards: {audio_format: mp3, jobs: two, max_count: 0}
pseudolabel: {verify_with: nobody}
""")
    problems = problems_of(path)
    text = "\n".join(problems)
    for expected in (
        "unknown key 'colour'",
        "corpora.aishell2: unknown key 'rot'",
        "corpora.timit: unknown corpus",
        "budgets_hours.aishell2: expected a non-negative number, found -3",
        "budgets_hours.librispeech: a budget but no such entry under corpora",
        "unknown asr provider 'whisperx'",
        "['deepl'] listed more than once",
        "providers.settings.mt.baidu: settings for a provider not in providers.mt",
        "shards.audio_format: expected one of flac, wav, found 'mp3'",
        "shards.jobs: expected an integer, found 'two'",
        "shards.max_count: expected a positive count",
        "pseudolabel.verify_with: unknown asr provider 'nobody'",
    ):
        assert expected in text, expected
    assert len(problems) >= 12


def test_unlabelled_audio_needs_asr_providers_and_every_corpus_a_budget(tmp_path):
    path = write(tmp_path, "seed: 1\ncorpora: [inhouse, librispeech]\nbudgets_minutes: {inhouse: 3}\n")
    text = "\n".join(problems_of(path))
    assert "providers.asr: expected ASR providers, since ['inhouse'] has no transcripts" in text
    assert "corpora.librispeech: expected a budget for source 'librispeech'" in text


def test_budgets_in_exactly_one_unit_and_sources_once(tmp_path):
    path = write(tmp_path, "seed: 1\ncorpora: [aishell, thchs30]\nbudgets_hours: {multi_cn: 1}\nbudgets_minutes: {multi_cn: 1}\n")
    text = "\n".join(problems_of(path))
    assert "expected exactly one of budgets_hours or budgets_minutes" in text
    assert "corpora.thchs30: its rows carry the source 'multi_cn', like corpora.aishell" in text


def test_missing_keys_and_files():
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_recipe(PIPELINES / "absent.yaml")


def test_missing_seed_and_corpora(tmp_path):
    text = "\n".join(problems_of(write(tmp_path, "name: x\n")))
    assert "missing ['seed', 'corpora']" in text


def test_roots_that_do_not_look_like_the_corpus_name_the_layout(tmp_path, corpus_factory):
    libri = corpus_factory("librispeech")
    (tmp_path / "empty").mkdir()
    path = write(tmp_path, f"""
seed: 1
corpora:
  librispeech: {{root: {libri.root}}}
  aishell2: {{root: {tmp_path / 'empty'}}}
  wenetspeech: {{root: {tmp_path / 'absent'}}}
  inhouse: {{}}
budgets_hours: {{librispeech: 1, aishell2: 1, wenetspeech: 1, inhouse: 1}}
providers: {{asr: [local]}}
""")
    recipe = load_recipe(path)  # the structure is fine; roots are checked when asked
    problems = problems_of(path, check_corpus_roots=True)
    assert len(problems) == 3 and problems == check_roots(recipe)
    text = "\n".join(problems)
    assert "corpora.aishell2:" in text and "expected: CORPUS_DIR/iOS/data/{wav.scp, trans.txt" in text and "an empty directory" in text
    assert "corpora.wenetspeech:" in text and "CORPUS_DIR/WenetSpeech.json" in text and "does not exist" in text
    assert "corpora.inhouse: expected a root" in text
    assert "librispeech" not in text

"""The shipped recipe files load, and the MT5K budgets are the paper's."""

from pathlib import Path

import pytest

from mooer_data.recipe import load_recipe

PIPELINES = Path(__file__).resolve().parents[1] / "pipelines"


@pytest.mark.parametrize("path", sorted(PIPELINES.rglob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_recipe_loads(path):
    recipe = load_recipe(path)
    assert recipe.budgets_hours and recipe.seed is not None


def test_mt5k_budgets():
    recipe = load_recipe(PIPELINES / "mt5k.yaml")
    assert recipe.budgets_hours == {"aishell2": 137, "librispeech": 131, "multi_cn": 100, "wenetspeech": 1361, "inhouse": 3274}
    assert sum(recipe.budgets_hours.values()) == 5003
    assert recipe.output == Path("manifests/mt5k")


def test_recipe_errors_name_the_problem(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: 1\ncorpora: [aishell2]\nbudgets_hours: {aishell2: -3}\n")
    with pytest.raises(ValueError, match="non-negative"):
        load_recipe(bad)
    bad.write_text("seed: 1\ncorpora: [aishell2]\nbudgets_hours: {timit: 3}\n")
    with pytest.raises(ValueError, match="no such entry under corpora"):
        load_recipe(bad)
    bad.write_text("corpora: [aishell2]\n")
    with pytest.raises(ValueError, match="missing"):
        load_recipe(bad)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_recipe(tmp_path / "absent.yaml")

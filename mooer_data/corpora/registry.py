"""The closed set of corpus recipes, registered by name."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .base import PartWriters, PrepareContext


@dataclass(frozen=True)
class Recipe:
    """How to turn one corpus layout into manifest rows.

    ``locate`` checks CORPUS_DIR and returns whatever the recipe needs later (raising
    CorpusLayoutError with the expected layout when it does not fit); ``available_parts``
    lists the parts present; ``prepare_part`` writes one part's rows.
    """

    name: str
    source: str
    language: str | None
    description: str
    all_parts: tuple[str, ...]
    locate: Callable[[Path], Any]
    available_parts: Callable[[Any], list[str]]
    prepare_part: Callable[[Any, str, PrepareContext, PartWriters], None]
    sample_rate: int | None = 16000
    version: str = "1"
    # True where parts are filters over one pass (WenetSpeech subset tags): the selected
    # parts are then prepared together as one unit named "A+B+...".
    combine_parts: bool = False


RECIPES: dict[str, Recipe] = {}


def register_recipe(recipe: Recipe) -> Recipe:
    if recipe.name in RECIPES:
        raise ValueError(f"recipe {recipe.name!r} is already registered")
    RECIPES[recipe.name] = recipe
    return recipe


def get_recipe(name: str) -> Recipe:
    _load_builtin_recipes()
    try:
        return RECIPES[name]
    except KeyError:
        raise ValueError(f"unknown corpus {name!r}: expected one of {', '.join(sorted(RECIPES))}") from None


def recipe_names() -> list[str]:
    _load_builtin_recipes()
    return sorted(RECIPES)


def _load_builtin_recipes() -> None:
    # Imported for their register_recipe() side effect, once, on first use.
    from . import aishell2, inhouse, librispeech, multi_cn, wenetspeech  # noqa: F401

"""Corpus recipes: one module per corpus, each registering a Recipe by name."""

from .registry import RECIPES, Recipe, get_recipe, recipe_names

__all__ = ["RECIPES", "Recipe", "get_recipe", "recipe_names"]

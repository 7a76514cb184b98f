"""Recipe YAML files (pipelines/*.yaml): the parts the data stages read today."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml


@dataclass(frozen=True)
class RecipeFile:
    name: str
    seed: int
    budgets_hours: dict[str, float]
    corpus_roots: dict[str, Path | None] = field(default_factory=dict)
    output: Path = Path("manifests/mt5k")


def load_recipe(path: Path | str) -> RecipeFile:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"recipe {path} does not exist (expected a YAML file like pipelines/mt5k.yaml)")
    data = yaml.safe_load(path.read_text()) or {}
    missing = [key for key in ("seed", "budgets_hours", "corpora") if key not in data]
    if missing:
        raise ValueError(f"{path}: expected the keys seed, budgets_hours and corpora; missing {missing}")
    corpora = data["corpora"]
    if isinstance(corpora, list):
        roots = {name: None for name in corpora}
    elif isinstance(corpora, dict):
        roots = {name: Path(spec["root"]) if isinstance(spec, dict) and spec.get("root") else None for name, spec in corpora.items()}
    else:
        raise ValueError(f"{path}: expected 'corpora' to be a list of names or a mapping name -> {{root: DIR}}, found {type(corpora).__name__}")
    budgets = data["budgets_hours"]
    if not isinstance(budgets, dict) or not all(isinstance(v, (int, float)) and v >= 0 for v in budgets.values()):
        raise ValueError(f"{path}: expected budgets_hours to map sources to non-negative hours, found {budgets!r}")
    unknown = sorted(set(budgets) - set(roots))
    if unknown:
        raise ValueError(f"{path}: budgets for {unknown} but no such entry under corpora ({sorted(roots)})")
    return RecipeFile(
        name=str(data.get("name", path.stem)),
        seed=int(data["seed"]),
        budgets_hours={k: float(v) for k, v in budgets.items()},
        corpus_roots=roots,
        output=Path(data.get("output", "manifests/mt5k")),
    )

"""multi_cn: the six open Mandarin corpora of Kaldi's ``egs/multi_cn`` recipe, unioned.

CORPUS_DIR holds whichever parts are present, each under its own extracted name (or
Kaldi's download folder names)::

    aidatatang_200zh/   data_aishell/   magicdata/{train,dev,test}/
    primewords_md_2018_set1/   ST-CMDS-20170001_1-OS/   data_thchs30/

Every part is also a corpus name of its own (``mooer-data prepare aishell DIR OUT``) and
gives exactly the rows it contributes to multi_cn: source ``multi_cn``, subset = the part,
ids ``multi_cn-<part>-<native id>`` so the six never collide (reference/corpora.md §4.7).
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

from ..base import CorpusLayoutError, PrepareContext, write_utterances
from ..registry import Recipe, register_recipe
from . import aidatatang, aishell, magicdata, primewords, stcmds, thchs30

SOURCE = "multi_cn"
PART_MODULES: dict[str, ModuleType] = {
    module.NAME: module for module in (aidatatang, aishell, magicdata, primewords, stcmds, thchs30)
}
PARTS = tuple(PART_MODULES)


def locate(corpus_dir: Path) -> dict[str, Path]:
    found = {name: module.locate(corpus_dir) for name, module in PART_MODULES.items()}
    found = {name: path for name, path in found.items() if path is not None}
    if not found:
        expected = "at least one of " + "; ".join(module.EXPECTED for module in PART_MODULES.values())
        raise CorpusLayoutError("multi_cn", corpus_dir, expected)
    return found


def prepare_part(layout: dict[str, Path], part: str, context: PrepareContext, writers) -> None:
    collection = PART_MODULES[part].collect(layout[part], context)
    write_utterances(collection, context, writers, f"multi_cn/{part}")


RECIPE = register_recipe(
    Recipe(
        name="multi_cn",
        source=SOURCE,
        language="zh",
        description="the six open multi_cn corpora (aidatatang_200zh, aishell, magicdata, primewords, stcmds, thchs30)",
        all_parts=PARTS,
        locate=locate,
        available_parts=lambda layout: [p for p in PARTS if p in layout],
        prepare_part=prepare_part,
    )
)


def _single_part_recipe(name: str, module: ModuleType) -> Recipe:
    def locate_one(corpus_dir: Path) -> dict[str, Path]:
        path = module.locate(corpus_dir)
        if path is None:
            raise CorpusLayoutError(name, corpus_dir, module.EXPECTED)
        return {name: path}

    return Recipe(
        name=name,
        source=SOURCE,
        language="zh",
        description=f"the {name} part of multi_cn on its own",
        all_parts=(name,),
        locate=locate_one,
        available_parts=lambda layout: [name],
        prepare_part=prepare_part,
    )


for _name, _module in PART_MODULES.items():
    register_recipe(_single_part_recipe(_name, _module))

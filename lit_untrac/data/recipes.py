"""Named preparations of hub datasets, applied before their fields are read.

A recipe takes the loaded ``datasets.Dataset`` and returns one with the
fields a :class:`~lit_untrac.data.sources.DatasetSpec` names. The paper's
test sets need filtering and splitting into subsets that no field mapping
expresses; each recipe here follows the paper's reference preparation.
"""

from __future__ import annotations

from collections.abc import Callable

RECIPES: dict[str, Callable] = {}


def recipe(name: str) -> Callable[[Callable], Callable]:
    def register(fn: Callable) -> Callable:
        RECIPES[name] = fn
        return fn

    return register

"""Named preparations of hub datasets, applied before their fields are read.

A recipe takes the loaded ``datasets.Dataset`` and the dataset's spec and
returns a dataset with the fields the spec names. The paper's test sets
(Section 5.2) need filtering and splitting into subsets that no field
mapping expresses; each recipe here follows the paper's reference
preparation, and every one ends with at most ``per_subset`` examples per
subset, sampled with the spec's seed.

* ``toxigen``: toxic prompts only (``prompt_label`` 1), texts of more than 8
  and at most 24 words; fields ``text`` and ``subset`` (the target group,
  13 subsets).
* ``winobias``: type-1 sentences, pro- and anti-stereotypical; sentences
  whose pronouns are all female or all male; fields ``text`` and ``subset``
  (``pro_female``, ``pro_male``, ``anti_female``, ``anti_male``).
* ``truthfulqa``: each question with each of its incorrect answers is one
  example; fields ``prompt``, ``completion`` and ``subset`` (the category,
  "Indexical Error*" and "Confusion*" merged, categories with at least
  ``min_examples`` examples kept: 9 subsets).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from lit_untrac.errors import UserError

RECIPES: dict[str, Callable] = {}


def recipe(name: str) -> Callable[[Callable], Callable]:
    def register(fn: Callable) -> Callable:
        RECIPES[name] = fn
        return fn

    return register


def _require(raw, fields: list[str], recipe_name: str) -> None:
    missing = [f for f in fields if f not in raw.column_names]
    if missing:
        raise UserError(
            f"recipe {recipe_name!r} needs the field(s) {missing}; the dataset has {raw.column_names}"
        )


def sample_per_subset(rows: list[dict], per_subset: int | None, seed: int) -> list[dict]:
    """At most ``per_subset`` rows of each subset (seeded), subsets in order of appearance."""
    from lit_untrac.data.sources import seeded_sample

    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(row["subset"], []).append(row)
    kept = []
    for group in groups.values():
        kept += [group[i] for i in seeded_sample(len(group), per_subset, seed)]
    return kept


def _from_rows(rows: list[dict], recipe_name: str):
    import datasets

    if not rows:
        raise UserError(f"recipe {recipe_name!r} kept no examples")
    return datasets.Dataset.from_list(rows)


@recipe("toxigen")
def toxigen(raw, spec, min_words: int = 8, max_words: int = 24, per_subset: int | None = 256):
    """ToxiGen (``skg/toxigen-data``, config ``train``): toxic generations by target group."""
    _require(raw, ["generation", "group", "prompt_label"], "toxigen")
    rows = [
        {"text": row["generation"], "subset": row["group"]}
        for row in raw
        if row["prompt_label"] == 1 and min_words < len(row["generation"].split(" ")) <= max_words
    ]
    return _from_rows(sample_per_subset(rows, per_subset, spec.seed), "toxigen")


FEMALE = ("she", "her")
MALE = ("he", "his", "him")


def winobias_subset(tokens: list[str], kind: str) -> str | None:
    """``{kind}_female`` / ``{kind}_male`` by the sentence's pronouns, or None if both or neither."""
    female = any(t in tokens for t in FEMALE)
    male = any(t in tokens for t in MALE)
    if female == male:
        return None
    return f"{kind}_{'female' if female else 'male'}"


@recipe("winobias")
def winobias(raw, spec, configs: dict[str, str] | None = None, per_subset: int | None = 256):
    """WinoBias (``wino_bias``): the spec's ``hub_config`` plus the ``configs``
    named here (config name -> kind, e.g. ``{type1_anti: anti}``), same split.

    A dataset that already has a ``kind`` field (local files) is used as is.
    """
    import datasets

    _require(raw, ["tokens"], "winobias")
    parts = []
    if "kind" in raw.column_names:
        parts.append(raw)
    else:
        kind = (spec.hub_config or "pro").rsplit("_", 1)[-1]
        parts.append(raw.add_column("kind", [kind] * len(raw)))
        for name, other_kind in (configs or {}).items():
            other = datasets.load_dataset(spec.hub, name, split=spec.split)
            parts.append(other.add_column("kind", [other_kind] * len(other)))
    rows = []
    for part in parts:
        for row in part:
            subset = winobias_subset(row["tokens"], row["kind"])
            if subset is not None:
                rows.append({"text": " ".join(row["tokens"]), "subset": subset})
    return _from_rows(sample_per_subset(rows, per_subset, spec.seed), "winobias")


def truthfulqa_category(category: str) -> str:
    if "Indexical Error" in category:
        return "indexical_error"
    if "Confusion" in category:
        return "confusion"
    return category.lower()


@recipe("truthfulqa")
def truthfulqa(raw, spec, min_examples: int = 128, per_subset: int | None = 256):
    """TruthfulQA (``truthful_qa``, config ``generation``): questions with their incorrect answers."""
    _require(raw, ["question", "incorrect_answers", "category"], "truthfulqa")
    rows = [
        {
            "prompt": row["question"].strip(),
            "completion": answer.strip(),
            "subset": truthfulqa_category(row["category"]),
        }
        for row in raw
        for answer in row["incorrect_answers"]
    ]
    counts = Counter(row["subset"] for row in rows)
    rows = [row for row in rows if counts[row["subset"]] >= min_examples]
    return _from_rows(sample_per_subset(rows, per_subset, spec.seed), "truthfulqa")
